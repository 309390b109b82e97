"""Prometheus metrics, counted cheaply and summed across worker processes.

Strategy: the counters live in a block of fixed-layout slots, one slot per worker, in an
anonymous shared ``mmap``. A worker writes only its own slot (a few integer adds into a
memoryview per request, no locks); the endpoint reads every slot and sums them, so the numbers
are the whole server's. The same block works in a single process (one slot, served by a thread).

The interface for a pre-fork supervisor is three calls::

    store = MetricsStore.create(workers)       # in the parent, before forking
    server.metrics = store.slot(index)         # in worker ``index``, before server.start()
    MetricsEndpoint(store.render, address)     # in the parent: serves GET /metrics

A worker that replaces a dead one takes the same index: ``slot()`` zeroes the slot's gauges
(in-flight requests, open connections) but keeps its counters, so counters never go down.
A server given a slot this way serves no endpoint itself; a server with ``metrics_bind`` and no
slot makes a one-slot store and serves it from a thread.
"""

from __future__ import annotations

import bisect
import http.server
import mmap
import socket
import socketserver
import threading
from typing import Any, Callable, List, Optional, Tuple

from .addresses import BindAddress
from .errors import ConfigError

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds; then +Inf

# Slot layout: int64 cells.
CONNECTIONS_TOTAL, CONNECTIONS_OPEN, IN_FLIGHT, BLOCKED_LOOP, PROTOCOL_ERRORS, ABORTED, \
    TLS_FAILURES, DURATION_SUM_US, DURATION_COUNT = range(9)
_BUCKET0 = 9
_STATUS0 = _BUCKET0 + len(BUCKETS) + 1  # cell of status 100; statuses 100..599
SLOT_CELLS = _STATUS0 + 500
SLOT_BYTES = SLOT_CELLS * 8
_GAUGES = (CONNECTIONS_OPEN, IN_FLIGHT)

_COUNTERS = (
    (CONNECTIONS_TOTAL, "greenserve_connections_total", "Connections accepted."),
    (BLOCKED_LOOP, "greenserve_blocked_loop_incidents_total",
     "Times the event loop was kept from turning for longer than --block-threshold."),
    (PROTOCOL_ERRORS, "greenserve_protocol_errors_total",
     "Requests refused because they broke HTTP/1.1 (also counted by code)."),
    (ABORTED, "greenserve_requests_aborted_total",
     "Requests that ended with no complete response (client gone, aborted response)."),
    (TLS_FAILURES, "greenserve_tls_handshake_failures_total", "TLS handshakes that failed."),
)
_GAUGE_TEXT = (
    (IN_FLIGHT, "greenserve_requests_in_flight", "Requests being handled now."),
    (CONNECTIONS_OPEN, "greenserve_connections_open", "Client connections open now."),
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
        """A request the app handled: its status (0 if none was sent) and its duration."""
        cells = self.cells
        cells[IN_FLIGHT] -= 1
        if 100 <= status < 600:
            cells[_STATUS0 - 100 + status] += 1
        else:
            cells[ABORTED] += 1
        cells[_BUCKET0 + bisect.bisect_left(BUCKETS, seconds)] += 1
        cells[DURATION_SUM_US] += int(seconds * 1e6)
        cells[DURATION_COUNT] += 1

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


class MetricsStore:
    """Slots of counters in one block of memory (shared with forked children)."""

    def __init__(self, block: mmap.mmap, slots: int) -> None:
        self._block = block
        self._cells = memoryview(block).cast("q")
        self.slots = slots

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

    def totals(self) -> List[int]:
        """Every cell summed over the slots."""
        cells = self._cells
        return [sum(cells[i::SLOT_CELLS]) for i in range(SLOT_CELLS)]

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4) of the summed slots."""
        return render(self.totals())


def render(total: List[int]) -> str:
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
    out.append(f"{name}_count {total[DURATION_COUNT]}")
    return "\n".join(out) + "\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    render: Callable[[], str]
    timeout = 10  # seconds a scraper may take to send its request
    server_version = "greenserve-metrics"

    def do_GET(self) -> None:  # noqa: N802 - the name http.server looks for
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/metrics":
            self.send_error(404, "metrics are at /metrics")
            return
        body = type(self).render().encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes are not worth a line each


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's getfqdn(): a reverse DNS lookup at startup.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class MetricsEndpoint:
    """An HTTP endpoint serving ``render()`` at /metrics, from a thread with plain blocking
    sockets (it never touches a hub, so it also works in a supervisor's parent)."""

    def __init__(self, render: Callable[[], str], address: BindAddress) -> None:
        handler = type("MetricsHandler", (_Handler,), {"render": staticmethod(render)})
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        server_class = type("MetricsHTTPServer", (_HTTPServer,), {"address_family": family})
        try:
            self._server: _HTTPServer = server_class((address.host, address.port), handler)
        except OSError as exc:
            raise ConfigError("metrics_bind", f"cannot listen on {address}: "
                              f"{exc.strerror or exc}") from None
        self._thread: Optional[threading.Thread] = None

    @property
    def address(self) -> Tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"

    def close_in_child(self) -> None:
        """In a process forked after ``start()``: close this process's copy of the listening
        socket; the serving thread is the parent's and goes on there."""
        self._server.socket.close()

    def start(self) -> None:
        """Serve in a daemon thread until ``close()``."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={
            "poll_interval": 0.1}, name="greenserve-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()
