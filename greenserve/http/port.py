"""The small interface a connection needs of its server (``ServerPort``), so that the HTTP
layer imports nothing above it: ``serve.Server`` satisfies it without naming it."""

from __future__ import annotations

from typing import Any, Callable, Dict, Protocol

from ..config.options import Config
from ..loop.hub import Hub
from .dates import DateCache
from .h1 import Limits, Request
from .proxy import ProxyHeaders


class ServerPort(Protocol):
    """What a connection reads of its server, and the events it reports to it. The hooks run
    in the connection's greenlet and never switch."""

    app: Callable[..., Any]
    config: Config
    hub: Hub
    limits: Limits
    dates: DateCache
    draining: bool
    proxies: ProxyHeaders

    def request_started(self) -> None: ...

    def request_finished(self, conn: Any, request: Request, status: int,
                         environ: Dict[str, Any]) -> None: ...

    def request_rejected(self, conn: Any, status: int, sent: int) -> None: ...

    def protocol_error(self, status: int) -> None: ...

    def connection_closed(self, conn: Any) -> None: ...

    def tls_failed(self) -> None: ...

    def websocket_opened(self, ws: Any) -> None:
        """A WebSocket session began (a ``wsio.WebSocket``, or a ``rawsock.RawSocket`` a
        library took); the server closes it with 1001 when it stops."""

    def websocket_closed(self, ws: Any) -> None:
        """That session is over (reported once)."""

    def websocket_message(self, incoming: bool) -> None:
        """A whole WebSocket message was received (``incoming``) or sent."""

    def send_too_slow(self) -> None:
        """A connection was closed: its client took a response under ``min_send_rate``."""
