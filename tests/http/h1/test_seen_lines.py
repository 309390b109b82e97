"""The parser keeps the short request and header lines it has found valid, with what they parsed
into, and whole heads made only of such lines, so that a client repeating itself (every request
of a keep-alive connection, a load balancer's probe) skips the grammar's regular expressions.
The same bytes always parse the same way; these tests check that the shortcut changes no
outcome and that its memory is bounded whatever a client sends.
"""

from __future__ import annotations

import pytest

from greenserve.http.h1 import H1Connection, RemoteProtocolError, Request
from greenserve.http.h1 import _readers, headers


def head(raw: bytes) -> Request:
    conn = H1Connection()
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, Request), event
    return event


def refusal(raw: bytes) -> int:
    conn = H1Connection()
    conn.receive_data(raw)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    return info.value.status_hint


REQUEST = (b"GET /seen?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Seen-Test: a  b \r\n"
           b"Accept:*/*\r\n\r\n")


def test_a_request_parsed_again_from_the_kept_lines_is_the_same_request():
    _readers._seen_fields.clear()
    _readers._seen_request_lines.clear()
    first = head(REQUEST)
    assert b"X-Seen-Test: a  b " in _readers._seen_fields
    assert b"GET /seen?x=1 HTTP/1.1" in _readers._seen_request_lines
    again = head(REQUEST)
    assert again == first
    assert first.headers == ((b"host", b"example.com"), (b"x-seen-test", b"a  b"),
                             (b"accept", b"*/*"))
    assert (first.method, first.target, first.http_version) == (b"GET", b"/seen?x=1", b"1.1")


def test_a_kept_line_is_found_under_its_exact_bytes_only():
    head(b"GET / HTTP/1.1\r\nHost: a\r\nX-Case: v\r\n\r\n")
    # The same field in other bytes is parsed on its own (and the name is still lower-cased).
    assert head(b"GET / HTTP/1.1\r\nHost: a\r\nx-CASE:v\r\n\r\n").headers[1] == (b"x-case", b"v")
    # Nor does a kept valid line make a near copy valid.
    assert refusal(b"GET / HTTP/1.1\r\nHost: a\r\nX-Case : v\r\n\r\n") == 400
    assert refusal(b"GET / HTTP/1.1\r\nHost: a\r\n X-Case: v\r\n\r\n") == 400
    assert refusal(b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n") == 400


def test_an_invalid_line_stays_invalid_when_sent_again():
    bad = b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: \x01\r\n\r\n"
    assert refusal(bad) == 400
    assert refusal(bad) == 400
    assert all(b"\x01" not in line for line in _readers._seen_fields)
    assert refusal(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n") == 505
    assert refusal(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n") == 505


def test_credentials_are_not_kept():
    request = head(b"GET / HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\nAUTHORIZATION: Basic eDp5\r\n"
                   b"Proxy-Authorization: Basic eDp5\r\n\r\n")
    assert [name for name, _ in request.headers] == [
        b"host", b"cookie", b"authorization", b"proxy-authorization"]
    assert not [line for line in _readers._seen_fields
                if line.lower().startswith((b"cookie", b"authorization", b"proxy-authorization"))]


def test_the_kept_lines_are_bounded_in_number_and_length():
    for i in range(3 * _readers._SEEN_MAX):
        head(b"GET /%d HTTP/1.1\r\nHost: a\r\nX-N: %d\r\n\r\n" % (i, i))
    assert len(_readers._seen_fields) <= _readers._SEEN_MAX
    assert len(_readers._seen_request_lines) <= _readers._SEEN_MAX
    long_value = b"v" * (2 * _readers._SEEN_LINE)
    request = head(b"GET /long HTTP/1.1\r\nHost: a\r\nX-Long: " + long_value + b"\r\n\r\n")
    assert request.headers[1] == (b"x-long", long_value)
    assert all(len(line) <= _readers._SEEN_LINE for line in _readers._seen_fields)
    assert all(len(line) <= _readers._SEEN_LINE for line in _readers._seen_request_lines)


# -- whole heads -----------------------------------------------------------------------------


def limited(raw: bytes, **limits: int):
    """The event, or the refusal's status, of ``raw`` under a server with these limits."""
    conn = H1Connection(_readers.Limits(**limits))
    conn.receive_data(raw)
    try:
        return conn.next_event()
    except RemoteProtocolError as exc:
        return exc.status_hint


@pytest.fixture
def empty_caches():
    """Each kept head needs its lines still kept: start from empty caches, whatever ran before
    (a full line cache is emptied, and may be, halfway through a head)."""
    _readers._seen_fields.clear()
    _readers._seen_request_lines.clear()
    _readers._seen_heads.clear()


def test_a_repeated_head_is_parsed_once_and_answers_the_same(empty_caches):
    raw = b"GET /probe?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: probe/1\r\nAccept: */*\r\n\r\n"
    first = head(raw)
    assert _readers._seen_heads[raw][0] is first
    again = head(raw)
    assert again is first  # the kept Request: immutable, shared
    assert again == (b"GET", b"/probe?x=1", b"1.1",
                     ((b"host", b"a"), (b"user-agent", b"probe/1"), (b"accept", b"*/*")))
    # pipelined behind another request, and after a leading CRLF: still the same head
    conn = H1Connection()
    conn.receive_data(b"\r\n" + raw + raw)
    assert conn.next_event() is first


def test_a_kept_head_is_refused_by_a_server_with_smaller_limits(empty_caches):
    """The kept heads are shared by every server of the process; the limits are each its own."""
    raw = b"GET /" + b"a" * 60 + b" HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nX-Two: 2\r\n\r\n"
    assert isinstance(head(raw), Request) and raw in _readers._seen_heads
    assert limited(raw, max_request_line=40) == 414
    assert limited(raw, max_header_count=2) == 431
    assert limited(raw, max_header_bytes=20) == 431
    assert isinstance(limited(raw, max_header_count=3), Request)


def test_a_head_with_credentials_or_a_long_line_is_not_kept(empty_caches):
    long_target = b"/callback?code=" + b"c" * 300  # a long request line: a secret, maybe
    for raw in (b"GET / HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\n\r\n",
                b"GET " + long_target + b" HTTP/1.1\r\nHost: a\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\nauthorization: Basic eDp5\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + b"v" * 300 + b"\r\n\r\n"):
        head(raw)
        head(raw)
        assert raw not in _readers._seen_heads


def test_a_head_the_grammar_refuses_is_never_kept_and_one_the_framing_refuses_always_is():
    for raw in (b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: \x01\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\n X-Folded: 1\r\n\r\n"):
        for _ in range(2):
            assert refusal(raw) == 400
        assert raw not in _readers._seen_heads
    # Kept as parsed (its lines are valid), the head is still checked on every request: two
    # Host lines, or none, are refused each time (headers.analyse runs after the lookup).
    for raw in (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"):
        for _ in range(3):
            assert refusal(raw) == 400


def test_the_kept_heads_are_bounded_in_number_and_length():
    for i in range(3 * _readers._HEADS_MAX):
        head(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
    assert 0 < len(_readers._seen_heads) <= _readers._HEADS_MAX
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 100) for i in range(12))
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"
    assert len(raw) > _readers._HEAD_LEN
    head(raw)
    assert raw not in _readers._seen_heads


# -- Host values -----------------------------------------------------------------------------


def test_a_host_value_found_valid_is_kept_and_an_invalid_one_never():
    headers._valid_hosts.clear()
    for _ in range(2):
        head(b"GET / HTTP/1.1\r\nHost: kept.example:8080\r\n\r\n")
        head(b"POST / HTTP/1.1\r\nHost: other.example\r\nContent-Length: 1\r\n\r\nx")
    assert headers._valid_hosts == {b"kept.example:8080", b"other.example"}
    for bad in (b"kept.example:8080:1", b"user@kept.example", b"kept example", b"[::1"):
        for _ in range(2):  # refused the second time too, both on the short and the long path
            assert refusal(b"GET / HTTP/1.1\r\nHost: " + bad + b"\r\n\r\n") == 400
            assert refusal(b"GET / HTTP/1.1\r\nHost: " + bad + b"\r\nContent-Length: 0\r\n\r\n") == 400
        assert bad not in headers._valid_hosts


@pytest.mark.parametrize("cache, most, longest, template", [
    ("_valid_hosts", "_HOSTS_MAX", "_HOST_LEN", b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n"),
    ("_seen_connection", "_CONNECTION_MAX", "_CONNECTION_LEN",
     b"GET / HTTP/1.1\r\nHost: a\r\nConnection: %s\r\n\r\n"),
], ids=["Host", "Connection"])
def test_the_kept_values_are_bounded_in_number_and_length(cache, most, longest, template):
    kept, most, longest = getattr(headers, cache), getattr(headers, most), getattr(headers, longest)
    for i in range(3 * most):
        head(template % (b"h%d" % i))
    assert 0 < len(kept) <= most
    long_value = b"h" * (2 * longest)
    head(template % long_value)
    assert long_value not in kept


# -- Connection values -----------------------------------------------------------------------


def keeps_alive(raw: bytes) -> bool:
    conn = H1Connection()
    conn.receive_data(raw)
    assert isinstance(conn.next_event(), Request)
    return conn.keep_alive


def test_a_connection_value_found_valid_is_kept_with_its_tokens_and_an_invalid_one_never():
    headers._seen_connection.clear()
    for _ in range(2):  # the second time from what was kept: the same answers
        assert not keeps_alive(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert keeps_alive(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n")
        assert not keeps_alive(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x, CLOSE\r\n\r\n")
        assert keeps_alive(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, ,te\r\n\r\n")
    assert headers._seen_connection == {
        b"close": [b"close"], b"Keep-Alive": [b"keep-alive"], b"x, CLOSE": [b"x", b"close"],
        b"keep-alive, ,te": [b"keep-alive", b"te"]}
    for bad in (b"clo\x7fse", b"close, a b", b"(close)"):
        for _ in range(2):
            assert refusal(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: " + bad + b"\r\n\r\n") == 400
        assert bad not in headers._seen_connection


@pytest.mark.parametrize("version, value, kept_alive", [
    (b"1.1", b"close", False), (b"1.1", b"keep-alive", True), (b"1.1", b"Upgrade", True),
    (b"1.1", b"keep-alive, close", False), (b"1.0", b"keep-alive", True),
    (b"1.0", b"close", False), (b"1.0", b"Keep-Alive, close", False), (b"1.0", b"te", False),
])
def test_host_and_connection_alone_in_either_order(version, value, kept_alive):
    """The head with just a Host and a Connection line (the second most usual) is answered
    without the general walk over the fields: the same answers, the same refusals."""
    for fields in (b"Host: a\r\nConnection: %s\r\n" % value,
                   b"Connection: %s\r\nHost: a\r\n" % value):
        assert keeps_alive(b"GET / HTTP/%s\r\n%s\r\n" % (version, fields)) is kept_alive
    assert refusal(b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n") == 400
    assert refusal(b"GET / HTTP/1.1\r\nConnection: close\r\nHost: a\r\nHost: a\r\n\r\n") == 400
    assert refusal(b"GET / HTTP/1.1\r\nConnection: clo se\r\nHost: a\r\n\r\n") == 400
