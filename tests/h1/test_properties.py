"""Property tests (hypothesis) for the request parser.

- Generated valid requests (token methods and names, visible-ASCII values with OWS, origin-form
  targets, Content-Length or chunked bodies with extensions and trailers, pipelined, HTTP/1.0 and
  1.1) parse to the expected requests however the bytes are cut.
- Mutations of valid requests (CR, LF, NUL, space before colon, obs-fold, a second
  Content-Length, ...) raise nothing but RemoteProtocolError, and the outcome does not depend on
  how the bytes are cut.
- Hostile megabyte inputs fail with RemoteProtocolError quickly (generous 5 s guard).
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenserve.h1 import NEED_DATA, PAUSED, H1Connection, Limits, RemoteProtocolError

from ._driver import Outcome, drive
from .make_corpus import req

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PCHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%"
VCHAR_OBS = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
FRAMING = {b"host", b"content-length", b"transfer-encoding", b"connection", b"expect"}
SETTINGS = settings(max_examples=120, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

tokens = st.text(TCHARS, min_size=1, max_size=12).map(str.encode)
names = tokens.filter(lambda n: n.lower() not in FRAMING)
ows = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t "])
words = st.binary(min_size=1, max_size=8).map(lambda b: bytes(VCHAR_OBS[c % len(VCHAR_OBS)] for c in b))
values = st.lists(st.tuples(words, st.sampled_from([b" ", b"\t", b"  ", b" \t"])), max_size=4).map(
    lambda parts: b"".join(w + s for w, s in parts).rstrip(b" \t"))
segments = st.text(PCHARS, max_size=10).map(str.encode)
targets = st.builds(
    lambda segs, query: b"/" + b"/".join(segs) + (b"?" + query if query is not None else b""),
    st.lists(segments, max_size=4), st.none() | segments)
quoted = st.binary(max_size=6).map(
    lambda b: b'"' + b"".join(b"\\" + bytes([0x21 + c % 0x5E]) if c % 3 == 0
                             else bytes([0x23 + c % 0x38]) for c in b) + b'"')
extensions = st.lists(st.tuples(tokens, st.none() | tokens | quoted), max_size=2).map(
    lambda items: b"".join(b";" + n + (b"" if v is None else b"=" + v) for n, v in items))
Pairs = List[Tuple[bytes, bytes]]


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


@st.composite
def requests(draw: st.DrawFn, last: bool) -> Tuple[bytes, Dict[str, object]]:
    """One valid request: (wire bytes, expected record). ``last``: may end the connection."""
    method = draw(tokens.filter(lambda m: m != b"CONNECT"))
    target = draw(targets)
    http10 = draw(st.booleans())
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
    for name, value in fields:
        head += name + b":" + draw(ows) + value + draw(ows) + b"\r\n"
    expected = req(method, target, [(n.lower(), v) for n, v in fields], body,
                   b"1.0" if http10 else b"1.1", trailers)
    return head + b"\r\n" + wire_body, expected


@st.composite
def connections(draw: st.DrawFn) -> Tuple[bytes, List[Dict[str, object]]]:
    count = draw(st.integers(1, 3))
    pairs = [draw(requests(last=i == count - 1)) for i in range(count)]
    return b"".join(w for w, _ in pairs), [e for _, e in pairs]


def cut(data: bytes, points: List[int]) -> List[bytes]:
    edges = [0, *sorted({p % len(data) for p in points} - {0}), len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def summary(outcome: Outcome) -> Tuple[object, ...]:
    status = None if outcome.error is None else outcome.error.status_hint
    return outcome.requests, status, outcome.closed, outcome.server_closed


@SETTINGS
@given(connections(), st.lists(st.integers(0, 10**6), max_size=12))
def test_valid_requests_parse_the_same_under_any_cut(
    case: Tuple[bytes, List[Dict[str, object]]], points: List[int],
) -> None:
    data, expected = case
    for pieces in ([data], cut(data, points), [data[i : i + 1] for i in range(len(data))]):
        outcome = drive(pieces)
        assert outcome.error is None, (data, outcome.error)
        assert outcome.requests == expected
        assert outcome.closed or outcome.server_closed


SNIPPETS = [
    b"\r", b"\n", b"\x00", b" :", b"\t:", b"\r\n ", b"\r\n\t", b"\r\nContent-Length: 1\r\n",
    b"\r\nContent-Length: 0\r\n", b"\r\nTransfer-Encoding: chunked\r\n", b"\r\nHost: b\r\n",
    b"\x7f", b"\xff", b" ", b"\t", b"\r\n\r\n", b"\n\n", b";", b"0\r\n\r\n", b"\x0b",
]


@SETTINGS
@given(connections(), st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(SNIPPETS)),
                                min_size=1, max_size=3),
       st.lists(st.integers(0, 10**6), max_size=12))
def test_mutations_only_raise_remote_protocol_error_and_ignore_cuts(
    case: Tuple[bytes, List[Dict[str, object]]], mutations: List[Tuple[int, bytes]], points: List[int],
) -> None:
    data = case[0]
    for position, snippet in mutations:
        position %= len(data) + 1
        data = data[:position] + snippet + data[position:]
    # drive() lets anything but RemoteProtocolError escape, which fails the test.
    whole = summary(drive([data]))
    assert summary(drive(cut(data, points))) == whole, data
    assert summary(drive([data[i : i + 1] for i in range(len(data))])) == whole, data


# -- hostile inputs --------------------------------------------------------------------------

GUARD_SECONDS = 5.0


def fail_fast(pieces: List[bytes], limits: Limits = Limits()) -> RemoteProtocolError:
    """Feed pieces until RemoteProtocolError; fail if it takes longer than the guard."""
    conn = H1Connection(limits)
    start = time.monotonic()
    for piece in pieces:
        conn.receive_data(piece)
        try:
            while True:
                event = conn.next_event()
                assert event is not PAUSED, "hostile input parsed as a complete request"
                if event is NEED_DATA:
                    break
        except RemoteProtocolError as exc:
            return exc
        finally:
            assert time.monotonic() - start < GUARD_SECONDS, "parsing is not linear"
    raise AssertionError("hostile input accepted")


def pieces_of(data: bytes, size: int) -> List[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


MIB = 2**20
HEAD = b"GET / HTTP/1.1\r\nHost: a\r\n"
CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


HOSTILE = {
    "1MiB-of-a": (b"a" * MIB, 414),
    "1MiB-target": (b"GET /" + b"a" * MIB, 414),
    "1MiB-header-line": (HEAD + b"X: " + b"a" * MIB, 431),
    "100k-tiny-headers": (HEAD + b"a:b\r\n" * 100_000 + b"\r\n", 431),
    "200k-empty-headers-no-end": (b"\r\n".join([b"GET / HTTP/1.1"] + [b"a:"] * 200_000), 431),
    "1MiB-chunk-extension": (CHUNKED_HEAD + b"1;" + b"a" * MIB, 400),
    "1MiB-trailer-line": (CHUNKED_HEAD + b"0\r\nX: " + b"a" * MIB, 431),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("piece_size", [MIB * 2, 4096])
def test_hostile_megabyte_fails_fast(name: str, piece_size: int) -> None:
    data, status = HOSTILE[name]
    assert fail_fast(pieces_of(data, piece_size)).status_hint == status


def test_hostile_head_fed_byte_by_byte_fails_fast() -> None:
    data = HEAD + b"X: " + b"a" * 80_000  # past max_request_line + max_header_bytes
    assert fail_fast(pieces_of(data, 1)).status_hint == 431


def test_many_headers_with_raised_limits_fail_fast() -> None:
    limits = Limits(max_header_bytes=4 * MIB)
    data = HEAD + b"a:b\r\n" * 200_000 + b"\r\n"
    assert fail_fast(pieces_of(data, 4096), limits).status_hint == 431


def test_many_trailers_with_raised_limits_fail_fast() -> None:
    limits = Limits(max_header_bytes=4 * MIB)
    data = CHUNKED_HEAD + b"0\r\n" + b"a:b\r\n" * 200_000 + b"\r\n"
    assert fail_fast(pieces_of(data, 4096), limits).status_hint == 431
