"""A locust scenario for WebSockets against the target app's /ws (an echo over
``wsgi.websocket``): each user opens one WebSocket and sends text messages of a few sizes,
checking every echo; a round trip is one locust request (type "WS").

    greenserve greenserve.targetapp:app &
    locust -f loadtests/locust_websocket.py --headless -u 200 -r 50 -t 20s --host http://127.0.0.1:8000

Like locustfile.py, this file never imports greenserve (locust runs under gevent; the server is
measured as it runs in production, in its own process). The client speaks RFC 6455 itself over
a plain socket (gevent makes it cooperative): the handshake, masked frames out, frames in. The
thresholds are enforced when locust quits: crossing one prints why and exits 1.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import socket
import struct
import time
from typing import Any, Optional, Tuple
from urllib.parse import urlsplit

from locust import User, between, events, task

MAX_ERROR_RATIO = 0.01  # failed round trips / all round trips
MAX_P95_MS = 200  # 95th percentile of a round trip, milliseconds
MIN_REQUESTS = 500  # fewer means the run measured nothing worth a verdict
SIZES = [16, 512, 8 * 1024, 60 * 1024]

log = logging.getLogger("greenserve.locust")


class WebSocketClient:
    """One client WebSocket on a blocking (gevent-patched) socket."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = self._until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            raise ConnectionError(f"handshake refused: {head[:40]!r}")

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buf += data

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(marker, 1)
        return head

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send_frame(self, frame: bytes) -> None:
        self.sock.sendall(frame)

    def read_frame(self) -> Tuple[int, bytes]:
        b0, b1 = self._exactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._exactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._exactly(8))[0]
        return b0 & 0x0F, self._exactly(n)

    def close(self) -> None:
        try:
            self.sock.sendall(bytes([0x88, 0x82]) + b"\0\0\0\0" + struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


def text_frame(text: bytes) -> bytes:
    """A masked text frame (RFC 6455 5.2, 5.3), masked once here: the client's own CPU must
    not be what the round trips measure."""
    n = len(text)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                            bytes([0x80 | 126]) + struct.pack("!H", n))
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(text, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + masked


PAYLOADS = {n: (b"abcdefghijklmnopqrstuvwxyz0123456789" * (n // 36 + 1))[:n] for n in SIZES}
FRAMES = {n: text_frame(payload) for n, payload in PAYLOADS.items()}


class WebSocketEchoUser(User):
    """Opens /ws, then sends messages and checks each echo."""

    wait_time = between(0.01, 0.1)
    client: Optional[WebSocketClient] = None

    def on_start(self) -> None:
        url = urlsplit(self.host or "http://127.0.0.1:8000")
        started = time.perf_counter()
        try:
            self.client = WebSocketClient(url.hostname or "127.0.0.1", url.port or 80, "/ws")
            self._report("connect", started, 0, None)
        except (OSError, ConnectionError) as exc:
            self._report("connect", started, 0, exc)

    def on_stop(self) -> None:
        if self.client is not None:
            self.client.close()

    @task
    def echo(self) -> None:
        if self.client is None:
            self.on_start()
            return
        size = random.choice(SIZES)
        started = time.perf_counter()
        error: Optional[Exception] = None
        try:
            self.client.send_frame(FRAMES[size])
            opcode, payload = self.client.read_frame()
            if opcode != 0x1 or payload != PAYLOADS[size]:
                error = ValueError(f"wrong echo: opcode {opcode}, {len(payload)} bytes")
        except (OSError, ConnectionError) as exc:
            error = exc
            self.client = None
        self._report(f"echo {size} B", started, size, error)

    def _report(self, name: str, started: float, size: int, error: Any) -> None:
        events.request.fire(request_type="WS", name=name, response_time=(
            time.perf_counter() - started) * 1000, response_length=size, exception=error,
            context={})


@events.quitting.add_listener
def enforce_thresholds(environment: Any, **_: Any) -> None:
    total = environment.stats.total
    problems = []
    if total.num_requests < MIN_REQUESTS:
        problems.append(f"only {total.num_requests} round trips (< {MIN_REQUESTS})")
    elif total.num_failures / total.num_requests > MAX_ERROR_RATIO:
        problems.append(f"error ratio {total.num_failures / total.num_requests:.3f} "
                        f"> {MAX_ERROR_RATIO}")
    p95 = total.get_response_time_percentile(0.95) or 0
    if p95 > MAX_P95_MS:
        problems.append(f"p95 {p95:.0f} ms > {MAX_P95_MS} ms")
    for problem in problems:
        log.error("threshold crossed: %s", problem)
    if problems:
        environment.process_exit_code = 1
    else:
        log.info("WebSocket thresholds met: %d round trips, %d failures, p95 %.0f ms",
                 total.num_requests, total.num_failures, p95)
