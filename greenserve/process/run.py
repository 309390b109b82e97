"""The command line's way in: serve in this process, or fork workers under the supervisor."""

from __future__ import annotations

import os
from typing import Callable, Optional

from ..config.options import Config
from ..errors import ConfigError
from ..serving.sockets import open_listeners
from ..serving.systemd import Notifier
from .supervisor import Supervisor
from .worker import App, log_listening, preflight, run_in_process


def run(config: Config, load: Callable[[], App], app_name: str,
        reread: Optional[Callable[[], Config]] = None) -> int:
    """Serve from the command line: in this process, or under the supervisor when
    ``config.prefork``, which calls ``reread`` on SIGHUP to read the configuration again. With
    ``config.preload`` the app is imported here, once, before any listener or worker. Returns
    the exit status. Raises ConfigError (sockets, platform) or AppImportError (in process, or
    with preload)."""
    notifier = Notifier(os.environ)
    if not config.prefork:
        return run_in_process(config, load, app_name, notifier)
    if not hasattr(os, "fork"):
        raise ConfigError("workers", "worker processes need os.fork(), which this system lacks")
    preflight(config)
    if config.preload:
        app = load()
        load = lambda: app  # noqa: E731 - every worker serves the app imported here
    bound = open_listeners(config, os.environ)
    return Supervisor(config, load, bound, notifier, reread).run(
        announce=lambda: log_listening(bound, config, app_name))
