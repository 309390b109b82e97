"""Test helpers: drive an H1Connection the way the server's handler does, and split inputs.

``drive`` feeds pieces, calls ``next_event`` until NEED_DATA, records every request (head, body,
trailers), answers each complete request with a minimal 200 and starts the next cycle, and at
the end of input feeds ``b""`` and expects ConnectionClosed. It stops early when the connection
is not reusable (the server would close). A RemoteProtocolError ends the run and is returned.
"""

from __future__ import annotations

import random
import re
from typing import Dict, Iterator, List, NamedTuple, Optional

from greenserve.http.h1 import (
    NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage, H1Connection, Headers, Limits,
    RemoteProtocolError, Request,
)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MODES = ("whole", "lines", "bytes", "random")
SEEDS = range(8)
_LIMIT_KEYS = {
    "line": "max_request_line", "head": "max_header_bytes", "count": "max_header_count",
    "body": "max_body_size",
}


class Outcome(NamedTuple):
    requests: List[Dict[str, object]]  # in the sidecar JSON shape
    error: Optional[RemoteProtocolError]
    closed: bool  # saw ConnectionClosed after the end of input
    server_closed: bool  # stopped because the connection was not reusable
    conn: H1Connection


def limits_for(stem: str) -> Limits:
    """Limits encoded in a corpus name: ``name@body=16,count=4``."""
    if "@" not in stem:
        return Limits()
    values = {}
    for item in stem.split("@", 1)[1].split(","):
        key, _, value = item.partition("=")
        values[_LIMIT_KEYS[key]] = int(value)
    return Limits(**values)


def status_of(stem: str) -> int:
    """The expected status in an invalid corpus name (``400-...``)."""
    m = re.match(r"(4\d\d|5\d\d)-", stem)
    assert m, f"invalid case name without a status: {stem}"
    return int(m.group(1))


def _latin1_pairs(headers: Headers) -> List[List[str]]:
    return [[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers]


def record(request: Request, body: bytes, trailers: Headers) -> Dict[str, object]:
    return {
        "method": request.method.decode("latin-1"), "target": request.target.decode("latin-1"),
        "http_version": request.http_version.decode("latin-1"),
        "headers": _latin1_pairs(request.headers), "body": body.decode("latin-1"),
        "trailers": _latin1_pairs(trailers),
    }


class _Run:
    def __init__(self, limits: Limits) -> None:
        self.conn = H1Connection(limits)
        self.requests: List[Dict[str, object]] = []
        self.head: Optional[Request] = None
        self.body = bytearray()
        self.trailers: Headers = ()
        self.closed = self.server_closed = False

    def pump(self) -> bool:
        """Process events until more data is needed. Returns True when the run is over."""
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                return False
            if event is PAUSED:
                # A request without a body goes straight from Request to PAUSED (no
                # EndOfMessage), so the request is recorded here.
                assert self.head is not None
                self.requests.append(record(self.head, bytes(self.body), self.trailers))
                self.head = None
                conn.send_response(200, b"OK", [(b"Content-Length", b"0")], b"")
                conn.send_eom()
                if not conn.keep_alive:
                    self.server_closed = True
                    return True
                conn.start_next_cycle()
            elif isinstance(event, Request):
                assert self.head is None, "Request before the previous one was complete"
                self.head, self.body, self.trailers = event, bytearray(), ()
                if conn.continue_expected:
                    assert conn.send_continue() == CONTINUE
                    assert conn.send_continue() == b""
            elif isinstance(event, Data):
                assert event.data, "empty Data event"
                self.body += event.data
            elif isinstance(event, EndOfMessage):
                assert self.head is not None
                self.trailers = event.trailers
            elif isinstance(event, ConnectionClosed):
                self.closed = True
                return True
            else:
                raise AssertionError(f"unexpected event {event!r}")


def drive(pieces: List[bytes], limits: Limits = Limits()) -> Outcome:
    """Feed ``pieces`` then end of input, like a server. See the module docstring."""
    run = _Run(limits)
    error = None
    try:
        done = False
        for piece in pieces:
            run.conn.receive_data(piece)
            done = run.pump()
            if done:
                break
        if not done:
            run.conn.receive_data(b"")
            assert run.pump(), "NEED_DATA after the end of input"
    except RemoteProtocolError as exc:
        error = exc
    return Outcome(run.requests, error, run.closed, run.server_closed, run.conn)


def random_split(data: bytes, seed: int) -> List[bytes]:
    rng = random.Random(seed)
    k = rng.randint(0, min(len(data) - 1, 20)) if len(data) > 1 else 0
    cuts = [0, *sorted(rng.sample(range(1, len(data)), k)), len(data)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:])]


def splits(data: bytes, mode: str) -> Iterator[List[bytes]]:
    """Ways to cut ``data`` for ``mode``: whole, after each LF, one byte each, seeded random."""
    if mode == "whole":
        yield [data]
    elif mode == "lines":
        yield [line for line in re.split(b"(?<=\n)", data) if line]
    elif mode == "bytes":
        yield [data[i : i + 1] for i in range(len(data))]
    elif mode == "random":
        for seed in SEEDS:
            yield random_split(data, seed)
    else:
        raise ValueError(mode)
