"""Per-request guards, against a real server over real sockets: the request deadline
(request_timeout: 504, or a closed connection once the response started) and client-disconnect
detection (environ['greenserve.client_disconnected'], streamed responses stopping)."""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest
import requests

import greenserve
from conftest import Reader, Tracked, connect, wait_until
from greenserve.loop.guards import peer_gone

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


# -- request_timeout ----------------------------------------------------------------------------


def sleeper(environ, start_response):
    try:
        greenserve.sleep(10)
    except Exception:  # an app's catch-all: the deadline must not be swallowed by it
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"swallowed"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept"]


def test_request_timeout_answers_504_and_frees_the_connection(serve, caplog):
    server = serve(sleeper, request_timeout=0.3)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="greenserve.error"):
        with connect(server) as sock:
            sock.sendall(GET)
            reader = Reader(sock)
            resp = reader.read_response()
            elapsed = time.monotonic() - start
            assert resp.status == 504 and resp.header("connection") == "close"
            assert reader.at_eof()
    assert 0.29 <= elapsed < 3
    assert wait_until(lambda: server.statistics()["requests_in_flight"] == 0)
    assert wait_until(lambda: server.statistics()["connections_open"] == 0)
    assert server.statistics()["responses"]["5xx"] == 1
    # the log says where the app was waiting
    assert any("request_timeout" in r.getMessage() and "sleeper" in (r.exc_text or "")
               for r in caplog.records)


def test_request_timeout_before_the_first_piece_is_504_and_close_is_called(serve):
    closed = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def pieces() -> Iterator[bytes]:
            greenserve.sleep(10)  # the head is not sent before the first piece
            yield b"late"

        return Tracked(pieces(), closed)

    server = serve(app, request_timeout=0.2)
    resp = requests.get(server.url, timeout=10)
    assert resp.status_code == 504
    assert closed.wait(5)


def test_request_timeout_after_the_head_closes_the_connection_and_calls_close(serve):
    closed = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def pieces() -> Iterator[bytes]:
            yield b"first\n"
            greenserve.sleep(10)
            yield b"never\n"

        return Tracked(pieces(), closed)

    server = serve(app, request_timeout=0.3)
    with connect(server) as sock:
        sock.sendall(GET)
        reader = Reader(sock)
        assert reader.at_eof()
    head, _, body = reader.buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"chunked" in head
    assert b"first\n" in body and not body.endswith(b"0\r\n\r\n")  # cut, never ended
    assert closed.wait(5)
    assert wait_until(lambda: server.statistics()["responses_aborted"] == 1)


def test_a_quick_request_is_untouched_and_its_deadline_never_fires_later(serve):
    def app(environ, start_response):
        greenserve.sleep(0.01)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"quick"]

    server = serve(app, request_timeout=0.2)
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(GET)
        assert reader.read_response().body == b"quick"
        time.sleep(0.4)  # idle on the kept-alive connection past the first request's deadline
        sock.sendall(GET)
        assert reader.read_response().body == b"quick"
    assert wait_until(lambda: server.statistics()["responses"]["2xx"] == 2)


def test_the_request_timeout_flag_answers_504(run):
    proc = run("tests.cliapps:slow", "--bind", "127.0.0.1:0", "--request-timeout", "0.3")
    url = proc.url()
    resp = requests.get(url + "/?5", timeout=10)
    assert resp.status_code == 504
    assert requests.get(url + "/?0", timeout=10).text == "slow done"
    assert proc.stop() == 0


# -- client disconnect --------------------------------------------------------------------------


def streamer(record: Dict[str, Any], closed: threading.Event, pause: float = 0.2):
    """A streamed response: one piece, then a piece every ``pause`` seconds (cooperative)."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def pieces() -> Iterator[bytes]:
            for i in range(100):
                record.setdefault("yielded", []).append(time.monotonic())
                yield b"piece %d\n" % i
                greenserve.sleep(pause)

        return Tracked(pieces(), closed)

    return app


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_client_leaving_mid_stream_stops_the_app_within_one_piece(serve, how):
    record: Dict[str, Any] = {}
    closed = threading.Event()
    server = serve(streamer(record, closed))
    sock = connect(server)
    sock.sendall(GET)
    reader = Reader(sock)
    while b"piece 0\n" not in reader.buf:
        assert reader._fill()
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    left = time.monotonic()
    sock.close()
    assert closed.wait(5), "close() was not called"
    after = [t for t in record["yielded"] if t > left]
    assert len(after) <= 1, f"{len(after)} pieces made after the client left"
    assert wait_until(lambda: server.statistics()["connections_open"] == 0)


def test_client_disconnected_turns_true_when_the_client_leaves(serve):
    seen: List[bool] = []
    noticed = threading.Event()

    def app(environ, start_response):
        probe = environ["greenserve.client_disconnected"]
        seen.append(probe())
        for _ in range(500):
            if probe():
                noticed.set()
                break
            greenserve.sleep(0.01)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"too late"]

    server = serve(app)
    sock = connect(server)
    sock.sendall(GET)
    assert wait_until(lambda: seen == [False])
    left = time.monotonic()
    sock.close()
    assert noticed.wait(5)
    assert time.monotonic() - left < 2


def test_a_pipelined_request_after_a_half_close_is_not_a_disconnect(serve):
    seen: List[bool] = []

    def app(environ, start_response):
        greenserve.sleep(0.05)  # the half-close has surely arrived
        seen.append(environ["greenserve.client_disconnected"]())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"a", b"b"])

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(GET + GET)
        sock.shutdown(socket.SHUT_WR)  # done sending, still reading
        reader = Reader(sock)
        assert reader.read_response().body == b"ab"
        assert reader.read_response().body == b"ab"
    # With the second request still to answer, the end of stream is a half-close. After the
    # last one it cannot be told from a departure; the answer the app sends still goes out.
    assert seen == [False, True]


def test_probing_does_not_consume_an_unread_body(serve):
    seen: List[Any] = []

    def app(environ, start_response):
        seen.append(environ["greenserve.client_disconnected"]())
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    server = serve(app)
    data = b"x" * 100_000
    resp = requests.post(server.url, data=data, timeout=10)
    assert resp.content == data
    assert seen == [False]


def test_a_slow_stream_to_a_present_client_is_sent_whole(serve):
    record: Dict[str, Any] = {}
    closed = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def pieces() -> Iterator[bytes]:
            for i in range(5):
                greenserve.sleep(0.02)
                yield b"%d" % i

        return Tracked(pieces(), closed)

    server = serve(app)
    assert requests.get(server.url, timeout=10).content == b"01234"
    assert closed.wait(5)
    assert server.statistics()["responses_aborted"] == 0


def test_the_probe_works_on_a_tls_socket_too(certificate):
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*certificate)
    client_ctx = ssl.create_default_context(cafile=certificate[0])
    a, b = socket.socketpair()
    server = server_ctx.wrap_socket(a, server_side=True, do_handshake_on_connect=False)
    client = client_ctx.wrap_socket(b, server_hostname="localhost", do_handshake_on_connect=False)
    shake = threading.Thread(target=client.do_handshake)
    shake.start()
    server.do_handshake()
    shake.join(10)
    server.setblocking(False)
    try:
        assert peer_gone(server, False) is False  # a TLS socket refuses MSG_PEEK: not here
        client.close()  # no close_notify sent: the plain end of the stream
        assert wait_until(lambda: peer_gone(server, False))
    finally:
        server.close()
