"""GreenSSLSocket over real socket pairs on a real hub: a send that meets a full buffer waits
for room, and close_notify is not lost when the send buffer is full at close."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from greenserve.http.tls import GreenSSLSocket, make_context

from conftest import run_hub

RECORD = b"x"  # one byte of payload per TLS record: a few dozen bytes on the wire


def test_a_send_on_the_bare_socket_waits_for_room_not_for_input(tls_files):
    """Before the handshake (and after unwrap) the socket is plain: its EAGAIN on a send means
    the buffer is full, and only the peer reading makes room; the peer sends nothing."""
    context = make_context(tls_files.cert, tls_files.key)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    queued = 0
    while True:
        try:
            queued += ours.send(b"y" * 65536)
        except BlockingIOError:
            break
    go = threading.Event()
    received = []

    def peer():  # reads everything, writes nothing
        go.wait(30)
        theirs.settimeout(10)
        total = 0
        while total < queued + 5:
            data = theirs.recv(1 << 20)
            if not data:
                break
            total += len(data)
        received.append(total)

    reader = threading.Thread(target=peer, daemon=True)
    reader.start()

    def main(hub):
        gsock = GreenSSLSocket(ours, hub, context)
        hub.call_later(0.1, go.set)  # the peer starts reading once we wait
        return gsock.send(b"hello", hub.time() + 10)

    try:
        assert run_hub(main) == 5
        reader.join(10)
        assert received == [queued + 5]
    finally:
        go.set()
        ours.close()
        theirs.close()


class TLSPair:
    """A TLS 1.2 connection over a unix socket pair: our end a GreenSSLSocket (server), the
    peer an ssl socket driven by a thread that reads only when told to."""

    def __init__(self, tls_files):
        self.context = make_context(tls_files.cert, tls_files.key)
        self.ours, self.theirs = socket.socketpair()
        client = ssl.create_default_context(cafile=tls_files.ca)
        client.maximum_version = ssl.TLSVersion.TLSv1_2  # no tickets after the handshake
        self.peer = client.wrap_socket(self.theirs, server_hostname="localhost",
                                       do_handshake_on_connect=False,
                                       suppress_ragged_eofs=False)
        self.handshaken = threading.Event()
        self.go = threading.Event()
        self.outcome = []
        self.thread = threading.Thread(target=self._peer, daemon=True)
        self.thread.start()

    def _peer(self):
        self.peer.settimeout(20)
        try:
            self.peer.do_handshake()
            self.handshaken.set()
            self.go.wait(30)
            data = b""
            while True:
                piece = self.peer.recv(65536)  # a TCP-style EOF without close_notify raises
                if not piece:
                    break
                data += piece
            self.outcome.append(("close_notify", len(data)))
        except (ssl.SSLError, OSError) as exc:
            self.outcome.append((type(exc).__name__, str(exc)))

    def server_side(self, hub):
        """Our end, handshaken (in a hub greenlet), once the peer has read all of it."""
        gsock = GreenSSLSocket(self.ours, hub, self.context, linger=10)
        gsock.handshake(hub.time() + 10)
        while not self.handshaken.is_set():
            hub.sleep(0.01)
        return gsock

    def close(self):
        self.go.set()
        self.thread.join(20)
        self.peer.close()
        self.ours.close()


def fill_with_records(gsock, limit=None):
    """Send one-byte records until the socket refuses one (or ``limit`` went out); returns
    how many went out whole."""
    count = 0
    while limit is None or count < limit:
        try:
            assert gsock.sock.send(RECORD) == 1
        except ssl.SSLWantWriteError:
            return count
        count += 1
    return count


@pytest.fixture(scope="module")
def capacity(tls_files):
    """How many one-byte records a fresh pair takes before refusing one. A unix socket takes a
    small write whole or not at all, so every fresh pair takes the same number."""
    probe = TLSPair(tls_files)
    try:
        count = run_hub(lambda hub: fill_with_records(probe.server_side(hub)))
    finally:
        probe.close()
    assert count > 10
    return count


def test_close_notify_waits_for_room_when_the_send_buffer_is_full(tls_files, capacity):
    """RFC 8446 6.1. As many records as fill the pair go out, so close_notify meets a full
    buffer; the peer starts reading only after close() began: close() must wait for room,
    not drop the alert."""
    pair = TLSPair(tls_files)

    def main(hub):
        gsock = pair.server_side(hub)
        assert fill_with_records(gsock, capacity) == capacity
        hub.call_later(0.1, pair.go.set)  # the peer reads once close() waits
        gsock.close()
        pair.go.set()  # (had close() not waited)

    try:
        run_hub(main)
        pair.thread.join(20)
        assert pair.outcome == [("close_notify", capacity)]
    finally:
        pair.close()


def test_a_close_from_a_hub_callback_does_not_wait(tls_files, capacity):
    """The hub's own callbacks (closing an idle connection) cannot wait: one try, then the
    socket is closed at once."""
    pair = TLSPair(tls_files)

    def main(hub):
        gsock = pair.server_side(hub)
        assert fill_with_records(gsock, capacity) == capacity
        closed = []
        hub.call_soon(lambda: closed.append(gsock.close()))
        hub.sleep(0.05)
        return closed == [None] and gsock.fd == -1

    try:
        assert run_hub(main)
    finally:
        pair.close()


def test_a_lingering_close_over_tls_takes_one_linger_timeout(tls_files, capacity):
    """A client that neither reads nor closes: close_notify meets a full buffer and nothing
    ever arrives to discard. The wait for room, the linger and the close share one deadline,
    so the connection is closed after linger_timeout, not two or three of them."""
    from greenserve.config.options import Config
    from greenserve.http.connection import Connection
    from greenserve.http.port import ServerPort

    linger = 0.6
    pair = TLSPair(tls_files)

    def main(hub):
        gsock = pair.server_side(hub)
        assert fill_with_records(gsock, capacity) == capacity
        closed = []

        class Port(ServerPort):
            def connection_closed(self, conn):
                closed.append(hub.time())

        server = Port(None, Config(linger_timeout=linger))
        server.hub.close()  # this test's connection runs on the test's hub
        server.hub = hub
        with socket.socket() as placeholder:  # replaced by the TLS socket under test
            conn = Connection(server, placeholder, {}, None)
        conn.gsock = gsock
        started = hub.time()
        conn._close_gracefully()
        while not closed and hub.time() < started + 10:
            hub.sleep(0.01)
        return closed[0] - started

    try:
        elapsed = run_hub(main)
    finally:
        pair.close()
    assert linger * 0.9 <= elapsed < linger * 1.5, elapsed
