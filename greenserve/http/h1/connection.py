"""H1Connection: the server side of one HTTP/1.1 connection, without I/O.

Bytes go in with ``receive_data`` (``b""`` means the client closed its side), events come out of
``next_event``; response bytes come out of ``send_response`` / ``send_data`` / ``send_eom``.

Invariants:
- After a RemoteProtocolError nothing more is parsed: every later ``next_event`` raises it again.
- A request is complete (PAUSED) until the response is complete and ``start_next_cycle`` is
  called; bytes of a pipelined request stay in the buffer untouched until then.
- Whether the connection can be kept is decided when the response head is built, and said in it.

The request side moves through the states in ``_REQUEST_STEPS``; the response side through
``_RESPONSE_STEPS``. Each table maps (state, what happened) to the next state.
"""

from __future__ import annotations

import enum
from typing import Final, List, Optional, Tuple, Union

from ...errors import LocalProtocolError, RemoteProtocolError
from . import _writers, headers
from ._readers import ChunkedReader, HeadReader, LengthReader, Limits
from .events import NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage, Request, Signal

Event = Union[Request, Data, EndOfMessage, ConnectionClosed, Signal]


class RequestState(enum.Enum):
    IDLE = "idle"  # waiting for a request head
    BODY = "body"  # reading the body
    DONE = "done"  # request complete, waiting for the response to finish
    CLOSED = "closed"  # client closed cleanly between requests
    ERROR = "error"  # protocol error: nothing more is parsed

    __hash__ = object.__hash__  # identity hash in C: the step tables are looked up per request


class ResponseState(enum.Enum):
    IDLE = "idle"
    BODY = "body"  # head sent
    DONE = "done"

    __hash__ = object.__hash__


_REQUEST_STEPS: Final = {
    (RequestState.IDLE, "head-with-body"): RequestState.BODY,
    (RequestState.IDLE, "head-without-body"): RequestState.DONE,
    (RequestState.IDLE, "eof"): RequestState.CLOSED,
    (RequestState.BODY, "end"): RequestState.DONE,
    (RequestState.DONE, "next-cycle"): RequestState.IDLE,
}
_RESPONSE_STEPS: Final = {
    (ResponseState.IDLE, "head"): ResponseState.BODY,
    (ResponseState.IDLE, "whole"): ResponseState.DONE,
    (ResponseState.BODY, "end"): ResponseState.DONE,
    (ResponseState.DONE, "next-cycle"): ResponseState.IDLE,
    # A head built but never sent (the whole body broke a rule first) is taken back.
    (ResponseState.BODY, "retract"): ResponseState.IDLE,
    (ResponseState.DONE, "retract"): ResponseState.IDLE,
}


# Module-level names for the states used per request: an attribute of an Enum class goes
# through EnumType.__getattr__ (slow on Python 3.11); a Final global is a C static, compiled.
_REQ_IDLE: Final = RequestState.IDLE
_REQ_BODY: Final = RequestState.BODY
_REQ_CLOSED: Final = RequestState.CLOSED
_REQ_ERROR: Final = RequestState.ERROR
_RESP_IDLE: Final = ResponseState.IDLE


class H1Connection:
    """One server-side HTTP/1.1 connection. See the module docstring for the contract."""

    __slots__ = (
        "limits", "request_state", "response_state", "request", "info", "keep_alive",
        "continue_sent", "_buf", "_eof", "_head", "_body", "_error", "_writer",
    )

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self.request_state = _REQ_IDLE
        self.response_state = _RESP_IDLE
        self.request: Optional[Request] = None
        self.info: Optional[headers.HeadInfo] = None
        self.keep_alive = True
        self.continue_sent = False
        self._buf = bytearray()
        self._eof = False
        self._head = HeadReader(limits)
        self._body: Union[LengthReader, ChunkedReader, None] = None
        self._error: Optional[RemoteProtocolError] = None
        self._writer: Optional[_writers.BodyWriter] = None

    # -- input ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the client; ``b""`` means end of input."""
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def buffered(self) -> int:
        """How many received bytes are not parsed yet."""
        return len(self._buf)

    def next_event(self) -> Event:
        """Return the next event. Raises RemoteProtocolError (then again on every later call)."""
        if self._error is not None:
            raise self._error
        try:
            if self.request_state is _REQ_IDLE:
                return self._read_head()
            return self._next_event()
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def _next_event(self) -> Event:
        state = self.request_state
        if state is _REQ_BODY:
            assert self._body is not None
            event = self._body.read(self._buf)
            if event is NEED_DATA and self._eof:
                self._body.eof()
            if type(event) is EndOfMessage:
                self._step_request("end")
            return event
        if state is _REQ_CLOSED:
            return ConnectionClosed()
        return PAUSED

    def _read_head(self) -> Event:
        event = self._head.read(self._buf)
        if event is NEED_DATA:
            if self._eof:
                if self._buf:
                    raise RemoteProtocolError("client closed the connection mid-head")
                self._step_request("eof")
                return ConnectionClosed()
            return NEED_DATA
        assert type(event) is Request
        info = headers.analyse(event.headers, event.http_version == b"1.1", self.limits.max_body_size)
        self.request, self.info = event, info
        self.keep_alive = info.keep_alive
        if info.framing == headers.NO_BODY:
            self._step_request("head-without-body")
        else:
            self._body = (
                LengthReader(info.content_length) if info.framing == headers.LENGTH
                else ChunkedReader(self.limits)
            )
            self._step_request("head-with-body")
        return event

    def _fail(self, exc: RemoteProtocolError) -> None:
        self._error = exc
        self.request_state = _REQ_ERROR
        self.keep_alive = False
        self._buf.clear()

    def _step_request(self, what: str) -> None:
        self.request_state = _REQUEST_STEPS[(self.request_state, what)]

    def _step_response(self, what: str) -> None:
        try:
            self.response_state = _RESPONSE_STEPS[(self.response_state, what)]
        except KeyError:
            raise LocalProtocolError(f"cannot {what} in response state {self.response_state}", 500)

    @property
    def body_pending(self) -> bool:
        """True while the request body has not been read to its end."""
        return self.request_state is _REQ_BODY

    @property
    def body_remaining(self) -> Optional[int]:
        """Bytes of request body not yet received, if known (None for chunked)."""
        if isinstance(self._body, LengthReader) and self.body_pending:
            return self._body.remaining - min(len(self._buf), self._body.remaining)
        return 0 if not self.body_pending else None

    @property
    def continue_expected(self) -> bool:
        """True if the client waits for 100 Continue that was not sent yet."""
        return bool(
            self.info is not None and self.info.expect_continue and not self.continue_sent
            and self.body_pending and self.response_state is _RESP_IDLE
        )

    # -- output -----------------------------------------------------------------------------

    def send_continue(self) -> bytes:
        """Return the 100 Continue interim response, or b"" if it is not needed."""
        if not self.continue_expected:
            return b""
        self.continue_sent = True
        return _writers.CONTINUE

    def send_response(
        self, status: int, reason: bytes, app_headers: List[Tuple[bytes, bytes]],
        default_lines: bytes, *, length_hint: Optional[int] = None, close: bool = False,
    ) -> bytes:
        """Build the response head. Raises LocalProtocolError for an illegal app header."""
        app = _writers.check_app_headers(app_headers)
        return self.send_head(status, reason, app, default_lines, length_hint=length_hint,
                              close=close)

    def send_head(
        self, status: int, reason: bytes, app: _writers.AppHead, default_lines: bytes, *,
        length_hint: Optional[int] = None, close: bool = False,
    ) -> bytes:
        """Build the response head from app headers already checked by ``check_app_headers``.
        Raises LocalProtocolError for an illegal reason phrase or out of turn."""
        request = self.request
        peer_http11 = request is None or request.http_version == b"1.1"
        # The method is known even when the head failed after a valid request-line: an error
        # answer to HEAD carries no body either (RFC 9110 9.3.2).
        head_request = (request.method if request is not None else self._head.method) == b"HEAD"
        mode, length = _writers.plan_framing(
            status, head_request, peer_http11, app.content_length, length_hint
        )
        if close or mode == _writers.CLOSE_DELIMITED or self.continue_expected:
            # A client still waiting for 100 Continue may or may not send its body: the next
            # request on this connection cannot be found reliably (RFC 9110 10.1.1).
            self.keep_alive = False
        self._step_response("head")
        self._writer = _writers.BodyWriter(mode, length)
        return _writers.build_head(
            status, reason, app, mode, length, keep_alive=self.keep_alive,
            peer_http11=peer_http11, default_lines=default_lines,
        )

    def send_whole(
        self, status: int, reason: bytes, app: _writers.AppHead, default_lines: bytes,
        body: bytes, *, close: bool = False,
    ) -> bytes:
        """Head, body and end of a response whose body is known in full, as one buffer (the
        body gives the Content-Length unless the app set one). Raises as ``send_head`` and
        ``send_eom``; surplus past the app's Content-Length is cut (``response_overflowed``)."""
        request = self.request
        length = app.content_length
        if (
            request is None or close or not self.keep_alive or request.method == b"HEAD"
            or status < 200 or status in (204, 304)
            or (length is not None and length != len(body))
            or self.response_state is not _RESP_IDLE or self.continue_expected
        ):
            # Anything unusual takes the general path, which frames it.
            head = self.send_head(status, reason, app, default_lines, length_hint=len(body),
                                  close=close)
            assert self._writer is not None
            payload = self._writer.frame(body)
            return head + payload + self.send_eom()
        # The usual response: kept alive, Content-Length framing, the body as it is.
        self._step_response("whole")
        return _writers.build_head(
            status, reason, app, _writers.LENGTH, len(body), keep_alive=True,
            peer_http11=request.http_version == b"1.1", default_lines=default_lines,
        ) + body

    def send_data(self, data: bytes) -> bytes:
        """Frame a body piece. Surplus past Content-Length is cut; see ``response_overflowed``."""
        assert self._writer is not None
        return self._writer.frame(data)

    @property
    def writer(self) -> Optional[_writers.BodyWriter]:
        return self._writer

    @property
    def response_overflowed(self) -> bool:
        return self._writer is not None and self._writer.overflowed

    def send_eom(self) -> bytes:
        """End the response body. Raises LocalProtocolError if it fell short of Content-Length."""
        assert self._writer is not None
        self._step_response("end")
        try:
            return self._writer.end()
        except LocalProtocolError:
            self.keep_alive = False
            raise

    def retract_response(self) -> None:
        """Forget a response whose bytes were built but never sent, so that an error response
        can take its place (the caller knows nothing went out). The connection's keep-alive
        decision stands."""
        self._step_response("retract")
        self._writer = None

    def switch_protocols(self) -> bytes:
        """The connection leaves HTTP/1.1 after this request (a 101 to an Upgrade, RFC 9110
        7.8): returns the bytes received after the request head, which belong to the new
        protocol; nothing more is parsed and the connection is not kept."""
        trailing = bytes(self._buf)
        self._buf.clear()
        self.keep_alive = False
        return trailing

    def start_next_cycle(self) -> None:
        """Reset for the next request on a kept connection."""
        if not self.keep_alive:
            raise LocalProtocolError("connection is not reusable", 500)
        self._step_request("next-cycle")
        self._step_response("next-cycle")
        self.request = self.info = None
        self._body = self._writer = None
        self.continue_sent = False
        self._head.reset()
