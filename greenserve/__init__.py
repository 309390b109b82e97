"""greenserve: a WSGI (PEP 3333) HTTP/1.1 server on a greenlet reactor.

Public API: ``serve``, ``Server``, ``Config``, ``ConfigError``, ``__version__``.
"""

from ._version import __version__
from .config import Config
from .errors import ConfigError, GreenserveError
from .server import Server, serve

__all__ = ["serve", "Server", "Config", "ConfigError", "GreenserveError", "__version__"]
