"""Reading a request body for the app: pieces of ``wsgi.input``, deadlines and rates, a
chunked body read whole before the app, and draining what the app left unread.

Strategy: ``BodyReader`` is a part of ``Connection`` (a mixin without state of its own: the
connection declares the slots). Every read goes through ``_read_chunk``, which sends 100
Continue lazily, feeds the parser and turns socket errors into ClientError, so that an OSError
raised by the app itself stays the app's error.
"""

from __future__ import annotations

import functools
import tempfile
from typing import Any, Dict, Final, IO, Optional

from . import h1
from ..errors import ClientDisconnected, ClientError, RemoteProtocolError
from ..loop.gsocket import GreenSocket
from .._traits import interpreted, slotted, trait
from .port import ServerPort
from .wsgi import Input

RECV_SIZE = 65536
GONE: Final = 0  # client_error status meaning "nothing can be sent any more"
# Fairness for bodies of tiny chunks: parsing costs per chunk (~2.5 us), not per byte, so a
# socket that never waits yields to the others every so many tiny pieces, not only every MiB.
_TINY_PIECE: Final = 256
_TINY_PIECES_PER_TURN: Final = 2048
# A buffered chunked request body beyond this goes to a temporary file.
_SPOOL_MEMORY: Final = 1 << 20


@trait
class BodyReader:
    """The request-body half of a connection."""

    server: ServerPort
    gsock: GreenSocket
    h1: h1.H1Connection
    client_error: Optional[int]
    body_started: Optional[float]  # (a float attribute set in a trait crashes mypyc 2.4)
    body_received: int
    tiny_pieces: int

    def _send(self, data: bytes) -> None:  # Responder's (it comes first in the MRO)
        raise NotImplementedError

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
                self.body_started = None  # the body is over: the next one starts its own clock
                return b""
            try:
                data = self.gsock.recv(RECV_SIZE, self._body_deadline())
            except TimeoutError:
                self.client_error = 408
                raise ClientError("timed out reading the request body") from None
            except OSError as exc:
                self.client_error = GONE
                raise ClientDisconnected(f"client connection lost: {exc}") from None
            if not data:
                conn.receive_data(b"")
                self.client_error = GONE
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
        started = self.body_started
        if started is None:
            started = self.body_started = now
            self.body_received = 0
        rate_limit = started + config.body_timeout + self.body_received / config.min_body_rate
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


if interpreted(__file__):  # a pure-Python connection has no __dict__ (see _traits.py)
    globals()["BodyReader"] = slotted(BodyReader)
