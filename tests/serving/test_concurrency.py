"""Concurrency on one hub, with real clients over loopback: many slow requests at once, slowloris,
a pipelining client and a huge download that must not starve anyone else."""

from __future__ import annotations

import concurrent.futures
import selectors
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Tuple

import requests

from conftest import Reader, connect, request
from greenserve.loop.gsocket import GreenSocket

SIMPLE = b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n"


def small_app(environ, start_response):
    body = b"small:" + environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def timed_request(server, raw: bytes = SIMPLE) -> Tuple[float, Any]:
    start = time.monotonic()
    resp = request(server, raw)
    return time.monotonic() - start, resp


# -- (a) 200 requests that each wait 0.1 s on a slow upstream -----------------------------------


def test_200_requests_on_a_slow_upstream_run_concurrently(serve, slow_upstream):
    port = slow_upstream

    def app(environ, start_response):
        n = environ["QUERY_STRING"]
        upstream = GreenSocket.connect(("127.0.0.1", port), timeout=5)
        try:
            upstream.sendall(b"ping %s\n" % n.encode())
            answer = b""
            deadline = upstream.hub.time() + 5
            while not answer.endswith(b"\n"):
                data = upstream.recv(4096, deadline)
                if not data:
                    break
                answer += data
        finally:
            upstream.close()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(answer)))])
        return [answer]

    server = serve(app)
    url = server.url + "/"

    def fetch(i: int) -> Tuple[int, int, bytes]:
        resp = requests.get(url, params=str(i), timeout=10)
        return i, resp.status_code, resp.content

    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        start = time.monotonic()
        results = list(pool.map(fetch, range(200)))
        elapsed = time.monotonic() - start
    assert [(i, status) for i, status, _ in results] == [(i, 200) for i in range(200)]
    for i, _, body in results:
        assert body == b"pong ping %d\n" % i
    # One at a time this takes 200 x 0.1 s = 20 s; concurrently a little over 0.1 s.
    assert elapsed < 2.0, f"200 requests took {elapsed:.2f} s"


# -- (b) slowloris ------------------------------------------------------------------------------


SLOW_HEAD = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 60 + b"\r\n\r\n"


def test_slowloris_does_not_delay_others_and_is_cut_off(serve):
    server = serve(small_app, header_timeout=1.0)
    slow = [connect(server) for _ in range(50)]
    closed: Dict[int, float] = {}
    stop = threading.Event()
    started = time.monotonic()

    def trickle() -> None:
        for i in range(len(SLOW_HEAD)):
            for n, sock in enumerate(slow):
                if n in closed:
                    continue
                try:
                    sock.send(SLOW_HEAD[i:i + 1])
                except OSError:
                    closed.setdefault(n, time.monotonic())
            if stop.wait(0.2):
                return

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        latencies = []
        replies = []
        for _ in range(50):
            latency, resp = timed_request(server)
            latencies.append(latency)
            replies.append((resp.status, resp.body))
            time.sleep(0.01)
        assert replies == [(200, b"small:/small")] * 50
        assert max(latencies) < 1.0, f"max latency {max(latencies):.3f} s"
        assert time.monotonic() - started < 3  # the slow heads were still trickling meanwhile

        # The server cuts the slow connections off after header_timeout: they see EOF.
        eof: Dict[int, float] = {}
        answers: Dict[int, bytes] = {n: b"" for n in range(len(slow))}
        with selectors.DefaultSelector() as sel:
            for n, sock in enumerate(slow):
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, n)
            deadline = started + 5
            while len(eof) < len(slow) and time.monotonic() < deadline:
                for key, _ in sel.select(0.05):
                    n = key.data
                    try:
                        data = key.fileobj.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:  # reset after the server's lingering close
                        data = b""
                    answers[n] += data
                    if not data:
                        eof[n] = time.monotonic()
                        sel.unregister(key.fileobj)
        assert len(eof) == len(slow), f"only {len(eof)} of {len(slow)} slow connections closed"
        assert min(eof.values()) - started >= 0.9  # cut off by the timeout, not at once
        # What they got before EOF (if the reset did not discard it) is a 408.
        got = [answer for answer in answers.values() if answer]
        assert got, "no slow connection was answered before it was closed"
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in got), got[:3]
    finally:
        stop.set()
        trickler.join(5)
        for sock in slow:
            sock.close()


# -- (c) a pipelining client does not starve others ---------------------------------------------


def test_pipelining_client_does_not_starve_a_sequential_client(run):
    """One client pipelines 2000 requests that each take a millisecond of CPU (2 s in all);
    another sends 20 requests one after another meanwhile. The server yields between pipelined
    requests, so the second client is served between them and finishes long before the first.
    (The server runs as its own process: in a thread of the test process, the clients would
    wait for the GIL held by the spinning app, which says nothing about the server.)"""
    proc = run("tests.cliapps:busy_or_small", "--bind", "127.0.0.1:0", "--block-threshold", "0")
    address = proc.address()
    count = 2000
    first_answered = threading.Event()
    pipeliner: Dict[str, Any] = {}

    def pipeline() -> None:
        with socket.create_connection(address, timeout=30) as sock:
            sock.sendall(b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n" * count)
            reader = Reader(sock)
            bodies = []
            for i in range(count):
                bodies.append(reader.read_response().body)
                if i == 0:
                    first_answered.set()
            pipeliner["done"] = time.monotonic()
            pipeliner["bodies"] = bodies

    thread = threading.Thread(target=pipeline, daemon=True)
    thread.start()
    try:
        assert first_answered.wait(10)
        latencies = []
        with socket.create_connection(address, timeout=10) as sock:
            reader = Reader(sock)
            for i in range(20):
                start = time.monotonic()
                sock.sendall(b"GET /seq%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                resp = reader.read_response()
                latencies.append(time.monotonic() - start)
                assert resp.body == b"small:/seq%d" % i
        sequential_done = time.monotonic()
    finally:
        thread.join(30)
    assert pipeliner["bodies"] == [b"small:/busy"] * count
    assert max(latencies) < 0.5, f"max latency {max(latencies):.3f} s"
    assert sequential_done < pipeliner["done"], "the sequential client finished last"


# -- (d) a huge download does not starve others -------------------------------------------------


def test_huge_download_does_not_starve_small_requests(serve):
    chunk = b"x" * (1 << 20)
    chunks = 200
    total = chunks * len(chunk)

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/huge":
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(total))])
            return (chunk for _ in range(chunks))
        return small_app(environ, start_response)

    server = serve(app)
    progress = {"received": 0}
    started = threading.Event()

    def download() -> None:
        with connect(server, timeout=20) as sock:
            sock.sendall(b"GET /huge HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = bytearray(1 << 20)
            head = b""
            while b"\r\n\r\n" not in head:
                n = sock.recv_into(buf)
                assert n
                head += bytes(buf[:n])
            head, _, rest = head.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            received = len(rest)
            while received < total:
                n = sock.recv_into(buf)
                if not n:
                    break
                received += n
                progress["received"] = received
                if received >= 8 << 20:
                    started.set()
            progress["received"] = received
            progress["done"] = time.monotonic()

    thread = threading.Thread(target=download, daemon=True)
    thread.start()
    try:
        assert started.wait(10)
        latencies = []
        for i in range(20):
            latency, resp = timed_request(server, b"GET /s%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            latencies.append(latency)
            assert resp.body == b"small:/s%d" % i
        small_done = time.monotonic()
    finally:
        thread.join(30)
    assert progress["received"] == total
    assert max(latencies) < 1.0, f"max latency {max(latencies):.3f} s"
    print(f"small requests done {progress['done'] - small_done:.3f} s before the download")


_FAST_DOWNLOADER = r"""
import socket, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
buf = bytearray(4 << 20)
total = 0
told = False
while True:
    n = sock.recv_into(buf)
    if not n:
        break
    total += n
    if not told and total >= 1 << 20:
        print("started", flush=True)
        told = True
print(total, flush=True)
"""


def test_streamed_download_whose_sends_never_block_does_not_starve_others(serve):
    """Regression: the yield every YIELD_EVERY bytes used to be counted per sendall call and
    only after a partial send, so a streamed response whose sends never block (the client reads
    faster than the app produces) held the hub for its whole duration."""
    piece = b"y" * (64 << 10)
    pieces = 3000  # ~190 MiB, each piece after 0.5 ms of work: ~1.5 s in all

    def generate():
        for _ in range(pieces):
            until = time.perf_counter() + 0.0005
            while time.perf_counter() < until:
                pass
            yield piece

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/stream":
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(pieces * len(piece)))])
            return generate()
        return small_app(environ, start_response)

    server = serve(app)
    # The downloader is another process, so that it reads as fast as the kernel allows
    # whatever this process's threads do with the GIL: the server's sends never block.
    client = subprocess.Popen([sys.executable, "-c", _FAST_DOWNLOADER, str(server.port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "started"
        latencies = []
        for i in range(5):
            latency, resp = timed_request(server, b"GET /s%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            latencies.append(latency)
            assert resp.body == b"small:/s%d" % i
        received = int(client.communicate(timeout=30)[0].strip())
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert pieces * len(piece) < received < pieces * len(piece) + 1000  # + the head
    assert max(latencies) < 0.5, f"max latency {max(latencies):.3f} s"
