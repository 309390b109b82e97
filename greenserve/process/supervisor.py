"""The supervisor: pre-forked worker processes on listeners the parent binds once.

Strategy:
- The parent binds every listener, then forks the workers; no hub exists in the parent, ever
  (DESIGN.md: fork before any hub exists). The parent never imports the app: each worker does,
  so an app that fails to import is reported by the worker, and a reload serves new code.
  (With ``--preload`` the command line imports it before the supervisor starts, and every
  worker, reloads included, is forked with that one app.)
- The parent is a plain loop around a selector holding a wake-up pipe and one pipe per worker.
  Signal handlers only queue the signal number and write a byte to the wake-up pipe; the loop
  acts. Children are forked with every handled signal blocked, so no child ever runs a parent
  handler.
- Workers have stable indices 0..N-1: a replacement reuses the index of the worker it replaces;
  SIGTTIN adds the lowest free index, SIGTTOU retires the highest. A worker that "retires"
  (SIGTTOU, recycled by --max-requests, replaced by a reload) drains and is not replaced; any
  other death is replaced, after a back-off that grows with deaths in a row.
- An app that cannot be imported while no worker serves stops the server (exit 2, one clear
  line) instead of looping; during a reload it only cancels the reload.
- Heartbeats come through the pipes; a worker silent for ``worker_timeout`` gets SIGABRT (its
  stack goes to stderr through faulthandler), then SIGKILL, and is replaced.
- SIGHUP reads the configuration again (reconfig.py): the new generation is forked with it.
- Per-run state that every worker must inherit is created in ONE place, ``_create_run_state``,
  before the first fork.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from ..config.addresses import parse_bind
from ..config.options import Config
from ..observe.endpoint import MetricsEndpoint
from ..observe.metrics import MetricsStore
from ..serving.sockets import BoundSockets
from ..serving.systemd import Notifier
from .pool import Pool, WorkerProc, read_nowait
from .reconfig import Reconfig
from .sources import changed_files
from .worker import EXIT_CRASH, App, RunState, WorkerInfo, worker_main

log = logging.getLogger("greenserve.error")
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
           signal.SIGTTOU, signal.SIGCHLD)
TICK = 0.5  # longest sleep of the loop: deadlines are checked at least this often
KILL_MARGIN = 5.0  # seconds past graceful_timeout before a draining worker is killed
ABORT_GRACE = 1.0  # seconds for a stuck worker to print its stack before SIGKILL
IMMEDIATE_GRACE = 2.0  # seconds for SIGQUIT to end a worker before SIGKILL
RELOAD_POLL = 1.0  # seconds between checks of the app's source files (--reload)


class Supervisor:
    """Runs the workers until a stop signal. ``run()`` returns the exit status."""

    def __init__(self, config: Config, load: Callable[[], App], bound: BoundSockets,
                 notifier: Notifier, reread: Optional[Callable[[], Config]] = None) -> None:
        self.config = config  # in force; a reload's new workers get ``reconfig.pending``
        self.reconfig = Reconfig(reread)
        self.load = load
        self.bound = bound
        self.notifier = notifier
        self.pool = Pool(config.workers)
        self.workers = self.pool.workers  # by pid
        self.generation = 0
        self.reload_generation: Optional[int] = None  # the generation being started
        self.stopping: Optional[str] = None  # "graceful" or "immediate"
        self.fatal: Optional[str] = None
        self.announced_ready = False
        self.watched: Dict[str, int] = {}  # --reload: path -> mtime_ns
        self.next_poll = 0.0
        self._signals: List[int] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._state: Optional[RunState] = None
        self._announce: Callable[[], None] = lambda: None

    # -- the loop -----------------------------------------------------------------------------

    def run(self, announce: Callable[[], None] = lambda: None) -> int:
        """Fork the workers and supervise them until they are all gone after a stop.
        ``announce`` runs once every first worker has said it is ready (the "listening on"
        lines: a request sent on seeing them is answered at once, and a signal sent on seeing
        them is handled). Returns 0, or 2 when the app cannot be imported."""
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in HANDLED}
        self._announce = announce
        try:
            self._state = self._create_run_state()
            log.info("supervisor %d starting %d workers", os.getpid(), len(self.pool.wanted))
            self._maintain(time.monotonic())  # fork now, not after the loop's first wait
            while not (self.stopping and not self.workers):
                self._wait()
                now = time.monotonic()
                self._handle_signals()
                self._reap(now)
                self._check_deadlines(now)
                self._maintain(now)
                self._poll_sources(now)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._close()
        if self.fatal is not None:
            sys.stderr.write(f"greenserve: error: {self.fatal}\n")
            return 2
        log.info("greenserve stopped")
        return 0

    def _create_run_state(self) -> RunState:
        """The one place for per-run state shared with workers: runs once, before any fork.
        With metrics_bind: a shared-memory block with a slot per live worker (room for twice
        as many as SIGTTIN may ever add: the old workers of a reload drain while the new ones
        serve), summed by an endpoint this process serves. Raises ConfigError."""
        if not self.config.metrics_bind:
            return RunState(self.bound)
        store = MetricsStore.create(2 * self.pool.capacity)
        endpoint = MetricsEndpoint(store.render, parse_bind(self.config.metrics_bind))
        endpoint.start()
        log.info("metrics on %s", endpoint.url)
        return RunState(self.bound, store, endpoint)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # the pipe is full: the loop is awake anyway

    def _wait(self) -> None:
        timeout = TICK
        due = self.pool.next_due()
        if due is not None:
            timeout = min(timeout, max(0.0, due - time.monotonic()))
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                while read_nowait(self._wake_r):
                    pass
            else:
                self._read_worker(key.data)

    def _close(self) -> None:
        self._selector.close()
        for worker in self.workers.values():
            if worker.fd is not None:
                os.close(worker.fd)
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._state is not None:
            self._state.close()  # the metrics endpoint, the listeners
        self.bound.close()

    # -- signals ------------------------------------------------------------------------------

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGCHLD:
                continue  # reaping happens every turn
            log.info("supervisor received %s", signal.Signals(signum).name)
            if signum == signal.SIGQUIT or (signum == signal.SIGINT and self.stopping):
                self._stop("immediate")
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self._stop("graceful")
            elif signum == signal.SIGHUP:
                self._reload_with_new_config()
            elif signum == signal.SIGTTIN and not self.stopping:
                index = self.pool.grow()
                if index is None:
                    log.warning("SIGTTIN ignored: %d workers is the most", self.pool.capacity)
                else:
                    log.info("adding worker %d (now %d)", index, len(self.pool.wanted))
            elif signum == signal.SIGTTOU and not self.stopping:
                self._remove_one()

    def _stop(self, how: str) -> None:
        if self.stopping == "immediate" or self.stopping == how:
            return
        if self.stopping is None:
            self.notifier.notify("STOPPING=1")
            self.bound.close(remove_paths=False)  # the workers close theirs as they stop
        self.stopping = how
        now = time.monotonic()
        if how == "graceful":
            grace = self.config.graceful_timeout + KILL_MARGIN
            sig = signal.SIGTERM
        else:
            grace, sig = IMMEDIATE_GRACE, signal.SIGQUIT
        for worker in self.workers.values():
            self._signal(worker, sig)
            worker.retiring = True
            worker.kill_at = min(worker.kill_at or now + grace, now + grace)
        self.pool.respawn_at.clear()

    def _remove_one(self) -> None:
        index = self.pool.shrink()
        if index is None:
            log.warning("SIGTTOU ignored: one worker is the least")
            return
        log.info("removing worker %d (now %d)", index, len(self.pool.wanted))
        for worker in self.pool.live(index):
            self._retire(worker)

    # -- workers ------------------------------------------------------------------------------

    def _spawn(self, index: int) -> bool:
        """Fork a worker for ``index``. Returns False if the system refused (out of processes
        or memory): the index is tried again a second later."""
        metrics = self._state.metrics if self._state is not None else None
        info = WorkerInfo(index, self.reload_generation or self.generation,
                          metrics.claim() if metrics is not None else None)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            read_fd, write_fd = os.pipe()
        except OSError as exc:
            return self._spawn_failed(info, exc)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            os.close(read_fd)
            os.close(write_fd)
            return self._spawn_failed(info, exc)
        if pid == 0:  # the child: never returns into the supervisor's code
            try:
                os.close(read_fd)
                self._close_in_child()
                assert self._state is not None
                config = self.reconfig.pending or self.config
                worker_main(info, config, self.load, self._state, write_fd)
            finally:
                os._exit(EXIT_CRASH)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # (the child unblocks its own)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        worker = WorkerProc(info, pid, read_fd, time.monotonic())
        self.workers[pid] = worker
        self._selector.register(read_fd, selectors.EVENT_READ, worker)
        log.info("started %r, generation %d", worker, info.generation)
        return True

    def _spawn_failed(self, info: WorkerInfo, exc: OSError) -> bool:
        self._release_slot(info)
        index = info.index
        log.error("cannot start worker %d: %s; trying again in 1 s", index, exc)
        self.pool.respawn_at[index] = time.monotonic() + 1.0
        return False

    def _release_slot(self, info: WorkerInfo) -> None:
        """The worker of ``info`` is gone (or never started): its metrics slot is free."""
        metrics = self._state.metrics if self._state is not None else None
        if metrics is not None and info.metrics_slot is not None:
            metrics.release(info.metrics_slot)

    def _close_in_child(self) -> None:
        """In a new child: drop the supervisor's own descriptors (its copies of the other
        workers' pipes, the wake-up pipe, the selector)."""
        for worker in self.workers.values():
            if worker.fd is not None:
                os.close(worker.fd)
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _signal(self, worker: WorkerProc, sig: int) -> None:
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass  # already gone; reaping will tell

    def _retire(self, worker: WorkerProc) -> None:
        """Ask ``worker`` to drain and go, without a replacement."""
        if not worker.retiring:
            worker.retiring = True
            worker.kill_at = time.monotonic() + self.config.graceful_timeout + KILL_MARGIN
            self._signal(worker, signal.SIGTERM)

    def _maintain(self, now: float) -> None:
        """Start a worker for every wanted index that has none (once its back-off is over)."""
        if self.stopping:
            return
        for index in self.pool.due(now):
            self._spawn(index)

    def _read_worker(self, worker: WorkerProc) -> None:
        assert worker.fd is not None
        try:
            data = os.read(worker.fd, 65536)
        except BlockingIOError:
            return
        if not data:  # the worker closed its end: it has exited or is about to
            self._selector.unregister(worker.fd)
            os.close(worker.fd)
            worker.fd = None
            return
        now = time.monotonic()
        worker.last_beat = now
        *lines, worker.buffer = (worker.buffer + data).split(b"\n")
        for line in lines:
            self._message(worker, line.decode("utf-8", "replace"), now)

    def _message(self, worker: WorkerProc, line: str, now: float) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "ready":
            worker.ready_at = now
            log.info("%r is ready", worker)
            self._check_ready()
        elif kind == "app-error":
            worker.app_error = rest
        elif kind == "recycle":
            log.info("%r is recycling itself (--max-requests)", worker)
            worker.retiring = True
            worker.kill_at = now + self.config.graceful_timeout + KILL_MARGIN
        elif kind == "watch":
            mtime, _, path = rest.partition(" ")
            self.watched.setdefault(path, int(mtime) if mtime.isdigit() else 0)

    def _check_ready(self) -> None:
        """Tell systemd when every wanted index first has a ready worker; finish a reload
        when every index has a ready worker of the new generation."""
        generation = self.reload_generation
        if generation is not None and self.pool.all_ready(generation):
            for worker in list(self.workers.values()):
                if worker.info.generation < generation:
                    self._retire(worker)
            self.generation, self.reload_generation = generation, None
            self.config = self.reconfig.done(self.config)
            log.info("reload done: generation %d serves", generation)
            self.notifier.notify("READY=1")
        elif not self.announced_ready and self.pool.all_ready():
            self.announced_ready = True
            log.info("all %d workers are ready", len(self.pool.wanted))
            self._announce()
            self.notifier.notify("READY=1")

    # -- deaths and deadlines -----------------------------------------------------------------

    def _reap(self, now: float) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            if worker.fd is not None:
                self._read_worker(worker)  # the last words, if any
            if worker.fd is not None:
                self._selector.unregister(worker.fd)
                os.close(worker.fd)
                worker.fd = None
            self._release_slot(worker.info)
            self._worker_gone(worker, os.waitstatus_to_exitcode(status), now)

    def _worker_gone(self, worker: WorkerProc, code: int, now: float) -> None:
        how = f"exited with status {code}" if code >= 0 else f"was killed by signal {-code}"
        if worker.retiring or self.stopping:
            log.info("%r %s", worker, how)
            return
        log.error("%r %s unexpectedly", worker, how)
        if worker.info.generation == self.reload_generation:
            self._abort_reload(worker.app_error or f"a new worker {how}")
            return
        if worker.app_error is not None and not self.pool.serving():
            self.fatal = worker.app_error
            self._stop("graceful")
            return
        if worker.app_error is not None:
            log.error("%r cannot load the app: %s", worker, worker.app_error)
        delay = self.pool.died(worker, now)
        if delay > 0:
            log.warning("replacing worker %d in %.1f s (%d deaths in a row)", worker.info.index,
                        delay, self.pool.deaths[worker.info.index])

    def _check_deadlines(self, now: float) -> None:
        timeout = self.config.worker_timeout
        for worker in list(self.workers.values()):
            if worker.kill_at is not None and now >= worker.kill_at:
                log.error("%r did not stop in time: killing it", worker)
                self._signal(worker, signal.SIGKILL)
                worker.kill_at = None
            elif timeout > 0 and not worker.aborted and now - worker.last_beat > timeout:
                state = "its event loop has not turned" if worker.ready_at else "it has not started"
                log.error("%r is stuck: %s for %.1f s (--worker-timeout); aborting it, its "
                          "stack follows", worker, state, now - worker.last_beat)
                worker.aborted = True
                worker.kill_at = now + ABORT_GRACE
                self._signal(worker, signal.SIGABRT)

    # -- reloading ----------------------------------------------------------------------------

    def _reload_with_new_config(self) -> None:
        """SIGHUP: read the configuration again, then reload unless it is invalid."""
        if self.stopping or self.reload_generation is not None:
            self._begin_reload("SIGHUP")  # which says why it does nothing
        elif self.reconfig.begin(self.config, self.pool):
            self._begin_reload("SIGHUP")

    def _begin_reload(self, why: str) -> None:
        if self.stopping:
            return
        if self.reload_generation is not None:
            log.info("%s: a reload is already under way", why)
            return
        self.reload_generation = self.generation + 1
        self.notifier.notify("RELOADING=1")
        log.info("%s: reloading, starting %d new workers", why, len(self.pool.wanted))
        for index in sorted(self.pool.wanted):
            self.pool.respawn_at.pop(index, None)
            if not self._spawn(index):
                self._abort_reload("a new worker could not be started")
                return

    def _abort_reload(self, reason: str) -> None:
        generation = self.reload_generation
        self.reload_generation = None
        self.reconfig.abandon(self.pool)
        for worker in list(self.workers.values()):
            if worker.info.generation == generation:
                self._retire(worker)
        log.error("reload failed (%s); the running workers keep serving", reason)
        self.notifier.notify("READY=1")

    def _poll_sources(self, now: float) -> None:
        """--reload: reload when a source file the workers imported has changed."""
        if not self.config.reload or now < self.next_poll or self.stopping:
            return
        if self.reload_generation is not None:
            return  # look again once this reload is done
        self.next_poll = now + RELOAD_POLL
        changed = changed_files(self.watched)
        if changed:
            self._begin_reload(f"{changed[0]} changed")
