"""Every size limit and timeout option of greenserve, with small values, over real sockets.

Timing rules: nothing sleeps to wait for the server. A test waits on its socket with a timeout
(the server's answer or EOF ends the wait at once) or polls server state with a deadline. Where a
client must pace itself (a slowloris trickle), the pause is a wait on the socket, so a server
answer cuts it short. Lower bounds on elapsed time are loose and upper bounds generous.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Iterator, List

import pytest

from conftest import Tracked, Reader, connect, request, wait_until
from greenserve.errors import ClientError
from greenserve.loop.hub import get_hub

GET = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"


def read_body(environ: dict) -> bytes:
    stream = environ["wsgi.input"]
    parts = []
    while True:
        piece = stream.read(65536)
        if not piece:
            return b"".join(parts)
        parts.append(piece)


def echo_app(environ, start_response):
    body = read_body(environ)
    out = environ["PATH_INFO"].encode() + b"|" + body
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def quick_app(environ, start_response):
    out = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def expect_rejection(sock: socket.socket, status: int, within: float = 5.0) -> Reader:
    """Read one response (within ``within`` seconds): ``status``, Connection: close, then EOF."""
    sock.settimeout(within)
    reader = Reader(sock)
    resp = reader.read_response()
    assert resp.status == status, resp.raw_head
    assert resp.header("connection") == "close"
    assert reader.at_eof(within) and reader.buf == b""
    return reader


def wait_readable(sock: socket.socket, timeout: float) -> bool:
    """Block until the server sends something (or closes), at most ``timeout`` seconds."""
    return bool(select.select([sock], [], [], timeout)[0])


# -- size limits (RFC 9112 3, 5; RFC 9110 15.5.14, 15.5.15; RFC 6585 5) -------------------------


def test_max_request_line_414(serve):
    server = serve(quick_app, max_request_line=64)
    ok = b"/" + b"a" * 40
    assert request(server, GET % ok).body == ok  # under the limit: fine
    with connect(server) as sock:
        sock.sendall(GET % (b"/" + b"a" * 100))
        expect_rejection(sock, 414)


def test_max_request_line_414_before_the_line_ends(serve):
    """A request line already over the limit is refused without waiting for its end."""
    server = serve(quick_app, max_request_line=64, header_timeout=30)
    with connect(server) as sock:
        sock.sendall(b"GET /" + b"a" * 200)  # no CRLF, and the client goes quiet
        started = time.monotonic()
        expect_rejection(sock, 414)
        assert time.monotonic() - started < 3  # answered at once, not at the header timeout


def test_max_header_bytes_431(serve):
    server = serve(quick_app, max_header_bytes=256)
    fine = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-A: %s\r\n\r\n" % (b"a" * 150)
    assert request(server, fine).status == 200
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: %s\r\n\r\n" % (b"a" * 300))
        expect_rejection(sock, 431)


def test_max_header_bytes_431_across_many_fields(serve):
    server = serve(quick_app, max_header_bytes=256)
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 40) for i in range(8))  # ~400 bytes
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        expect_rejection(sock, 431)


def test_max_header_bytes_431_before_the_head_ends(serve):
    server = serve(quick_app, max_request_line=64, max_header_bytes=256, header_timeout=30)
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 2000)  # never ends
        started = time.monotonic()
        expect_rejection(sock, 431)
        assert time.monotonic() - started < 3


def test_max_header_count_431(serve):
    server = serve(quick_app, max_header_count=5)
    four_more = b"".join(b"X-%d: 1\r\n" % i for i in range(4))
    assert request(server, b"GET /ok HTTP/1.1\r\nHost: x\r\n" + four_more + b"\r\n").status == 200
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + four_more + b"X-4: 1\r\n\r\n")
        expect_rejection(sock, 431)


def test_max_body_size_content_length_413_answered_before_the_body(serve):
    calls: List[str] = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        return echo_app(environ, start_response)

    server = serve(app, max_body_size=100)
    assert request(server, b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                   + b"b" * 100).body == b"/ok|" + b"b" * 100
    with connect(server) as sock:
        # only the head: the server must answer without waiting for a body it will refuse
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
        started = time.monotonic()
        expect_rejection(sock, 413)
        assert time.monotonic() - started < 3
    assert calls == ["/ok"]


def test_max_body_size_huge_content_length_413(serve):
    server = serve(echo_app, max_body_size=100)
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n")
        expect_rejection(sock, 413)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "streamed"])
def test_max_body_size_chunked_413(serve, buffered):
    errors: List[BaseException] = []

    def app(environ, start_response):
        try:
            body = read_body(environ)
        except ClientError as exc:
            errors.append(exc)
            raise
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    server = serve(app, max_body_size=100, buffer_chunked_body=buffered)
    fine = b"32\r\n" + b"a" * 50 + b"\r\n32\r\n" + b"b" * 50 + b"\r\n0\r\n\r\n"  # exactly 100
    assert request(server, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + fine).body == b"a" * 50 + b"b" * 50
    with connect(server) as sock:
        # 60 + 60 > 100; the client then stalls: the 413 must not wait for the rest
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3c\r\n" + b"a" * 60 + b"\r\n3c\r\n")
        expect_rejection(sock, 413)
    assert len(errors) == (0 if buffered else 1)  # buffered: the app is never called


@pytest.mark.parametrize("trailers", [
    b"X-Big: " + b"t" * 400 + b"\r\n",  # over max_header_bytes
    b"".join(b"X-%d: 1\r\n" % i for i in range(8)),  # over max_header_count
])
def test_trailer_section_is_bounded_by_the_header_limits(serve, trailers):
    """RFC 9110 6.5: trailer fields are a header-like section; the same limits apply."""
    server = serve(echo_app, max_header_bytes=256, max_header_count=5)
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"2\r\nab\r\n0\r\n" + trailers + b"\r\n" + GET % b"/smuggled")
        expect_rejection(sock, 431)


# -- header_timeout (RFC 9110 15.5.9) ----------------------------------------------------------


def test_header_timeout_half_head_gets_408(serve):
    server = serve(quick_app, header_timeout=0.5)
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # no final CRLF
        started = time.monotonic()
        expect_rejection(sock, 408, within=5)
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 4


def test_header_timeout_silent_connection_closed(serve):
    server = serve(quick_app, header_timeout=0.5)
    with connect(server) as sock:
        started = time.monotonic()
        sock.settimeout(5)
        try:
            data = sock.recv(1024)
        except ConnectionResetError:
            data = b""
        elapsed = time.monotonic() - started
    assert data == b"" or data.startswith(b"HTTP/1.1 408 ")  # closed (a 408 is allowed too)
    assert 0.3 <= elapsed < 4
    assert wait_until(lambda: server.statistics()["connections_open"] == 0)


def test_header_timeout_slowloris_cut_off_while_still_sending(serve):
    server = serve(quick_app, header_timeout=0.5)
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200
    with connect(server) as sock:
        started = time.monotonic()
        sent = 0
        answered = False
        while sent < len(head) and time.monotonic() - started < 8:
            try:
                sock.sendall(head[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            if wait_readable(sock, 0.1):  # pace the trickle; stop as soon as the server speaks
                answered = True
                break
        elapsed = time.monotonic() - started
        assert answered, "the trickling client was never cut off"
        expect_rejection(sock, 408)
    assert 0.3 <= elapsed < 4
    assert sent < len(head)  # it was cut off while still sending its head


def test_header_timeout_on_a_kept_connection(serve):
    server = serve(quick_app, header_timeout=0.5, keepalive_timeout=30)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(GET % b"/first")
        assert reader.read_response().body == b"/first"
        sock.sendall(b"GET /second HTTP/1.1\r\n")  # the next head starts, then stalls
        started = time.monotonic()
        sock.settimeout(5)
        resp = reader.read_response()
        assert resp.status == 408
        assert reader.at_eof()
    assert time.monotonic() - started < 4


def test_header_timeout_does_not_cut_a_complete_head(serve):
    """A head that arrives in time is served even if the app then takes longer than the
    header timeout."""
    def slow_app(environ, start_response):
        get_hub().sleep(0.8)
        return quick_app(environ, start_response)

    server = serve(slow_app, header_timeout=0.3)
    with connect(server) as sock:
        sock.settimeout(5)
        sock.sendall(GET % b"/slow")
        assert Reader(sock).read_response().body == b"/slow"


# -- body_timeout ------------------------------------------------------------------------------


def test_body_timeout_stalled_body_gets_408(serve):
    errors: List[BaseException] = []

    def app(environ, start_response):
        try:
            body = read_body(environ)
        except ClientError as exc:
            errors.append(exc)
            body = b"caught"  # the app carries on; the server must not send this
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    server = serve(app, body_timeout=0.5)
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        started = time.monotonic()
        expect_rejection(sock, 408)
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 4
    assert len(errors) == 1 and isinstance(errors[0], ClientError)


def test_body_timeout_with_the_exception_left_to_the_server(serve):
    server = serve(echo_app, body_timeout=0.5)
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
        expect_rejection(sock, 408)


def test_body_timeout_after_response_started_closes(serve):
    """If the app already sent its head, a stalled body can only end in a closed connection."""
    closed = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"started;"
            yield read_body(environ)

        return Tracked(body(), closed)

    server = serve(app, body_timeout=0.5)
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123")
        sock.settimeout(5)
        data = b""
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b"8\r\nstarted;\r\n"  # then EOF: no last-chunk, the client sees truncation
    assert wait_until(closed.is_set)


def test_body_timeout_is_per_read_not_per_body(serve):
    """A slow but steady body (one byte every 0.1 s, 1.2 s in all) outlives a 0.5 s body
    timeout: the timeout bounds a stall, not the whole upload (min_body_rate is off here)."""
    server = serve(echo_app, body_timeout=0.5, header_timeout=0.3, min_body_rate=0)
    body = b"0123456789ab"
    with connect(server) as sock:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(len(body) - 1):
            sock.sendall(body[i:i + 1])
            assert not wait_readable(sock, 0.1), "the server answered before the body was sent"
        sock.sendall(body[-1:])
        sock.settimeout(5)
        assert Reader(sock).read_response().body == b"/slow|" + body


# -- min_body_rate ---------------------------------------------------------------------------------


def trickle_body(sock, body: bytes, every: float) -> bool:
    """Send ``body`` a byte at a time, pausing ``every`` seconds (cut short if the server
    speaks). Returns True if all of it was sent before the server answered."""
    for i in range(len(body)):
        try:
            sock.sendall(body[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return False
        if wait_readable(sock, every):
            return i == len(body) - 1
    return True


def test_min_body_rate_cuts_off_a_body_that_never_stalls(serve):
    """One byte every 0.1 s never stalls for the 0.5 s body timeout, but 10 bytes/s is under
    the 100 bytes/s minimum: cut off (408) once the 0.5 s of grace and the credit of what
    arrived (~0.1 s) are used up."""
    server = serve(echo_app, body_timeout=0.5, min_body_rate=100)
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        started = time.monotonic()
        assert not trickle_body(sock, b"x" * 100, 0.1)
        elapsed = time.monotonic() - started
        expect_rejection(sock, 408)
    assert 0.4 <= elapsed < 3


def test_min_body_rate_lets_a_slow_body_above_the_rate_through(serve):
    """200 bytes/s for 1.5 s, three times the 0.5 s body timeout, is above the minimum."""
    server = serve(echo_app, body_timeout=0.5, min_body_rate=100)
    body = b"0123456789" * 30
    with connect(server) as sock:
        sock.sendall(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body) - 10, 10):
            sock.sendall(body[i:i + 10])
            assert not wait_readable(sock, 0.05), "cut off above the minimum rate"
        sock.sendall(body[-10:])
        sock.settimeout(5)
        assert Reader(sock).read_response().body == b"/ok|" + body


def trickle_one_byte_chunks(sock: socket.socket, most: int = 100) -> None:
    """Send one-byte chunks, one each 50 ms at the most, until the server answers or closes."""
    for _ in range(most):
        try:
            sock.sendall(b"1\r\nx\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return
        if wait_readable(sock, 0.05):
            return


def test_min_body_rate_applies_to_chunked_bodies_and_to_draining(serve):
    """A chunked body of one-byte chunks the app does not read: the server's drain of it is
    held to the minimum rate too, and the connection is closed."""
    server = serve(quick_app, body_timeout=0.5, min_body_rate=200, buffer_chunked_body=False)
    with connect(server) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        reader = Reader(sock)
        sock.settimeout(5)
        assert reader.read_response().body == b"/x"
        started = time.monotonic()
        trickle_one_byte_chunks(sock)
        assert reader.at_eof(5)
        assert time.monotonic() - started < 3


def test_min_body_rate_applies_while_a_chunked_body_is_buffered(serve):
    """Buffering a chunked body before the app is a body read like any other: a one-byte-per-
    chunk trickle below the minimum rate gets 408 once its grace is over, and the app is never
    called."""
    called = []
    server = serve(lambda environ, start_response: called.append(1), body_timeout=0.5,
                   min_body_rate=200)
    with connect(server) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        started = time.monotonic()
        trickle_one_byte_chunks(sock)
        expect_rejection(sock, 408)
        assert time.monotonic() - started < 3
    assert called == []


# -- keepalive_timeout (RFC 9112 9.5) ------------------------------------------------------------


def test_keepalive_timeout_closes_idle_connection(serve):
    server = serve(quick_app, keepalive_timeout=0.5)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(GET % b"/")
        assert reader.read_response().status == 200
        assert server.statistics()["connections_open"] == 1
        started = time.monotonic()
        assert reader.at_eof(5) and reader.buf == b""  # closed without a word
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 4
    assert wait_until(lambda: server.statistics()["connections_open"] == 0)
    assert server.statistics()["connections_idle"] == 0


def test_keepalive_timeout_restarts_with_each_request(serve):
    """Requests every 0.3 s keep a connection with a 0.5 s idle timeout alive for > 1 s."""
    server = serve(quick_app, keepalive_timeout=0.5)
    with connect(server) as sock:
        reader = Reader(sock)
        started = time.monotonic()
        for i in range(4):
            sock.sendall(GET % b"/%d" % i)
            assert reader.read_response().body == b"/%d" % i
            assert not wait_readable(sock, 0.3)  # the server neither speaks nor closes
        assert time.monotonic() - started > 1.0
    assert server.statistics()["connections_total"] == 1


def test_keepalive_timeout_does_not_cut_a_slow_app(serve):
    def slow_app(environ, start_response):
        get_hub().sleep(0.8)
        return quick_app(environ, start_response)

    server = serve(slow_app, keepalive_timeout=0.3)
    with connect(server) as sock:
        sock.settimeout(5)
        reader = Reader(sock)
        sock.sendall(GET % b"/a")
        assert reader.read_response().body == b"/a"
        sock.sendall(GET % b"/b")  # the second one, on the kept connection, also finishes
        assert reader.read_response().body == b"/b"


# -- send_timeout --------------------------------------------------------------------------------


def test_send_timeout_client_stops_reading(serve):
    closed = threading.Event()

    def forever():
        block = b"x" * 65536
        while True:
            yield block

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Tracked(forever(), closed)

    server = serve(app, send_timeout=0.5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so the server's send blocks
    try:
        sock.settimeout(5)
        sock.connect((server.host, server.port))
        sock.sendall(GET % b"/")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        # The client reads nothing more. The server fills the buffers, stalls, gives up.
        assert wait_until(closed.is_set, timeout=10), "the server never gave up sending"
        assert time.monotonic() - started < 8
        assert wait_until(lambda: server.statistics()["connections_open"] == 0)
        # what is still in flight drains, then the connection is seen closed
        sock.settimeout(5)
        total = 0
        try:
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                total += len(piece)
        except ConnectionResetError:
            pass
    finally:
        sock.close()
    server.server.app = quick_app  # the same server still serves
    assert request(server, GET % b"/after").body == b"/after"


@pytest.mark.parametrize("kind", ["one-element-list", "file_wrapper"])
def test_send_timeout_on_the_single_send_and_sendfile_paths(serve, kind, tmp_path):
    """The same limit where the server sends the body in one go (a one-element list: head and
    body in one sendmsg) or with os.sendfile (wsgi.file_wrapper on a regular file)."""
    size = 20 << 20
    path = tmp_path / "big.bin"
    path.write_bytes(b"f" * size)
    closed = threading.Event()

    class ClosingFile:
        def __init__(self):
            self.fh = open(path, "rb")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def close(self):
            self.fh.close()
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        if kind == "file_wrapper":
            return environ["wsgi.file_wrapper"](ClosingFile())
        return [b"f" * size]

    server = serve(app, validate=False, send_timeout=0.5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.settimeout(5)
        sock.connect((server.host, server.port))
        sock.sendall(GET % b"/")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        assert wait_until(lambda: server.statistics()["connections_open"] == 0, timeout=10)
        assert time.monotonic() - started < 8
        if kind == "file_wrapper":
            assert wait_until(closed.is_set)  # PEP 3333: close() called on the wrapper
    finally:
        sock.close()


def test_send_timeout_does_not_cut_a_slow_reader(serve):
    """A client that keeps reading, slowly, gets the whole response: the timeout bounds a
    stall, not the whole response."""
    size = 2 << 20

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return iter([b"y" * (64 << 10)] * (size // (64 << 10)))

    server = serve(app, send_timeout=0.5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    try:
        sock.settimeout(5)
        sock.connect((server.host, server.port))
        sock.sendall(GET % b"/")
        started = time.monotonic()
        got = b""
        while b"\r\n\r\n" not in got:
            got += sock.recv(65536)
        total = len(got.partition(b"\r\n\r\n")[2])
        while total < size:
            piece = sock.recv(8192)
            assert piece, "connection closed after %d of %d bytes" % (total, size)
            total += len(piece)
            # pace the reader at ~64 KiB per 20 ms, waiting on the socket itself
            if total % (64 << 10) < 8192:
                select.select([], [], [], 0.02)
        assert total == size
        assert time.monotonic() - started > 0.5
    finally:
        sock.close()


# -- max_connections -----------------------------------------------------------------------------


def test_max_connections_third_waits_until_one_closes(serve):
    server = serve(quick_app, max_connections=2, keepalive_timeout=30)
    first, second = connect(server), connect(server)
    third = None
    try:
        for sock, path in ((first, b"/1"), (second, b"/2")):
            sock.sendall(GET % path)
            assert Reader(sock).read_response().body == path
        assert server.statistics()["connections_open"] == 2
        third = connect(server)  # the kernel completes the handshake; the server must not serve
        third.sendall(GET % b"/3")
        assert not wait_readable(third, 0.5), "a third connection was served over the limit"
        assert server.statistics()["connections_open"] == 2
        first.close()
        third.settimeout(5)
        assert Reader(third).read_response().body == b"/3"  # served once a slot freed
        assert wait_until(lambda: server.statistics()["connections_total"] == 3)
        assert server.statistics()["connections_open"] == 2
    finally:
        for sock in (first, second, third):
            if sock is not None:
                sock.close()


def test_max_connections_slots_freed_by_the_idle_timeouts(serve):
    """Two clients that connect and say nothing hold both slots only until header_timeout;
    a kept-alive idle one only until keepalive_timeout. Then the waiting client is served."""
    server = serve(quick_app, max_connections=2, header_timeout=0.5, keepalive_timeout=0.5)
    silent = connect(server)
    kept = connect(server)
    waiting = None
    try:
        kept.sendall(GET % b"/kept")
        assert Reader(kept).read_response().body == b"/kept"
        assert wait_until(lambda: server.statistics()["connections_open"] == 2)
        waiting = connect(server)
        waiting.sendall(GET % b"/waiting")
        waiting.settimeout(5)
        started = time.monotonic()
        assert Reader(waiting).read_response().body == b"/waiting"
        assert 0.2 <= time.monotonic() - started < 4
    finally:
        for sock in (silent, kept, waiting):
            if sock is not None:
                sock.close()


# -- timeouts are per connection -----------------------------------------------------------------


def test_many_slow_clients_each_cut_off_at_their_own_deadline(serve):
    server = serve(quick_app, header_timeout=0.5)
    socks = [connect(server) for _ in range(30)]
    try:
        started = time.monotonic()
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        # a normal client is served at once meanwhile
        assert request(server, GET % b"/fast").body == b"/fast"
        assert time.monotonic() - started < 0.4
        for sock in socks:
            expect_rejection(sock, 408)
        assert time.monotonic() - started < 4
    finally:
        for sock in socks:
            sock.close()
    assert wait_until(lambda: server.statistics()["connections_open"] == 0)
    assert server.statistics()["protocol_errors"] == 30


def test_other_clients_served_while_one_is_stalled(serve):
    stalled_calls: List[str] = []

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/upload":
            stalled_calls.append("reading")
            return echo_app(environ, start_response)
        return quick_app(environ, start_response)

    server = serve(app, header_timeout=3, body_timeout=3)
    half_head = connect(server)
    mid_body = connect(server)
    try:
        half_head.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        mid_body.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        assert wait_until(lambda: stalled_calls == ["reading"])  # the app is blocked in read
        started = time.monotonic()
        with connect(server) as sock:
            reader = Reader(sock)
            for i in range(20):
                sock.sendall(GET % b"/q%d" % i)
                assert reader.read_response().body == b"/q%d" % i
        assert time.monotonic() - started < 1.5
        # the stalled clients were not disturbed by the traffic: both still open, unanswered
        assert not wait_readable(half_head, 0)
        assert not wait_readable(mid_body, 0)
        mid_body.sendall(b"d" * 97)  # the blocked app wakes up and finishes
        mid_body.settimeout(5)
        assert Reader(mid_body).read_response().body == b"/upload|abc" + b"d" * 97
    finally:
        half_head.close()
        mid_body.close()


def test_other_clients_served_while_one_does_not_read(serve):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/huge":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return iter([b"z" * 65536] * 1000)
        return quick_app(environ, start_response)

    server = serve(app, send_timeout=10)
    lazy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        lazy.settimeout(5)
        lazy.connect((server.host, server.port))
        lazy.sendall(GET % b"/huge")
        assert lazy.recv(100).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        for i in range(10):
            assert request(server, GET % b"/q%d" % i).body == b"/q%d" % i
        assert time.monotonic() - started < 2
        # the lazy one is still going (the others finish just after their last byte is sent)
        assert wait_until(lambda: server.statistics()["requests_in_flight"] == 1)
        assert wait_until(lambda: server.statistics()["connections_open"] == 1)
    finally:
        lazy.close()
