"""The counters behind ``Server.statistics()``."""

from __future__ import annotations


class Stats:
    """Counters for ``Server.statistics()``."""

    __slots__ = ("connections_total", "requests_total", "in_flight", "by_class", "protocol_errors",
                 "accept_errors", "slow_readers")

    def __init__(self) -> None:
        self.connections_total = 0
        self.requests_total = 0
        self.in_flight = 0
        self.by_class = [0] * 6
        self.protocol_errors = 0
        self.accept_errors = 0
        self.slow_readers = 0  # connections closed for taking a response under min_send_rate
