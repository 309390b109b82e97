"""Prometheus metrics, counted cheaply and summed across worker processes.

Strategy: the counters live in a block of fixed-layout slots, one slot per worker, in an
anonymous shared ``mmap``. A worker writes only its own slot (a few integer adds into a
memoryview per request, no locks); the endpoint reads every slot and sums them, so the numbers
are the whole server's. The same block works in a single process (one slot, served by a thread).

The interface for a pre-fork supervisor::

    store = MetricsStore.create(slots)         # in the parent, before forking
    number = store.claim()                     # in the parent, before forking a worker
    server.metrics = store.slot(number)        # in that worker, before server.start()
    store.release(number)                      # in the parent, once that worker has exited
    MetricsEndpoint(store.render, address)     # in the parent: serves GET /metrics
                                               # (metrics_endpoint.py)

A slot belongs to one live process at a time: a worker that drains during a reload keeps its
own while its replacement counts in another (two writers of one cell would lose adds, and a
newcomer zeroing the gauges would leave the old one's in-flight requests to go below zero).
A slot is claimed again only after its worker has exited: ``release`` zeroes its gauges
(in-flight requests, open connections: a killed worker leaves some) and keeps its counters,
which the next worker carries on, so counters never go down.
A server given a slot this way serves no endpoint itself; a server with ``metrics_bind`` and no
slot makes a one-slot store and serves it from a thread.

A histogram's ``_count`` is its +Inf bucket, not a cell of its own: a scrape that falls between
a request's adds can then never show them disagreeing.
"""

from __future__ import annotations

import bisect
import mmap
from typing import List, Optional, Set

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds; then +Inf

# Slot layout: int64 cells.
CONNECTIONS_TOTAL, CONNECTIONS_OPEN, IN_FLIGHT, BLOCKED_LOOP, PROTOCOL_ERRORS, ABORTED, \
    TLS_FAILURES, DURATION_SUM_US = range(8)
_BUCKET0 = 8  # the histogram's buckets, not cumulative; the last is (10 s, +Inf)
_STATUS0 = _BUCKET0 + len(BUCKETS) + 1  # cell of status 100; statuses 100..599
WEBSOCKETS_OPEN, WEBSOCKETS_TOTAL, WS_MESSAGES_IN, WS_MESSAGES_OUT = range(
    _STATUS0 + 500, _STATUS0 + 504)
SLOT_CELLS = _STATUS0 + 504
SLOT_BYTES = SLOT_CELLS * 8
_GAUGES = (CONNECTIONS_OPEN, IN_FLIGHT, WEBSOCKETS_OPEN)

_COUNTERS = (
    (CONNECTIONS_TOTAL, "greenserve_connections_total", "Connections accepted."),
    (BLOCKED_LOOP, "greenserve_blocked_loop_incidents_total",
     "Times the event loop was kept from turning for longer than --block-threshold."),
    (PROTOCOL_ERRORS, "greenserve_protocol_errors_total",
     "Requests refused because they broke HTTP/1.1 (also counted by code)."),
    (ABORTED, "greenserve_requests_aborted_total",
     "Requests that ended with no complete response (client gone, aborted response)."),
    (TLS_FAILURES, "greenserve_tls_handshake_failures_total", "TLS handshakes that failed."),
    (WEBSOCKETS_TOTAL, "greenserve_websockets_total", "WebSocket sessions opened (101 sent)."),
    (WS_MESSAGES_IN, "greenserve_websocket_messages_received_total",
     "Whole WebSocket messages received (sessions accepted through greenserve's API)."),
    (WS_MESSAGES_OUT, "greenserve_websocket_messages_sent_total",
     "WebSocket messages sent (sessions accepted through greenserve's API)."),
)
_GAUGE_TEXT = (
    (IN_FLIGHT, "greenserve_requests_in_flight", "Requests being handled now."),
    (CONNECTIONS_OPEN, "greenserve_connections_open", "Client connections open now."),
    (WEBSOCKETS_OPEN, "greenserve_websockets_open", "WebSocket sessions open now."),
)


class MetricsSlot:
    """The counters of one worker. Every method is a few integer adds; none may switch."""

    __slots__ = ("cells",)

    def __init__(self, cells: memoryview) -> None:
        self.cells = cells

    def connection_opened(self) -> None:
        cells = self.cells
        cells[CONNECTIONS_TOTAL] += 1
        cells[CONNECTIONS_OPEN] += 1

    def connection_closed(self) -> None:
        self.cells[CONNECTIONS_OPEN] -= 1

    def request_started(self) -> None:
        self.cells[IN_FLIGHT] += 1

    def request_finished(self, status: int, seconds: float) -> None:
        """A request the app handled: its status (0 if none was sent) and its duration. A
        WebSocket session (101) is counted by status but kept out of the duration histogram,
        which it would drown (it lasts as long as the client stays)."""
        cells = self.cells
        cells[IN_FLIGHT] -= 1
        if 100 <= status < 600:
            cells[_STATUS0 - 100 + status] += 1
        else:
            cells[ABORTED] += 1
        if status != 101:
            cells[_BUCKET0 + bisect.bisect_left(BUCKETS, seconds)] += 1
            cells[DURATION_SUM_US] += int(seconds * 1e6)

    def protocol_error(self, status: int) -> None:
        """A request refused before the app saw it (400, 408, 413, 414, 431...)."""
        cells = self.cells
        cells[PROTOCOL_ERRORS] += 1
        cells[_STATUS0 - 100 + status] += 1

    def blocked_loop_incident(self) -> None:
        """Called by the loop watchdog each time it reports a blocked loop."""
        self.cells[BLOCKED_LOOP] += 1

    def tls_failure(self) -> None:
        self.cells[TLS_FAILURES] += 1

    def websocket_opened(self) -> None:
        cells = self.cells
        cells[WEBSOCKETS_TOTAL] += 1
        cells[WEBSOCKETS_OPEN] += 1

    def websocket_closed(self) -> None:
        self.cells[WEBSOCKETS_OPEN] -= 1

    def websocket_message(self, incoming: bool) -> None:
        self.cells[WS_MESSAGES_IN if incoming else WS_MESSAGES_OUT] += 1


class MetricsStore:
    """Slots of counters in one block of memory (shared with forked children)."""

    def __init__(self, block: mmap.mmap, slots: int) -> None:
        self._block = block
        self._cells = memoryview(block).cast("q")
        self.slots = slots
        self._claimed: Set[int] = set()  # the parent's bookkeeping (claim, release)

    @classmethod
    def create(cls, slots: int) -> "MetricsStore":
        """Make a store of ``slots`` zeroed slots in anonymous shared memory (it stays shared
        with processes forked afterwards)."""
        if slots < 1:
            raise ValueError("a metrics store needs at least one slot")
        return cls(mmap.mmap(-1, slots * SLOT_BYTES), slots)

    def slot(self, index: int) -> MetricsSlot:
        """The writer for slot ``index``, its gauges zeroed (a new worker starts with no
        requests or connections; the counters carry on). Raises IndexError."""
        if not 0 <= index < self.slots:
            raise IndexError(f"no metrics slot {index} (the store has {self.slots})")
        cells = self._cells[index * SLOT_CELLS:(index + 1) * SLOT_CELLS]
        for cell in _GAUGES:
            cells[cell] = 0
        return MetricsSlot(cells)

    def claim(self) -> Optional[int]:
        """The lowest slot that no live worker holds, now held for a new one; None if every
        slot is held. Called in the parent only."""
        for number in range(self.slots):
            if number not in self._claimed:
                self._claimed.add(number)
                return number
        return None

    def release(self, number: int) -> None:
        """The worker that held slot ``number`` has exited: zero its gauges, keep its
        counters, and let a later worker claim it. Called in the parent only."""
        self._claimed.discard(number)
        cells = self._cells[number * SLOT_CELLS:(number + 1) * SLOT_CELLS]
        for cell in _GAUGES:
            cells[cell] = 0

    def totals(self) -> List[int]:
        """Every cell summed over the slots."""
        cells = self._cells
        return [sum(cells[i::SLOT_CELLS]) for i in range(SLOT_CELLS)]

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4) of the summed slots."""
        return render(self.totals())


def render(total: List[int]) -> str:
    """The Prometheus text exposition (format 0.0.4) of a list of summed cells. Never
    switches."""
    out: List[str] = []
    for cell, name, text in _COUNTERS:
        out += [f"# HELP {name} {text}", f"# TYPE {name} counter", f"{name} {total[cell]}"]
    for cell, name, text in _GAUGE_TEXT:
        out += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {total[cell]}"]
    name = "greenserve_requests_total"
    out += [f"# HELP {name} Responses sent, by status code.", f"# TYPE {name} counter"]
    for status in range(100, 600):
        count = total[_STATUS0 - 100 + status]
        if count:
            out.append(f'{name}{{code="{status}"}} {count}')
    name = "greenserve_request_duration_seconds"
    out += [f"# HELP {name} Time from the start of a request head to the end of its response.",
            f"# TYPE {name} histogram"]
    cumulative = 0
    for i, bound in enumerate(BUCKETS + (float("inf"),)):
        cumulative += total[_BUCKET0 + i]
        le = "+Inf" if i == len(BUCKETS) else repr(bound)
        out.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
    out.append(f"{name}_sum {total[DURATION_SUM_US] / 1e6}")
    out.append(f"{name}_count {cumulative}")  # the +Inf bucket, by definition
    return "\n".join(out) + "\n"
