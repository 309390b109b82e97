"""greenserve: a WSGI (PEP 3333) HTTP/1.1 server on a greenlet reactor.

Public API: ``serve``, ``Server``, ``Config``, ``ConfigError``, ``__version__``; for app code,
the cooperative runtime ``sleep``, ``spawn`` (a ``Task``), ``Event``, ``Queue``, ``Timeout`` and
``run_in_thread``. ``greenserve.patch`` makes the standard library cooperative; it is never
applied on import. ``greenserve.websocket`` accepts WebSockets (``accept(environ)``).
"""

from . import patch  # noqa: F401  (greenserve.patch.apply(): never applied on import)
from ._version import __version__
from .config.options import Config
from .errors import ConfigError, GreenserveError, TaskKilled
from .loop.tasks import Event, Queue, Task, Timeout, sleep, spawn
from .serving.server import Server, serve
from .loop.threadpool import run_in_thread

__all__ = [
    "serve", "Server", "Config", "ConfigError", "GreenserveError", "__version__",
    "sleep", "spawn", "Task", "TaskKilled", "Event", "Queue", "Timeout", "run_in_thread",
]
