"""Property tests (hypothesis) for the request parser.

- Generated valid requests (see strategies.py) parse to the expected requests however the bytes
  are cut: whole, in random cuts, one byte at a time, and in two pieces at every boundary.
- Mutations of valid requests (CR, LF, NUL, obs-fold, spaces, signs, a repeated framing
  header, deleted / replaced bytes, a truncated input) raise nothing but RemoteProtocolError,
  the outcome does not depend on how the bytes are cut, and a refusal is final.
- Hostile megabyte inputs fail with RemoteProtocolError quickly (generous 5 s guard, so that a
  quadratic path shows), with the parser's buffer and memory bounded by the limits, not by the
  input.

The ``slow`` variants run the same properties with many more examples (``pytest -m slow``).
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Callable, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenserve.http.h1 import (
    NEED_DATA, PAUSED, Data, EndOfMessage, H1Connection, Limits, RemoteProtocolError,
)

from ._driver import drive
from .strategies import Case, connections, cut, edits, mutate, summary

SETTINGS = settings(max_examples=120, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
LONG = settings(SETTINGS, max_examples=3000)
points = st.lists(st.integers(0, 10**6), max_size=12)


def slow(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a long test: not in the default run (``pytest -m slow`` runs them), 30 min cap."""
    return pytest.mark.slow(pytest.mark.timeout(1800)(test))  # type: ignore[no-any-return]


def quick_and_long(test: Callable[..., None], *strategies: st.SearchStrategy) -> Tuple[object, object]:
    """The property as a default test and as a ``slow`` one with many more examples."""
    return SETTINGS(given(*strategies)(test)), slow(LONG(given(*strategies)(test)))


def valid_under_any_cut(case: Case, cuts: List[int]) -> None:
    data, expected = case
    for pieces in ([data], cut(data, cuts), [data[i : i + 1] for i in range(len(data))]):
        outcome = drive(pieces)
        assert outcome.error is None, (data, outcome.error)
        assert outcome.requests == expected
        assert outcome.closed or outcome.server_closed


test_valid_requests_parse_the_same_under_any_cut, test_valid_under_any_cut_long = quick_and_long(
    valid_under_any_cut, connections(), points)


@SETTINGS
@given(connections())
def test_valid_requests_parse_the_same_split_at_every_boundary(case: Case) -> None:
    data, expected = case
    for i in range(1, len(data)):
        outcome = drive([data[:i], data[i:]])
        assert (outcome.error, outcome.requests) == (None, expected), (data, i)


def mutations_only_raise_protocol_errors(case: Case, mutations: List[Tuple[str, int, object]],
                                         cuts: List[int]) -> None:
    data = mutate(case[0], mutations)
    # drive() lets anything but RemoteProtocolError escape, which fails the test.
    whole = drive([data])
    expected = summary(whole)
    assert summary(drive(cut(data, cuts))) == expected, data
    assert summary(drive([data[i : i + 1] for i in range(len(data))])) == expected, data
    if whole.error is not None:  # a refusal is final: nothing more is parsed
        whole.conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises(RemoteProtocolError):
            whole.conn.next_event()


test_mutations_only_raise_remote_protocol_error_and_ignore_cuts, test_mutations_long = (
    quick_and_long(mutations_only_raise_protocol_errors, connections(),
                   st.lists(edits, min_size=1, max_size=3), points))


@SETTINGS
@given(connections(), st.lists(edits, min_size=1, max_size=2))
def test_mutated_requests_split_at_every_boundary_give_one_outcome(
    case: Case, mutations: List[Tuple[str, int, object]],
) -> None:
    data = mutate(case[0], mutations)
    expected = summary(drive([data]))
    for i in range(1, len(data)):
        assert summary(drive([data[:i], data[i:]])) == expected, (data, i)


# -- hostile inputs --------------------------------------------------------------------------

GUARD_SECONDS = 5.0
MIB = 2**20
HEAD = b"GET / HTTP/1.1\r\nHost: a\r\n"
CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def head_bound(limits: Limits, piece: int) -> int:
    """The most a head may hold in the parser's buffer: the limits plus one read."""
    return limits.max_request_line + limits.max_header_bytes + 4 + piece


def fail_fast(pieces: List[bytes], limits: Limits = Limits()) -> RemoteProtocolError:
    """Feed pieces until RemoteProtocolError; fail if it takes longer than the guard or if the
    parser buffers more of a head than the limits allow."""
    conn = H1Connection(limits)
    start = time.monotonic()
    bound = head_bound(limits, max(map(len, pieces)))
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
        assert conn.buffered <= bound, "the parser buffers more than its limits"
    raise AssertionError("hostile input accepted")


def pieces_of(data: bytes, size: int) -> List[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


HOSTILE: Dict[str, Tuple[bytes, int, Limits]] = {
    "1MiB-of-a": (b"a" * MIB, 414, Limits()),
    "1MiB-target": (b"GET /" + b"a" * MIB, 414, Limits()),
    "1MiB-header-line": (HEAD + b"X: " + b"a" * MIB, 431, Limits()),
    "100k-tiny-headers": (HEAD + b"a:b\r\n" * 100_000 + b"\r\n", 431, Limits()),
    "200k-empty-headers-no-end": (b"\r\n".join([b"GET / HTTP/1.1"] + [b"a:"] * 200_000), 431, Limits()),
    "1MiB-chunk-extension": (CHUNKED_HEAD + b"1;" + b"a" * MIB, 400, Limits()),
    "1MiB-trailer-line": (CHUNKED_HEAD + b"0\r\nX: " + b"a" * MIB, 431, Limits()),
    "1MiB-of-crlf": (b"\r\n" * (MIB // 2), 400, Limits()),
    "1MiB-of-spaces-after-method": (b"GET" + b" " * MIB, 400, Limits()),
    "1MiB-of-binary": (bytes(range(256)) * (MIB // 256), 400, Limits()),
    # The absolute-form pattern once backtracked quadratically on a target with '#'.
    "128k-absolute-form-with-fragment": (
        b"GET http://" + b"a" * (128 * 1024) + b"# HTTP/1.1\r\nHost: a\r\n\r\n", 400,
        Limits(max_request_line=MIB)),
    "128k-absolute-form-authority": (
        b"GET http://" + b"a:" * (64 * 1024) + b"/ HTTP/1.1\r\nHost: a\r\n\r\n", 400,
        Limits(max_request_line=MIB)),
    "128k-connect-authority": (
        b"CONNECT " + b"a:" * (64 * 1024) + b"x HTTP/1.1\r\nHost: a\r\n\r\n", 400,
        Limits(max_request_line=MIB)),
    "1MiB-host-value": (b"GET / HTTP/1.1\r\nHost: " + b"a:" * (MIB // 2) + b"\r\n\r\n", 400,
                        Limits(max_header_bytes=2 * MIB)),
    "1MiB-header-value-with-inner-spaces": (
        HEAD + b"X: a" + b" " * MIB + b"\x00\r\n\r\n", 400, Limits(max_header_bytes=2 * MIB)),
    "1MiB-chunk-extensions": (CHUNKED_HEAD + b"1" + b";a=b" * 1024, 400, Limits()),
    "100k-quoted-pairs-in-extension": (
        CHUNKED_HEAD + b'1;a="' + b"\\a" * 2000 + b"\r\n", 400, Limits()),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("piece_size", [MIB * 2, 4096])
def test_hostile_megabyte_fails_fast(name: str, piece_size: int) -> None:
    data, status, limits = HOSTILE[name]
    assert fail_fast(pieces_of(data, piece_size), limits).status_hint == status


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


@pytest.mark.parametrize("garbage,status", [
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS ClientHello on a plain port
    (b"SSH-2.0-OpenSSH_9.6\r\n", 400), (b"\x00\x00\x00\x00", 400), (b"GET /\x00", 400),
    (b"G\xc3\x89T / HTTP/1.1", 400), (b"GET\t/ HTTP/1.1", 400), (b'{"jsonrpc": "2.0"}', 400),
    (b"GET  /", 400), (b" GET", 400), (b"GET / HTTP/2.0\r\nHost", 505),
])
def test_a_head_that_cannot_become_valid_is_refused_without_waiting(garbage: bytes, status: int) -> None:
    """Bytes that can never start a request line are refused as they arrive, not after the
    header timeout: a TLS or SSH client on a plain port gets its 400 at once."""
    conn = H1Connection()
    conn.receive_data(garbage)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.status_hint == status


@pytest.mark.parametrize("prefix", [b"G", b"GET", b"GET ", b"GET /a?b=c", b"PROPFIND /x HTT",
                                    b"OPTIONS * HTTP/1.1\r", b"\r\n\r\nGET / HTTP/1.0\r\nHost"])
def test_a_valid_prefix_waits_for_more(prefix: bytes) -> None:
    conn = H1Connection()
    conn.receive_data(prefix)
    assert conn.next_event() is NEED_DATA


def read_chunked(pieces: List[bytes]) -> int:
    """Feed a chunked request; return the body length decoded. Fails on anything but the
    request, its body and its end."""
    conn = H1Connection()
    received = 0
    for piece in pieces:
        conn.receive_data(piece)
        while True:
            event = conn.next_event()
            if type(event) is Data:
                received += len(event.data)
            elif type(event) is EndOfMessage:
                return received
            elif event is NEED_DATA:
                break
    raise AssertionError("the body did not end")


def one_byte_chunks(count: int) -> List[bytes]:
    return pieces_of(CHUNKED_HEAD + b"1\r\nx\r\n" * count + b"0\r\n\r\n", 65536)


def test_a_megabyte_of_one_byte_chunks_parses_in_linear_time() -> None:
    pieces = one_byte_chunks(MIB)
    start = time.monotonic()
    assert read_chunked(pieces) == MIB
    assert time.monotonic() - start < 4 * GUARD_SECONDS  # ~2.5 us a chunk


def test_one_byte_chunks_parse_in_bounded_memory() -> None:
    pieces = one_byte_chunks(MIB // 32)
    tracemalloc.start()
    try:
        assert read_chunked(pieces) == MIB // 32
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 512 * 1024, f"parsing held {peak} bytes at its peak"


@pytest.mark.parametrize("name", ["1MiB-of-a", "1MiB-header-line", "1MiB-trailer-line",
                                  "100k-tiny-headers"])
def test_hostile_input_memory_is_bounded_by_the_limits(name: str) -> None:
    data, status, limits = HOSTILE[name]
    pieces = pieces_of(data, 65536)
    tracemalloc.start()
    try:
        assert fail_fast(pieces, limits).status_hint == status
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * head_bound(limits, 65536), f"parsing held {peak} bytes at its peak"
