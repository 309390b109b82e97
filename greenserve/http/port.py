"""The part of a server that its connections use (``ServerPort``), so that the HTTP layer
imports nothing above it: ``serving.Server`` subclasses it.

Strategy: a concrete class, not a protocol. A connection reads its server's hub, limits and
options and reports every request to it; compiled, those reads are field reads and the reports
native calls, where a protocol left them to Python's attribute lookup on the interpreted
``Server`` (about 5,000 instructions a request, a twentieth of a keep-alive request). So what
runs per request lives here, with the counters it keeps (``Stats``); what runs per server
(listeners, accept, stop) stays in ``serving``. The hooks run in the connection's greenlet and
never switch. The access log and the metrics slot are objects of ``observe`` (above this
layer): they are typed Any here and called only when set.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from .._traits import mypyc_attr
from ..config.options import Config
from ..loop.hub import Hub
from .dates import DateCache
from .h1 import Limits, Request
from .proxy import ProxyHeaders


class Stats:
    """The counters behind ``Server.statistics()``."""

    def __init__(self) -> None:
        self.connections_total = 0
        self.requests_total = 0
        self.in_flight = 0
        self.by_class = [0] * 6  # responses by status class; [0]: aborted
        self.protocol_errors = 0
        self.accept_errors = 0
        self.slow_readers = 0  # connections closed for taking a response under min_send_rate
        self.websockets_total = 0
        self.websocket_messages_in = 0
        self.websocket_messages_out = 0

    def snapshot(self, *, open: int, idle: int, draining: bool, access_log_dropped: int,
                 blocked_loop_incidents: int, websockets_open: int) -> Dict[str, Any]:
        """``Server.statistics()``: these counters with what only the server knows."""
        return {
            "connections_total": self.connections_total,
            "connections_open": open,
            "connections_idle": idle,
            "requests_total": self.requests_total,
            "requests_in_flight": self.in_flight,
            "responses": {f"{i}xx": self.by_class[i] for i in range(1, 6)},
            "responses_aborted": self.by_class[0],
            "protocol_errors": self.protocol_errors,
            "accept_errors": self.accept_errors,
            "slow_readers_closed": self.slow_readers,
            "draining": draining,
            "access_log_dropped": access_log_dropped,
            "blocked_loop_incidents": blocked_loop_incidents,
            "websockets_open": websockets_open,
            "websockets_total": self.websockets_total,
            "websocket_messages_in": self.websocket_messages_in,
            "websocket_messages_out": self.websocket_messages_out,
        }


@mypyc_attr(allow_interpreted_subclasses=True)
class ServerPort:
    """What a connection reads of its server, and the events it reports to it."""

    def __init__(self, app: Callable[..., Any], config: Config) -> None:
        self.app = app
        self.config = config
        self.hub = Hub()
        self.limits = Limits(config.max_request_line, config.max_header_bytes,
                             config.max_header_count, config.max_body_size)
        self.dates = DateCache(b"Server: greenserve\r\n")
        self.proxies = ProxyHeaders(config.forwarded_allow_ips, config.proxy_count,
                                    config.forwarded_headers)
        # The options a connection reads on every request, as plain fields.
        self.header_timeout: float = config.header_timeout
        self.keepalive_timeout: float = config.keepalive_timeout
        self.request_timeout: float = config.request_timeout
        self.buffer_chunked_body: bool = config.buffer_chunked_body
        self.max_connections: int = config.max_connections
        self.draining = False
        self.stats = Stats()
        self.connections: Dict[Any, None] = {}
        self.websockets: Dict[Any, None] = {}  # open sessions: wsio.WebSocket, rawsock.RawSocket
        self.paused: List[Any] = []  # listeners not watched while at max_connections
        # Counters for Prometheus: an observe.metrics.MetricsSlot (see metrics.py), or None.
        self.metrics: Optional[Any] = None
        self.access_log: Optional[Any] = None  # an enabled observe.logs.AccessLog, or None

    # -- requests -----------------------------------------------------------------------------

    def request_started(self) -> None:
        stats = self.stats
        stats.requests_total += 1
        stats.in_flight += 1
        if self.metrics is not None:
            self.metrics.request_started()

    def request_finished(self, conn: Any, request: Request, status: int,
                         environ: Dict[str, Any]) -> None:
        stats = self.stats
        stats.in_flight -= 1
        stats.by_class[status // 100 if 100 <= status < 600 else 0] += 1
        access = self.access_log
        if self.metrics is not None or access is not None:
            seconds = self.hub.time() - conn.started
            if self.metrics is not None:
                self.metrics.request_finished(status, seconds)
            if access is not None:
                access.write(environ, request, status, conn.body_sent, seconds)

    def request_rejected(self, conn: Any, status: int, sent: int) -> None:
        """A request refused before the app saw it has been answered (``sent`` body bytes
        went out): its access log line."""
        access = self.access_log
        if access is not None:
            peer = conn.peer
            access.write_rejected(
                peer[0] if peer is not None else "-", conn.base_env.get("wsgi.url_scheme", "http"),
                status, sent, self.hub.time() - conn.started)

    def protocol_error(self, status: int) -> None:
        self.stats.protocol_errors += 1
        self.stats.by_class[status // 100] += 1
        if self.metrics is not None:
            self.metrics.protocol_error(status)

    # -- connections --------------------------------------------------------------------------

    def connection_closed(self, conn: Any) -> None:
        self.connections.pop(conn, None)
        if self.metrics is not None:
            self.metrics.connection_closed()
        if self.paused and len(self.connections) < self.max_connections:
            self.resume_accepting()

    def resume_accepting(self) -> None:
        """Watch the paused listeners again (a connection closed below max_connections)."""
        self.paused = []

    def tls_failed(self) -> None:
        if self.metrics is not None:
            self.metrics.tls_failure()

    def send_too_slow(self) -> None:
        """A connection was closed: its client took a response under ``min_send_rate``."""
        self.stats.slow_readers += 1

    # -- WebSocket sessions -------------------------------------------------------------------

    def websocket_opened(self, ws: Any) -> None:
        """A WebSocket session began (a ``wsio.WebSocket``, or a ``rawsock.RawSocket`` a
        library took); the server closes it with 1001 when it stops."""
        self.websockets[ws] = None
        self.stats.websockets_total += 1
        if self.metrics is not None:
            self.metrics.websocket_opened()

    def websocket_closed(self, ws: Any) -> None:
        """That session is over (reported once)."""
        if ws in self.websockets:
            del self.websockets[ws]
            if self.metrics is not None:
                self.metrics.websocket_closed()

    def websocket_message(self, incoming: bool) -> None:
        """A whole WebSocket message was received (``incoming``) or sent."""
        stats = self.stats
        if incoming:
            stats.websocket_messages_in += 1
        else:
            stats.websocket_messages_out += 1
        if self.metrics is not None:
            self.metrics.websocket_message(incoming)
