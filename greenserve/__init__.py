"""greenserve: a WSGI (PEP 3333) HTTP/1.1 server on a greenlet reactor.

Public API: ``serve``, ``Server``, ``Config``, ``ConfigError``, ``__version__``; for app code,
the cooperative runtime ``sleep``, ``spawn`` (a ``Task``), ``Event``, ``Queue``, ``Timeout`` and
``run_in_thread``. ``greenserve.patch`` makes the standard library cooperative; it is never
applied on import. ``greenserve.websocket`` accepts WebSockets (``accept(environ)``).
"""

from . import _build

_build.select()  # first: which build's modules the imports below load (see _build.py)

from . import patch  # noqa: E402,F401  (greenserve.patch.apply(): never applied on import)
from ._version import __version__  # noqa: E402
from .config.options import Config  # noqa: E402
from .errors import ConfigError, GreenserveError, TaskKilled  # noqa: E402
from .loop.tasks import Event, Queue, Task, Timeout, sleep, spawn  # noqa: E402
from .serving.server import Server, serve  # noqa: E402
from .loop.threadpool import run_in_thread  # noqa: E402

__all__ = [
    "serve", "Server", "Config", "ConfigError", "GreenserveError", "__version__",
    "sleep", "spawn", "Task", "TaskKilled", "Event", "Queue", "Timeout", "run_in_thread",
]
