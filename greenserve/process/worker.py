"""Running one Server in this process: in-process mode, or as a worker forked by the supervisor.

Strategy for a worker (everything after ``fork()`` happens in ``worker_main``):
- It starts with no hub (DESIGN.md: fork before any hub exists). It drops the supervisor's
  signal handlers, enables ``faulthandler`` (a supervisor that finds it stuck sends SIGABRT:
  the stack goes to stderr and the worker ends), then imports the app. The supervisor never
  imports the app, so every new worker, and every reload, runs the code now on disk.
- It builds its own Server and hub on the inherited listeners (or, with ``reuse_port``, on
  listeners of its own) and runs until SIGTERM (drain) or SIGQUIT (at once).
- It talks to the supervisor over one pipe, a line per message, each shorter than PIPE_BUF so
  that writes are atomic: ``ready``, ``app-error TEXT``, ``recycle`` (``--max-requests`` reached),
  ``watch MTIME_NS PATH`` (``--reload``), and ``.``, the heartbeat. The heartbeat is sent by a
  hub timer, and a timer fires only when the loop turns: a worker whose loop is stuck goes
  silent. A failed write means the supervisor is gone: the worker drains and exits.
- It leaves with ``os._exit``: the supervisor's atexit handlers and buffers are not its own.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import logging
import os
import random
import signal
import sys
from typing import Any, Callable, Iterator, List, NoReturn, Optional

from .._build import describe
from .._version import __version__
from ..config.options import Config
from ..errors import AppImportError
from ..observe.logs import check_access_log
from ..observe.metrics import MetricsStore
from ..observe.endpoint import MetricsEndpoint
from ..serving.server import Server
from ..serving.signals import SUPERVISOR_SIGNALS, install_stop_handlers
from ..serving.sockets import BoundSockets, open_listeners, reuse_port_listener, socket_url
from ..serving.systemd import Notifier
from ..http.tls import make_context

log = logging.getLogger("greenserve.error")
App = Callable[..., Any]
EXIT_OK, EXIT_CRASH, EXIT_APP_ERROR = 0, 1, 3
_HOOKED = (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT, signal.SIGCHLD) + SUPERVISOR_SIGNALS


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """Who a worker is. ``index`` is stable, 0..N-1: a replacement (after a crash, a timeout,
    ``--max-requests`` or a reload) takes the index of the worker it replaces, and a worker
    added by SIGTTIN takes the lowest free one. ``generation`` counts reloads. ``metrics_slot``
    is its own slot of the metrics store (see metrics.py; None: its requests are not counted),
    never one that a live worker holds, so it differs from the index."""

    index: int
    generation: int
    metrics_slot: Optional[int] = None


_current: Optional[WorkerInfo] = None


class RunState:
    """What every worker inherits from the run, made once by the supervisor before its first
    fork: the listeners, and the shared-memory metrics block (with ``metrics_bind``: a slot for
    each live worker, old and new alike during a reload) whose endpoint the supervisor serves."""

    def __init__(self, bound: BoundSockets, metrics: Optional[MetricsStore] = None,
                 endpoint: Optional[MetricsEndpoint] = None) -> None:
        self.bound = bound
        self.metrics = metrics
        self.endpoint = endpoint

    def close_in_worker(self) -> None:
        """A worker does not serve the metrics endpoint: it drops its copy of that socket."""
        if self.endpoint is not None:
            self.endpoint.close_in_child()

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
        self.bound.close()


def preflight(config: Config) -> None:
    """In the supervisor, before forking: what every worker would fail on at start (the TLS
    files, the access log file), checked once. Raises ConfigError."""
    make_context(config.certfile, config.keyfile, config.ca_certs, config.cert_reqs,
                 config.ciphers)
    check_access_log(config.access_log)


def current_worker() -> Optional[WorkerInfo]:
    """In a worker process, which worker this is; None in-process and in the supervisor."""
    return _current


def run_in_process(config: Config, load: Callable[[], App], app_name: str,
                   notifier: Notifier) -> int:
    """Serve in this process until a stop signal. Returns the exit status. Raises
    AppImportError or ConfigError before serving."""
    app = load()
    bound = open_listeners(config, os.environ)
    try:
        server = Server(app, config.one_process())
        server.start(sockets=bound.sockets, proxy_sockets=bound.proxy_sockets)
        with install_stop_handlers(server, on_stop=lambda: notifier.notify("STOPPING=1")):
            # Announced once a stop signal drains: a signal sent on seeing this line is handled.
            for url in server.urls:
                log.info("greenserve %s listening on %s (app %s; %s)", __version__, url,
                         app_name, describe())
            server.hub.call_soon(notifier.notify, "READY=1")
            server.serve_forever()
    finally:
        bound.close()
    log.info("greenserve stopped")
    return EXIT_OK


def log_listening(bound: BoundSockets, config: Config, app_name: str) -> None:
    scheme = "https" if config.certfile else "http"
    for sock in bound.sockets + bound.proxy_sockets:
        log.info("greenserve %s listening on %s (app %s; %s)", __version__,
                 socket_url(sock, scheme), app_name, describe())


def worker_main(info: WorkerInfo, config: Config, load: Callable[[], App],
                state: RunState, channel_fd: int) -> NoReturn:
    """The whole life of a forked worker; never returns."""
    global _current
    _current = info
    code = EXIT_CRASH
    try:
        state.close_in_worker()
        code = _boot_and_serve(info, config, load, state, _Channel(channel_fd))
    except SystemExit as exc:  # a stop signal during boot
        code = exc.code if isinstance(exc.code, int) else EXIT_CRASH
    except BaseException:  # noqa: B902 - a worker must never return into the supervisor's code
        log.exception("worker %d crashed", info.index)
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    os._exit(code)


def _exit_now(signum: int, frame: Any) -> None:
    raise SystemExit(EXIT_OK)


def _boot_and_serve(info: WorkerInfo, config: Config, load: Callable[[], App],
                    state: RunState, channel: "_Channel") -> int:
    for sig in _HOOKED:  # the supervisor's handlers are not ours
        signal.signal(sig, signal.SIG_DFL)
    for sig in (signal.SIGINT,) + SUPERVISOR_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_now)  # until serving: nothing to drain yet
    signal.signal(signal.SIGQUIT, _exit_now)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # the supervisor forks with them blocked
    try:
        faulthandler.enable(all_threads=True)  # SIGABRT (or a crash) dumps the stacks to stderr
    except (AttributeError, ValueError, OSError, RuntimeError) as exc:  # no usable stderr
        log.warning("no stack dumps for this worker: %s", exc)
    try:
        app = load()
    except AppImportError as exc:
        channel.send("app-error " + str(exc).replace("\n", " ")[:2000])
        return EXIT_APP_ERROR
    server = Server(app, config.one_process())
    server.multiprocess = True
    if state.metrics is not None and info.metrics_slot is not None:
        server.metrics = state.metrics.slot(info.metrics_slot)
    elif state.metrics is not None:
        log.warning("worker %d has no metrics slot (all are held): it is not counted",
                    info.index)
    bound = state.bound
    server.start(sockets=_worker_sockets(bound, config.backlog), proxy_sockets=bound.proxy_sockets)
    if config.reload:
        for line in _watch_lines():
            channel.send(line)
    beat = _Heartbeat(server, channel, config)
    with install_stop_handlers(server, worker=True):
        server.hub.call_soon(beat.start)
        server.serve_forever()
    return EXIT_OK


def _worker_sockets(bound: BoundSockets, backlog: int) -> List[Any]:
    """The listeners this worker accepts on: the inherited ones, or its own SO_REUSEPORT
    listener in place of each socket the supervisor only holds (the held ones are closed)."""
    sockets = []
    for sock, listening in zip(bound.sockets, bound.listening):
        if listening:
            sockets.append(sock)
        else:
            sockets.append(reuse_port_listener(sock, backlog))
            sock.close()
    return sockets


def _watch_lines() -> Iterator[str]:
    """``watch MTIME_NS PATH`` for each source file of the app: modules outside the Python
    installation and outside greenserve itself."""
    skip = {os.path.realpath(p) + os.sep for p in
            (sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(__file__))}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        real = os.path.realpath(path)
        if any(real.startswith(root) for root in skip):
            continue
        try:
            mtime = os.stat(real).st_mtime_ns
        except OSError:
            continue
        line = f"watch {mtime} {real}"
        if len(line.encode()) < 4000:  # one atomic pipe write
            yield line


class _Channel:
    """The write end of the pipe to the supervisor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, line: str) -> bool:
        """Write one message. Returns False if the supervisor is gone."""
        try:
            os.write(self.fd, line.encode("utf-8", "replace") + b"\n")
        except OSError:
            return False
        return True


class _Heartbeat:
    """A hub timer: heartbeats, the ``--max-requests`` check, and noticing an orphaned worker.
    Reading a counter on a timer costs the request path nothing."""

    def __init__(self, server: Server, channel: _Channel, config: Config) -> None:
        self.server = server
        self.channel = channel
        timeout = config.worker_timeout
        self.beat_every = min(1.0, max(0.05, timeout / 4)) if timeout > 0 else 1.0
        jitter = random.randint(0, config.max_requests_jitter)
        self.limit = config.max_requests + jitter if config.max_requests > 0 else 0
        self.interval = min(self.beat_every, 0.1) if self.limit else self.beat_every
        self.next_beat = 0.0
        self.stopping = False

    def start(self) -> None:
        self.channel.send("ready")
        self.tick()

    def tick(self) -> None:
        server = self.server
        now = server.hub.time()
        beat = now >= self.next_beat
        if beat:
            self.next_beat = now + self.beat_every
        if beat and not self.channel.send(".") and not self.stopping:
            log.warning("the supervisor is gone; this worker stops")
            self._stop()
        elif self.limit and not self.stopping and server.stats.requests_total >= self.limit:
            log.info("worker served %d requests (--max-requests): recycling it",
                     server.stats.requests_total)
            self.channel.send("recycle")
            self._stop()
        server.hub.call_later(self.interval, self.tick)

    def _stop(self) -> None:
        self.stopping = True
        self.server.stop()
