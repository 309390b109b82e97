"""Independent HTTP/1.1 request parsers used as oracles: h11 (a test dependency) and, where it
is installed, httptools (llhttp). Each adapter parses a whole connection's bytes as a server
would and returns the requests it saw, in the corpus JSON shape, and its error (None if it
accepted everything).

Differences of presentation that carry no meaning are normalised here, once: header values
without surrounding whitespace (RFC 9112 5: OWS is not part of field-value), names lower-case.
Differences of meaning are never normalised; they are recorded per corpus case in
``make_corpus.DIFFERS`` with the RFC rule that decides them.
"""

from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import h11

try:
    import httptools
except ImportError:  # optional test dependency
    httptools = None

Record = Dict[str, object]


class Parsed(NamedTuple):
    requests: List[Record]
    error: Optional[str]  # None: the oracle accepted the whole input


def _pairs(items: List[Tuple[bytes, bytes]]) -> List[List[str]]:
    return [[n.decode("latin-1").lower(), v.strip(b" \t").decode("latin-1")] for n, v in items]


def h11_parse(data: bytes) -> Parsed:
    """Parse ``data`` then end of input with h11 acting as a server."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    requests: List[Record] = []
    current: Record = {}
    body = bytearray()
    state = conn.their_state
    try:
        while True:
            state = conn.their_state
            event = conn.next_event()
            if isinstance(event, h11.Request):
                body = bytearray()
                current = {
                    "method": event.method.decode("latin-1"),
                    "target": event.target.decode("latin-1"),
                    "http_version": event.http_version.decode("latin-1"),
                    "headers": _pairs(list(event.headers)),
                }
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                current["body"] = bytes(body).decode("latin-1")
                current["trailers"] = _pairs(list(event.headers))
                requests.append(current)
            elif event is h11.PAUSED:
                # A non-2xx answer also declines a CONNECT tunnel, so h11 stays in HTTP.
                conn.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE:
                    return Parsed(requests, None)
                conn.start_next_cycle()
            else:  # ConnectionClosed, or NEED_DATA after the end of input
                return Parsed(requests, None if event is not h11.NEED_DATA else "h11: truncated")
    except h11.RemoteProtocolError as exc:
        if state is h11.MUST_CLOSE:
            # h11 refuses bytes after a request that closes the connection; greenserve ignores
            # them. Either way nothing after that request is parsed.
            return Parsed(requests, None)
        return Parsed(requests, f"h11: {exc}")


class _Collector:
    """httptools callbacks: collect requests; header lines after the head are trailers."""

    def __init__(self, parser_box: List[object]) -> None:
        self.box = parser_box
        self.requests: List[Record] = []
        self.started = False
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: List[Tuple[bytes, bytes]] = []
        self.trailers: List[Tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.in_head = True
        self.method = b""
        self.version = ""

    def on_message_begin(self) -> None:
        self._reset()
        self.started = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        (self.headers if self.in_head else self.trailers).append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.box[0]
        self.method = parser.get_method()  # type: ignore[attr-defined]
        self.version = parser.get_http_version()  # type: ignore[attr-defined]

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.started = False
        self.requests.append({
            "method": self.method.decode("latin-1"), "target": self.url.decode("latin-1"),
            "http_version": self.version, "headers": _pairs(self.headers),
            "body": bytes(self.body).decode("latin-1"), "trailers": _pairs(self.trailers),
        })


def httptools_parse(data: bytes) -> Parsed:
    """Parse ``data`` with httptools (llhttp). An input that ends inside a message is an
    error, as for a server that sees the client close there."""
    assert httptools is not None
    box: List[object] = []
    collector = _Collector(box)
    parser = httptools.HttpRequestParser(collector)
    box.append(parser)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        # CONNECT or Upgrade: the bytes after the head belong to another protocol; a server
        # that declines stays in HTTP and closes. Nothing more is parsed either way.
        return Parsed(collector.requests, None)
    except httptools.HttpParserError as exc:
        if str(exc).startswith("Data after `Connection: close`"):
            return Parsed(collector.requests, None)  # as h11's MUST_CLOSE above
        return Parsed(collector.requests, f"httptools: {exc}")
    if collector.started:
        return Parsed(collector.requests, "httptools: truncated")
    return Parsed(collector.requests, None)


def framing_view(record: Record) -> Record:
    """What must agree between two parsers for them to frame a request the same way: the
    record without the differences of meaning every parser is free in and that cannot move a
    message boundary. The version is HTTP/1.x read as 1.1 for x > 1 (RFC 9110 2.5), a
    Transfer-Encoding value's case is not significant (RFC 9112 7), and a trailer field
    repeated with the same value counts once (h11 merges a repeated Content-Length; trailers
    never frame anything)."""
    version = str(record["http_version"])
    headers = _fields(record["headers"])  # type: ignore[arg-type]
    trailers = list(dict.fromkeys(map(tuple, _fields(record["trailers"]))))  # type: ignore[arg-type]
    return {**record, "http_version": "1.0" if version == "1.0" else "1.1", "headers": headers,
            "trailers": trailers}


def _fields(fields: List[List[str]]) -> List[List[str]]:
    return [[n, v.lower() if n == "transfer-encoding" else v] for n, v in fields]


def first_framing_difference(ours: List[Record], theirs: List[Record]) -> Optional[Tuple[Record, Record]]:
    """The first pair of requests both parsers accepted that are not the same request, if any
    (two parsers framing the same bytes differently is what request smuggling is made of)."""
    for a, b in zip(ours, theirs):
        if framing_view(a) != framing_view(b):
            return a, b
    return None


ORACLES: Dict[str, Callable[[bytes], Parsed]] = {"h11": h11_parse}
if httptools is not None:
    ORACLES["httptools"] = httptools_parse
ALL_ORACLES = ("h11", "httptools")
