"""GreenSocket: a socket whose blocking calls suspend only the calling greenlet.

Strategy: optimistic I/O. Every call tries the non-blocking syscall first and waits on the hub
only when the kernel answers EAGAIN (``BlockingIOError``). Deadlines are absolute monotonic times
(``None``: wait forever); a deadline passing raises ``TimeoutError``. A greenlet that moves many
bytes without ever waiting yields to the hub every ``YIELD_EVERY`` bytes, so one fast client
cannot starve the others.

A send's ``timeout`` is seconds per wait for room, or a ``SendPace`` whose ``send_deadline`` is
asked only when a send has to wait (a send that goes through at once computes no deadline).
"""

from __future__ import annotations

import errno
import fcntl as _fcntl
import os
import socket
import sys
import termios
import _socket
from typing import Any, BinaryIO, Final, List, Optional, Protocol, Sequence, Tuple, Union

from .._traits import mypyc_attr
from .hub import Hub, get_hub
from .threadpool import getaddrinfo

Buffer = Union[bytes, bytearray, memoryview]


class SendPace(Protocol):
    """What bounds the waits of a send, when a number of seconds per wait is not enough."""

    def send_deadline(self, done: int) -> float:
        """When the wait that a send now begins times out; ``done``: bytes that send (one
        call of sendall, sendall_parts or sendfile) has moved so far. Never switches."""


SendTimeout = Union[None, float, SendPace]
YIELD_EVERY: Final = 1 << 20
_SENDFILE_BLOCK: Final = 1 << 20
_DISCARD: Final = bytearray(65536)  # what discard_nowait reads into (its content is never used)
_IOV_MAX: Final = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 1024
_INET_FAMILIES: Final = ((socket.AF_INET, int(socket.AF_INET), False),
                         (socket.AF_INET6, int(socket.AF_INET6), True))
_AF_UNSPEC: Final = int(socket.AF_UNSPEC)
_inet_pton: Final = _socket.inet_pton


def _literal_address(address: Tuple[Any, ...], family: int) -> List[Tuple[Any, ...]]:
    """The getaddrinfo answer for an IP literal, made without calling it (its Python wrapper
    turns every field into an enum: the cost of a whole request to an upstream). Returns []
    for anything else (a name, a port that is not a plain int)."""
    host, port = address[0], address[1]
    if type(host) is not str or type(port) is not int:
        return []
    for candidate, number, six in _INET_FAMILIES:
        if family == number or family == _AF_UNSPEC:
            try:
                _inet_pton(number, host)
            except OSError:
                continue
            sockaddr = (host, port, 0, 0) if six else (host, port)
            return [(candidate, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
    return []


# The C methods of the socket type, called with the socket as first argument: an attribute
# lookup on a ``socket.socket`` instance goes through a slow generic hook (the Python subclass
# of a C type that defines __getattribute__), a cost paid on every recv and send otherwise.
# Subclasses that override these (TLS) call their own methods instead.
_recv: Final = _socket.socket.recv
_recv_into: Final = _socket.socket.recv_into
_send: Final = _socket.socket.send
_sendmsg: Final = _socket.socket.sendmsg
_connect_ex: Final = _socket.socket.connect_ex
_getsockopt: Final = _socket.socket.getsockopt
_setblocking: Final = _socket.socket.setblocking
_fileno: Final = _socket.socket.fileno
_SOL_SOCKET, _SO_ERROR = int(socket.SOL_SOCKET), int(socket.SO_ERROR)
_FIONREAD: Final = termios.FIONREAD


@mypyc_attr(allow_interpreted_subclasses=True)  # TLS's GreenSSLSocket
class GreenSocket:
    """A non-blocking socket driven by a hub. Methods that may switch say so."""

    __slots__ = ("sock", "fd", "hub", "_unyielded", "__weakref__")

    def __init__(self, sock: socket.socket, hub: Optional[Hub] = None) -> None:
        """Take over ``sock`` (made non-blocking). Raises TypeError for an ssl.SSLSocket: the
        C socket methods this class calls would bypass its encryption (tls.GreenSSLSocket is
        the TLS variant)."""
        ssl = sys.modules.get("ssl")  # not imported: no SSLSocket can exist
        if ssl is not None and isinstance(sock, ssl.SSLSocket):
            raise TypeError("GreenSocket needs a plain socket, not an SSLSocket")
        _setblocking(sock, False)
        self.sock = sock
        self.fd = _fileno(sock)
        self.hub = hub if hub is not None else get_hub()
        self._unyielded = 0  # bytes moved since this socket last let others run

    def _moved(self, n: int) -> None:
        """Count bytes moved without waiting; past YIELD_EVERY, let the other greenlets run.
        May switch."""
        self._unyielded += n
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            self.hub.yield_now()

    def _wait_readable(self, deadline: Optional[float]) -> None:
        self._unyielded = 0
        self.hub.wait_readable(self.fd, deadline)

    def _send_deadline(self, timeout: SendTimeout, done: int) -> Optional[float]:
        if timeout is None:
            return None
        if isinstance(timeout, (int, float)):
            return self.hub.time() + timeout
        return timeout.send_deadline(done)

    def _wait_writable(self, timeout: SendTimeout, done: int = 0) -> None:
        """Wait for room to send; ``done`` bytes of this send went out before. May switch.
        Raises TimeoutError."""
        self._unyielded = 0
        self.hub.wait_writable(self.fd, self._send_deadline(timeout, done))

    @classmethod
    def connect(
        cls, address: Tuple[Any, ...], timeout: Optional[float] = None,
        family: int = socket.AF_INET, hub: Optional[Hub] = None,
    ) -> "GreenSocket":
        """Open a TCP connection to (host, port) over ``family`` (AF_UNSPEC: any). A host name
        is resolved in a pool thread (``run_in_thread``) and each of its addresses is tried in
        turn; ``timeout`` bounds the whole. May switch. Raises OSError (the last address's
        error), TimeoutError, socket.gaierror."""
        hub = hub if hub is not None else get_hub()
        deadline = None if timeout is None else hub.time() + timeout
        infos = (_literal_address(address, family)
                 or getaddrinfo(address[0], address[1], family, socket.SOCK_STREAM))
        error: Optional[OSError] = None
        for info_family, _, _, _, sockaddr in infos:
            try:
                return cls._connect_to(info_family, sockaddr, deadline, hub)
            except OSError as exc:  # TimeoutError included: try the next address
                error = exc
        raise error or OSError(f"no address to connect to for {address[0]!r}")

    @classmethod
    def create_connection(
        cls, address: Tuple[Any, ...], timeout: Optional[float] = None, hub: Optional[Hub] = None,
    ) -> "GreenSocket":
        """Like socket.create_connection: IPv4 or IPv6, whichever the name resolves to.
        May switch. Raises as ``connect``."""
        return cls.connect(address, timeout, socket.AF_UNSPEC, hub)

    @classmethod
    def _connect_to(
        cls, family: int, sockaddr: Tuple[Any, ...], deadline: Optional[float], hub: Hub,
    ) -> "GreenSocket":
        gs = cls(socket.socket(family, socket.SOCK_STREAM), hub)
        try:
            err = _connect_ex(gs.sock, sockaddr)
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
            if err:
                gs.hub.wait_writable(gs.fd, deadline)
                err = _getsockopt(gs.sock, _SOL_SOCKET, _SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
        except BaseException:
            gs.close()
            raise
        return gs

    def fileno(self) -> int:
        return self.fd

    def recv(self, size: int, deadline: Optional[float] = None) -> bytes:
        """Receive up to ``size`` bytes; b"" at EOF. May switch. Raises TimeoutError, OSError."""
        while True:
            try:
                data = _recv(self.sock, size)
            except BlockingIOError:
                self._wait_readable(deadline)
                continue
            if len(data) > 4096:
                self._moved(len(data))
            return data

    def recv_into(self, buffer: Any, size: int = 0, deadline: Optional[float] = None) -> int:
        """Receive into ``buffer``; 0 at EOF. May switch. Raises TimeoutError, OSError."""
        while True:
            try:
                n = _recv_into(self.sock, buffer, size)
            except BlockingIOError:
                self._wait_readable(deadline)
                continue
            self._moved(n)
            return n

    def has_input(self) -> bool:
        """Whether bytes from the peer wait to be read (never switches, never raises: an
        error or end of input is "no"). Asks the kernel (FIONREAD) instead of trying a read
        that would raise BlockingIOError when there is nothing, the usual answer."""
        if self.fd < 0:
            return False
        # A writable buffer: ioctl tries that kind first (given bytes, it makes and drops an
        # exception before it takes them read-only).
        count = bytearray(4)
        try:
            _fcntl.ioctl(self.fd, _FIONREAD, count)
        except OSError:
            return False
        return count != b"\0\0\0\0"

    def recv_nowait(self, size: int) -> Optional[bytes]:
        """Receive what is there without waiting: None if nothing is, b"" at EOF."""
        try:
            return _recv(self.sock, size)
        except BlockingIOError:
            return None

    def discard_nowait(self, size: int) -> Optional[int]:
        """Read up to ``size`` bytes from the kernel and drop them, without waiting (the raw
        bytes, also under TLS: nothing dropped needs decrypting). Returns how many; None if
        none are there; 0 at EOF or on an error (the peer is gone). Never switches."""
        try:
            return _recv_into(self.sock, _DISCARD, min(size, len(_DISCARD)))
        except BlockingIOError:
            return None
        except OSError:
            return 0

    def send(self, data: Buffer, deadline: Optional[float] = None) -> int:
        """Send some of ``data``; returns how much. May switch."""
        while True:
            try:
                return _send(self.sock, data)
            except BlockingIOError:
                self.hub.wait_writable(self.fd, deadline)

    def sendall(self, data: Buffer, timeout: SendTimeout = None) -> None:
        """Send all of ``data``. ``timeout`` bounds each wait for progress (seconds, or a
        SendPace). May switch. Raises TimeoutError, BrokenPipeError, ConnectionResetError."""
        try:
            sent = _send(self.sock, data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            if sent > 4096:
                self._moved(sent)
            return
        self._sendall_after(memoryview(data)[sent:], timeout, sent)

    def _sendall_after(self, view: Any, timeout: SendTimeout, done: int) -> None:
        """Send all of ``view``, the rest of a send that has moved ``done`` bytes. May switch."""
        while view:
            try:
                n = _send(self.sock, view)
            except BlockingIOError:
                self._wait_writable(timeout, done)
                continue
            view = view[n:]
            done += n
            self._moved(n)

    def sendall_parts(self, parts: Sequence[Buffer], timeout: SendTimeout = None) -> None:
        """Send several buffers with as few syscalls as possible (sendmsg). May switch."""
        views: List[memoryview] = [memoryview(p) for p in parts if len(p)]
        done = 0
        while views:
            try:
                n = _sendmsg(self.sock, views[:_IOV_MAX])
            except BlockingIOError:
                self._wait_writable(timeout, done)
                continue
            done += n
            self._moved(n)
            while n and views:
                if n >= len(views[0]):
                    n -= len(views.pop(0))
                else:
                    views[0] = views[0][n:]
                    n = 0

    def sendfile(
        self, file: BinaryIO, offset: int, count: int, timeout: SendTimeout = None
    ) -> int:
        """Send ``count`` bytes of ``file`` from ``offset`` with os.sendfile, falling back to
        read/send where sendfile is not possible. Returns bytes sent (less only at EOF).
        May switch."""
        try:
            fileno = file.fileno()
        except (AttributeError, OSError):
            return self._sendfile_fallback(file, offset, count, timeout)
        sent = 0
        while sent < count:
            try:
                n = os.sendfile(self.fd, fileno, offset + sent, min(count - sent, _SENDFILE_BLOCK))
            except BlockingIOError:
                self._wait_writable(timeout, sent)
                continue
            except OSError as exc:
                if sent == 0 and exc.errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP
                    return self._sendfile_fallback(file, offset, count, timeout)
                raise
            if n == 0:
                break  # the file is shorter than promised
            sent += n
            self._moved(n)
        return sent

    def _sendfile_fallback(
        self, file: BinaryIO, offset: int, count: int, timeout: SendTimeout
    ) -> int:
        file.seek(offset)
        sent = 0
        while sent < count:
            block = file.read(min(count - sent, 65536))
            if not block:
                break
            self._sendall_after(memoryview(block), timeout, sent)
            sent += len(block)
        return sent

    def accept(self) -> Tuple[socket.socket, Any]:
        """Accept one connection. May switch."""
        while True:
            try:
                return self.sock.accept()
            except BlockingIOError:
                self.hub.wait_readable(self.fd)

    def shutdown(self, how: int, deadline: Optional[float] = None) -> None:
        """Shut the socket down (errors ignored). ``deadline`` bounds what the TLS variant may
        wait for before it (its close_notify); a plain socket never waits."""
        try:
            self.sock.shutdown(how)
        except OSError:
            pass

    def close(self) -> None:
        """Wake any waiter with ClosedResourceError, unregister from the hub, close."""
        if self.fd >= 0:
            self.hub.forget_fd(self.fd)
            self.fd = -1
        self.sock.close()
