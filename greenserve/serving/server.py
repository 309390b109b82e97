"""Server: listeners, idle connections, graceful stop and statistics (the accept is accepting.py).

Strategy:
- Accepting is ``Acceptor``'s (accepting.py, compiled): one accept of a turn empties the listen
  queue; at ``max_connections`` the listener waits until a connection closes.
- Idle connections (new, or kept alive between requests) live in two insertion-ordered dicts,
  one per timeout, so the oldest is always first: a periodic sweep closes expired ones in O(1)
  per connection, with no timer per request.
- ``stop(grace)`` may be called from any thread: it closes the listeners, lets in-flight
  requests finish (their responses say ``Connection: close``) until ``grace`` runs out, then
  cancels what is left. An idle connection (new, or kept alive) may have a request on its way,
  so it is kept until that request comes (answered with ``Connection: close``) or until it has
  been quiet for ``DRAIN_QUIET`` seconds: closing it at once would reset a client that is
  already sending (RFC 9112 9.3.1), and most clients do not retry.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Callable, Dict, List, Optional

from .._version import __version__
from ..config.addresses import BindAddress, parse_bind
from ..config.options import Config
from ..errors import ConfigError
from ..http.connection import DRAIN_QUIET, Connection
from ..http.preamble import connection_factory
from ..http.tls import make_context
from ..http.websocket import close_going_away
from ..http.wsgi import base_environ
from ..loop.gsocket import GreenSocket
from ..loop.watchdog import Watchdog
from ..observe.endpoint import MetricsEndpoint
from ..observe.logs import AccessLog
from ..observe.metrics import MetricsStore
from ..patch import apply as apply_patch
from .accepting import NODELAY_INHERITED, Acceptor
from .listeners import Listener, address_of, bind_listener

log = logging.getLogger("greenserve.error")
DRAIN_SWEEP = 0.05  # seconds between sweeps of idle connections while draining
SOFTWARE = f"greenserve/{__version__}"


class Server(Acceptor):
    """A WSGI server on one hub. ``start()`` binds; ``serve_forever()`` runs; ``stop()`` ends.
    It is one process: an option only a supervisor acts on (``workers``...) raises ConfigError."""

    def __init__(self, app: Callable[..., Any], config: Optional[Config] = None, **options: Any) -> None:
        if config is None:
            config = Config.with_options(options)
        elif options:
            config = Config.with_options({**_as_dict(config), **options})
        refused = config.process_options()  # the supervisor's options: a Server is one process
        if refused:
            raise ConfigError(refused[0], "Server runs in one process; use the greenserve "
                              "command line for worker processes")
        super().__init__(app, config)  # hub, limits, counters...: what connections use
        self.listeners: List[Listener] = []
        self.multiprocess = False  # wsgi.multiprocess: a supervisor's worker sets it
        self._started = False
        self._serving = threading.Event()
        self._stopped = threading.Event()
        self._thread: Optional[int] = None
        # metrics: a slot of a shared store set before start() (a supervisor's worker), or one
        # start() makes when metrics_bind is set. See metrics.py.
        self._metrics_endpoint: Optional[MetricsEndpoint] = None
        self._access = AccessLog("")
        self.watchdog = (Watchdog(self.hub, config.block_threshold, self._blocked_loop)
                         if config.block_threshold else None)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, sockets: Optional[List[socket.socket]] = None,
              proxy_sockets: Optional[List[socket.socket]] = None) -> None:
        """Bind every listener (or adopt ``sockets``, and ``proxy_sockets`` as listeners whose
        connections begin with a PROXY header: a supervisor binds both in its parent; adopted
        sockets stay the caller's, who removes their unix paths). After it, ``addresses`` is
        known. Raises ConfigError."""
        if self._started:
            return
        config = self.config
        if config.patch:
            apply_patch()  # late for names the app bound at import; the CLI applies it first
        context = make_context(config.certfile, config.keyfile, config.ca_certs,
                               config.cert_reqs, config.ciphers)
        try:
            if sockets is not None:
                for sock in sockets:
                    sock.setblocking(False)
                    self.listeners.append(Listener(sock, address_of(sock)))
            else:
                for text in self.config.bind:
                    self.listeners.append(bind_listener(parse_bind(text), config))
            for text in config.proxy_protocol_bind if sockets is None else ():
                listener = bind_listener(parse_bind(text), config)
                listener.proxy_protocol = True
                self.listeners.append(listener)
            for sock in proxy_sockets or ():
                sock.setblocking(False)
                listener = Listener(sock, address_of(sock))
                listener.proxy_protocol = True
                self.listeners.append(listener)
            for listener in self.listeners:
                listener.tls = context is not None
                listener.make_connection = connection_factory(context, listener.proxy_protocol)
            self._access = AccessLog(config.access_log, config.access_log_format,
                                     from_config=bool(config.log_config))
            self.access_log = self._access if self._access.enabled else None
            self._start_metrics()
        except BaseException:
            self._release_start()
            raise
        self._started = True

    def _release_start(self) -> None:
        """Undo a ``start()`` that failed half-way: nothing it opened is left behind."""
        for listener in self.listeners:
            listener.sock.close()
        self.listeners = []
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.close()
            self._metrics_endpoint = None
        self._access.close()
        self._access = AccessLog("")
        self.access_log = None

    def _start_metrics(self) -> None:
        """With metrics_bind and no slot given: a one-slot store, served from a thread."""
        if not self.config.metrics_bind or self.metrics is not None:
            return
        store = MetricsStore.create(1)
        endpoint = MetricsEndpoint(store.render, parse_bind(self.config.metrics_bind))
        self.metrics = store.slot(0)
        endpoint.start()
        self._metrics_endpoint = endpoint
        log.info("metrics on %s", endpoint.url)

    @property
    def metrics_url(self) -> Optional[str]:
        """Where this server's own metrics endpoint answers (None: it serves none)."""
        return self._metrics_endpoint.url if self._metrics_endpoint is not None else None

    @property
    def addresses(self) -> List[Any]:
        """The bound addresses: (host, port) tuples, or paths for unix sockets."""
        return [listener.sock.getsockname() for listener in self.listeners]

    @property
    def urls(self) -> List[str]:
        return [listener.url for listener in self.listeners]

    def serve_forever(self) -> None:
        """Serve until ``stop()``. Blocks the calling thread; its hub lives in this thread."""
        self.start()
        self._thread = threading.get_ident()
        hub = self.hub
        for listener in self.listeners:
            listener.gsock = GreenSocket(listener.sock, hub)
            listener.environ = self._listener_environ(listener)
            if listener.tcp and NODELAY_INHERITED:
                # Accepted sockets inherit TCP_NODELAY from the listener on Linux: one
                # setsockopt here instead of one per connection.
                listener.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hub.call_soon(self.watch_listener, listener)
        hub.call_soon(self._serving.set)
        hub.call_soon(self._schedule_sweep)
        hub.call_soon(self._tick_date)
        if self.watchdog is not None:
            hub.call_soon(self.watchdog.start)
        try:
            hub.run()
        finally:
            if self.watchdog is not None:
                self.watchdog.stop()
            self._close_everything()
            self._stopped.set()

    def wait_serving(self, timeout: Optional[float] = None) -> bool:
        """Block until the server accepts connections. Returns False on timeout."""
        return self._serving.wait(timeout)

    def stop(self, grace: Optional[float] = None) -> None:
        """Stop gracefully; safe from any thread. From another thread, returns once stopped.
        ``grace`` defaults to the graceful_timeout option."""
        grace = self.config.graceful_timeout if grace is None else grace
        if not self._started or self._stopped.is_set():
            return
        self.hub.call_soon_threadsafe(self._begin_stop, grace)
        if self._thread is not None and threading.get_ident() != self._thread:
            self._stopped.wait()

    def _begin_stop(self, grace: float) -> None:
        if self.draining:
            return
        self.draining = True
        for listener in self.listeners:
            self._close_listener(listener)
        # The next request of an idle connection, or a new one's first, may be on its way:
        # answer it, with Connection: close, unless it is not there within DRAIN_QUIET.
        cutoff = self.hub.time() + min(grace, DRAIN_QUIET)
        for conn in self.idle_connections():
            conn.deadline = min(conn.deadline, cutoff)
        self._close_websockets()
        self.hub.spawn(self._drain, self.hub.time() + grace)

    def _drain(self, deadline: float) -> None:
        hub = self.hub
        while self.connections and hub.time() < deadline:
            hub.sleep(min(0.01, max(0.0, deadline - hub.time())))
        for conn in list(self.connections):
            if conn.glet is not None and not conn.glet.dead:
                hub.kill(conn.glet)
            else:
                conn.close_idle()
        rounds = 0
        while self.connections and rounds < 100:
            hub.sleep(0.001)
            rounds += 1
        hub.stop()

    def _close_everything(self) -> None:
        for listener in self.listeners:
            self._close_listener(listener)
        self.paused = []
        for conn in list(self.connections):
            conn.closed = True  # a greenlet of it that still runs will not count it again
            conn.gsock.sock.close()
            self.connection_closed(conn)  # and the open-connections gauge goes down
        self.hub.close()
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.close()
        self._access.close()

    def _close_listener(self, listener: Listener) -> None:
        if listener.gsock is not None:
            listener.gsock.close()
        else:
            listener.sock.close()
        if listener.owned is not None:
            listener.owned.remove()

    # -- accepting ----------------------------------------------------------------------------

    def _listener_environ(self, listener: Listener) -> Dict[str, Any]:
        env = base_environ(
            listener.server_name, listener.server_port,
            url_scheme="https" if listener.tls else self.config.url_scheme,
            script_name=self.config.root_path.rstrip("/"), multiprocess=self.multiprocess,
            software=SOFTWARE,
        )
        env["greenserve.statistics"] = self.statistics  # for /stats pages and health checks
        env["greenserve.sleep"] = self.hub.sleep  # a cooperative sleep(seconds) for pure WSGI apps
        return env

    def _close_websockets(self) -> None:
        """Server stop: every open WebSocket session gets a close frame with 1001 (each in a
        greenlet of its own, so that the drain waits for them within the grace period)."""
        for ws in list(self.websockets):
            self.hub.spawn(close_going_away, ws)

    # -- idle connections ---------------------------------------------------------------------

    def idle_connections(self) -> List[Connection]:
        """Connections that hold no greenlet: waiting for their first or next request."""
        return [conn for conn in self.connections if not conn.active]

    def _blocked_loop(self) -> None:
        """The watchdog saw the loop blocked (called in its thread): count it for metrics."""
        if self.metrics is not None:
            self.metrics.blocked_loop_incident()

    def _tick_date(self) -> None:
        """Keep the Date header current: refresh it at the start of every second."""
        self.hub.call_later(self.dates.refresh() + 0.001, self._tick_date)

    def _schedule_sweep(self) -> None:
        config = self.config
        interval = min(config.header_timeout, config.keepalive_timeout) / 10
        interval = DRAIN_SWEEP if self.draining else min(1.0, max(0.01, interval))
        self.hub.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Close idle connections past their deadline, but not one whose request has arrived
        (it is answered: closing a socket with unread bytes would send a reset). A scan of all
        connections (about a millisecond per 10,000 idle ones) costs less than keeping an
        ordered index up to date on every request."""
        now = self.hub.time()
        for conn in [c for c in self.connections if not c.active and c.deadline <= now]:
            if not conn.gsock.has_input():
                conn.close_idle()
        self._schedule_sweep()

    # -- statistics ---------------------------------------------------------------------------

    def statistics(self) -> Dict[str, Any]:
        """Counters since start: connections, requests, responses by status class."""
        return self.stats.snapshot(
            open=len(self.connections), idle=len(self.idle_connections()),
            draining=self.draining, access_log_dropped=self._access.dropped,
            blocked_loop_incidents=self.watchdog.incidents if self.watchdog else 0,
            websockets_open=len(self.websockets))


def _as_dict(config: Config) -> Dict[str, Any]:
    import dataclasses

    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def serve(app: Callable[..., Any], host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve ``app`` on host:port until interrupted (Ctrl-C stops gracefully). Blocks."""
    from .signals import install_stop_handlers

    if "bind" not in options:
        options["bind"] = (str(BindAddress("tcp", host, port)),)
    server = Server(app, **options)
    server.start()
    for url in server.urls:
        log.info("greenserve listening on %s", url)
    with install_stop_handlers(server):
        server.serve_forever()
