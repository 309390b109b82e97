"""Fuzzing the frame input of a WebSocket, the way the HTTP parser is fuzzed: valid frame streams,
mutated (seeded random edits) and random bytes, sent after a valid handshake in random splits.
Whatever comes, the server must answer within a deadline (an echo, a close frame, or the end of
the connection), never crash or hang, and keep serving the next client."""

from __future__ import annotations

import logging
import random
import socket
import struct
import time
from typing import Any, Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import greenserve.websocket as gw
from greenserve.testing import running_server
from wsclient import RawClient, frame

DEADLINE = 3.0  # for the handshake and the health check
SETTLE = 0.5  # how long an exchange waits for a decisive answer (only its speed depends on it)


def echo(environ: Dict[str, Any], start_response: Any) -> Any:
    ws = gw.accept(environ)
    for message in ws:
        ws.send(message)
    return []


class Errors(logging.Handler):
    """Collects what the server logs at ERROR or above (an internal error is a crash)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


ERRORS = Errors()


@pytest.fixture(scope="module")
def server() -> Any:
    logger = logging.getLogger("greenserve.error")
    logger.addHandler(ERRORS)
    try:
        with running_server(echo, websocket_max_message=4096, websocket_close_timeout=0.2,
                            websocket_ping_interval=0, grace=2) as running:
            yield running
    finally:
        logger.removeHandler(ERRORS)


def valid_frames(rng: random.Random) -> bytes:
    pieces: List[bytes] = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.choice(["text", "binary", "ping", "fragments", "pong"])
        if kind == "text":
            pieces.append(frame(0x1, rng.choice(["a", "é", "漢字", ""]).encode() * rng.randint(0, 50)))
        elif kind == "binary":
            pieces.append(frame(0x2, rng.randbytes(rng.randint(0, 300))))
        elif kind == "ping":
            pieces.append(frame(0x9, rng.randbytes(rng.randint(0, 125))))
        elif kind == "pong":
            pieces.append(frame(0xA, b""))
        else:
            pieces.append(frame(0x1, b"ab", fin=False) + frame(0x9, b"p") + frame(0x0, b"cd"))
    if rng.random() < 0.3:
        pieces.append(frame(0x8, struct.pack("!H", rng.choice([1000, 1001, 3000, 999, 1005]))))
    return b"".join(pieces)


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        action = rng.random()
        if not buf or action < 0.2:
            buf[rng.randint(0, len(buf)):rng.randint(0, len(buf))] = rng.randbytes(rng.randint(1, 8))
        elif action < 0.6:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif action < 0.8:
            del buf[rng.randrange(len(buf))]
        else:
            buf[rng.randrange(len(buf))] = rng.choice([0x00, 0x7E, 0x7F, 0x80, 0xFF, 0x88])
    return bytes(buf)


def exchange(port: int, data: bytes, rng: random.Random) -> None:
    """Send ``data`` in random splits; then the server must, within DEADLINE, have answered
    and either be waiting for more (an echo of a probe comes back) or have ended."""
    client = RawClient(port, timeout=DEADLINE)
    try:
        assert client.status == 101
        at = 0
        while at < len(data):
            step = rng.randint(1, max(1, len(data) - at))
            try:
                client.send(data[at:at + step])
            except OSError:
                return  # the server already dropped the connection: an answer too
            at += step
        try:
            client.send(frame(0x1, b"probe"))
        except OSError:
            return
        deadline = time.monotonic() + SETTLE
        client.sock.settimeout(SETTLE)
        while time.monotonic() < deadline:
            try:
                opcode, payload = client.read_frame()
            except (EOFError, ConnectionResetError):
                return  # closed: the server judged the input
            except (socket.timeout, TimeoutError):
                break
            if opcode == 0x8 or (opcode == 0x1 and payload.endswith(b"probe")):
                return
        # Nothing decisive yet: a frame whose announced length the input did not reach is
        # still incomplete (not a hang); the server must drop it when the client goes.
    finally:
        client.close()


def healthy(port: int) -> None:
    client = RawClient(port, timeout=DEADLINE)
    client.send(frame(0x1, b"healthy"))
    assert client.read_frame() == (0x1, b"healthy")
    client.close()


@pytest.mark.parametrize("seed", range(40))
def test_mutated_frame_streams(server, seed):
    rng = random.Random(seed)
    exchange(server.port, mutate(valid_frames(rng), rng), rng)
    healthy(server.port)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=300), seed=st.integers(0, 2**16))
def test_random_bytes_after_the_handshake(server, data, seed):
    exchange(server.port, data, random.Random(seed))


def test_the_server_survived_the_fuzzing(server):
    healthy(server.port)
    stats = server.statistics()
    assert stats["responses"]["5xx"] == 0
    assert [r.getMessage() for r in ERRORS.records] == []
