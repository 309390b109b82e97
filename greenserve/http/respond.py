"""Sending a response: its head and framing, whole bodies in one send, streamed pieces,
sendfile, the server's own error answers, and the lingering close after them.

Strategy: ``Responder`` is a part of ``Connection`` (a mixin without state of its own: the
connection declares the slots). The framing is decided by the sans-I/O ``h1`` connection;
this module only moves the bytes it returns, and wraps socket errors as ClientDisconnected.
A head that was built but not sent can be taken back (``_retract``), so a failure found before
anything left becomes a clean error response.
"""

from __future__ import annotations

import os
import socket
import stat
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence, Tuple

from . import h1
from ..errors import ClientDisconnected, ClientError, LocalProtocolError
from ..loop.gsocket import GreenSocket
from .h1 import _writers as h1_writers
from .port import ServerPort
from .wsgi import FileWrapper, Response, whole_body

_SMALL = 16384  # pieces up to this size are joined with the head into one send
_REASONS = {
    400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
    417: "Expectation Failed", 431: "Request Header Fields Too Large", 500:
    "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable", 504:
    "Gateway Timeout", 505: "HTTP Version Not Supported",
}


class Responder:
    """The response half of a connection."""

    if not TYPE_CHECKING:
        __slots__ = ()  # the connection declares every slot (a mixin's would clash)
    server: ServerPort
    gsock: GreenSocket
    h1: h1.H1Connection
    response: Optional[Response]
    client_error: Optional[int]
    body_sent: int
    closed: bool

    close: Callable[[], None]  # the connection's
    client_disconnected: Callable[[], bool]

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
        assert response is not None
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
                sent = self.gsock.sendfile(wrapper.filelike, position, count, self.server.config.send_timeout)
            except OSError as exc:
                raise ClientDisconnected(f"client connection lost: {exc}") from None
            writer.remaining -= sent
            self.body_sent += sent
        self._send(self.h1.send_eom())
        return True

    def _send(self, data: bytes) -> None:
        if data:
            try:
                self.gsock.sendall(data, self.server.config.send_timeout)
            except OSError as exc:
                raise ClientDisconnected(f"client connection lost: {exc}") from None

    def _send_parts(self, parts: Sequence[bytes]) -> None:
        if sum(map(len, parts)) <= _SMALL:
            self._send(b"".join(parts))
            return
        try:
            self.gsock.sendall_parts(parts, self.server.config.send_timeout)
        except OSError as exc:
            raise ClientDisconnected(f"client connection lost: {exc}") from None

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
        if self.closed:
            return
        if not self.h1.body_pending and not self.h1.buffered and not self.gsock.has_input():
            self.close()
            return
        self._close_gracefully()

    def _close_gracefully(self) -> None:
        """Lingering close: stop sending, read and discard for a while so that the client gets
        the response before it sees the connection closed (RFC 9112 9.6)."""
        if self.closed:
            return
        gsock = self.gsock
        gsock.shutdown(socket.SHUT_WR)
        deadline = self.server.hub.time() + self.server.config.linger_timeout
        budget = 1 << 20
        try:
            while budget > 0 and self.server.hub.time() < deadline:
                data = gsock.recv(65536, deadline)
                if not data:
                    break
                budget -= len(data)
        except (OSError, TimeoutError):
            pass
        self.close()


def _framed(writer: Any, length: int, declared: Optional[int]) -> int:
    """Body bytes of a whole body of ``length`` framed by ``writer`` (not the usual way):
    none for a response that carries no body (HEAD, 1xx, 204, 304), else up to the declared
    Content-Length (a surplus is cut)."""
    if writer.mode == h1_writers.NO_BODY:
        return 0
    return length if declared is None else min(length, declared)
