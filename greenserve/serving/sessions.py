"""The server's part in WebSocket sessions (a part of ``Server``): which are open, their
counters, and their close with 1001 when the server stops (each in a greenlet of its own, so
that the drain waits for them within the grace period like any other connection)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

from ..http.websocket import close_going_away
from ..loop.hub import Hub
from ..observe.metrics import MetricsSlot
from .stats import Stats


class WebSocketSessions:
    """The WebSocket hooks of ``http.port.ServerPort``. Never switch."""

    if not TYPE_CHECKING:
        __slots__ = ()
    hub: Hub
    stats: Stats
    metrics: Optional[MetricsSlot]
    websockets: Dict[Any, None]  # open sessions: wsio.WebSocket, rawsock.RawSocket

    def websocket_opened(self, ws: Any) -> None:
        self.websockets[ws] = None
        self.stats.websockets_total += 1
        if self.metrics is not None:
            self.metrics.websocket_opened()

    def websocket_closed(self, ws: Any) -> None:
        if ws in self.websockets:
            del self.websockets[ws]
            if self.metrics is not None:
                self.metrics.websocket_closed()

    def websocket_message(self, incoming: bool) -> None:
        stats = self.stats
        if incoming:
            stats.websocket_messages_in += 1
        else:
            stats.websocket_messages_out += 1
        if self.metrics is not None:
            self.metrics.websocket_message(incoming)

    def _close_websockets(self) -> None:
        """Server stop: every open session gets a close frame with 1001."""
        for ws in list(self.websockets):
            self.hub.spawn(close_going_away, ws)
