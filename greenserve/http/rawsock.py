"""The raw socket of an upgrade request, for WebSocket libraries that do their own handshake
and framing: ``environ["gunicorn.socket"]``, where simple-websocket (and so flask-sock and
Flask-SocketIO's threading mode) looks for it.

Strategy:
- Using it takes the connection from HTTP (``Upgrade.taken``): the server writes nothing more
  and only closes it once the app has returned and the library is done with it.
- simple-websocket reads in a thread of its own (a real thread, even under ``--patch``) while
  the app's greenlet sends and waits on a ``threading.Event`` (cooperative under ``--patch``).
  So every call works from either side: in a task of the server's hub it waits in the hub;
  anywhere else it waits in ``poll`` (never patched), in slices, so that it notices a close.
- The fd stays the connection's: a real lock is held around each non-blocking syscall, and the
  server closes the fd only under it after marking the socket dead, so a thread can never read
  or write a reused fd number. ``close()`` by the library only says it is done.
"""

from __future__ import annotations

import _thread
import errno
import logging
import select
import socket
import threading
from typing import Any, Callable, Optional

from ..loop.hub import Hub, waitable_hub
from ..loop.tasks import Event as Flag

log = logging.getLogger("greenserve.error")
_SLICE_MS = 250  # a thread's wait re-checks whether the socket died this often
_GOING_AWAY = b"\x88\x02\x03\xe9"  # an unmasked close frame, code 1001 (RFC 6455 5.5.1)
_warned = [False]


def _dead() -> OSError:
    return OSError(errno.EBADF, "the WebSocket's connection is closed")


class RawSocket:
    """A socket-like view of an upgraded connection; see the module docstring."""

    def __init__(self, sock: socket.socket, hub: Hub) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._hub = hub
        # called once, with the status of the first bytes sent (0: a read came first)
        self.on_first_use: Callable[[int], None] = lambda status: None
        self._used = False
        self._lock = _thread.allocate_lock()
        self._dead = False
        self.done: Optional[Flag] = None  # made when the library takes the socket, set when
        # it calls close()
        self.family, self.type = sock.family, sock.type

    def _claim(self, data: bytes = b"") -> None:
        if not self._used:
            self._used = True
            self.done = Flag()
            status = int(data[9:12]) if data[:9] == b"HTTP/1.1 " and data[9:12].isdigit() else 0
            self.on_first_use(status)
            if not getattr(threading.Lock, "__module__", "").startswith("greenserve") and not _warned[0]:
                _warned[0] = True
                log.warning("a WebSocket library took the raw socket without --patch: its "
                            "threading.Event waits block the whole server; run with --patch")

    def fileno(self) -> int:
        return self._fd if not self._dead else -1

    def setblocking(self, flag: bool) -> None:
        """Ignored: the socket stays non-blocking; every call here waits as it should."""

    def settimeout(self, value: Optional[float]) -> None:
        """Ignored, as ``setblocking``."""

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def _wait(self, writing: bool) -> None:
        """Wait until the socket is ready, in the hub or in poll. May switch. Raises OSError
        once the socket is dead."""
        hub = waitable_hub()
        if hub is self._hub:
            if writing:
                hub.wait_writable(self._fd)
            else:
                hub.wait_readable(self._fd)
            return
        poller = select.poll()
        poller.register(self._fd, select.POLLOUT if writing else select.POLLIN)
        while not self._dead and not poller.poll(_SLICE_MS):
            pass

    def recv(self, size: int, flags: int = 0) -> bytes:
        """Receive up to ``size`` bytes (b"" at end of input). May switch or block."""
        self._claim()
        while True:
            with self._lock:
                if self._dead:
                    raise _dead()
                try:
                    return self._sock.recv(size, flags)
                except BlockingIOError:
                    pass
            self._wait(False)

    def send(self, data: Any, flags: int = 0) -> int:
        """Send all of ``data`` (a library that frames expects it to go whole); returns its
        length. May switch or block."""
        self.sendall(data, flags)
        return len(data)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._claim(bytes(data[:12]))
        view = memoryview(data).cast("B")
        while view:
            with self._lock:
                if self._dead:
                    raise _dead()
                try:
                    view = view[self._sock.send(view, flags):]
                    continue
                except BlockingIOError:
                    pass
            self._wait(True)

    def close(self) -> None:
        """The library is done with the connection; the server closes it. Never blocks."""
        if self.done is not None:
            self.done.set()  # (safe from any thread)

    def going_away(self) -> None:
        """Server stop: send a close frame (1001) to the client, whose answer ends the
        library's session. May switch."""
        try:
            self.sendall(_GOING_AWAY)
        except OSError:
            pass

    def kill(self) -> None:
        """The server is done with the connection: no call here touches the fd again, and a
        thread waiting in it wakes (shutdown). Never switches."""
        with self._lock:
            self._dead = True
            try:
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)  # (TLS: not unwrapped)
            except OSError:
                pass
