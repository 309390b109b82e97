"""Hypothesis strategies for HTTP/1.1 requests: valid ones with their expected parse, and
mutations of them. Shared by the property tests, the differential tests and the fuzz harness's
seed corpus.

Valid requests: token methods and names, visible-ASCII / obs-text values with OWS, origin-form,
absolute-form and asterisk-form targets, Content-Length or chunked bodies with extensions and
trailers, pipelined, HTTP/1.0 and 1.1. ``oracle_safe=True`` keeps to what every oracle parser
accepts as valid (registered methods, no HTTP/1.0 persistence), so that any disagreement with
an oracle is a real one.

Mutations are the classic smuggling edits: insert CR / LF / NUL / obs-fold / spaces / signs,
repeat a framing header, delete or replace a byte, change case, cut the input short.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from hypothesis import strategies as st

from ._driver import Outcome
from .make_corpus import req

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PCHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%"
VCHAR_OBS = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
FRAMING = {b"host", b"content-length", b"transfer-encoding", b"connection", b"expect"}
# Registered methods (RFC 9110 9.3, RFC 5789, RFC 4918): what llhttp knows by name.
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"PROPFIND"]
Pairs = List[Tuple[bytes, bytes]]
Case = Tuple[bytes, List[Dict[str, object]]]

tokens = st.text(TCHARS, min_size=1, max_size=12).map(str.encode)
names = tokens.filter(lambda n: n.lower() not in FRAMING)
ows = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t "])
# llhttp refuses "Transfer-Encoding: chunked<HTAB>" (corpus case te-chunked-trailing-htab).
oracle_trailing_ows = st.sampled_from([b"", b" ", b"  "])
words = st.binary(min_size=1, max_size=8).map(lambda b: bytes(VCHAR_OBS[c % len(VCHAR_OBS)] for c in b))
values = st.lists(st.tuples(words, st.sampled_from([b" ", b"\t", b"  ", b" \t"])), max_size=4).map(
    lambda parts: b"".join(w + s for w, s in parts).rstrip(b" \t"))
segments = st.text(PCHARS, max_size=10).map(str.encode)
origin_targets = st.builds(
    lambda segs, query: b"/" + b"/".join(segs) + (b"?" + query if query is not None else b""),
    st.lists(segments, max_size=4), st.none() | segments)
hosts = st.sampled_from([b"example.com", b"a:8080", b"[::1]", b"10.0.0.1:80", b"x.y-z_~"])
absolute_targets = st.builds(
    lambda scheme, host, path: scheme + b"://" + host + path,
    st.sampled_from([b"http", b"https", b"HTTP"]), hosts, st.just(b"") | origin_targets)
quoted = st.binary(max_size=6).map(
    lambda b: b'"' + b"".join(b"\\" + bytes([0x21 + c % 0x5E]) if c % 3 == 0
                             else bytes([0x23 + c % 0x38]) for c in b) + b'"')
extensions = st.lists(st.tuples(tokens, st.none() | tokens | quoted), max_size=2).map(
    lambda items: b"".join(b";" + n + (b"" if v is None else b"=" + v) for n, v in items))


@st.composite
def chunked_bodies(draw: st.DrawFn) -> Tuple[bytes, bytes, Pairs]:
    """(wire bytes, decoded body, trailers)."""
    chunks = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=4))
    wire = b""
    for chunk in chunks:
        size = draw(st.sampled_from([b"%x", b"%X", b"00%x"])) % len(chunk)
        wire += size + draw(extensions) + b"\r\n" + chunk + b"\r\n"
    wire += draw(st.sampled_from([b"0", b"000"])) + draw(extensions) + b"\r\n"
    trailers = draw(st.lists(st.tuples(names, values), max_size=3))
    for name, value in trailers:
        wire += name + b":" + draw(ows) + value + draw(ows) + b"\r\n"
    return wire + b"\r\n", b"".join(chunks), [(n.lower(), v) for n, v in trailers]


def _method_and_target(draw: st.DrawFn, oracle_safe: bool) -> Tuple[bytes, bytes]:
    method = draw(st.sampled_from(METHODS) if oracle_safe else tokens.filter(lambda m: m != b"CONNECT"))
    form = draw(st.sampled_from(["origin"] * 6 + ["absolute", "asterisk"]))
    if form == "absolute":
        return method, draw(absolute_targets)
    if form == "asterisk":
        return b"OPTIONS", b"*"
    return method, draw(origin_targets)


@st.composite
def requests(draw: st.DrawFn, last: bool, oracle_safe: bool = False) -> Tuple[bytes, Dict[str, object]]:
    """One valid request: (wire bytes, expected record). ``last``: may end the connection."""
    method, target = _method_and_target(draw, oracle_safe)
    http10 = draw(st.booleans()) and (last or not oracle_safe)
    fields: Pairs = []
    if not http10 or draw(st.booleans()):
        fields.append((b"Host", draw(st.sampled_from([b"example.com", b"a:8080", b"[::1]", b""]))))
    if http10 and not last:
        fields.append((b"Connection", b"keep-alive"))
    fields += draw(st.lists(st.tuples(names, values), max_size=5))
    body = b""
    trailers: Pairs = []
    kind = draw(st.sampled_from(["none", "length", "chunked"] if not http10 else ["none", "length"]))
    if kind == "length":
        body = draw(st.binary(max_size=60))
        fields.append((b"Content-Length", b"%d" % len(body)))
        wire_body = body
    elif kind == "chunked":
        fields.append((b"Transfer-Encoding", b"chunked"))
        wire_body, body, trailers = draw(chunked_bodies())
    else:
        wire_body = b""
    draw(st.randoms()).shuffle(fields)
    head = method + b" " + target + b" HTTP/" + (b"1.0" if http10 else b"1.1") + b"\r\n"
    trailing = oracle_trailing_ows if oracle_safe else ows
    for name, value in fields:
        head += name + b":" + draw(ows) + value + draw(trailing) + b"\r\n"
    expected = req(method, target, [(n.lower(), v) for n, v in fields], body,
                   b"1.0" if http10 else b"1.1", trailers)
    return head + b"\r\n" + wire_body, expected


@st.composite
def connections(draw: st.DrawFn, oracle_safe: bool = False) -> Case:
    """Up to three pipelined valid requests: (wire bytes, expected records)."""
    count = draw(st.integers(1, 3))
    pairs = [draw(requests(last=i == count - 1, oracle_safe=oracle_safe)) for i in range(count)]
    return b"".join(w for w, _ in pairs), [e for _, e in pairs]


SNIPPETS = [
    b"\r", b"\n", b"\x00", b" :", b"\t:", b"\r\n ", b"\r\n\t", b"\r\nContent-Length: 1\r\n",
    b"\r\nContent-Length: 0\r\n", b"\r\nTransfer-Encoding: chunked\r\n", b"\r\nHost: b\r\n",
    b"\x7f", b"\xff", b" ", b"\t", b"\r\n\r\n", b"\n\n", b";", b"0\r\n\r\n", b"\x0b",
    b"+", b"-", b"0x", b"0", b"\"", b",", b"\\", b"#", b"@", b"\x1b", b"\x0c", b"\r\n\r\nGET / HTTP/1.1\r\n",
    b"\r\nTransfer-Encoding: chunked, chunked\r\n", b"\r\nTransfer-Encoding: identity\r\n",
    b"\r\nContent-Length: 1, 1\r\n", b"\r\nExpect: 100-continue\r\n", b"\r\nConnection: close\r\n",
    b"\r\nTransfer-Encoding:\x0bchunked\r\n", b"\r\nContent-Length:\x0c1\r\n", b"\r\n:\r\n",
]


def _insert(data: bytes, position: int, snippet: bytes) -> bytes:
    return data[:position] + snippet + data[position:]


def _delete(data: bytes, position: int, length: int) -> bytes:
    return data[:position] + data[position + length % 8:]


def _replace(data: bytes, position: int, byte: int) -> bytes:
    return data[:position] + bytes([byte]) + data[position + 1:]


def _swap_case(data: bytes, position: int, _: int) -> bytes:
    return data[:position] + data[position:position + 1].swapcase() + data[position + 1:]


def _repeat_line(data: bytes, position: int, _: int) -> bytes:
    """Repeat the line that contains ``position`` (a second Host, Content-Length...)."""
    start = data.rfind(b"\n", 0, position) + 1
    end = data.find(b"\n", position)
    if end < 0:
        return data
    return data[:end + 1] + data[start:end + 1] + data[end + 1:]


def _truncate(data: bytes, position: int, _: int) -> bytes:
    return data[:position]


EDITS = {"repeat": _repeat_line, "delete": _delete, "replace": _replace, "case": _swap_case,
         "truncate": _truncate}
edits = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(SNIPPETS)),
    st.tuples(st.sampled_from(sorted(EDITS)), st.integers(0, 10**6), st.integers(0, 255)),
)


def mutate(data: bytes, mutations: Sequence[Tuple[str, int, object]]) -> bytes:
    """Apply edits drawn from ``edits`` in order; positions wrap around the current length."""
    for kind, position, arg in mutations:
        position %= len(data) + 1
        if kind == "insert":
            data = _insert(data, position, arg)  # type: ignore[arg-type]
        else:
            data = EDITS[kind](data, position, arg)  # type: ignore[arg-type]
    return data


def cut(data: bytes, points: List[int]) -> List[bytes]:
    """``data`` cut at the given points (taken modulo its length)."""
    if not data:
        return [data]
    edges = [0, *sorted({p % len(data) for p in points} - {0}), len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def summary(outcome: Outcome) -> Tuple[object, ...]:
    """What a run decided: requests, error status, clean close, server close."""
    status = None if outcome.error is None else outcome.error.status_hint
    return outcome.requests, status, outcome.closed, outcome.server_closed
