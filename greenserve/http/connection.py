"""One client connection: the keep-alive loop around the WSGI app. Reading the request body is
in body.py and sending the response in respond.py (parts of ``Connection``); the server is
known only through port.py's ``ServerPort``.

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
- A WebSocket upgrade (websocket.py) takes the connection: once the app has accepted (or the
  handshake was refused, or a library took the raw socket), nothing more is written in HTTP,
  the app's result is ignored, and the connection closes when the session ends.
- While the server drains, every response says ``Connection: close``; a connection whose
  response went out before the drain began goes idle as usual but for ``DRAIN_QUIET`` seconds
  at most, so that a next request already on its way is answered, not reset.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Dict, Final, IO, Iterable, Optional, Tuple

from . import h1
from ..errors import (
    Cancelled, ClientError, LocalProtocolError, RemoteProtocolError, RequestTimedOut,
)
from ..loop.gsocket import GreenSocket
from ..loop.guards import arm_deadline, peer_gone
from ..loop.timers import Timer
from .body import GONE, RECV_SIZE, BodyReader
from .h1.headers import CHUNKED as CHUNKED_BODY
from .port import ServerPort
from .proxy import PROXY_FIELDS
from .respond import _SMALL, Responder, SendClock, _framed
from .websocket import Upgrade, end_session, offer_upgrade
from .wsgi import EMPTY_INPUT, Input, Response, request_environ

log = logging.getLogger("greenserve.error")
# How long a draining server keeps an idle connection for its next request. A client in the
# middle of a run of requests sends the next within milliseconds (RFC 9112 9.3.1: closing
# under it is a race it may lose); one quiet for a second is most likely parked in a pool,
# and is closed then rather than holding up the drain.
DRAIN_QUIET: Final = 1.0


class Connection(Responder, BodyReader):
    """A client connection. See the module docstring; reading the body is BodyReader's part,
    sending the response Responder's."""

    __slots__ = (
        "server", "gsock", "h1", "base_env", "peer", "glet", "active", "started",
        "response", "client_error", "body_sent", "closed", "deadline", "body_started",
        "body_received", "tiny_pieces", "send_clock", "linger", "linger_left", "upgrade",
        "app_deadline",
    )

    def __init__(
        self, server: ServerPort, sock: socket.socket, base_env: Dict[str, Any],
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
        self.body_started: Optional[float] = None  # when this body's first wait for bytes began
        self.body_received = 0
        self.tiny_pieces = 0
        self.send_clock: Optional[SendClock] = None  # made by a response's first wait to send
        self.linger: Optional[Timer] = None  # set while the hub lingers before closing
        self.linger_left = 0
        self.upgrade: Optional[Upgrade] = None  # while a request asks for a WebSocket
        self.app_deadline: Optional[Timer] = None  # request_timeout's, while the app runs

    # -- idle <-> active ----------------------------------------------------------------------

    def watch(self) -> None:
        """Go idle: hold no greenlet, wake on the next byte."""
        self.active = False
        self.glet = None
        self.server.hub.watch_readable(self.gsock.fd, self._on_readable)

    def start(self) -> None:
        """A new connection: serve it at once if its first bytes are already there (a client
        sends its request right after connecting), else go idle. Served at once, the request
        waits for no turn of the loop, and a connection closed after one response never
        touches the poller. Never switches before the app's first wait."""
        try:
            data = self.gsock.recv_nowait(RECV_SIZE)
        except OSError:
            data = b""  # reset before a byte was read: nothing to answer
        if data is None:
            self.watch()
        elif not data:
            self.close()
        else:
            self.h1.receive_data(data)
            self._on_readable()

    def _on_readable(self) -> None:
        server = self.server
        self.started = server.hub.time()
        self.active = True
        glet = server.hub.start_now(self.serve)
        if self.active and self.linger is None:
            # Still serving. (Gone idle or lingering, it holds no greenlet: the pooled worker
            # already runs something else, and must not be killed on its behalf.)
            self.glet = glet

    def close_idle(self) -> None:
        """Close an idle connection (idle timeout, server stop)."""
        if not self.active:
            self.server.hub.unwatch(self.gsock.fd)
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.gsock.close()
            # The response holds the connection (its write() is a method of it): let go of it,
            # so that a closed connection is freed when the last reference goes, not by the
            # cycle collector (a tenth of a short connection's cost was that collector).
            self.response = self.send_clock = None
            self.server.connection_closed(self)

    # -- the request loop ---------------------------------------------------------------------

    def serve(self) -> None:
        """Answer requests until the connection goes idle or closes. Runs in its own greenlet."""
        try:
            if self._serve_requests():
                server = self.server
                timeout = server.keepalive_timeout
                if server.draining:
                    timeout = min(timeout, DRAIN_QUIET)
                self.deadline = server.hub.time() + timeout
                self.watch()
                return
        except Cancelled:
            self.close()
            raise
        except Exception:
            log.exception("internal error on a connection")
        if self.linger is None:  # else the hub closes it when the lingering close is over
            self.close()

    def _serve_requests(self) -> bool:
        """Returns True to keep the connection idle, False to close it."""
        conn = self.h1
        server = self.server
        # Woken because bytes are there, in the socket or, for a new connection, read by
        # ``start`` (an idle connection holds no buffered bytes).
        if not conn.buffered and not self._receive_head_bytes():
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
            if not self._handle(event):  # (while draining, every response says close)
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
        deadline = self.started + self.server.header_timeout
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
        self.upgrade = offer_upgrade(self, environ) if "HTTP_UPGRADE" in environ else None
        server.request_started()
        result: Optional[Iterable[bytes]] = None
        spool: Optional[IO[bytes]] = None
        timeout = server.request_timeout
        deadline = self.app_deadline = arm_deadline(server.hub, timeout) if timeout else None
        try:
            try:
                for name, _ in request.headers:
                    if name in PROXY_FIELDS:
                        # Applied if trusted, else removed; inside the request's error handling,
                        # so a failure here is a 500 with its traceback logged, like the app's.
                        server.proxies.apply(environ, self.peer)
                        break
                info = conn.info
                if (info is not None and info.framing == CHUNKED_BODY
                        and server.buffer_chunked_body):
                    spool = self._buffer_body(environ)
                result = server.app(environ, response.start_response)
                if self.upgrade is not None and self.upgrade.taken:
                    pass  # the WebSocket's (or its refusal's) connection: nothing more is sent
                elif (
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
            if self.upgrade is not None and self.upgrade.taken:
                return self._end_upgrade(request, environ, exc)
            server.request_finished(self, request, self._fail(exc, response), environ)
            if isinstance(exc, Cancelled):
                raise
            return False
        if self.upgrade is not None and self.upgrade.taken:
            return self._end_upgrade(request, environ, None)
        server.request_finished(self, request, response.status, environ)
        if conn.response_overflowed:
            log.error("app sent more body than its Content-Length; the surplus was dropped")
            return False
        return conn.keep_alive and (not conn.body_pending or self._drain_body())

    def take_connection(self) -> bytes:
        """websocket.UpgradeHost: the connection leaves HTTP. Returns the bytes that came after
        the request head. Never switches."""
        if self.app_deadline is not None:
            self.app_deadline.cancel()  # a WebSocket lives as long as it likes
            self.app_deadline = None
        return self.h1.switch_protocols()

    def _end_upgrade(self, request: h1.Request, environ: Dict[str, Any],
                     exc: Optional[BaseException]) -> bool:
        """The app is done with a request whose connection it took: end the session, log it
        (status 101 and the session's duration, or the refusal). Returns False (the
        connection closes). May switch. Raises Cancelled (server stop) again."""
        upgrade = self.upgrade
        assert upgrade is not None
        self.upgrade = None
        try:
            end_session(upgrade, exc)
        finally:
            self.server.request_finished(self, request, upgrade.status, environ)
        if isinstance(exc, Cancelled):
            raise exc
        return False

    def client_disconnected(self) -> bool:
        """``environ['greenserve.client_disconnected']()``: True once the client has closed or
        reset the connection (see guards.peer_gone). Advice only: an answer the app still
        sends goes out if it can (a half-closed client reads it). Never switches."""
        if self.closed or self.client_error == GONE:
            return True
        return peer_gone(self.gsock.sock, bool(self.h1.buffered))

    def _close_result(self, result: Any) -> None:
        try:
            result.close()
        except Exception:
            log.exception("error in the close() method of the app's iterable")

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

