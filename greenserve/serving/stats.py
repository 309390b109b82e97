"""The counters behind ``Server.statistics()``."""

from __future__ import annotations

from typing import Any, Dict


class Stats:
    """Counters for ``Server.statistics()``."""

    __slots__ = ("connections_total", "requests_total", "in_flight", "by_class", "protocol_errors",
                 "accept_errors", "slow_readers", "websockets_total", "websocket_messages_in",
                 "websocket_messages_out")

    def __init__(self) -> None:
        self.connections_total = 0
        self.requests_total = 0
        self.in_flight = 0
        self.by_class = [0] * 6
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
