"""The parser keeps the short request and header lines it has found valid, with what they parsed
into, so that a client repeating itself (every request of a keep-alive connection, a load
balancer's probe) skips the grammar's regular expressions. The same bytes always parse the same
way; these tests check that the shortcut changes no outcome and that its memory is bounded
whatever a client sends.
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


def test_the_kept_host_values_are_bounded_in_number_and_length():
    for i in range(3 * headers._HOSTS_MAX):
        head(b"GET / HTTP/1.1\r\nHost: h%d.example\r\n\r\n" % i)
    assert 0 < len(headers._valid_hosts) <= headers._HOSTS_MAX
    long_host = b"h" * (2 * headers._HOST_LEN)
    head(b"GET / HTTP/1.1\r\nHost: " + long_host + b"\r\n\r\n")
    assert long_host not in headers._valid_hosts


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


def test_the_kept_connection_values_are_bounded_in_number_and_length():
    for i in range(3 * headers._CONNECTION_MAX):
        keeps_alive(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: t%d\r\n\r\n" % i)
    assert 0 < len(headers._seen_connection) <= headers._CONNECTION_MAX
    long_value = b"t" * (2 * headers._CONNECTION_LEN)
    keeps_alive(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: " + long_value + b"\r\n\r\n")
    assert long_value not in headers._seen_connection
