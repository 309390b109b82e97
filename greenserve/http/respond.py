"""Sending a response: its head and framing, whole bodies in one send, streamed pieces,
sendfile, the server's own error answers, and the lingering close after them.

Strategy: ``Responder`` is a part of ``Connection`` (a mixin without state of its own: the
connection declares the slots). The framing is decided by the sans-I/O ``h1`` connection;
this module only moves the bytes it returns, and wraps socket errors as ClientDisconnected.
A head that was built but not sent can be taken back (``_retract``), so a failure found before
anything left becomes a clean error response.

Slow readers: every send is paced by the responder itself (a ``gsocket.SendPace``), asked only
when a send has to wait for room. A wait times out after ``send_timeout`` without progress, or
once the response has gone out slower than ``min_send_rate`` on average since its first wait,
after a grace of ``send_timeout`` (a client that takes a little now and then never stalls, but
it holds the response for ever). The pace's clock (a ``SendClock``) is made at that first wait:
a response that never waits costs nothing.

Lingering close (RFC 9112 9.6): after shutting the write side, the hub reads and discards what
the client still sends, in a one-shot fd callback, until EOF, ``_LINGER_BYTES`` or the deadline
(a timer): the connection holds no greenlet meanwhile, so a lingering close costs about what an
idle connection does. ``linger_timeout`` bounds the whole, TLS close_notify included.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from typing import Any, Final, Iterable, Optional, Sequence, Tuple

from . import h1
from ..errors import ClientDisconnected, ClientError, LocalProtocolError
from ..loop.gsocket import GreenSocket
from ..loop.timers import Timer
from .h1 import _writers as h1_writers
from .._traits import interpreted, slotted, trait
from .port import ServerPort
from .wsgi import FileWrapper, Response, whole_body

log = logging.getLogger("greenserve.error")
_SMALL: Final = 16384  # pieces up to this size are joined with the head into one send
_LINGER_BYTES: Final = 1 << 20  # a lingering close reads at most this much before it closes
_REASONS: Final = {
    400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
    417: "Expectation Failed", 431: "Request Header Fields Too Large", 500:
    "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable", 504:
    "Gateway Timeout", 505: "HTTP Version Not Supported",
}


class SendClock:
    """The pace of one response, from its first wait for room (``min_send_rate``)."""

    __slots__ = ("response", "started", "base", "moved", "cutoff")

    def __init__(self, response: Optional[Response], started: float, base: int) -> None:
        self.response = response  # whose sends it paces: another response starts a new clock
        self.started = started
        self.base = base  # bytes of the response sent before that first wait
        self.moved = 0  # bytes sent since, as of the last wait
        self.cutoff = 0.0  # when the last wait's rate deadline falls


@trait
class Responder:
    """The response half of a connection."""

    server: ServerPort
    gsock: GreenSocket
    h1: h1.H1Connection
    response: Optional[Response]
    client_error: Optional[int]
    body_sent: int
    closed: bool
    peer: Optional[Tuple[str, str]]
    send_clock: Optional[SendClock]
    linger: Optional[Timer]  # while lingering: the timer that ends it
    linger_left: int
    glet: Any

    def close(self) -> None:  # the connection's
        raise NotImplementedError

    def client_disconnected(self) -> bool:  # the connection's
        raise NotImplementedError

    def _must_close(self, response: Response) -> bool:
        """Check the response may start; returns whether the connection must close after it.
        Raises ClientError (the request failed) or LocalProtocolError (no start_response)."""
        if self.client_error is not None:
            raise ClientError("the request failed; the app's response is not sent")
        if not response.status:
            raise LocalProtocolError("the app sent a body before calling start_response", 500)
        conn = self.h1
        if self.server.draining or response.headers.close:
            return True
        if conn.body_pending:
            remaining = conn.body_remaining
            return remaining is not None and remaining > self.server.config.max_drain_bytes
        return False

    def _start_head(self, response: Response, length_hint: Optional[int]) -> bytes:
        close = self._must_close(response)
        response.headers_sent = True
        return self.h1.send_head(
            response.status, response.reason, response.headers, self.server.dates.lines,
            length_hint=length_hint, close=close,
        )

    def _retract(self, response: Response) -> None:
        """Take back a head that was built but not sent: the failure that follows gets a clean
        error response instead of an aborted connection."""
        self.h1.retract_response()
        response.headers_sent = False

    def _emit(self, data: bytes) -> None:
        """Send a body piece (PEP 3333: the head goes out with the first non-empty piece)."""
        if not data:
            return
        response = self.response
        if response is None:  # write() kept by the app past its request, the connection closed
            raise LocalProtocolError("cannot write: the response is over", 500)
        head = b"" if response.headers_sent else self._start_head(response, None)
        payload = self.h1.send_data(data)
        if head and len(payload) <= _SMALL:
            self._send(head + payload)
        elif head:
            self._send_parts((head, payload))
        else:
            self._send(payload)
        # Body bytes only, once sent: chunk framing is longer than data, a HEAD or a cut
        # (past Content-Length) shorter.
        self.body_sent += min(len(data), len(payload))
        if self.h1.response_overflowed:
            raise LocalProtocolError("app sent more than its Content-Length", 500)

    def _send_result(self, response: Response, result: Iterable[bytes]) -> None:
        pieces = whole_body(result)
        if pieces is not None and not response.headers_sent:
            # The whole body is known (a list or tuple of bytes): one Content-Length, and the
            # pieces go out together with sendmsg, uncopied.
            conn = self.h1
            head = self._start_head(response, sum(map(len, pieces)))
            parts = [head]
            sent = 0
            for piece in pieces:
                payload = conn.send_data(piece)  # framed by length: as it is, b"" for HEAD
                sent += len(payload)
                parts.append(payload)
            try:
                parts.append(conn.send_eom())
            except LocalProtocolError:  # shorter than the app's Content-Length: nothing sent
                self._retract(response)
                raise
            self._send_parts(parts)
            self.body_sent = sent
            return
        if type(result) is FileWrapper and not response.headers_sent and self._send_file(response, result):
            return
        hub = self.server.hub
        turns = hub.turns
        for piece in result:
            if type(piece) is not bytes:
                raise LocalProtocolError(f"the app yielded {type(piece).__name__}, not bytes", 500)
            if hub.turns != turns and self.client_disconnected():
                # The app waited for this piece and the client left meanwhile: stop here.
                raise ClientDisconnected("the client went away during a streamed response")
            self._emit(piece)
            turns = hub.turns
        if not response.headers_sent:
            head = self._start_head(response, 0)
            self._send(head + self.h1.send_eom())
            return
        self._send(self.h1.send_eom())

    def _send_file(self, response: Response, wrapper: FileWrapper) -> bool:
        """Send a regular file with sendfile. Returns False to fall back to iteration."""
        try:
            fileno = wrapper.filelike.fileno()
            info = os.fstat(fileno)
            position = wrapper.filelike.tell()
        except (AttributeError, OSError, ValueError):
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        available = max(0, info.st_size - position)
        head = self._start_head(response, available)
        writer = self.h1.writer
        assert writer is not None
        self._send(head)
        count = min(writer.remaining, available) if writer.mode == h1_writers.LENGTH else 0
        if count:
            try:
                sent = self.gsock.sendfile(wrapper.filelike, position, count, self)
            except OSError as exc:
                raise self._lost(exc) from None
            writer.remaining -= sent
            self.body_sent += sent
        self._send(self.h1.send_eom())
        return True

    def _send(self, data: bytes) -> None:
        if data:
            try:
                self.gsock.sendall(data, self)
            except OSError as exc:
                raise self._lost(exc) from None

    def _send_parts(self, parts: Sequence[bytes]) -> None:
        if sum(map(len, parts)) <= _SMALL:
            self._send(b"".join(parts))
            return
        try:
            self.gsock.sendall_parts(parts, self)
        except OSError as exc:
            raise self._lost(exc) from None

    def send_deadline(self, done: int) -> float:
        """gsocket.SendPace: when a wait for room that begins now times out, ``done`` bytes
        of the current send having gone out: after ``send_timeout``, or sooner when the
        response is under ``min_send_rate`` (see the module docstring). Never switches."""
        config = self.server.config
        now = self.server.hub.time()
        stall = now + config.send_timeout
        rate = config.min_send_rate
        if not rate:
            return stall
        progress = self.body_sent + done
        clock = self.send_clock
        if clock is None or clock.response is not self.response:
            clock = self.send_clock = SendClock(self.response, now, progress)
        clock.moved = progress - clock.base
        clock.cutoff = clock.started + config.send_timeout + clock.moved / rate
        return min(stall, clock.cutoff)

    def _lost(self, exc: OSError) -> ClientDisconnected:
        """What a failed send becomes. A wait cut off by ``min_send_rate`` is counted and
        logged: the server closed the connection, not the client."""
        clock = self.send_clock
        now = self.server.hub.time()
        if (type(exc) is not TimeoutError or clock is None or clock.response is not self.response
                or now < clock.cutoff):
            return ClientDisconnected(f"client connection lost: {exc}")
        self.server.send_too_slow()
        seconds = now - clock.started
        log.info("closed a connection from %s: it took %d bytes of the response in %.1f s, "
                 "under --min-send-rate %d B/s", self.peer[0] if self.peer else "-",
                 clock.moved, seconds, self.server.config.min_send_rate)
        return ClientDisconnected("the client took the response too slowly")

    def _send_error(self, status: int, *, wait: bool) -> None:
        """Answer ``status`` and close: lingering if ``wait``, else with one try at sending.
        May switch."""
        if wait:
            self._answer_error(status)
            self._close_gracefully()
            return
        error = self._error_response(status)
        if error is not None:
            try:
                self.gsock.sock.send(error[0])
            except OSError:
                pass
        self.close()

    def _answer_error(self, status: int) -> int:
        """Send the error response for ``status``. Returns the body bytes sent; 0 if none could
        be (a response already began, or the client is gone: the connection is then closed).
        May switch."""
        error = self._error_response(status)
        if error is None:
            self.close()
            return 0
        self.send_clock = None  # its own pace, not that of the response it replaces
        try:
            self._send(error[0])
        except ClientError:
            self.close()
            return 0
        return error[1]

    def _error_response(self, status: int) -> Optional[Tuple[bytes, int]]:
        """The bytes of a plain-text error response that closes the connection, and the length
        of its body; None if a response has already begun on this connection."""
        reason = _REASONS.get(status, "Error")
        body = f"{status} {reason}\n".encode()
        conn = self.h1
        if conn.response_state is not h1.ResponseState.IDLE:
            return None
        head = conn.send_response(
            status, reason.encode(), [(b"Content-Type", b"text/plain; charset=utf-8"),
                                      (b"Content-Length", b"%d" % len(body))],
            self.server.dates.lines, close=True,
        )
        data = conn.send_data(body)  # b"" in answer to HEAD
        return head + data + conn.send_eom(), len(data)

    def _finish(self) -> None:
        """Close after a response: at once if the client has nothing in flight, else linger."""
        if self.closed or self.linger is not None:
            return
        if not self.h1.body_pending and not self.h1.buffered and not self.gsock.has_input():
            self.close()
            return
        self._close_gracefully()

    def _close_gracefully(self) -> None:
        """Lingering close: stop sending, then read and discard for a while, so that the
        client gets the response before it sees the connection closed (RFC 9112 9.6). The
        hub does the reading: the greenlet may end, and must not close the connection (its
        ``linger`` is set). May switch (TLS: close_notify waits for room, within the same
        ``linger_timeout``)."""
        if self.closed or self.linger is not None:
            return
        hub = self.server.hub
        deadline = hub.time() + self.server.config.linger_timeout
        self.gsock.shutdown(socket.SHUT_WR, deadline)
        if self.closed:  # pragma: no cover - closed while close_notify waited (server stop)
            return
        self.linger_left = _LINGER_BYTES
        self.linger = hub.call_at(deadline, self._end_linger)
        self.glet = None  # the greenlet is ending: the hub holds the connection now
        # Nothing is parsed any more: drop the parser's state, whose request error holds the
        # frames of the ended greenlet (a lingering close then costs what an idle one does).
        self.h1 = h1.H1Connection(self.server.limits)
        self._linger_read()

    def _linger_read(self) -> None:
        """Read and discard what the client sent (one read a turn); at its EOF or past
        ``_LINGER_BYTES``, close; else wait for more in the hub. Never switches."""
        if self.closed:
            return
        n = self.gsock.discard_nowait(self.linger_left)
        if n is not None:
            self.linger_left -= n
            if n == 0 or self.linger_left <= 0:
                self._end_linger()
                return
        self.server.hub.watch_readable(self.gsock.fd, self._linger_read)

    def _end_linger(self) -> None:
        """The lingering close is over (EOF, byte limit or deadline): close. Never switches
        (from the hub, TLS close_notify is one try)."""
        timer = self.linger
        if timer is not None:
            timer.cancel()
        self.close()


if interpreted(__file__):  # a pure-Python connection has no __dict__ (see _traits.py)
    globals()["Responder"] = slotted(Responder)


def _framed(writer: Any, length: int, declared: Optional[int]) -> int:
    """Body bytes of a whole body of ``length`` framed by ``writer`` (not the usual way):
    none for a response that carries no body (HEAD, 1xx, 204, 304), else up to the declared
    Content-Length (a surplus is cut)."""
    if writer.mode == h1_writers.NO_BODY:
        return 0
    return length if declared is None else min(length, declared)
