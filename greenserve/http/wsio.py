"""The WebSocket object an app gets after the upgrade: blocking, cooperative message I/O.

Strategy:
- wsproto does the framing (RFC 6455 5): masking, fragments, control frames, UTF-8 of text,
  the close handshake's states. This module owns the I/O: it feeds wsproto what the socket
  gives, sends what wsproto makes, and enforces greenserve's limits (message size, keepalive,
  the wait for the client's close).
- Every call runs in a greenlet of the server's hub and may switch. Two locks make it safe to
  use from several greenlets at once (a broadcaster sending while the app's own greenlet waits
  in ``receive``): one for receiving, one for sending, so frames never interleave and wsproto's
  state is only changed by a greenlet that holds the lock of its direction.
- Reading happens only inside ``receive`` or ``close``: what arrives while nobody reads waits in
  the kernel (its flow control holds back a client that sends faster than the app reads).
- Keepalive: a ``receive`` that has heard nothing for ``ping_interval`` sends a ping; silent for
  as long again, the WebSocket is closed with 1011 and the connection dropped.
- A protocol error found by wsproto (unmasked frame, bad opcode or length: 1002; bad UTF-8:
  1007) and an oversized message (1009) "fail the WebSocket connection" (RFC 6455 7.1.7): the
  close frame is sent and the connection dropped at once.
"""

from __future__ import annotations

import collections
import socket
from typing import Any, Deque, Iterator, List, Optional, Protocol, Union

from wsproto.connection import Connection as Framer, ConnectionState
from wsproto.events import (
    BytesMessage, CloseConnection, Event, Message, Ping, Pong, TextMessage,
)
from wsproto.utilities import LocalProtocolError as FramingError

from ..errors import WebSocketClosed, WebSocketError
from ..loop.gsocket import GreenSocket
from ..loop.hub import Hub, Parking, waitable_hub
from ..loop.tasks import Event as Flag

RECV_SIZE = 65536
NORMAL, GOING_AWAY, PROTOCOL_ERROR, ABNORMAL, TOO_BIG, INTERNAL = 1000, 1001, 1002, 1006, 1009, 1011
Data = Union[str, bytes]


class WebSocketPort(Protocol):
    """What a WebSocket reports to its server (counters); never switches."""

    def websocket_message(self, incoming: bool) -> None: ...

    def websocket_closed(self, ws: Any) -> None: ...


class Settings:
    """The limits of one server's WebSockets (from its Config)."""

    __slots__ = ("max_message", "ping_interval", "close_timeout", "send_timeout")

    def __init__(self, max_message: int, ping_interval: float, close_timeout: float,
                 send_timeout: float) -> None:
        self.max_message = max_message
        self.ping_interval = ping_interval
        self.close_timeout = close_timeout
        self.send_timeout = send_timeout


class GreenLock:
    """A lock between greenlets of one hub (first come, first served). Not reentrant. Its
    line of waiters is made at the first contention: most WebSockets never have one."""

    __slots__ = ("hub", "held", "waiters")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.held = False
        self.waiters: Optional[Deque[Parking]] = None

    def acquire(self) -> None:
        """May switch (while another greenlet holds it)."""
        if not self.held and not self.waiters:
            self.held = True
            return
        waiters = self.waiters
        if waiters is None:
            waiters = self.waiters = collections.deque()
        spot = self.hub.parking()
        waiters.append(spot)
        try:
            self.hub.park(spot)
        except BaseException:
            if spot in waiters:
                waiters.remove(spot)
            else:  # handed over to us just as we were cancelled: pass it on
                self.release()
            raise

    def release(self) -> None:
        """Hand the lock to the oldest waiter, or free it. Never switches."""
        if self.waiters:
            self.hub.unpark(self.waiters.popleft())  # still held: ownership passes over
        else:
            self.held = False

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class WebSocket:
    """An accepted WebSocket. See the module docstring. ``subprotocol``: the one chosen at
    the handshake (or None); ``close_code`` / ``close_reason``: how it closed, once closed."""

    def __init__(self, gsock: GreenSocket, framer: Framer, settings: Settings,
                 port: WebSocketPort, subprotocol: Optional[str] = None) -> None:
        self.gsock = gsock
        self.hub = gsock.hub
        self.framer = framer
        self.settings = settings
        self.port = port
        self.subprotocol = subprotocol
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self._messages: List[Data] = []  # received, not yet returned (rarely more than one)
        self._parts: List[Any] = []
        self._size = 0
        self._reading = GreenLock(self.hub)
        self._sending = GreenLock(self.hub)
        self._done: Optional[Flag] = None  # made when a close() waits for another reader
        self._heard = self.hub.time()  # when the client last sent anything
        self._pinged = 0.0  # when our unanswered keepalive ping went out (0: none)

    # -- state ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the close handshake is over or the connection is lost (no more messages
        will come; ``receive`` returns what was already received, then None)."""
        return self.close_code is not None

    def _finish(self, code: int, reason: str = "") -> None:
        """The WebSocket is over (no more I/O). Never switches."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            if self._done is not None:
                self._done.set()
            self.port.websocket_closed(self)

    def abort(self, code: int = ABNORMAL) -> None:
        """Drop the connection now, without a close handshake: a greenlet blocked reading it
        wakes with end of input. Never switches."""
        try:
            # The kernel socket's own shutdown: a TLS socket's would unwrap it under later reads.
            socket.socket.shutdown(self.gsock.sock, socket.SHUT_RDWR)
        except OSError:
            pass
        self._finish(code)

    def _check_caller(self) -> None:
        if waitable_hub() is not self.hub:
            raise WebSocketError("a WebSocket is used from its server's greenlets only (in a "
                                 "thread, hand messages over with a queue)")

    # -- receiving --------------------------------------------------------------------------

    def receive(self, timeout: Optional[float] = None) -> Optional[Data]:
        """The next message: str (text) or bytes (binary); None once the WebSocket is closed.
        May switch. Raises TimeoutError if ``timeout`` seconds pass with no message."""
        if self._messages:
            return self._messages.pop(0)
        self._check_caller()
        deadline = None if timeout is None else self.hub.time() + timeout
        with self._reading:
            while not self._messages:
                if self.closed:
                    return None
                self._read_some(deadline, keepalive=True)
            return self._messages.pop(0)

    def __iter__(self) -> Iterator[Data]:
        """The messages until the WebSocket closes. May switch."""
        while True:
            message = self.receive()
            if message is None:
                return
            yield message

    def _read_some(self, deadline: Optional[float], keepalive: bool) -> None:
        """Read once from the socket (waiting at most until ``deadline``, or until a keepalive
        step is due) and handle what it brings. May switch. Raises TimeoutError at
        ``deadline``."""
        hub = self.hub
        interval = self.settings.ping_interval if keepalive else 0.0
        due = None
        if interval:
            due = (self._pinged or self._heard) + interval
        until = due if deadline is None or (due is not None and due < deadline) else deadline
        try:
            data = self.gsock.recv(RECV_SIZE, until)
        except TimeoutError:
            if deadline is not None and hub.time() >= deadline:
                raise
            self._keepalive()
            return
        except OSError:
            data = b""
        self._heard = hub.time()
        self._pinged = 0.0
        self.framer.receive_data(data or None)  # None: end of input (close code 1006)
        self._handle_events()

    def _keepalive(self) -> None:
        """The client has been silent for ``ping_interval``: ping it, or, already pinged for
        as long, close with 1011 and drop. May switch."""
        if self._pinged:
            self._fail(INTERNAL, "keepalive ping not answered")
            return
        self._pinged = self.hub.time()
        self._send_event(Ping(b"greenserve"))

    def _handle_events(self) -> None:
        for event in self.framer.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                self._on_data(event)
            elif isinstance(event, Ping):
                self._send_event(event.response())
            elif isinstance(event, CloseConnection):
                self._on_close(event)
            elif not isinstance(event, Pong):  # pragma: no cover - no other event after 101
                continue
            if self.closed:
                return

    def _on_data(self, event: Message[Any]) -> None:
        self._size += len(event.data)
        if self._size > self.settings.max_message:
            self._fail(TOO_BIG, f"message over {self.settings.max_message} bytes")
            return
        self._parts.append(event.data)
        if event.message_finished:
            parts, self._parts, self._size = self._parts, [], 0
            if isinstance(event, TextMessage):
                self._messages.append(parts[0] if len(parts) == 1 else "".join(parts))
            else:
                self._messages.append(b"".join(parts))
            self.port.websocket_message(True)

    def _on_close(self, event: CloseConnection) -> None:
        state = self.framer.state
        if state is ConnectionState.OPEN:  # wsproto found a protocol error (not a close frame)
            self._fail(event.code, event.reason or "")
        elif state is ConnectionState.REMOTE_CLOSING:  # the client closes: answer in kind
            self._send_event(event.response())
            self._finish(event.code, event.reason or "")
            self.abort(event.code)
        else:  # CLOSED: the answer to our close, or end of input
            self._finish(event.code, event.reason or "")

    def _fail(self, code: int, reason: str) -> None:
        """Fail the WebSocket connection (RFC 6455 7.1.7): send a close frame, then drop.
        May switch."""
        self._finish(code, reason)
        if self.framer.state is ConnectionState.OPEN:
            self._send_event(CloseConnection(code, reason[:100]))
        self.abort(code)

    # -- sending ----------------------------------------------------------------------------

    def send(self, data: Data) -> None:
        """Send one message: text for str, binary for bytes (bytearray, memoryview). May
        switch. Raises WebSocketClosed once the WebSocket is closing or closed, WebSocketError
        outside the server's greenlets (another thread)."""
        if self.closed or self.framer.state is not ConnectionState.OPEN:
            raise WebSocketClosed(self.close_code or NORMAL, self.close_reason)
        self._check_caller()
        if isinstance(data, str):
            event: Event = TextMessage(data)
        else:
            event = BytesMessage(bytes(data))
        if not self._send_event(event):
            raise WebSocketClosed(self.close_code or ABNORMAL, self.close_reason)
        self.port.websocket_message(False)

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (its pong is handled by ``receive``). May switch. Raises
        WebSocketClosed."""
        if self.closed or not self._send_event(Ping(payload)):
            raise WebSocketClosed(self.close_code or ABNORMAL, self.close_reason)

    def _send_event(self, event: Event) -> bool:
        """Frame and send ``event`` (under the send lock). Returns False if it could not be
        sent (wrong state, connection lost: then the WebSocket is over). May switch."""
        with self._sending:
            try:
                data = self.framer.send(event)
            except FramingError:
                return False
            try:
                self.gsock.sendall(data, self.settings.send_timeout)
            except OSError:
                self.abort()
                return False
        return True

    # -- closing ----------------------------------------------------------------------------

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Start the close handshake (RFC 6455 7.1.2) and wait, at most ``close_timeout``,
        for the client's answer; then the connection is dropped. Closing a closed WebSocket
        does nothing. May switch."""
        if self.closed:
            return
        self._check_caller()
        if self.framer.state is ConnectionState.OPEN:
            self._send_event(CloseConnection(code, reason))
        deadline = self.hub.time() + self.settings.close_timeout
        if not self._reading.held and not self._reading.waiters:
            with self._reading:
                while not self.closed:
                    try:
                        self._read_some(deadline, keepalive=False)
                    except TimeoutError:
                        break
        else:  # another greenlet is in receive(): it will read the answer
            if self._done is None:
                self._done = Flag()
            self._done.wait(max(0.0, deadline - self.hub.time()))
        if not self.closed:
            self.abort()
        else:
            self.abort(self.close_code or ABNORMAL)
