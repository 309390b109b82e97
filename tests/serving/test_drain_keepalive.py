"""A draining server and its idle keep-alive connections (RFC 9112 9.3.1): one that sends its
next request during the drain gets an answer with ``Connection: close``; one that stays quiet
is closed after DRAIN_QUIET; neither is closed while its client may be sending. The same holds
for SIGTERM to a server run in one process."""

from __future__ import annotations

import signal
import socket
import threading
import time

from conftest import Reader, wait_until
from support import refused
from greenserve import Server
from greenserve.http.connection import DRAIN_QUIET
from greenserve.loop.hub import get_hub

GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"


def app(environ, start_response):
    """``/`` answers at once; ``/straddle`` sends its head and a first piece, then waits
    (bounded) for the server to start draining before it sends the rest."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    if environ["PATH_INFO"] != "/straddle":
        return [b"hello"]

    def pieces():
        yield b"first;"
        statistics = environ["greenserve.statistics"]
        for _ in range(500):
            if statistics()["draining"]:
                break
            get_hub().sleep(0.01)
        yield b"last"
    return pieces()


def started(**options) -> tuple:
    server = Server(app, bind="127.0.0.1:0", **options)
    server.start()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    assert server.wait_serving(10)
    return server, thread


def kept_alive(server: Server, path: bytes = b"") -> tuple:
    """A connection that has had one answer and is now idle: (socket, reader)."""
    sock = socket.create_connection(server.addresses[0], timeout=10)
    sock.sendall(GET % path)
    reader = Reader(sock)
    resp = reader.read_response()
    assert resp.status == 200 and resp.header("connection") is None
    return sock, reader


def stop_in_thread(server: Server, grace: float = 10.0) -> threading.Thread:
    stopper = threading.Thread(target=server.stop, args=(grace,))
    stopper.start()
    assert wait_until(lambda: server.draining, timeout=5)
    return stopper


def test_idle_connection_is_answered_with_close_during_the_drain():
    server, thread = started()
    busy, busy_reader = kept_alive(server)
    quiet, quiet_reader = kept_alive(server)
    began = time.monotonic()
    stopper = stop_in_thread(server)
    busy.sendall(GET % b"")  # the next request of a client that keeps going
    resp = busy_reader.read_response()
    assert (resp.status, resp.body, resp.header("connection")) == (200, b"hello", "close")
    assert busy_reader.at_eof(5)
    # The quiet one is kept for a while (its client may be about to send), then closed.
    assert not quiet_reader.at_eof(DRAIN_QUIET / 4)
    assert quiet_reader.at_eof(5)
    assert time.monotonic() - began >= DRAIN_QUIET * 0.9
    stopper.join(10)
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - began < DRAIN_QUIET + 3  # the quiet time, not the grace
    busy.close()
    quiet.close()


def test_response_begun_before_the_drain_keeps_its_connection_for_the_next_request():
    server, thread = started()
    sock = socket.create_connection(server.addresses[0], timeout=10)
    sock.sendall(GET % b"straddle")
    reader = Reader(sock)
    assert wait_until(lambda: server.statistics()["requests_in_flight"] == 1)
    stopper = stop_in_thread(server)
    resp = reader.read_response()  # its head went out before the drain: keep-alive
    assert (resp.status, resp.body) == (200, b"first;last")
    assert resp.header("connection") is None
    sock.sendall(GET % b"")
    resp = reader.read_response()
    assert (resp.status, resp.body, resp.header("connection")) == (200, b"hello", "close")
    assert reader.at_eof(5)
    stopper.join(10)
    thread.join(5)
    assert not thread.is_alive()
    sock.close()


def test_sigterm_to_a_one_process_server_answers_the_next_keep_alive_request(run):
    proc = run("examples.hello:app", "--bind", "127.0.0.1:0")
    host, port = proc.address()
    sock = socket.create_connection((host, port), timeout=10)
    reader = Reader(sock)
    sock.sendall(GET % b"")
    assert reader.read_response().status == 200
    proc.send(signal.SIGTERM)
    assert wait_until(lambda: refused(f"http://{host}:{port}"), timeout=10)  # draining now
    sock.sendall(GET % b"")
    resp = reader.read_response()
    assert resp.status == 200 and resp.header("connection") == "close"
    assert reader.at_eof(5)
    assert proc.proc.wait(15) == 0
    sock.close()

