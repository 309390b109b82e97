"""Response framing through H1Connection.send_response / send_data / send_eom / send_continue.

Expectations come from RFC 9110 (6.4.1 no content for HEAD/1xx/204/304, 8.6 Content-Length,
10.1.1 Expect) and RFC 9112 (6.1 chunked, 6.3 framing, 9.3 persistence, 9.6 close).
"""

from __future__ import annotations

from typing import List, Tuple

import pytest

from greenserve.http.h1 import (
    PAUSED, H1Connection, LocalProtocolError, Request, ResponseState, check_app_headers,
)

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
Pairs = List[Tuple[bytes, bytes]]


def connection(request: bytes) -> H1Connection:
    """A connection that has just parsed the head of ``request``."""
    conn = H1Connection()
    conn.receive_data(request)
    assert isinstance(conn.next_event(), Request)
    return conn


def finish_request(conn: H1Connection) -> None:
    while conn.next_event() is not PAUSED:
        pass


GET11 = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
HEAD11 = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
GET10 = b"GET / HTTP/1.0\r\n\r\n"
GET10_KEEP = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
CL5 = [(b"Content-Length", b"5")]


def test_head_response_keeps_content_length_and_sends_no_body() -> None:
    conn = connection(HEAD11)
    assert conn.send_response(200, b"OK", CL5, b"") == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    assert conn.send_data(b"hello") == b""
    assert conn.send_eom() == b""
    assert conn.keep_alive is True


def test_head_response_without_length_adds_no_framing() -> None:
    conn = connection(HEAD11)
    assert conn.send_response(200, b"OK", [(b"X-A", b"1")], b"") == b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n"
    assert conn.send_data(b"body") == b""
    assert conn.send_eom() == b""
    conn.start_next_cycle()


@pytest.mark.parametrize("name", [b"Content-Length", b"content-length", b"CONTENT-LENGTH"])
def test_204_drops_content_length_and_body(name: bytes) -> None:
    conn = connection(GET11)
    head = conn.send_response(204, b"No Content", [(b"X-A", b"1"), (name, b"5"), (b"X-B", b"2")], b"")
    assert head == b"HTTP/1.1 204 No Content\r\nX-A: 1\r\nX-B: 2\r\n\r\n"
    assert conn.send_data(b"hello") == b""
    assert conn.send_eom() == b""
    assert conn.keep_alive is True


def test_304_keeps_content_length_without_body() -> None:
    conn = connection(GET11)
    head = conn.send_response(304, b"Not Modified", CL5, b"")
    assert head == b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"
    assert conn.send_data(b"hello") == b""
    assert conn.send_eom() == b""


def test_1xx_has_no_body_and_no_framing() -> None:
    conn = connection(GET11)
    assert conn.send_response(103, b"Early Hints", [(b"Link", b"</s.css>")], b"") == (
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")
    assert conn.send_data(b"x") == b""
    assert conn.send_eom() == b""


def test_1xx_drops_content_length() -> None:
    conn = connection(GET11)
    head = conn.send_response(103, b"Early Hints", CL5, b"")
    assert b"content-length" not in head.lower()


def test_content_length_kept_and_body_passed_through() -> None:
    conn = connection(GET11)
    assert conn.send_response(200, b"OK", [(b"content-length", b" 5 ")], b"") == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    assert conn.send_data(b"hel") == b"hel"
    assert conn.send_data(b"lo") == b"lo"
    assert conn.send_eom() == b""
    assert conn.response_overflowed is False
    assert conn.keep_alive is True


def test_content_length_never_exceeded() -> None:
    conn = connection(GET11)
    conn.send_response(200, b"OK", CL5, b"")
    assert conn.send_data(b"hel") == b"hel"
    assert conn.response_overflowed is False
    assert conn.send_data(b"lo world") == b"lo"
    assert conn.response_overflowed is True
    assert conn.send_data(b"more") == b""
    assert conn.send_eom() == b""


def test_short_body_raises_at_eom_and_closes() -> None:
    conn = connection(GET11)
    conn.send_response(200, b"OK", CL5, b"")
    assert conn.send_data(b"hi") == b"hi"
    with pytest.raises(LocalProtocolError) as info:
        conn.send_eom()
    assert info.value.status_hint == 500
    assert conn.keep_alive is False
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()


def test_chunked_for_http11_without_length() -> None:
    conn = connection(GET11)
    assert conn.send_response(200, b"OK", [(b"X-A", b"1")], b"Server: t\r\n") == (
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\nServer: t\r\n\r\n")
    assert conn.send_data(b"abc") == b"3\r\nabc\r\n"
    assert conn.send_data(b"") == b""  # an empty chunk would end the body
    assert conn.send_data(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert conn.send_eom() == b"0\r\n\r\n"
    assert conn.keep_alive is True
    conn.start_next_cycle()


def test_length_hint_becomes_content_length() -> None:
    conn = connection(GET11)
    assert conn.send_response(200, b"OK", [], b"", length_hint=3) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    assert conn.send_data(b"abcd") == b"abc"
    assert conn.response_overflowed is True


@pytest.mark.parametrize("request_bytes", [GET10, GET10_KEEP])
def test_close_delimited_for_http10_without_length(request_bytes: bytes) -> None:
    conn = connection(request_bytes)
    head = conn.send_response(200, b"OK", [(b"X-A", b"1")], b"")
    assert head == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: close\r\n\r\n"
    assert conn.keep_alive is False
    assert conn.send_data(b"raw bytes") == b"raw bytes"
    assert conn.send_eom() == b""


def test_kept_http10_connection_says_keep_alive() -> None:
    conn = connection(GET10_KEEP)
    head = conn.send_response(200, b"OK", CL5, b"")
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"
    assert conn.send_data(b"hello") == b"hello"
    assert conn.send_eom() == b""
    assert conn.keep_alive is True
    conn.start_next_cycle()


@pytest.mark.parametrize("request_bytes,headers,close,kept", [
    (GET11, CL5, False, True),
    (GET11, [], False, True),  # chunked
    (GET11, CL5, True, False),  # the handler asks to close
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", CL5, False, False),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", CL5, False, False),
    (GET10, CL5, False, False),
    (GET10, [], False, False),
    (GET10_KEEP, CL5, False, True),
    (GET10_KEEP, [], False, False),  # close-delimited
    (GET10_KEEP, CL5, True, False),
    (b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", [], False, True),
])
def test_connection_close_exactly_when_not_kept(
    request_bytes: bytes, headers: Pairs, close: bool, kept: bool,
) -> None:
    conn = connection(request_bytes)
    lines = conn.send_response(200, b"OK", headers, b"", close=close).lower().split(b"\r\n")
    assert conn.keep_alive is kept
    assert (b"connection: close" in lines) is (not kept)
    assert lines.count(b"connection: close") + lines.count(b"connection: keep-alive") <= 1


BAD_HEADERS: List[Pairs] = [
    [(b"X-A", b"a\r\nSet-Cookie: evil=1")], [(b"X-A", b"a\nb")], [(b"X-A", b"a\rb")],
    [(b"X-A", b"a\x00b")], [(b"X-A", b"\x01")], [(b"X-A", b"\x7f")], [(b"X-A", b"\x1b[0m")],
    [(b"X A", b"1")], [(b"X:A", b"1")], [(b"", b"1")], [(b"X\r\nA", b"1")], [(b"X-\xe9", b"1")],
    [(b"X\x00", b"1")], [(b"X(A)", b"1")],
    [(b"Connection", b"upgrade")], [(b"connection", b"close, x-strip")],
    [(b"Transfer-Encoding", b"chunked")],
    [(b"Keep-Alive", b"timeout=5")], [(b"KEEP-ALIVE", b"max=1")], [(b"Upgrade", b"h2c")], [(b"TE", b"trailers")],
    [(b"Trailer", b"X-Sum")], [(b"Proxy-Authenticate", b"Basic")], [(b"Proxy-Authorization", b"Basic x")],
    [(b"Content-Length", b"abc")], [(b"Content-Length", b"-1")], [(b"Content-Length", b"+5")],
    [(b"Content-Length", b"5,5")], [(b"Content-Length", b"0x5")], [(b"Content-Length", b"")],
    [(b"Content-Length", b"5 5")], [(b"Content-Length", b"1.0")],
    [(b"Content-Length", b"5"), (b"content-length", b"5")],
]


@pytest.mark.parametrize("headers", BAD_HEADERS, ids=[repr(h)[:40] for h in BAD_HEADERS])
def test_illegal_app_header_is_a_500_and_nothing_is_sent(headers: Pairs) -> None:
    conn = connection(GET11)
    with pytest.raises(LocalProtocolError) as info:
        conn.send_response(200, b"OK", [(b"X-Fine", b"1"), *headers], b"")
    assert info.value.status_hint == 500
    assert conn.response_state is ResponseState.IDLE
    # The handler can still answer with its own 500.
    head = conn.send_response(500, b"Internal Server Error", [(b"Content-Length", b"0")], b"")
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


def test_legal_odd_app_headers_pass_unchanged() -> None:
    conn = connection(GET11)
    headers = [(b"X-Tab", b"a\tb"), (b"X-Obs", b"caf\xe9"), (b"X-Empty", b""), (b"!#$%&'*+-.^_`|~", b"v")]
    head = conn.send_response(200, b"OK", headers + CL5, b"")
    assert head == (b"HTTP/1.1 200 OK\r\nX-Tab: a\tb\r\nX-Obs: caf\xe9\r\nX-Empty: \r\n"
                    b"!#$%&'*+-.^_`|~: v\r\nContent-Length: 5\r\n\r\n")


def test_reason_phrase_with_crlf_is_refused() -> None:
    conn = connection(GET11)
    with pytest.raises(LocalProtocolError):
        conn.send_response(200, b"OK\r\nSet-Cookie: evil=1", CL5, b"")


def test_second_response_head_is_refused() -> None:
    conn = connection(GET11)
    conn.send_response(200, b"OK", CL5, b"")
    with pytest.raises(LocalProtocolError):
        conn.send_response(200, b"OK", CL5, b"")


# -- 100-continue (RFC 9110 10.1.1) ----------------------------------------------------------

EXPECT = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"


def test_continue_sent_once_while_the_client_waits() -> None:
    conn = connection(EXPECT)
    assert conn.continue_expected is True
    assert conn.send_continue() == CONTINUE
    assert conn.continue_expected is False
    assert conn.send_continue() == b""
    conn.receive_data(b"hello")
    finish_request(conn)
    conn.send_response(200, b"OK", CL5, b"")
    assert conn.keep_alive is True


def test_no_continue_after_the_body_was_read() -> None:
    conn = connection(EXPECT)
    conn.receive_data(b"hello")
    finish_request(conn)
    assert conn.send_continue() == b""


def test_no_continue_once_the_response_started_and_connection_closes() -> None:
    conn = connection(EXPECT)
    head = conn.send_response(413, b"Payload Too Large", [(b"Content-Length", b"0")], b"")
    assert conn.send_continue() == b""
    assert conn.keep_alive is False
    assert head.endswith(b"Connection: close\r\n\r\n")


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
])
def test_no_continue_when_not_expected(request_bytes: bytes) -> None:
    conn = connection(request_bytes)
    assert conn.continue_expected is False
    assert conn.send_continue() == b""


def test_continue_again_for_the_next_request() -> None:
    conn = connection(EXPECT)
    assert conn.send_continue() == CONTINUE
    conn.receive_data(b"hello" + EXPECT)
    finish_request(conn)
    conn.send_response(200, b"OK", CL5, b"")
    conn.send_data(b"hello")
    conn.send_eom()
    conn.start_next_cycle()
    assert isinstance(conn.next_event(), Request)
    assert conn.send_continue() == CONTINUE


def test_head_response_gets_the_length_a_get_would_have() -> None:
    """RFC 9110 9.3.2: when the server knows the body's length (length_hint), HEAD gets the
    Content-Length that GET would carry; an app's own Content-Length is kept as it is."""
    conn = connection(HEAD11)
    assert conn.send_response(200, b"OK", [(b"X-A", b"1")], b"", length_hint=7) == (
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 7\r\n\r\n")
    assert conn.send_eom() == b""
    conn = connection(HEAD11)
    assert conn.send_response(200, b"OK", CL5, b"", length_hint=7) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    conn = connection(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert b"content-length" not in conn.send_response(304, b"Not Modified", [], b"",
                                                       length_hint=7).lower()


@pytest.mark.parametrize("value, close", [
    (b"close", True), (b"Close", True), (b"keep-alive, close", True), (b"keep-alive", False),
])
def test_app_connection_close_or_keep_alive_is_taken_not_sent(value, close):
    """An app's Connection: close (real apps send it) is honoured, keep-alive left to the
    server; neither is sent as the app wrote it: the server writes its own Connection field."""
    app = check_app_headers([(b"Content-Type", b"text/plain"), (b"Connection", value)])
    assert app.close is close and app.connection == value
    assert app.lines == b"Content-Type: text/plain\r\n"
