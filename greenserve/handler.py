"""One client connection: the keep-alive loop around the WSGI app.

Strategy:
- An idle connection holds no greenlet: it is a watch on its fd (``Server`` tracks its idle
  deadline). When bytes arrive, the hub starts ``serve`` in a new greenlet, which answers every
  request it can parse and then goes back to idle (or closes).
- Every failure ends in ``_fail``, the one place that maps exceptions to responses: a client's
  protocol error gets its 4xx, an app error a 500 with a logged traceback, and once the head has
  gone out a failure aborts the connection instead.
- Errors on the client's socket are wrapped as ClientError so that an OSError raised by the app
  itself (a missing file, a refused upstream) is still the app's error, i.e. a 500.
- 100 Continue is sent lazily, on the first read of wsgi.input.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import stat
import tempfile
import time
from email.utils import formatdate
from typing import IO, TYPE_CHECKING, Any, Dict, Iterable, Optional, Sequence, Tuple

from . import h1
from .errors import (
    Cancelled, ClientDisconnected, ClientError, LocalProtocolError, RemoteProtocolError,
    RequestTimedOut,
)
from .gsocket import GreenSocket
from .guards import arm_deadline, peer_gone
from .proxy import PROXY_KEYS
from .wsgi import EMPTY_INPUT, FileWrapper, Input, Response, request_environ, whole_body

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("greenserve.error")
RECV_SIZE = 65536
_SMALL = 16384  # pieces up to this size are joined with the head into one send
_REASONS = {
    400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
    417: "Expectation Failed", 431: "Request Header Fields Too Large", 500:
    "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable", 504:
    "Gateway Timeout", 505: "HTTP Version Not Supported",
}
_GONE = 0  # client_error status meaning "nothing can be sent any more"
# Fairness for bodies of tiny chunks: parsing costs per chunk (~2.5 us), not per byte, so a
# socket that never waits yields to the others every so many tiny pieces, not only every MiB.
_TINY_PIECE = 256
_TINY_PIECES_PER_TURN = 2048
_SPOOL_MEMORY = 1 << 20  # a buffered chunked request body beyond this goes to a temporary file


class DateCache:
    """The Date and Server header lines. ``lines`` is an attribute, so reading it costs nothing
    per response; the server calls ``refresh`` from a hub timer at every new second
    (RFC 9110 6.6.1 asks for the best available approximation of the time)."""

    __slots__ = ("_second", "lines", "_server")

    def __init__(self, server_header: bytes) -> None:
        self._second = -1
        self.lines = b""
        self._server = server_header
        self.refresh()

    def refresh(self) -> float:
        """Rebuild the lines if the second changed. Returns seconds until the next second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self.lines = b"Date: %s\r\n%s" % (formatdate(second, usegmt=True).encode(), self._server)
        return 1.0 - (now - second)


class Connection:
    """A client connection. See the module docstring."""

    __slots__ = (
        "server", "gsock", "h1", "base_env", "peer", "glet", "active", "started",
        "response", "client_error", "body_sent", "closed", "deadline", "body_started",
        "body_received", "tiny_pieces",
    )

    def __init__(
        self, server: "Server", sock: socket.socket, base_env: Dict[str, Any],
        peer: Optional[Tuple[str, str]],
    ) -> None:
        self.server = server
        self.gsock = GreenSocket(sock, server.hub)
        self.h1 = h1.H1Connection(server.limits)
        self.base_env = base_env
        self.peer = peer
        self.glet: Any = None
        self.active = False
        self.started = server.hub.time()  # when the current request head began
        self.response: Optional[Response] = None
        self.client_error: Optional[int] = None
        self.body_sent = 0
        self.closed = False
        self.deadline = 0.0  # while idle: when the idle connection is closed
        self.body_started = 0.0  # when this body's first wait for bytes began (0: not yet)
        self.body_received = 0
        self.tiny_pieces = 0

    # -- idle <-> active ----------------------------------------------------------------------

    def watch(self) -> None:
        """Go idle: hold no greenlet, wake on the next byte."""
        self.active = False
        self.glet = None
        self.server.hub.watch_readable(self.gsock.fd, self._on_readable)

    def _on_readable(self) -> None:
        server = self.server
        self.started = server.hub.time()
        self.active = True
        self.glet = server.hub.start_now(self.serve)

    def close_idle(self) -> None:
        """Close an idle connection (idle timeout, server stop)."""
        if not self.active:
            self.server.hub.unwatch(self.gsock.fd)
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.gsock.close()
            self.server.connection_closed(self)

    # -- the request loop ---------------------------------------------------------------------

    def serve(self) -> None:
        """Answer requests until the connection goes idle or closes. Runs in its own greenlet."""
        try:
            if self._serve_requests():
                server = self.server
                self.deadline = server.hub.time() + server.config.keepalive_timeout
                self.watch()
                return
        except Cancelled:
            self.close()
            raise
        except Exception:
            log.exception("internal error on a connection")
        self.close()

    def _serve_requests(self) -> bool:
        """Returns True to keep the connection idle, False to close it."""
        conn = self.h1
        server = self.server
        # Woken because bytes are there (an idle connection holds no buffered bytes).
        if not self._receive_head_bytes():
            return False
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self._reject(exc)
                return False
            if event is h1.NEED_DATA:
                if not self._receive_head_bytes():
                    return False
                continue
            if type(event) is not h1.Request:
                return False  # ConnectionClosed
            if not self._handle(event) or server.draining:
                self._finish()
                return False
            conn.start_next_cycle()
            if not conn.buffered:
                return True
            # A pipelined request is waiting: let the other connections have a turn first.
            server.hub.yield_now()
            server.hub.new_context()
            self.started = server.hub.time()

    def _receive_head_bytes(self) -> bool:
        deadline = self.started + self.server.config.header_timeout
        try:
            data = self.gsock.recv(RECV_SIZE, deadline)
        except TimeoutError:
            if self.h1.buffered:
                self._reject(RemoteProtocolError("request head not received in time", 408))
            return False
        except OSError:
            return False
        self.h1.receive_data(data)
        return True

    def _handle(self, request: h1.Request) -> bool:
        """Run the app for one request. Returns whether the connection may be kept."""
        server = self.server
        conn = self.h1
        response = self.response = Response(self._emit)
        self.client_error = None
        self.body_sent = 0
        environ = request_environ(self.base_env, self.peer, request,
                                  Input(self._read_chunk) if conn.body_pending else EMPTY_INPUT)
        environ["greenserve.client_disconnected"] = self.client_disconnected
        server.request_started()
        result: Optional[Iterable[bytes]] = None
        spool: Optional[IO[bytes]] = None
        timeout = server.config.request_timeout
        deadline = arm_deadline(server.hub, timeout) if timeout else None
        try:
            try:
                if not environ.keys().isdisjoint(PROXY_KEYS):
                    # Applied if trusted, else removed; inside the request's error handling, so
                    # a failure here is a 500 with its traceback logged, like the app's own.
                    server.proxies.apply(environ, self.peer)
                if conn.body_remaining is None and server.config.buffer_chunked_body:
                    spool = self._buffer_body(environ)
                result = server.app(environ, response.start_response)
                if (
                    type(result) is list and len(result) == 1 and type(result[0]) is bytes
                    and len(result[0]) <= _SMALL and not response.headers_sent
                ):
                    # The common case: head, body and end in one buffer and one send.
                    body = result[0]
                    close = self._must_close(response)
                    response.headers_sent = True
                    try:
                        whole = conn.send_whole(
                            response.status, response.reason, response.headers,
                            server.dates.lines, body, close=close)
                    except LocalProtocolError:
                        self._retract(response)
                        raise
                    self._send(whole)
                    writer = conn.writer  # None: the usual framing, the body as it is
                    self.body_sent = len(body) if writer is None else _framed(
                        writer, len(body), response.headers.content_length)
                else:
                    self._send_result(response, result)
            finally:
                if result is not None and type(result) is not list and hasattr(result, "close"):
                    self._close_result(result)
                if deadline is not None:
                    deadline.cancel()
                if spool is not None:
                    spool.close()
        except BaseException as exc:  # noqa: B902 - every outcome is decided in _fail
            server.request_finished(self, request, self._fail(exc, response), environ)
            if isinstance(exc, Cancelled):
                raise
            return False
        server.request_finished(self, request, response.status, environ)
        if conn.response_overflowed:
            log.error("app sent more body than its Content-Length; the surplus was dropped")
            return False
        return conn.keep_alive and (not conn.body_pending or self._drain_body())

    def client_disconnected(self) -> bool:
        """``environ['greenserve.client_disconnected']()``: True once the client has closed or
        reset the connection (see guards.peer_gone). Advice only: an answer the app still
        sends goes out if it can (a half-closed client reads it). Never switches."""
        if self.closed or self.client_error == _GONE:
            return True
        return peer_gone(self.gsock.sock, bool(self.h1.buffered))

    def _close_result(self, result: Any) -> None:
        try:
            result.close()
        except Exception:
            log.exception("error in the close() method of the app's iterable")

    # -- request body -------------------------------------------------------------------------

    def _read_chunk(self) -> bytes:
        """The next piece of request body, b"" at its end. May switch. Raises ClientError."""
        conn = self.h1
        if self.client_error is not None:
            raise ClientError("the request body could not be read")
        if conn.continue_expected:
            self._send(conn.send_continue())
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self.client_error = exc.status_hint
                raise ClientError(str(exc)) from None
            kind = type(event)
            if kind is h1.Data:
                data: bytes = event.data  # type: ignore[union-attr]
                if len(data) < _TINY_PIECE:
                    self._tiny_piece()
                return data
            if event is not h1.NEED_DATA:
                self.body_started = 0.0  # the body is over: the next one starts its own clock
                return b""
            try:
                data = self.gsock.recv(RECV_SIZE, self._body_deadline())
            except TimeoutError:
                self.client_error = 408
                raise ClientError("timed out reading the request body") from None
            except OSError as exc:
                self.client_error = _GONE
                raise ClientDisconnected(f"client connection lost: {exc}") from None
            if not data:
                conn.receive_data(b"")
                self.client_error = _GONE
                raise ClientDisconnected("client closed the connection mid-body")
            self.body_received += len(data)
            conn.receive_data(data)

    def _buffer_body(self, environ: Dict[str, Any]) -> IO[bytes]:
        """Read a chunked request body whole (memory up to _SPOOL_MEMORY, then a temporary
        file) and hand it to the app with the CONTENT_LENGTH it now has. Django and most
        frameworks read CONTENT_LENGTH (absent: 0) and ignore wsgi.input_terminated, so
        without this they see an empty body. The limits and timeouts of any body read apply.
        Returns the spool, for the caller to close. May switch. Raises ClientError."""
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)
        try:
            total = 0
            piece = self._read_chunk()
            while piece:
                spool.write(piece)  # past _SPOOL_MEMORY a blocking disk write, like sendfile's
                total += len(piece)
                piece = self._read_chunk()
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        environ["CONTENT_LENGTH"] = str(total)
        environ["wsgi.input"] = Input(functools.partial(spool.read, RECV_SIZE))
        return spool

    def _tiny_piece(self) -> None:
        """Count a tiny body piece; every so many, let the other connections run. May switch."""
        self.tiny_pieces += 1
        if self.tiny_pieces >= _TINY_PIECES_PER_TURN:
            self.tiny_pieces = 0
            self.server.hub.yield_now()

    def _body_deadline(self) -> float:
        """When the next body read times out: after ``body_timeout`` without a byte, or when
        the body falls below ``min_body_rate`` on average, after a first ``body_timeout`` of
        grace (a one-byte-per-chunk 'chunkloris' never stalls, but it is slow)."""
        config = self.server.config
        now = self.server.hub.time()
        if not config.min_body_rate:
            return now + config.body_timeout
        if not self.body_started:
            self.body_started, self.body_received = now, 0
        rate_limit = self.body_started + config.body_timeout + self.body_received / config.min_body_rate
        return min(now + config.body_timeout, rate_limit)

    def _drain_body(self) -> bool:
        """Read and discard what the app left of the body. Returns whether the connection
        may be kept."""
        conn = self.h1
        if not conn.body_pending:
            return True
        limit = self.server.config.max_drain_bytes
        remaining = conn.body_remaining
        if conn.continue_expected or (remaining is not None and remaining > limit):
            return False
        drained = 0
        try:
            while drained <= limit:
                chunk = self._read_chunk()
                if not chunk:
                    return True
                drained += len(chunk)
        except ClientError:
            pass
        return False

    # -- response -----------------------------------------------------------------------------

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

    # -- failures -----------------------------------------------------------------------------

    def _fail(self, exc: BaseException, response: Response) -> int:
        """Map an exception from a request to what the client gets; the connection is closed.
        Returns the status sent: the error's, the app's if its head went out, or 0."""
        status: Optional[int] = None
        if isinstance(exc, ClientError):
            status = self.client_error or None  # a 4xx to answer, or nothing (client gone)
            log.debug("client error: %s", exc)
        elif isinstance(exc, LocalProtocolError):
            log.error("the app broke the WSGI or HTTP rules: %s", exc)
            status = 500
        elif isinstance(exc, RequestTimedOut):
            # The app did not answer in time: 504 (RFC 9110 15.6.5), the server got no timely
            # answer from what it stands in front of. 503 stays the answer of a stopping server.
            log.warning("request cancelled: %s; it was waiting here:", exc, exc_info=exc)
            status = 504
        elif isinstance(exc, Cancelled):
            status = 503
        else:  # any other exception, SystemExit and KeyboardInterrupt from the app included
            log.error("error in the WSGI app", exc_info=exc)
            status = 500
        if status is None or response.headers_sent:
            if response.headers_sent and not isinstance(exc, ClientError):
                log.error("response aborted after its head was sent")
            self.close()
            return 0
        stopping = isinstance(exc, Cancelled) and not isinstance(exc, RequestTimedOut)
        self._send_error(status, wait=not stopping)
        return status

    def _reject(self, exc: RemoteProtocolError) -> None:
        """Answer a protocol error in the request head (it gets an access log line), then
        close. May switch."""
        log.debug("bad request: %s", exc)
        status = exc.status_hint
        self.server.protocol_error(status)
        sent = self._answer_error(status)
        self.server.request_rejected(self, status, sent)
        self._close_gracefully()

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


from .h1 import _writers as h1_writers  # noqa: E402  (names the framing modes)
