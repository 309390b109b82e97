"""GreenSocket over socketpairs and real TCP loopback, inside a running hub.

``run_hub(main)`` runs ``main(hub)`` in a greenlet of a fresh hub in the test thread and
re-raises what it raised; a watchdog stops a hub that hangs.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time
from typing import Any, List, Optional, Tuple

import pytest

from greenserve.errors import ClosedResourceError
from greenserve.loop.gsocket import GreenSocket
from greenserve.loop.hub import Hub

from conftest import run_hub



def green_pair(hub: Hub) -> Tuple[GreenSocket, GreenSocket]:
    a, b = socket.socketpair()
    return GreenSocket(a, hub), GreenSocket(b, hub)


def tcp_pair(hub: Hub, client_type: Any = GreenSocket) -> Tuple[Any, GreenSocket]:
    """A connected TCP pair over loopback: (client, server side), both green; the client of
    ``client_type`` (a GreenSocket subclass)."""
    listener = GreenSocket(socket.create_server(("127.0.0.1", 0)), hub)
    try:
        client = client_type.connect(listener.sock.getsockname(), timeout=5)
        conn, _ = listener.accept()
    finally:
        listener.close()
    return client, GreenSocket(conn, hub)


def read_all(gs: GreenSocket, *, slow_every: int = 0, deadline_s: float = 10.0) -> Tuple[int, str]:
    """Read to EOF; returns (bytes, sha256). With ``slow_every``, sleep 2 ms every that many
    reads (a slow peer)."""
    digest = hashlib.sha256()
    buf = bytearray(65536)
    view = memoryview(buf)
    total = reads = 0
    deadline = gs.hub.time() + deadline_s
    while True:
        n = gs.recv_into(view, 0, deadline)
        if not n:
            return total, digest.hexdigest()
        digest.update(view[:n])
        total += n
        reads += 1
        if slow_every and reads % slow_every == 0:
            gs.hub.sleep(0.002)


class CountingSocket(GreenSocket):
    """A GreenSocket that counts its waits for room to send. (The hub's methods cannot be
    wrapped on the instance: compiled, they are read-only.)"""

    __slots__ = ("writable_waits",)

    def __init__(self, sock: socket.socket, hub: Optional[Hub] = None) -> None:
        super().__init__(sock, hub)
        self.writable_waits = 0

    def _wait_writable(self, timeout: Any, done: int = 0) -> None:
        self.writable_waits += 1
        super()._wait_writable(timeout, done)



# -- receiving ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make_pair", [green_pair, tcp_pair], ids=["socketpair", "tcp"])
def test_recv_with_deadline_times_out(make_pair):
    def main(hub: Hub) -> float:
        a, b = make_pair(hub)
        try:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                a.recv(100, hub.time() + 0.05)
            elapsed = time.monotonic() - start
            with pytest.raises(TimeoutError):
                a.recv_into(bytearray(10), 0, hub.time() + 0.02)
            # the socket still works after timeouts
            b.sendall(b"late")
            assert a.recv(100, hub.time() + 1) == b"late"
            return elapsed
        finally:
            a.close()
            b.close()

    assert 0.05 <= run_hub(main) < 0.5


def test_recv_waits_for_data_from_another_greenlet_and_sees_eof():
    def writer(hub: Hub, gs: GreenSocket) -> None:
        hub.sleep(0.03)
        gs.sendall(b"hello ")
        hub.sleep(0.01)
        gs.sendall(b"world")
        gs.shutdown(socket.SHUT_WR)

    def main(hub: Hub) -> List[bytes]:
        a, b = green_pair(hub)
        hub.spawn(writer, hub, b)
        chunks = []
        while True:
            data = a.recv(100, hub.time() + 2)
            chunks.append(data)
            if not data:
                break
        a.close()
        b.close()
        return chunks

    chunks = run_hub(main)
    assert b"".join(chunks) == b"hello world"
    assert chunks[-1] == b""


def test_recv_into_with_size_and_recv_nowait():
    def main(hub: Hub) -> None:
        a, b = green_pair(hub)
        try:
            assert a.recv_nowait(10) is None  # nothing there yet
            b.sendall(b"0123456789")
            buf = bytearray(10)
            assert a.recv_into(buf, 4, hub.time() + 1) == 4
            assert bytes(buf[:4]) == b"0123"
            assert a.recv_nowait(100) == b"456789"
            b.shutdown(socket.SHUT_WR)
            assert a.recv_into(buf, 0, hub.time() + 1) == 0
            assert a.recv_nowait(10) == b""
        finally:
            a.close()
            b.close()

    run_hub(main)


# -- sending ------------------------------------------------------------------------------------


def test_sendall_50_mib_to_a_slow_reader_arrives_intact():
    data = os.urandom(50 << 20)
    expected = hashlib.sha256(data).hexdigest()

    def writer(gs: GreenSocket) -> None:
        gs.sendall(data, timeout=10)
        gs.shutdown(socket.SHUT_WR)

    def main(hub: Hub) -> Tuple[int, str, int]:
        client, server = tcp_pair(hub, CountingSocket)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        try:
            hub.spawn(writer, client)
            total, digest = read_all(server, slow_every=8)
        finally:
            client.close()
            server.close()
        return total, digest, client.writable_waits

    total, digest, waits = run_hub(main)
    assert total == len(data)
    assert digest == expected
    assert waits > 0, "the sender never had to wait: partial sends were not exercised"


def test_sendall_over_a_socketpair_with_partial_sends():
    data = os.urandom(8 << 20)

    def writer(gs: GreenSocket) -> None:
        gs.sendall(memoryview(data), timeout=10)
        gs.shutdown(socket.SHUT_WR)

    def main(hub: Hub) -> Tuple[int, str]:
        a, b = green_pair(hub)
        try:
            hub.spawn(writer, a)
            return read_all(b, slow_every=4)
        finally:
            a.close()
            b.close()

    assert run_hub(main) == (len(data), hashlib.sha256(data).hexdigest())


def test_sendall_to_a_peer_that_does_not_read_times_out():
    def main(hub: Hub) -> None:
        a, b = green_pair(hub)
        a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        try:
            with pytest.raises(TimeoutError):
                a.sendall(b"x" * (4 << 20), timeout=0.05)
        finally:
            a.close()
            b.close()

    run_hub(main)


def test_sendall_to_a_closed_peer_raises_an_os_error():
    def main(hub: Hub) -> None:
        client, server = tcp_pair(hub)
        server.close()
        try:
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                for _ in range(100):
                    client.sendall(b"x" * 65536, timeout=1)
                    hub.sleep(0.001)
        finally:
            client.close()

    run_hub(main)


def test_sendall_parts_sends_every_part_in_order():
    parts = [b"head:", b"", bytearray(os.urandom(3 << 20)), memoryview(os.urandom(5 << 20)),
             b"", b":tail"]
    expected = hashlib.sha256(b"".join(bytes(p) for p in parts)).hexdigest()
    size = sum(len(p) for p in parts)

    def writer(gs: GreenSocket) -> None:
        gs.sendall_parts(parts, timeout=10)
        gs.shutdown(socket.SHUT_WR)

    def main(hub: Hub) -> Tuple[int, str, int]:
        client, server = tcp_pair(hub, CountingSocket)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        try:
            hub.spawn(writer, client)
            total, digest = read_all(server, slow_every=8)
        finally:
            client.close()
            server.close()
        return total, digest, client.writable_waits

    total, digest, waits = run_hub(main)
    assert (total, digest) == (size, expected)
    assert waits > 0


def test_sendall_parts_of_nothing():
    def main(hub: Hub) -> None:
        a, b = green_pair(hub)
        try:
            a.sendall_parts([])
            a.sendall_parts([b"", b""])
            assert b.recv_nowait(10) is None
        finally:
            a.close()
            b.close()

    run_hub(main)


def test_sendall_parts_with_more_parts_than_iov_max():
    # Regression: all parts used to go to one sendmsg call, which fails with EMSGSIZE past
    # IOV_MAX (1024 on Linux) buffers.
    parts = [b"%05d," % i for i in range(2000)]

    def main(hub: Hub) -> bytes:
        a, b = green_pair(hub)
        try:
            a.sendall_parts(parts, timeout=5)
            a.shutdown(socket.SHUT_WR)
            received = []
            while True:
                data = b.recv(65536, hub.time() + 5)
                if not data:
                    return b"".join(received)
                received.append(data)
        finally:
            a.close()
            b.close()

    assert run_hub(main) == b"".join(parts)


# -- sendfile -----------------------------------------------------------------------------------


@pytest.fixture
def payload_file(tmp_path):
    content = os.urandom((3 << 20) + 12345)
    path = tmp_path / "payload.bin"
    path.write_bytes(content)
    return path, content


def _sendfile_and_read(file: Any, offset: int, count: int) -> Tuple[int, bytes]:
    result: dict = {}

    def sender(gs: GreenSocket) -> None:
        result["sent"] = gs.sendfile(file, offset, count, timeout=10)
        gs.shutdown(socket.SHUT_WR)

    def main(hub: Hub) -> None:
        client, server = tcp_pair(hub)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        try:
            hub.spawn(sender, client)
            received = bytearray()
            reads = 0
            while True:
                data = server.recv(65536, hub.time() + 10)
                if not data:
                    break
                received += data
                reads += 1
                if reads % 8 == 0:  # a slow reader: the sender must wait now and then
                    hub.sleep(0.001)
            result["received"] = bytes(received)
        finally:
            client.close()
            server.close()

    run_hub(main)
    return result["sent"], result["received"]


def test_sendfile_with_offset_and_count(payload_file):
    path, content = payload_file
    offset, count = 4097, (2 << 20) + 7
    with open(path, "rb") as f:
        sent, received = _sendfile_and_read(f, offset, count)
    assert sent == count
    assert received == content[offset:offset + count]


def test_sendfile_past_the_end_sends_what_there_is(payload_file):
    path, content = payload_file
    offset = len(content) - 1000
    with open(path, "rb") as f:
        sent, received = _sendfile_and_read(f, offset, 50000)
    assert sent == 1000
    assert received == content[offset:]


def test_sendfile_falls_back_for_bytesio(payload_file):
    _, content = payload_file
    offset, count = 100, (1 << 20) + 3
    sent, received = _sendfile_and_read(io.BytesIO(content), offset, count)
    assert sent == count
    assert received == content[offset:offset + count]


def test_sendfile_falls_back_for_an_object_without_fileno(payload_file):
    _, content = payload_file

    class Reader:
        """Only read and seek: no fileno attribute at all."""

        def __init__(self, data: bytes) -> None:
            self._io = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._io.read(n)

        def seek(self, pos: int, whence: int = 0) -> int:
            return self._io.seek(pos, whence)

    offset, count = 7, 300000
    sent, received = _sendfile_and_read(Reader(content), offset, count)
    assert sent == count
    assert received == content[offset:offset + count]


# -- connect, accept, close ---------------------------------------------------------------------


def test_connect_to_a_listening_port_and_accept():
    def main(hub: Hub) -> None:
        listener = GreenSocket(socket.create_server(("127.0.0.1", 0)), hub)
        accepted: List[Any] = []

        def acceptor() -> None:
            accepted.append(listener.accept())

        hub.spawn(acceptor)
        hub.sleep(0.02)
        assert accepted == []  # waiting in accept
        client = GreenSocket.connect(listener.sock.getsockname(), timeout=5)
        hub.sleep(0.02)
        assert len(accepted) == 1
        sock, peer = accepted[0]
        server = GreenSocket(sock, hub)
        try:
            assert peer == client.sock.getsockname()
            client.sendall(b"ping")
            assert server.recv(10, hub.time() + 1) == b"ping"
            server.sendall(b"pong")
            assert client.recv(10, hub.time() + 1) == b"pong"
        finally:
            client.close()
            server.close()
            listener.close()

    run_hub(main)


def test_connect_to_a_closed_port_is_refused():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()
    probe.close()  # nobody listens there now

    def main(hub: Hub) -> None:
        with pytest.raises(ConnectionRefusedError):
            GreenSocket.connect(address, timeout=5)
        assert hub.fd_count() == 0  # the failed socket was forgotten

    run_hub(main)


def test_connect_timeout():
    # A listener whose accept queue is full: Linux drops further SYNs, so connect hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        time.sleep(0.05)

        def main(hub: Hub) -> float:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                GreenSocket.connect(address, timeout=0.1)
            assert hub.fd_count() == 0
            return time.monotonic() - start

        assert 0.1 <= run_hub(main) < 1.0
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_close_wakes_a_reader_with_closed_resource_error():
    def main(hub: Hub) -> List[Any]:
        a, b = green_pair(hub)
        errors: List[Any] = []

        def reader() -> None:
            try:
                a.recv(10)
            except ClosedResourceError as exc:
                errors.append(exc)

        glet = hub.spawn(reader)
        hub.sleep(0.01)
        a.close()
        hub.sleep(0.01)
        assert glet.dead
        a.close()  # twice is harmless
        b.close()
        return errors

    errors = run_hub(main)
    assert len(errors) == 1


def test_close_wakes_an_acceptor():
    def main(hub: Hub) -> List[Any]:
        listener = GreenSocket(socket.create_server(("127.0.0.1", 0)), hub)
        errors: List[Any] = []

        def acceptor() -> None:
            try:
                listener.accept()
            except ClosedResourceError as exc:
                errors.append(exc)

        hub.spawn(acceptor)
        hub.sleep(0.01)
        listener.close()
        hub.sleep(0.01)
        return errors

    assert len(run_hub(main)) == 1


def test_close_wakes_a_blocked_writer():
    def main(hub: Hub) -> List[Any]:
        a, b = green_pair(hub)
        a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        errors: List[Any] = []

        def writer() -> None:
            try:
                a.sendall(b"x" * (4 << 20))
            except ClosedResourceError as exc:
                errors.append(exc)

        hub.spawn(writer)
        hub.sleep(0.02)
        a.close()
        hub.sleep(0.01)
        b.close()
        return errors

    assert len(run_hub(main)) == 1


def test_a_green_socket_needs_a_hub():
    a, b = socket.socketpair()
    try:
        with pytest.raises(RuntimeError):
            GreenSocket(a)
    finally:
        a.close()
        b.close()


def test_a_socket_class_with_its_own_recv_is_refused():
    """GreenSocket calls the C socket methods directly: an ssl.SSLSocket (which overrides
    recv/send) would be read raw, so it is refused outright."""
    import ssl

    context = ssl.create_default_context()
    raw = socket.socket()
    tls = context.wrap_socket(raw, do_handshake_on_connect=False, server_hostname="localhost")
    try:
        with pytest.raises(TypeError, match="SSLSocket"):
            GreenSocket(tls, Hub())
    finally:
        tls.close()


def test_has_input_tells_whether_bytes_wait_without_reading_them():
    def main(hub: Hub) -> None:
        a, b = green_pair(hub)
        try:
            assert a.has_input() is False  # nothing there yet
            b.sendall(b"xyz")
            assert a.has_input() is True
            assert a.has_input() is True  # asking consumed nothing
            assert a.recv_nowait(10) == b"xyz"
            assert a.has_input() is False
            b.shutdown(socket.SHUT_WR)
            assert a.has_input() is False  # end of input is not input
        finally:
            a.close()
            b.close()
        assert a.has_input() is False  # closed: no, and no error

    run_hub(main)
