"""SIGHUP: the configuration read again, and what a reload can make of it.

Strategy:
- The command line hands the supervisor a callable that builds the configuration exactly as at
  start: the ``--config`` file and the ``GREENSERVE_*`` environment are read again, and the
  flags of the command line still win over both. (A running process's environment changes only
  from within it, so in practice a reload picks up a changed file.)
- A valid configuration is *pending* while the reload it started is under way: the workers of
  the new generation are forked with it, and it is in force once they all are ready. A reload
  that fails forgets it, and the pool's size goes back to what it was.
- Options the supervisor acted on before its first fork cannot change without a restart
  (``RESTART_ONLY``: the listeners and how they were bound, the metrics endpoint, the patched
  standard library, the app imported by ``--preload``): they keep their running values, and one
  log line names those that differ.
- A configuration that cannot be read, or is invalid (including what every worker would fail
  on: the TLS files, the access log file), changes nothing; one log line says why, and the
  running workers keep serving.
- ``workers``: when the value read differs from the one in force, the new generation has that
  many workers (0..N-1; changes made by SIGTTIN/SIGTTOU are dropped). When it is the same, the
  pool keeps its current size, SIGTTIN/SIGTTOU changes included.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Optional

from ..config.options import Config
from ..errors import ConfigError
from ..observe.logs import configure_logging
from .pool import Pool
from .worker import preflight

log = logging.getLogger("greenserve.error")
RESTART_ONLY = ("bind", "proxy_protocol_bind", "backlog", "umask", "reuse_port", "metrics_bind",
                "patch", "preload")


def reread(running: Config, read: Callable[[], Config]) -> Config:
    """Read the configuration again with ``read``. Returns it, each ``RESTART_ONLY`` option at
    its running value (those that differ are logged); a changed log level or log configuration
    is applied to this process, whose workers inherit it. Raises ConfigError when the
    configuration cannot be read, is invalid, or names files a worker cannot use."""
    fresh = read()
    preflight(fresh)
    kept = {name: getattr(running, name) for name in RESTART_ONLY
            if getattr(fresh, name) != getattr(running, name)}
    if kept:
        fresh = dataclasses.replace(fresh, **kept)
    if (fresh.log_level, fresh.log_config) != (running.log_level, running.log_config):
        configure_logging(fresh.log_level, fresh.log_config)
    if kept:
        log.warning("SIGHUP: %s changed, but cannot change without a restart; the running "
                    "values stay", ", ".join(kept))
    return fresh


def resize(pool: Pool, count: int) -> int:
    """Make ``pool`` want ``count`` workers, at indices 0..count-1 (at most its capacity).
    Returns how many it wants."""
    while len(pool.wanted) > count and pool.shrink() is not None:
        pass
    while len(pool.wanted) < count and pool.grow() is not None:
        pass
    return len(pool.wanted)


class Reconfig:
    """The configuration of the reload under way, if SIGHUP read one."""

    def __init__(self, read: Optional[Callable[[], Config]]) -> None:
        self.read = read
        self.pending: Optional[Config] = None
        self._size_before = 0

    def begin(self, running: Config, pool: Pool) -> bool:
        """SIGHUP, before a reload starts: read the configuration again; a valid one becomes
        pending and sets the pool's size. Returns False when it is invalid (logged): then no
        reload should start."""
        if self.read is None:
            return True
        try:
            fresh = reread(running, self.read)
        except ConfigError as exc:
            log.error("SIGHUP: the configuration is not valid, so nothing is reloaded and the "
                      "running workers keep serving: %s", exc)
            return False
        self.pending = fresh
        self._size_before = len(pool.wanted)
        if fresh.workers != running.workers and resize(pool, fresh.workers) != fresh.workers:
            log.warning("SIGHUP: workers = %d is more than the %d this run can have; starting "
                        "%d", fresh.workers, pool.capacity, len(pool.wanted))
        if fresh.preload:
            log.info("SIGHUP with --preload: the new workers are forked from the app imported at "
                     "start (new app code needs a restart)")
        return True

    def done(self, running: Config) -> Config:
        """The reload has finished. Returns the configuration now in force."""
        fresh, self.pending = self.pending, None
        return fresh if fresh is not None else running

    def abandon(self, pool: Pool) -> None:
        """The reload failed: forget its configuration and put the pool's size back."""
        if self.pending is not None:
            self.pending = None
            resize(pool, self._size_before)
