"""stop(grace) with 500 requests in flight and 500 idle keep-alive connections, with faults:
no in-flight response is lost.

In flight when stop() is called: slow GETs, uploads whose bodies are still arriving, streamed
responses, and clients that reset their connection during the drain (the fault: their
responses are theirs to lose, the server must not mind). Every other in-flight request gets its
whole response, then EOF (``Connection: close`` in every head sent after the drain began);
every idle connection that stays quiet is closed without a response (after DRAIN_QUIET); new
connections are refused from the start of the drain; stop() returns
once the last response is out, well before the grace runs out.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from typing import Dict, List

import pytest

from conftest import Reader, responses, wait_until
from greenserve import Server
from greenserve.loop.hub import get_hub

GRACE = 20.0


def app(environ, start_response):
    hub = get_hub()
    path = environ["PATH_INFO"]
    if path == "/sleep":
        hub.sleep(2.0)
        body = [b"slept"]
    elif path == "/upload":
        body = [b"got %d" % len(environ["wsgi.input"].read())]
    elif path == "/stream":
        def stream():
            for i in range(10):
                hub.sleep(0.1)
                yield b"piece %d;" % i
        body = stream()
    else:
        body = [b"hello"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return body


def read_until_eof(socks: List[socket.socket], deadline: float) -> Dict[int, bytes]:
    """Everything each socket receives until it sees EOF (or a reset), until ``deadline``."""
    got: Dict[int, bytes] = {i: b"" for i in range(len(socks))}
    done = set()
    with selectors.DefaultSelector() as sel:
        for i, sock in enumerate(socks):
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, i)
        while len(done) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(0.1):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                got[key.data] += data
                if not data:
                    done.add(key.data)
                    sel.unregister(key.fileobj)
    assert len(done) == len(socks), f"{len(socks) - len(done)} connections never closed"
    return got


@pytest.mark.parametrize("n", [500, pytest.param(2000, marks=pytest.mark.slow)])
def test_stop_with_500_in_flight_and_500_idle_loses_no_response(n):
    server = Server(app, bind="127.0.0.1:0", backlog=4096)
    server.start()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    assert server.wait_serving(10)
    address = server.addresses[0]

    def connect() -> socket.socket:
        return socket.create_connection(address, timeout=10)

    idle = [connect() for _ in range(n)]
    for sock in idle:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    for sock in idle:
        assert Reader(sock).read_response().body == b"hello"  # now idle keep-alive
    upload_head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"
    kinds = (["sleep"] * 2 + ["upload", "stream", "reset"]) * (n // 5)
    flying = [connect() for _ in kinds]
    for sock, kind in zip(flying, kinds):
        if kind == "upload":
            sock.sendall(upload_head + b"u" * 1000)  # the rest comes during the drain
        else:
            sock.sendall(b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % (b"sleep" if kind == "reset" else kind.encode()))
    assert wait_until(lambda: server.statistics()["requests_in_flight"] == n, timeout=30)
    assert server.statistics()["connections_open"] == 2 * n

    started = time.monotonic()
    stopper = threading.Thread(target=server.stop, args=(GRACE,))
    stopper.start()
    assert wait_until(lambda: server.draining, timeout=5)
    # The fault: a hundred clients give up during the drain, with a reset.
    for sock, kind in zip(flying, kinds):
        if kind == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    for sock, kind in zip(flying, kinds):
        if kind == "upload":
            sock.sendall(b"u" * 199_000)
    try:
        socket.create_connection(address, timeout=2).close()
        refused = False
    except OSError:
        refused = True
    assert refused, "a new connection was accepted during the drain"

    kept = [(sock, kind) for sock, kind in zip(flying, kinds) if kind != "reset"]
    answers = read_until_eof([sock for sock, _ in kept], time.monotonic() + GRACE)
    idle_answers = read_until_eof(idle, time.monotonic() + 5)
    stopper.join(GRACE + 10)
    elapsed = time.monotonic() - started
    thread.join(10)
    assert not thread.is_alive()

    expected = {"sleep": b"slept", "upload": b"got 200000",
                "stream": b"".join(b"piece %d;" % i for i in range(10))}
    lost = []
    for i, (_, kind) in enumerate(kept):
        got = responses(answers[i])
        # A head sent after the drain began says the connection closes (a streamed one may
        # have gone out before); either way EOF follows the whole response.
        closing = kind == "stream" or got and got[0].header("connection") == "close"
        if len(got) != 1 or (got[0].status, got[0].body) != (200, expected[kind]) or not closing:
            lost.append((kind, answers[i][-300:]))
    assert lost == [], f"{len(lost)} in-flight responses lost or damaged: {lost[:3]}"
    assert all(data == b"" for data in idle_answers.values())  # closed without a response
    assert elapsed < GRACE / 2, f"stop() took {elapsed:.1f} s"
    for sock in idle + [sock for sock, _ in kept]:
        sock.close()
