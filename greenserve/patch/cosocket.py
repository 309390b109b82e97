"""The cooperative ``socket.socket`` that ``greenserve.patch`` installs, and its name lookups.

Strategy: like the standard socket, but the kernel-level socket is always non-blocking and the
timeout the caller set (``settimeout``, ``setblocking``) is kept in Python. Every blocking call
tries the system call first; when the kernel answers EAGAIN it waits for the fd, then tries
again. The wait goes through the hub when the caller runs in a hub task, so only that greenlet
waits; anywhere else (another thread, before the server runs, the hub's own callbacks) it waits
in ``poll``, which behaves as the standard socket does. A socket the caller made non-blocking
(timeout 0) raises BlockingIOError as before, with no wait at all: that is how greenserve's own
server sockets are driven.

Invariants:
- The hub's interest in an app's fd lasts one wait (``release_fd``): the app may close the socket
  behind the hub's back, or let the garbage collector do it, and the fd number be reused.
- The timeout bounds the whole call (as the standard ``sendall`` does since Python 3.5) and
  expires as ``socket.timeout``.
- Host names given to ``connect`` and the name lookups are resolved in a pool thread
  (``run_in_thread``) when the caller is a hub task.
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import time
from typing import Any, Callable, Optional, Tuple, TypeVar

from ..loop.hub import current_hub, waitable_hub
from ..loop.threadpool import getaddrinfo, run_in_thread

T = TypeVar("T")
_C = socket.SocketType  # the C socket type: its methods ignore the Python-level timeout
_Socket = socket.socket  # the standard class, captured before the patch replaces it
_CONNECTING = (errno.EINPROGRESS, errno.EALREADY)
_INET = (int(socket.AF_INET), int(socket.AF_INET6))
# The family as the C type keeps it, an int: ``sock.family`` makes an enum of it in Python.
_family = _C.family.__get__
_ORIGINAL_LOOKUPS = {name: getattr(socket, name) for name in (
    "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo")}


# -- waiting ------------------------------------------------------------------------------------


def wait_fd(sock: Any, write: bool, deadline: Optional[float]) -> None:
    """Wait until ``sock`` is readable (or writable). May switch, in a hub task; elsewhere it
    blocks in poll. Raises socket.timeout at ``deadline`` (monotonic)."""
    fd = sock.fileno()
    hub = waitable_hub()
    if hub is None:
        _poll_wait(fd, write, deadline)
        return
    try:
        if write:
            hub.wait_writable(fd, deadline)
        else:
            hub.wait_readable(fd, deadline)
    except TimeoutError:
        raise socket.timeout("timed out") from None
    finally:
        hub.release_fd(fd)


def _poll_wait(fd: int, write: bool, deadline: Optional[float]) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise socket.timeout("timed out")
        if poller.poll(None if left is None else math.ceil(left * 1000)):
            return


def retry(sock: Any, write: bool, call: Callable[..., T], *args: Any,
          wants: Optional[Callable[[OSError], Optional[bool]]] = None,
          block_anyway: bool = False) -> T:
    """Run ``call(*args)`` until the fd is ready for it, waiting as ``sock``'s timeout says.
    ``write`` is the direction to wait for on BlockingIOError; ``wants(exc)`` maps other errors
    to a direction (TLS 'want read/write'), or None to raise them. The call is tried first, so
    a ready fd costs nothing more than the call. May switch. Raises socket.timeout, and the
    'would block' error itself when the caller asked for a non-blocking socket."""
    deadline: Optional[float] = None
    while True:
        try:
            return call(*args)
        except OSError as exc:
            if isinstance(exc, BlockingIOError):
                direction: Optional[bool] = write
            else:
                direction = wants(exc) if wants is not None else None
            timeout = sock.gettimeout()
            if direction is None or (timeout == 0.0 and not block_anyway):
                raise
        if deadline is None and timeout:
            deadline = time.monotonic() + timeout
        wait_fd(sock, direction, deadline)


# -- the timeout, kept in Python ----------------------------------------------------------------


class TimeoutInPython:
    """The Python-level timeout of a cooperative socket (the kernel socket stays non-blocking).
    Shared by the plain and the TLS socket."""

    __slots__ = ()

    def _timeout_now(self) -> Optional[float]:
        try:
            return self._gs_timeout
        except AttributeError:  # a TLS socket before its first settimeout()
            return _C.gettimeout(self)  # type: ignore[arg-type]

    def gettimeout(self) -> Optional[float]:
        return self._timeout_now()

    def settimeout(self, value: Optional[float]) -> None:
        if value is not None:
            value = float(value)
            if math.isnan(value):
                raise ValueError("Invalid value NaN (not a number)")
            if value < 0:
                raise ValueError("Timeout value out of range")
        # A slot of CoopSocket; in the dict of a TLS socket.
        self._gs_timeout = value  # type: ignore[misc]
        if _C.gettimeout(self) != 0.0:  # type: ignore[arg-type]
            _C.settimeout(self, 0.0)  # type: ignore[arg-type]

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        return self._timeout_now() != 0.0

    @property
    def timeout(self) -> Optional[float]:
        return self._timeout_now()

    def _accept(self) -> Tuple[int, Any]:
        return retry(self, False, _C._accept, self)  # type: ignore[attr-defined, no-any-return]

    def _real_close(self, *args: Any) -> None:
        _forget(self)
        super()._real_close(*args)  # type: ignore[misc]


def _forget(sock: Any) -> None:
    """Before the fd goes: wake a greenlet of this thread's hub still waiting on it."""
    hub = current_hub()
    fd = _C.fileno(sock)
    if hub is not None and fd >= 0:
        hub.forget_fd(fd)


# -- connect ------------------------------------------------------------------------------------


def connect(sock: Any, address: Any, connect_ex: bool = False) -> int:
    """connect() over a non-blocking kernel socket, waiting as the timeout says. Returns 0 or,
    with ``connect_ex``, the error number. May switch. Raises OSError, socket.timeout."""
    timeout = sock.gettimeout()
    if _family(sock) in _INET and waitable_hub() is not None:
        address = _resolved(sock, address)
    err = _C.connect_ex(sock, address)
    if err in _CONNECTING and timeout != 0.0:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            wait_fd(sock, True, deadline)
        except socket.timeout:
            if connect_ex:
                return errno.EAGAIN
            raise
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err and not connect_ex:
        raise OSError(err, os.strerror(err))
    return err


def _resolved(sock: Any, address: Any) -> Any:
    """(name, port, ...) -> a numeric address, looked up in a pool thread if it is a name."""
    if not isinstance(address, tuple) or len(address) < 2:
        return address
    if isinstance(address[0], str) and type(address[1]) is int:
        try:
            socket.inet_pton(_family(sock), address[0])
            return address  # an IP literal already (create_connection's case): no lookup
        except (OSError, ValueError):
            pass  # a name (or a NUL in it: the lookup refuses that as before)
    infos = getaddrinfo(address[0], address[1], sock.family, sock.type, sock.proto)
    sockaddr = infos[0][4]
    return sockaddr[:2] + tuple(address[2:]) if len(address) > 2 else sockaddr


# -- the socket ---------------------------------------------------------------------------------


class CoopSocket(TimeoutInPython, _Socket):
    """``socket.socket`` whose blocking calls let other greenlets run. See the module doc."""

    __slots__ = ("_gs_timeout",)

    def __init__(self, family: Any = -1, type: Any = -1, proto: int = -1,
                 fileno: Optional[int] = None) -> None:
        super().__init__(family, type, proto, fileno)
        self._gs_timeout = _C.gettimeout(self)
        _C.settimeout(self, 0.0)

    def connect(self, address: Any) -> None:
        connect(self, address)

    def connect_ex(self, address: Any) -> int:
        try:
            return connect(self, address, connect_ex=True)
        except socket.gaierror:
            raise
        except OSError as exc:
            return exc.errno or errno.EIO

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return retry(self, False, _C.recv, self, bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        return retry(self, False, _C.recv_into, self, buffer, nbytes, flags)

    def recvfrom(self, bufsize: int, flags: int = 0) -> Tuple[bytes, Any]:
        return retry(self, False, _C.recvfrom, self, bufsize, flags)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> Tuple[int, Any]:
        return retry(self, False, _C.recvfrom_into, self, buffer, nbytes, flags)

    def recvmsg(self, *args: Any) -> Any:
        return retry(self, False, _C.recvmsg, self, *args)

    def recvmsg_into(self, *args: Any) -> Any:
        return retry(self, False, _C.recvmsg_into, self, *args)

    def send(self, data: Any, flags: int = 0) -> int:
        return retry(self, True, _C.send, self, data, flags)

    def sendto(self, *args: Any) -> int:
        return retry(self, True, _C.sendto, self, *args)

    def sendmsg(self, *args: Any) -> int:
        return retry(self, True, _C.sendmsg, self, *args)

    def sendall(self, data: Any, flags: int = 0) -> None:
        timeout = self._gs_timeout
        if timeout == 0.0:
            return _C.sendall(self, data, flags)  # non-blocking: exactly as before
        deadline = None if timeout is None else time.monotonic() + timeout
        with memoryview(data) as view, view.cast("B") as octets:
            sent, total = 0, len(octets)
            while sent < total:
                try:
                    sent += _C.send(self, octets[sent:], flags)
                except BlockingIOError:
                    wait_fd(self, True, deadline)
        return None

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> int:
        if waitable_hub() is None:
            return super().sendfile(file, offset, count)
        send = self._sendfile_use_send  # type: ignore[attr-defined]
        return send(file, offset, count)  # type: ignore[no-any-return]


# -- name lookups -------------------------------------------------------------------------------


def _in_thread(name: str) -> Callable[..., Any]:
    original = _ORIGINAL_LOOKUPS[name]

    def lookup(*args: Any) -> Any:
        return run_in_thread(original, *args)

    lookup.__name__ = lookup.__qualname__ = name
    lookup.__doc__ = f"socket.{name}, run in a pool thread when called in a hub task."
    return lookup


LOOKUPS = {name: _in_thread(name) for name in _ORIGINAL_LOOKUPS}
LOOKUPS["getaddrinfo"] = getaddrinfo
