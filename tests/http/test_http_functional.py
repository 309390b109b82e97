"""Functional HTTP/1.1 tests: a real greenserve on 127.0.0.1 port 0, real sockets.

Each test states the rule it checks (RFC 9112 / RFC 9110 / PEP 3333). Nothing here sleeps to wait
for the server: responses are read from blocking sockets with timeouts, and server-side effects
(an iterable's close(), counters) are polled with a deadline.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import logging
import socket
import struct
import threading
import time
from typing import Any, Iterator, List

import pytest
import requests

from conftest import Tracked, Reader, connect, request, wait_until
import greenserve.http.wsgi
from greenserve.errors import ClientDisconnected, ClientError

MiB = 1 << 20


# -- apps -------------------------------------------------------------------------------------


def read_body(environ: dict, block: int = 65536) -> bytes:
    """Read wsgi.input to its end with sized reads (the validator refuses read())."""
    stream = environ["wsgi.input"]
    parts = []
    while True:
        piece = stream.read(block)
        if not piece:
            return b"".join(parts)
        parts.append(piece)


def echo_app(environ, start_response):
    """Echoes 'METHOD PATH|body' with a Content-Length; REMOTE_PORT in a header."""
    body = read_body(environ)
    out = ("%s %s|" % (environ["REQUEST_METHOD"], environ["PATH_INFO"])).encode() + body
    start_response("200 OK", [
        ("Content-Type", "text/plain"), ("Content-Length", str(len(out))),
        ("X-Remote-Port", environ.get("REMOTE_PORT", "")),
        ("X-Protocol", environ["SERVER_PROTOCOL"]),
    ])
    return [out]


def path_app(environ, start_response):
    """Ignores any body; answers the path, with no Content-Length (framing left to the server)."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([environ["PATH_INFO"].encode()])


def generator_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        for i in range(5):
            yield b"piece-%d;" % i

    return body()


GENERATED = b"".join(b"piece-%d;" % i for i in range(5))


def recv_until_eof(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (raises socket.timeout if it does not)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not piece:
            return data
        data += piece


def nothing_more(reader: Reader) -> bool:
    """True if the server closes with no further bytes after the last response read."""
    return reader.at_eof() and reader.buf == b""


GET = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"


# -- persistence (RFC 9112 9.3) -----------------------------------------------------------------


def test_http11_keep_alive_several_requests_on_one_socket(serve):
    server = serve(echo_app)
    with connect(server) as sock:
        reader = Reader(sock)
        ports = set()
        for i in range(5):
            sock.sendall(GET % b"/r%d" % i)
            resp = reader.read_response()
            assert resp.status == 200
            assert resp.body == b"GET /r%d|" % i
            assert resp.header("connection") is None  # persistent is the HTTP/1.1 default
            ports.add(resp.header("x-remote-port"))
        assert ports == {str(sock.getsockname()[1])}
    assert server.statistics()["connections_total"] == 1
    assert server.statistics()["requests_total"] == 5


def test_http11_keep_alive_with_http_client(serve):
    server = serve(echo_app)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", "/a")
        first = conn.getresponse()
        assert first.read() == b"GET /a|"
        sock = conn.sock
        assert sock is not None and not first.will_close
        conn.request("POST", "/b", body=b"payload")
        second = conn.getresponse()
        assert second.read() == b"POST /b|payload"
        assert conn.sock is sock  # same TCP connection reused
    finally:
        conn.close()
    assert server.statistics()["connections_total"] == 1


def test_http10_closes_by_default(serve):
    server = serve(echo_app)
    with connect(server) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.status == 200
        assert resp.body == b"GET /old|"
        assert resp.header("x-protocol") == "HTTP/1.0"
        assert resp.header("connection") == "close"
        assert nothing_more(reader)


def test_http10_keep_alive_is_honoured_and_announced(serve):
    server = serve(echo_app)
    with connect(server) as sock:
        reader = Reader(sock)
        for path in (b"/one", b"/two"):
            sock.sendall(b"GET %s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % path)
            resp = reader.read_response()
            assert resp.body == b"GET %s|" % path
            assert resp.header("connection").lower() == "keep-alive"
        sock.sendall(b"GET /three HTTP/1.0\r\n\r\n")  # no keep-alive asked: closed after
        resp = reader.read_response()
        assert resp.body == b"GET /three|"
        assert resp.header("connection") == "close"
        assert nothing_more(reader)
    assert server.statistics()["connections_total"] == 1


def test_client_connection_close_gets_close_and_eof(serve):
    server = serve(echo_app)
    with connect(server) as sock:
        sock.sendall(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.body == b"GET /bye|"
        assert resp.header("connection") == "close"
        assert nothing_more(reader)


def test_http10_keep_alive_with_unknown_length_is_closed(serve):
    """An HTTP/1.0 peer cannot take chunked: a body of unknown length is close-delimited, so
    the server cannot keep the connection even if asked (RFC 9112 6.3, 9.3)."""
    server = serve(generator_app)
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = recv_until_eof(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert body == GENERATED


# -- pipelining (RFC 9112 9.3.2) ----------------------------------------------------------------


def test_pipelined_requests_answered_in_order(serve):
    server = serve(path_app)
    with connect(server) as sock:
        sock.sendall(b"".join(GET % p for p in (b"/first", b"/second", b"/third")))
        reader = Reader(sock)
        bodies = [reader.read_response().body for _ in range(3)]
    assert bodies == [b"/first", b"/second", b"/third"]


def test_many_pipelined_requests_in_one_write(serve):
    server = serve(path_app)
    paths = [b"/p%d" % i for i in range(500)]
    with connect(server) as sock:
        sender = threading.Thread(target=sock.sendall, args=(b"".join(GET % p for p in paths),))
        sender.start()  # send and read at once: neither side's buffers may fill up and stall
        reader = Reader(sock)
        bodies = [reader.read_response().body for _ in paths]
        sender.join(10)
    assert bodies == paths


def test_pipelined_requests_with_bodies(serve):
    server = serve(echo_app)
    packet = (
        b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /cl2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz"
    )
    with connect(server) as sock:
        sock.sendall(packet)
        reader = Reader(sock)
        bodies = [reader.read_response().body for _ in range(4)]
        assert nothing_more(reader)
    assert bodies == [b"POST /cl|hello", b"POST /chunked|abcdefg", b"GET /last|", b"POST /cl2|xyz"]


def test_pipelined_requests_sent_byte_by_byte_boundary(serve):
    """Two pipelined requests where the second arrives split at an awkward place."""
    server = serve(echo_app)
    first = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcdPOST /b HTTP/1.1\r\nHo"
    with connect(server) as sock:
        sock.sendall(first)
        reader = Reader(sock)
        assert reader.read_response().body == b"POST /a|abcd"
        sock.sendall(b"st: x\r\nContent-Length: 2\r\n\r\nzz")
        assert reader.read_response().body == b"POST /b|zz"


# -- chunked and close-delimited bodies (RFC 9112 7.1, 6.3) -------------------------------------


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "streamed"])
def test_chunked_request_with_extensions_and_trailers(serve, buffered):
    seen: List[dict] = []

    def app(environ, start_response):
        seen.append({k: environ.get(k) for k in ("CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING")})
        return echo_app(environ, start_response)

    server = serve(app, buffer_chunked_body=buffered)
    body = (
        b"5;name=value\r\nhello\r\n"
        b"1;a;b=\"quoted;\\\"x\"\r\n \r\n"
        b"A\r\n0123456789\r\n"
        b"0;last=1\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.status == 200
        assert resp.body == b"POST /up|hello 0123456789"
        sock.sendall(GET % b"/after")  # the trailer section was consumed, nothing left over
        assert reader.read_response().body == b"GET /after|"
    assert seen[0] == {"CONTENT_LENGTH": "16" if buffered else None, "HTTP_TRANSFER_ENCODING": None}


def test_chunked_request_read_with_readline(serve):
    def app(environ, start_response):
        stream = environ["wsgi.input"]
        lines = []
        while True:
            line = stream.readline()
            if not line:
                break
            lines.append(line)
        out = b"|".join(lines)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
        return [out]

    server = serve(app)
    raw = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4\r\nab\nc\r\n3\r\nd\nx\r\n0\r\n\r\n")
    resp = request(server, raw)
    assert resp.body == b"ab\n|cd\n|x"


def test_chunked_response_from_generator_on_http11(serve):
    server = serve(generator_app)
    with connect(server) as sock:
        sock.sendall(GET % b"/")
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.header("transfer-encoding") == "chunked"
        assert resp.header("content-length") is None
        assert resp.body == GENERATED
        sock.sendall(GET % b"/")  # still usable: the chunked body ended with its last-chunk
        assert reader.read_response().body == GENERATED


def test_chunked_response_wire_format(serve):
    server = serve(generator_app)
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = recv_until_eof(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\ntransfer-encoding: chunked" in head.lower()
    expected = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in
                        (b"piece-%d;" % i for i in range(5))) + b"0\r\n\r\n"
    assert body == expected


def test_chunked_response_read_by_requests(serve):
    server = serve(generator_app)
    resp = requests.get(server.url + "/", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert resp.content == GENERATED


def test_close_delimited_response_to_http10(serve):
    server = serve(generator_app)
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = recv_until_eof(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 200")
    lowered = head.lower()
    assert b"content-length" not in lowered
    assert b"transfer-encoding" not in lowered
    assert b"connection: close" in lowered
    assert body == GENERATED


def test_empty_generator_response_is_zero_length(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([])

    server = serve(app)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(GET % b"/")
        resp = reader.read_response()
        assert resp.body == b""
        assert resp.header("content-length") == "0" or resp.header("transfer-encoding") == "chunked"
        sock.sendall(GET % b"/")
        assert reader.read_response().status == 200


# -- Expect: 100-continue (RFC 9110 10.1.1) -----------------------------------------------------


def test_100_continue_sent_lazily_when_app_reads(serve):
    events: List[str] = []

    def app(environ, start_response):
        events.append("app called")
        return echo_app(environ, start_response)

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        interim = reader.read_response()
        assert interim.status == 100
        assert interim.raw_head == b"HTTP/1.1 100 Continue"
        # the app was running (and reading) before the 100 went out: it is lazy, not eager
        assert events == ["app called"]
        sock.sendall(b"hello")
        resp = reader.read_response()
        assert resp.status == 200
        assert resp.body == b"POST /c|hello"
        assert resp.header("connection") is None
        sock.sendall(GET % b"/next")  # the connection is still good
        assert reader.read_response().body == b"GET /next|"


def test_100_continue_not_sent_before_the_app_reads(serve):
    """The app does other work (a cooperative 0.3 s pause) before it reads: no 100 may reach
    the client in that time, and it comes once the app reads."""
    from greenserve.loop.hub import get_hub

    def app(environ, start_response):
        get_hub().sleep(0.3)
        return echo_app(environ, start_response)

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        sock.settimeout(0.15)
        with pytest.raises(socket.timeout):
            sock.recv(100)  # nothing yet: the server does not answer 100 on its own
        sock.settimeout(5)
        reader = Reader(sock)
        assert reader.read_response().status == 100
        sock.sendall(b"ok")
        assert reader.read_response().body == b"POST /c|ok"


def test_100_continue_with_chunked_body(serve):
    server = serve(echo_app)
    with connect(server) as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Expect: 100-Continue\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response().status == 100
        sock.sendall(b"3\r\nabc\r\n0\r\n\r\n")
        assert reader.read_response().body == b"POST /c|abc"


def test_no_100_continue_when_app_answers_without_reading(serve):
    def app(environ, start_response):
        out = b"rejected"
        start_response("403 Forbidden", [("Content-Type", "text/plain"),
                                         ("Content-Length", str(len(out)))])
        return [out]

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.status == 403  # the final response comes first: no 100 before it
        assert resp.body == b"rejected"
        assert resp.header("connection") == "close"
        assert nothing_more(reader)


def test_100_continue_ignored_for_http10(serve):
    """RFC 9110 10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0 request."""
    server = serve(echo_app)
    with connect(server) as sock:
        sock.sendall(b"POST /c HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok")
        data = recv_until_eof(sock)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b" 100 " not in data.split(b"\r\n")[0]
    assert data.endswith(b"POST /c|ok")


# -- HEAD, 204, 304 (RFC 9110 9.3.2, 15.3.5, 15.4.5) --------------------------------------------


def sized_app(environ, start_response):
    body = b"hello world"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                              ("X-Custom", "1")])
    return [body]


def test_head_has_get_headers_and_no_body(serve):
    server = serve(sized_app)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(GET % b"/")
        got = reader.read_response()
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = reader.read_response(head_request=True)
        assert head.status == 200
        assert head.header("content-length") == "11"
        strip = lambda r: sorted((k.lower(), v) for k, v in r.headers if k.lower() != "date")
        assert strip(head) == strip(got)
        # no body bytes on the wire: the next bytes are the next response's status line
        sock.sendall(GET % b"/again")
        after = reader.read_response()
        assert after.status == 200 and after.body == b"hello world"
        assert reader.buf == b""


def test_head_of_an_unsized_list_body_gets_the_length_a_get_would(serve):
    """RFC 9110 9.3.2: a HEAD response carries the header fields GET would have, Content-Length
    included when the server would compute one (a one-piece body without an app length)."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"twelve bytes"]

    server = serve(app, validate=False)  # the validator would hide that the body is a list
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(GET % b"/")
        got = reader.read_response()
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + GET % b"/next")
        head = reader.read_response(head_request=True)
        assert got.header("content-length") == head.header("content-length") == "12"
        assert head.header("transfer-encoding") is None
        assert reader.read_response().body == b"twelve bytes"


def test_head_for_generator_app_sends_no_body(serve):
    server = serve(generator_app)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = reader.read_response(head_request=True)
        assert head.status == 200
        # A streamed body's length is unknown: no Content-Length and no chunked framing.
        assert head.header("content-length") is None and head.header("transfer-encoding") is None
        after = reader.read_response()
        assert after.body == GENERATED


@pytest.mark.parametrize("body", [[], [b""], iter(())], ids=["empty-list", "empty-piece", "empty-iterator"])
def test_head_answered_with_an_empty_body_claims_no_length(serve, body):
    """Regression: werkzeug (Flask) answers HEAD of a streamed response with an empty body,
    and the server sent "Content-Length: 0" though GET sends 450 bytes. RFC 9110 8.6/9.3.2:
    a HEAD response carries Content-Length only if it equals what GET would send; an empty
    body says nothing of that, so none is sent (nor chunked framing)."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["REQUEST_METHOD"] == "HEAD":
            return body
        return (piece for piece in [b"streamed ", b"body"])

    server = serve(app, validate=False)  # the validator would hide that the body is a list
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + GET % b"/")
        head = reader.read_response(head_request=True)
        assert head.status == 200
        assert head.header("content-length") is None and head.header("transfer-encoding") is None
        assert reader.read_response().body == b"streamed body"


def test_head_with_requests(serve):
    server = serve(sized_app)
    resp = requests.head(server.url + "/", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Length"] == "11"
    assert resp.content == b""


def test_204_has_no_body_and_no_content_length(serve):
    def app(environ, start_response):
        start_response("204 No Content", [("X-A", "1"), ("Content-Length", "0")])
        return [b"must not be sent"]

    server = serve(app)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(GET % b"/" + GET % b"/")
        for _ in range(2):
            resp = reader.read_response()
            assert resp.status == 204
            assert resp.header("content-length") is None
            assert resp.header("transfer-encoding") is None
            assert resp.header("x-a") == "1"
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        last = reader.read_response()
        assert last.status == 204
        assert nothing_more(reader)  # no stray body bytes anywhere


def test_304_has_no_body(serve):
    def app(environ, start_response):
        start_response("304 Not Modified", [("ETag", '"v1"')])
        return iter([b"must not be sent"])

    server = serve(app)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"v1\"\r\n\r\n")
        resp = reader.read_response()
        assert resp.status == 304
        assert resp.header("etag") == '"v1"'
        assert resp.header("transfer-encoding") is None
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert reader.read_response().status == 304
        assert nothing_more(reader)


# -- big bodies ---------------------------------------------------------------------------------


def hash_app(environ, start_response):
    digest = hashlib.sha256()
    stream = environ["wsgi.input"]
    size = 0
    while True:
        piece = stream.read(65536)
        if not piece:
            break
        size += len(piece)
        digest.update(piece)
    out = ("%d %s" % (size, digest.hexdigest())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


BIG = hashlib.sha256(b"seed").digest() * (20 * MiB // 32)


def test_upload_20mib_content_length(serve):
    server = serve(hash_app)
    resp = requests.post(server.url + "/", data=BIG, timeout=30)
    assert resp.status_code == 200
    assert resp.text == "%d %s" % (len(BIG), hashlib.sha256(BIG).hexdigest())


def test_upload_20mib_chunked(serve):
    server = serve(hash_app)

    def pieces():
        view = memoryview(BIG)
        for start in range(0, len(BIG), 100_000):  # odd size: chunks straddle reads
            yield bytes(view[start:start + 100_000])

    resp = requests.post(server.url + "/", data=pieces(), timeout=30)
    assert resp.request.headers.get("Transfer-Encoding") == "chunked"
    assert resp.status_code == 200
    assert resp.text == "%d %s" % (len(BIG), hashlib.sha256(BIG).hexdigest())


def _download_digest(url: str) -> tuple:
    digest = hashlib.sha256()
    size = 0
    with requests.get(url, stream=True, timeout=30) as resp:
        assert resp.status_code == 200
        for piece in resp.iter_content(65536):
            size += len(piece)
            digest.update(piece)
        headers = resp.headers
    return size, digest.hexdigest(), headers


def test_download_20mib_from_generator(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        view = memoryview(BIG)
        return (bytes(view[i:i + 65536]) for i in range(0, len(BIG), 65536))

    server = serve(app)
    size, digest, headers = _download_digest(server.url + "/")
    assert headers["Transfer-Encoding"] == "chunked"
    assert (size, digest) == (len(BIG), hashlib.sha256(BIG).hexdigest())


def test_download_20mib_from_list(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [BIG[i:i + MiB] for i in range(0, len(BIG), MiB)]

    server = serve(app)
    size, digest, _ = _download_digest(server.url + "/")
    assert (size, digest) == (len(BIG), hashlib.sha256(BIG).hexdigest())


def test_download_20mib_single_element_list_with_content_length(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [BIG]

    server = serve(app, validate=False)  # the validator would hide the one-element list
    size, digest, headers = _download_digest(server.url + "/")
    assert headers["Content-Length"] == str(len(BIG))
    assert (size, digest) == (len(BIG), hashlib.sha256(BIG).hexdigest())


# -- Content-Length set by the app (RFC 9112 6.3; PEP 3333 "Handling the Content-Length") -------


def test_app_content_length_is_never_exceeded(serve, caplog):
    closed = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return Tracked(iter([b"abc", b"defgh", b"ijk"]), closed)

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="greenserve.error"):
        with connect(server) as sock:
            sock.sendall(GET % b"/" + GET % b"/second")
            data = recv_until_eof(sock)
        assert wait_until(closed.is_set)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-length: 5" in head.lower()
    assert body == b"abcde"  # exactly Content-Length bytes, then the connection closed
    assert data.count(b"HTTP/1.1") == 1  # the pipelined request was not answered after it
    assert wait_until(lambda: server.statistics()["connections_open"] == 0)


def test_app_yields_less_than_content_length_closes(serve):
    closed = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/ok":
            return path_app(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return Tracked(iter([b"abc"]), closed)

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(GET % b"/" + GET % b"/ok")
        reader = Reader(sock)
        with pytest.raises(EOFError):
            reader.read_response()
        assert reader.buf == b"abc"  # the client sees a short body, then EOF
    assert wait_until(closed.is_set)
    assert request(server, GET % b"/ok").body == b"/ok"  # the server keeps serving


# -- unread request bodies (RFC 9112 9.3, 9.6) --------------------------------------------------


def test_unread_small_body_connection_reused(serve):
    server = serve(path_app)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)
        resp = reader.read_response()
        assert resp.body == b"/ignored"
        assert resp.header("connection") is None
        sock.sendall(GET % b"/next")
        assert reader.read_response().body == b"/next"
        sock.sendall(b"POST /ignored2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n")
        assert reader.read_response().body == b"/ignored2"
        sock.sendall(GET % b"/next2")
        assert reader.read_response().body == b"/next2"
    assert server.statistics()["connections_total"] == 1


def test_unread_small_body_sent_after_response_is_drained(serve):
    """The app answers before the body has arrived; the server drains it and keeps going."""
    server = serve(path_app)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        assert reader.read_response().body == b"/early"
        sock.sendall(b"0123456789" + GET % b"/then")
        assert reader.read_response().body == b"/then"


def test_unread_body_over_max_drain_bytes_closes(serve):
    server = serve(path_app, max_drain_bytes=1024)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        resp = reader.read_response()
        assert resp.body == b"/big"
        assert resp.header("connection") == "close"
        try:
            sock.sendall(b"y" * 200000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert reader.at_eof()


def test_unread_chunked_body_over_max_drain_bytes_closes(serve):
    server = serve(path_app, max_drain_bytes=1024, buffer_chunked_body=False)
    with connect(server) as sock:
        reader = Reader(sock)
        chunk = b"1000\r\n" + b"z" * 0x1000 + b"\r\n"
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 4)
        resp = reader.read_response()
        assert resp.body == b"/big"
        assert reader.at_eof()  # the server gave up draining and closed


# -- malformed requests (RFC 9112 2.2, 3, 5, 6; RFC 9110 10.1.1, 15.6.6) ------------------------

SECOND = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

MALFORMED = {
    "cl-and-te": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "te-and-cl": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 6\r\n\r\n0\r\n\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    "missing-host": (b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    "http2": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    # RFC 9112 6.3 (4): chunked not the final coding -> the length is unknowable: MUST 400.
    "te-gzip": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    # RFC 9112 6.1: framing is clear, but a coding the server does not understand -> 501.
    "te-gzip-chunked": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
                        b"\r\n0\r\n\r\n", 501),
    "te-chunked-not-last": (b"POST / HTTP/1.1\r\nHost: x\r\n"
                            b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    "te-in-http10": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "expect-other": (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n"
                     b"Content-Length: 0\r\n\r\n", 417),
    "bare-lf": (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    "bare-lf-in-headers": (b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", 400),
    "bare-cr": (b"GET / HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n", 400),
    "cl-plus-sign": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400),
    "cl-repeated": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                    b"Content-Length: 3\r\n\r\nabc", 400),
    "cl-list": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    "invalid-method": (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "nul-in-value": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    "lowercase-version": (b"GET / http/1.1\r\nHost: x\r\n\r\n", 400),
    "te-twice": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "te-xchunked": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
    "whitespace-first-field": (b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "no-colon": (b"GET / HTTP/1.1\r\nHost: x\r\nJunk\r\n\r\n", 400),
    "cl-negative": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    "cl-hex": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", 400),
    "http09": (b"GET /\r\n\r\n", 400),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_head_rejected_and_nothing_after_parsed(serve, name):
    raw, status = MALFORMED[name]
    calls: List[str] = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return path_app(environ, start_response)

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(raw + SECOND)
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.status == status, (name, resp.raw_head)
        assert resp.header("connection") == "close"
        assert resp.body  # an error response says something
        assert nothing_more(reader)  # exactly one response, then EOF
    assert calls == []  # neither the bad request nor the smuggled one reached the app
    stats = server.statistics()
    assert stats["responses"]["4xx" if status < 500 else "5xx"] == 1


@pytest.mark.parametrize("raw, status", [
    (b"HEAD / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400),  # missing Host
    (b"HEAD / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n", 417),
    (b"HEAD / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
])
def test_error_response_to_head_request_has_no_body(serve, raw, status):
    """RFC 9110 9.3.2: the server MUST NOT send content in the response to HEAD. The method is
    known here (the request line is valid), so the error answer must be body-less too."""
    server = serve(path_app)
    with connect(server) as sock:
        sock.sendall(raw)
        data = recv_until_eof(sock)
    head, sep, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert sep and body == b""


def test_error_response_to_head_request_after_app_started_has_no_body(serve):
    """The same rule where the request reached the app: a bad chunked body under HEAD."""
    def app(environ, start_response):
        read_body(environ)
        return path_app(environ, start_response)

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        data = recv_until_eof(sock)
    head, sep, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert sep and body == b""


@pytest.mark.parametrize("body", [
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n",  # chunk data not followed by CRLF
    b"5\nhello\r\n0\r\n\r\n",  # bare LF after the size
    b"fffffffffffffffff5\r\nhello\r\n0\r\n\r\n",  # absurd number of digits
    b"5;\x01\r\nhello\r\n0\r\n\r\n",  # control character in an extension
    b"5\r\nhello\r\n0\r\nBad Trailer\r\n\r\n",  # malformed trailer field
    b"\r\n5\r\nhello\r\n0\r\n\r\n",  # empty size line
])
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "streamed"])
def test_bad_chunked_body_gets_400_and_close(serve, body, buffered):
    errors: List[BaseException] = []

    def app(environ, start_response):
        try:
            read_body(environ)
        except ClientError as exc:
            errors.append(exc)
            raise
        return path_app(environ, start_response)

    server = serve(app, buffer_chunked_body=buffered)
    with connect(server) as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + body + SECOND)
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.status == 400
        assert resp.header("connection") == "close"
        assert nothing_more(reader)
    assert len(errors) == (0 if buffered else 1)  # buffered: the app is never called


def test_smuggling_attempt_gets_one_400_with_http_client_style_probe(serve):
    """The classic CL.TE desync: a front end honouring CL would forward both requests; we must
    answer exactly one 400 and parse nothing after it."""
    calls: List[str] = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return path_app(environ, start_response)

    server = serve(app)
    smuggled = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    raw = (b"POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" % len(body)) + body
    with connect(server) as sock:
        sock.sendall(raw)
        data = recv_until_eof(sock)
    assert data.startswith(b"HTTP/1.1 400 ")
    assert data.count(b"HTTP/1.1 ") == 1
    assert calls == []


def test_connection_close_request_stops_parsing(serve):
    """RFC 9112 9.6: after a request with "close", the server does not process later requests
    on that connection."""
    calls: List[str] = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return path_app(environ, start_response)

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + GET % b"/b")
        reader = Reader(sock)
        assert reader.read_response().body == b"/a"
        assert nothing_more(reader)
    assert calls == ["/a"]


def test_leading_empty_lines_before_request_line_ignored(serve):
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line received before the
    request-line (a client's stray CRLF after a POST body)."""
    server = serve(echo_app)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok\r\n"
                     + GET % b"/next")
        assert reader.read_response().body == b"POST /p|ok"
        assert reader.read_response().body == b"GET /next|"


def test_half_closed_client_still_gets_all_responses(serve):
    """A client may shut down its sending side after its requests (RFC 9112 9.6: half-close);
    the responses must still come, then EOF."""
    server = serve(echo_app)
    with connect(server) as sock:
        sock.sendall(GET % b"/1" + b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                     + GET % b"/3")
        sock.shutdown(socket.SHUT_WR)
        reader = Reader(sock)
        bodies = [reader.read_response().body for _ in range(3)]
        assert nothing_more(reader)
    assert bodies == [b"GET /1|", b"POST /2|abc", b"GET /3|"]


def test_absolute_form_target(serve):
    """RFC 9112 3.2.2: a server MUST accept the absolute-form in requests."""
    server = serve(echo_app)
    resp = request(server, b"GET http://example.com/abs/path?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert resp.status == 200
    assert resp.body == b"GET /abs/path|"


def test_wsgi_input_never_reads_past_content_length(serve):
    """PEP 3333 / 'wsgi.input_terminated': reading more than CONTENT_LENGTH returns what there is
    at once, never waits for bytes that belong to the next request."""
    seen: List[Any] = []

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        seen.append((stream.read(1000), stream.read(1000), stream.readline()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    server = serve(app)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        sock.settimeout(5)
        assert reader.read_response().body == b"done"  # no hang waiting for 995 more bytes
        sock.sendall(GET % b"/")  # no body at all: reads return b"" at once
        assert reader.read_response().body == b"done"
    assert seen == [(b"hello", b"", b""), (b"", b"", b"")]


def test_write_callable_then_iterable(serve):
    """PEP 3333: data given to write() goes out before the iterable's, in order."""
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one,")
        write(b"two,")
        return [b"three"]

    for validate in (True, False):
        server = serve(app, validate=validate)
        with connect(server) as sock:
            reader = Reader(sock)
            sock.sendall(GET % b"/")
            resp = reader.read_response()
            assert resp.body == b"one,two,three"
            assert resp.header("transfer-encoding") == "chunked"
            sock.sendall(GET % b"/")
            assert reader.read_response().body == b"one,two,three"


@pytest.mark.parametrize("headers", [
    [("Content-Type", "text/plain"), ("Connection", "upgrade"), ("Upgrade", "h2c")],
    [("Content-Type", "text/plain"), ("Connection", "close, x-secret")],
    [("Content-Type", "text/plain"), ("Keep-Alive", "timeout=5")],
    [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")],
    [("Content-Type", "text/plain"), ("X-Split", "a\r\nSet-Cookie: evil=1")],
    [("Content-Type", "text/plain"), ("X-Nul", "a\x00b")],
    [("Content-Type", "text/plain"), ("Bad Name", "x")],
    [("Content-Type", "text/plain"), ("Content-Length", "2"), ("Content-Length", "2")],
])
def test_illegal_app_headers_give_500_never_a_split_response(serve, headers):
    """PEP 3333: apps must not send hop-by-hop headers; RFC 9110 5.5: CR, LF and NUL are never
    allowed in a field value. The server answers 500 and no app header reaches the wire."""
    def app(environ, start_response):
        start_response("200 OK", headers)
        return [b"ok"]

    server = serve(app, validate=False)
    with connect(server) as sock:
        sock.sendall(GET % b"/")
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.status == 500
        assert resp.header("set-cookie") is None
        assert resp.header("x-split") is None and resp.header("x-nul") is None
        assert reader.at_eof()
    assert b"evil" not in resp.raw_head


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close"])
def test_app_connection_close_is_honoured_and_warned_once(serve, caplog, request, streamed,
                                                         value):
    """Regression: an app's own "Connection: close" got a 500. PEP 3333 leaves hop-by-hop
    headers to the server, but real apps send this one (when they cannot tell their length),
    and a user wants the response: the server sends it with its own Connection: close, closes
    after it, and warns once, naming the header. Framing-changing hop-by-hop headers are still
    refused (test_illegal_app_headers_give_500_never_a_split_response)."""
    caplog.set_level(logging.WARNING, logger="greenserve.error")
    # As in a new process: emptied in place (compiled code holds these containers themselves),
    # and given back their contents afterwards.
    wsgi = greenserve.http.wsgi
    saved = (set(wsgi._warned), dict(wsgi._app_heads))
    wsgi._warned.clear()
    wsgi._app_heads.clear()
    request.addfinalizer(lambda: (wsgi._warned.update(saved[0]), wsgi._app_heads.update(saved[1])))

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", value)])
        return iter([b"o", b"k"]) if streamed else [b"ok"]

    server = serve(app, validate=False)
    for _ in range(2):
        with connect(server) as sock:
            sock.sendall(GET % b"/" + GET % b"/never-read")
            reader = Reader(sock)
            resp = reader.read_response()
            assert resp.status == 200 and resp.body == b"ok"
            assert [v for k, v in resp.headers if k.lower() == "connection"] == ["close"]
            assert reader.at_eof() and reader.buf == b""  # the second request got no answer
    warnings = [r.getMessage() for r in caplog.records if "Connection: " + value in r.getMessage()]
    assert len(warnings) == 1, warnings


def test_app_connection_keep_alive_is_dropped_and_the_server_decides(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "keep-alive")])
        return [b"ok"]

    server = serve(app, validate=False)
    with connect(server) as sock:
        reader = Reader(sock)
        for _ in range(2):
            sock.sendall(GET % b"/")
            resp = reader.read_response()
            assert resp.status == 200 and resp.header("connection") is None


# -- client disconnects (PEP 3333: close() is always called) ------------------------------------


def test_client_disconnect_mid_body(serve):
    closed = threading.Event()
    errors: List[BaseException] = []

    class ReadsInIteration:
        def __init__(self, environ):
            self.environ = environ

        def __iter__(self):
            try:
                read_body(self.environ)
            except ClientDisconnected as exc:
                errors.append(exc)
                raise
            yield b"never"

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ReadsInIteration(environ)

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
    assert wait_until(closed.is_set)
    assert len(errors) == 1
    assert wait_until(lambda: server.statistics()["connections_open"] == 0)
    assert request(server, GET % b"/alive").status == 200  # the server survived


def test_client_disconnect_mid_response(serve):
    closed = threading.Event()
    produced = [0]

    def forever():
        block = b"x" * 65536
        while True:
            produced[0] += 1
            yield block

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Tracked(forever(), closed)

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(GET % b"/")
        got = 0
        while got < 200_000:
            got += len(sock.recv(65536))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    assert wait_until(closed.is_set, timeout=10)
    assert wait_until(lambda: server.statistics()["connections_open"] == 0)

    def quick(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server.server.app = quick  # same server, a new request works
    assert request(server, GET % b"/").body == b"ok"


def test_client_disconnect_between_requests_is_quiet(serve, caplog):
    server = serve(echo_app)
    with caplog.at_level(logging.ERROR, logger="greenserve.error"):
        with connect(server) as sock:
            sock.sendall(GET % b"/")
            Reader(sock).read_response()
        assert wait_until(lambda: server.statistics()["connections_open"] == 0)
    assert [r for r in caplog.records if r.name.startswith("greenserve")] == []


# -- app errors (PEP 3333 "Error Handling") -----------------------------------------------------


class Boom(Exception):
    pass


def test_app_exception_before_start_response_is_500(serve, caplog):
    def app(environ, start_response):
        raise Boom("kaput")

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="greenserve.error"):
        with connect(server) as sock:
            sock.sendall(GET % b"/" + GET % b"/second")
            reader = Reader(sock)
            resp = reader.read_response()
            assert resp.status == 500
            assert resp.body  # a body that says what happened
            assert resp.header("connection") == "close"
            assert nothing_more(reader)
    tracebacks = [r for r in caplog.records if r.name == "greenserve.error" and r.exc_info]
    assert any(r.exc_info[0] is Boom for r in tracebacks)
    assert b"kaput" not in resp.body  # the client is not shown the exception text
    assert request(server, GET % b"/").status == 500  # still serving


def test_app_exception_after_start_response_before_body_is_500(serve):
    closed = threading.Event()

    def failing():
        raise Boom("late")
        yield b""  # pragma: no cover

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked(failing(), closed)

    server = serve(app)
    resp = request(server, GET % b"/")
    assert resp.status == 500
    assert wait_until(closed.is_set)


def test_app_exception_after_first_chunk_aborts_connection(serve, caplog):
    closed = threading.Event()

    def failing():
        yield b"first part"
        raise Boom("mid-body")

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/ok":
            return path_app(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked(failing(), closed)

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="greenserve.error"):
        with connect(server) as sock:
            sock.sendall(GET % b"/")
            data = recv_until_eof(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.startswith(b"a\r\nfirst part\r\n")
    assert not body.endswith(b"0\r\n\r\n")  # no last-chunk: the client knows it is truncated
    assert wait_until(closed.is_set)
    assert any(r.exc_info and r.exc_info[0] is Boom for r in caplog.records)
    assert request(server, GET % b"/ok").body == b"/ok"


def test_app_exception_with_exc_info_start_response_replaces_response(serve):
    def app(environ, start_response):
        try:
            raise Boom("handled")
        except Boom:
            import sys
            start_response("200 OK", [("Content-Type", "text/plain")])  # never sent
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                           sys.exc_info())
            return [b"sorry"]

    server = serve(app)
    resp = request(server, GET % b"/")
    assert resp.status == 503
    assert resp.body == b"sorry"


# -- Date, Server, version (RFC 9110 6.6.1, 10.2.4, 2.5) ----------------------------------------


def test_date_and_server_headers(serve):
    server = serve(echo_app)
    before = time.time()
    resp = request(server, GET % b"/")
    after = time.time()
    assert resp.header("server") == "greenserve"
    date = email.utils.parsedate_to_datetime(resp.header("date"))
    assert resp.header("date").endswith(" GMT")
    assert before - 2 <= date.timestamp() <= after + 1


def test_app_date_and_server_headers_are_not_duplicated(serve):
    """RFC 9110 5.3: a sender MUST NOT generate multiple field lines with the same name unless
    the field is a list; Date (6.6.1) and Server (10.2.4) are not. PEP 3333 lets the app set
    them; wsgiref's server adds Date/Server only when the app did not."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2"),
                                  ("Date", "Tue, 01 Jan 2030 00:00:00 GMT"), ("Server", "app/1")])
        return [b"ok"]

    server = serve(app)
    resp = request(server, GET % b"/")
    assert resp.status == 200
    names = [k.lower() for k, _ in resp.headers]
    assert names.count("date") == 1
    assert names.count("server") == 1
    assert resp.header("date") == "Tue, 01 Jan 2030 00:00:00 GMT"
    assert resp.header("server") == "app/1"


def test_status_line_is_http11_for_http10_request(serve):
    server = serve(echo_app)
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = recv_until_eof(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")


def test_http11_minor_version_above_1_answered_as_11(serve):
    """RFC 9110 2.5 / 6.2: a higher minor version of HTTP/1 is handled as the highest we have."""
    server = serve(echo_app)
    resp = request(server, b"GET / HTTP/1.2\r\nHost: x\r\n\r\n")
    assert resp.status == 200
    assert resp.header("x-protocol") == "HTTP/1.1"


# -- statistics ---------------------------------------------------------------------------------


def test_statistics_count_requests_and_status_classes(serve):
    def app(environ, start_response):
        status = "404 Not Found" if environ["PATH_INFO"] == "/missing" else "200 OK"
        start_response(status, [("Content-Type", "text/plain")])
        return [b"."]

    server = serve(app)
    base = server.statistics()
    assert base["requests_total"] == 0
    with connect(server) as sock:
        sock.sendall(GET % b"/a" + GET % b"/b" + GET % b"/missing")
        reader = Reader(sock)
        assert [reader.read_response().status for _ in range(3)] == [200, 200, 404]
    assert request(server, b"GET / HTTP/1.1\r\n\r\n").status == 400  # no Host
    assert request(server, b"GET / HTTP/3.0\r\nHost: x\r\n\r\n").status == 505
    assert wait_until(lambda: server.statistics()["connections_open"] == 0)
    stats = server.statistics()
    assert stats["requests_total"] == 3  # the rejected heads never became requests for the app
    assert stats["responses"]["2xx"] == 2
    assert stats["responses"]["4xx"] == 2
    assert stats["responses"]["5xx"] == 1
    assert stats["protocol_errors"] == 2
    assert stats["responses_aborted"] == 0
    assert stats["connections_total"] == 3
    assert stats["requests_in_flight"] == 0


def test_statistics_count_error_responses_for_failed_requests(serve):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/boom":
            raise Boom("x")
        read_body(environ)  # a bad chunked body: ClientError -> 400
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"."]

    server = serve(app)
    assert request(server, GET % b"/boom").status == 500
    assert request(server, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"zz\r\n").status == 400
    assert wait_until(lambda: server.statistics()["connections_open"] == 0)
    stats = server.statistics()
    assert stats["requests_total"] == 2
    assert stats["responses"]["5xx"] == 1
    assert stats["responses"]["4xx"] == 1
    assert stats["responses_aborted"] == 0


@pytest.mark.parametrize("kind", [list, tuple])
def test_a_body_of_several_known_pieces_gets_a_content_length(serve, kind):
    """A list or tuple of bytes is the whole body: it gets a Content-Length (not chunked) and
    arrives intact, the pieces in order; an app's own Content-Length still rules."""
    pieces = kind([b"alpha-", b"", b"beta-" * 1000, b"gamma"])

    def app(environ, start_response):
        headers = [("Content-Type", "text/plain")]
        if environ["PATH_INFO"] == "/short":
            headers.append(("Content-Length", "3"))
        start_response("200 OK", headers)
        return pieces

    server = serve(app, validate=False)  # the validator would turn the list into an iterator
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(GET % b"/")
        resp = reader.read_response()
        assert resp.header("transfer-encoding") is None
        assert resp.header("content-length") == str(len(b"".join(pieces)))
        assert resp.body == b"".join(pieces)
        sock.sendall(GET % b"/short")  # more than promised: cut, then the connection closes
        resp = reader.read_response()
        assert resp.body == b"alp"
        assert sock.recv(1) == b""


def test_a_closed_connection_is_freed_without_the_cycle_collector(serve):
    """A connection, its socket, parser and response hold one another while they serve; once
    closed they must be freed as their last reference goes. Left in a reference cycle, each
    closed connection waited for the cycle collector, which then cost a tenth of a short
    connection's time (scenario c of loadtests/bench)."""
    import gc

    def hello(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hi"]

    server = serve(hello, validate=False)
    kinds = ("Connection", "GreenSocket", "H1Connection", "Response")
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for close in (True, False) * 5:  # closed by the server after its answer, or by the client
            with connect(server) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n"
                             + (b"Connection: close\r\n" if close else b"") + b"\r\n")
                assert Reader(sock).read_response().status == 200
        assert wait_until(lambda: server.statistics()["connections_open"] == 0, 10)
        gc.collect()
        cyclic = [type(o).__name__ for o in gc.garbage if type(o).__name__ in kinds]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == []
