"""The lingering close after an error response (RFC 9112 9.6): the client gets the whole
response, the server reads and discards what the client still sends, in the hub (no greenlet
is held), and closes at the client's EOF, past a byte limit, or at ``linger_timeout``."""

from __future__ import annotations

import socket
import time

from conftest import Reader, connect, wait_until
from greenserve.http.respond import _LINGER_BYTES

TOO_BIG = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n" + b"b" * 1000


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def lingering(server):
    """The server's connections that are in a lingering close."""
    return [c for c in list(server.server.connections) if c.linger is not None]


def test_an_error_response_is_whole_and_the_linger_holds_no_greenlet(serve):
    server = serve(app, max_body_size=1000, linger_timeout=1.0)
    with connect(server) as sock:
        sock.sendall(TOO_BIG)
        reader = Reader(sock)
        response = reader.read_response()
        assert response.status == 413 and response.header("connection") == "close"
        started = time.monotonic()
        assert wait_until(lambda: len(lingering(server)) == 1, timeout=5)
        conn = lingering(server)[0]
        assert conn.glet is None and not conn.closed  # the hub lingers, not a greenlet
        sock.sendall(b"more bytes the server reads and drops")
        assert reader.at_eof(timeout=5) and reader.buf == b""  # the server's half-close
        # The client neither closes nor stops: the server closes at linger_timeout.
        assert wait_until(lambda: server.statistics()["connections_open"] == 0, timeout=5)
        elapsed = time.monotonic() - started
        assert 0.8 < elapsed < 2.5, elapsed


def test_the_linger_ends_at_the_clients_eof(serve):
    server = serve(app, max_body_size=1000, linger_timeout=30.0)
    with connect(server) as sock:
        sock.sendall(TOO_BIG)
        reader = Reader(sock)
        assert reader.read_response().status == 413
        assert wait_until(lambda: len(lingering(server)) == 1, timeout=5)
        started = time.monotonic()
        sock.shutdown(socket.SHUT_WR)
        assert wait_until(lambda: server.statistics()["connections_open"] == 0, timeout=5)
        assert time.monotonic() - started < 2


def test_the_linger_ends_past_its_byte_limit(serve):
    """A client that keeps sending is cut off after _LINGER_BYTES, not at the timeout."""
    server = serve(app, max_body_size=1000, linger_timeout=30.0)
    with connect(server) as sock:
        sock.sendall(TOO_BIG)
        reader = Reader(sock)
        assert reader.read_response().status == 413
        started = time.monotonic()
        block = b"z" * 65536
        sent = 0
        try:
            while sent < 4 * _LINGER_BYTES and time.monotonic() - started < 10:
                sock.sendall(block)
                sent += len(block)
        except OSError:  # reset: the server closed with unread bytes, as it should
            pass
        assert wait_until(lambda: server.statistics()["connections_open"] == 0, timeout=5)
        assert time.monotonic() - started < 5
        assert sent >= _LINGER_BYTES - 65536


def test_a_server_stop_during_a_linger_closes_the_connection(serve):
    server = serve(app, max_body_size=1000, linger_timeout=30.0)
    sock = connect(server)
    try:
        sock.sendall(TOO_BIG)
        assert Reader(sock).read_response().status == 413
        assert wait_until(lambda: len(lingering(server)) == 1, timeout=5)
        started = time.monotonic()
        server.server.stop(0.5)
        assert time.monotonic() - started < 5
        assert server.statistics()["connections_open"] == 0
    finally:
        sock.close()
