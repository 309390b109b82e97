"""WebSockets over TLS with a client that uses its TLS socket from one thread only: the request
head and the first frame in one TLS record (the frame must reach wsproto from the HTTP
parser's buffer), or in two records sent back to back (the second waits in the kernel or in
OpenSSL), and a run of short sessions. The `websockets` sync client of test_websocket.py
reads its TLS socket in a thread while another writes to it, which OpenSSL does not allow
on one SSL object: under load it loses or garbles its own opening handshake now and then,
against any TLS 1.3 server that sends session tickets. These tests keep the server's TLS
path checked without that noise."""

from __future__ import annotations

import socket
import ssl

import pytest

from wsclient import RawClient, close_frame, frame, handshake

from test_websocket import echo_app


class TLSClient(RawClient):
    """RawClient over TLS; ``after_head``: bytes sent with the request head, in the same
    write (one TLS record) or, with ``separate``, in a second write right behind it."""

    def __init__(self, port: int, context: ssl.SSLContext, after_head: bytes = b"",
                 separate: bool = False, timeout: float = 10.0) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""
        if separate:
            self.sock.sendall(handshake())
            self.sock.sendall(after_head)
        else:
            self.sock.sendall(handshake() + after_head)
        self.head = self._until(b"\r\n\r\n")


@pytest.fixture
def tls_echo(serve, tls_files):
    server = serve(echo_app, validate=False, certfile=tls_files.cert, keyfile=tls_files.key)
    return server, ssl.create_default_context(cafile=tls_files.ca)


@pytest.mark.parametrize("separate", [False, True], ids=["one-record", "two-records"])
def test_a_frame_right_behind_the_handshake_over_tls_is_answered(tls_echo, separate):
    server, context = tls_echo
    client = TLSClient(server.port, context, frame(0x1, b"first") + frame(0x2, b"\x00second"),
                       separate=separate)
    try:
        assert client.status == 101
        assert client.read_frame() == (0x1, b"first")
        assert client.read_frame() == (0x2, b"\x00second")
        client.send(close_frame(1000))
        assert client.read_close() == 1000
    finally:
        client.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_run_of_short_tls_sessions_all_open_and_echo(tls_echo, version):
    server, context = tls_echo
    context.minimum_version = context.maximum_version = version
    for n in range(60):
        message = b"x%d" % n
        first = frame(0x2, message) if n % 2 else b""  # every other one sends at once
        client = TLSClient(server.port, context, first)
        try:
            assert client.status == 101, n
            if not first:
                client.send(frame(0x2, message))
            assert client.read_frame() == (0x2, message), n
        finally:
            client.close()
