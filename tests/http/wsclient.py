"""A raw-socket WebSocket client for the bad-input tests: it sends exactly the bytes a test
asks for (unmasked frames, bad UTF-8, a close it never answers) and reads frames as they come."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from typing import Optional, Tuple

KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake(path: str = "/ws", **headers: str) -> bytes:
    """The bytes of an opening handshake; ``headers`` (with _ for -) add or replace fields
    (an empty value leaves the field out)."""
    fields = {"Host": "localhost", "Upgrade": "websocket", "Connection": "Upgrade",
              "Sec-WebSocket-Key": KEY, "Sec-WebSocket-Version": "13"}
    for name, value in headers.items():
        fields[name.replace("_", "-")] = value
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in fields.items() if v]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
          rsv: int = 0) -> bytes:
    """One frame as a client sends it (masked unless ``mask`` is False)."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_frame(code: int = 1000, reason: bytes = b"") -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason)


class RawClient:
    """A TCP connection that has done (or failed) the handshake."""

    def __init__(self, port: int, request: Optional[bytes] = None, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.head = b""
        if request is None:
            request = handshake()
        self.sock.sendall(request)
        self.head = self._until(b"\r\n\r\n")

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed before {marker!r}: {self.buf!r}")
        head, self.buf = self.buf.split(marker, 1)
        return head + marker

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed mid-frame")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> Tuple[int, bytes]:
        """(opcode, payload) of the next frame from the server (which must be unmasked).
        Raises EOFError at the end of the connection."""
        b0, b1 = self._exactly(2)
        assert not b1 & 0x80, "a server frame must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._exactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._exactly(8))[0]
        return b0 & 0x0F, self._exactly(n)

    def read_close(self) -> int:
        """Skip frames up to the server's close frame; returns its code."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if payload else 1005

    def at_eof(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection within ``timeout`` (bytes before the end
        are read and dropped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self._fill():
                    return True
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()
