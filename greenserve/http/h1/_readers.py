"""Readers for the request head and the two request body framings.

Strategy: each reader consumes bytes from the front of the connection's ``bytearray`` buffer and
returns an event, or ``NEED_DATA`` when the buffer does not yet hold enough. Searches resume where
the previous one stopped, so a head or chunk line fed one byte at a time is still parsed in linear
time. Every line is bounded: when the limit is passed without a line end, the reader fails at once
instead of waiting for more bytes. A bare CR or LF anywhere in the framing is refused as soon as
it is seen (RFC 9112 2.2 allows a recipient to treat bare CR as invalid; we refuse both).

Whatever the cut, one outcome: when a head or line has more than one fault, the fault that comes
first in the byte stream decides the status, both for bytes that arrive in pieces (checked as
they come) and for bytes that arrive at once (a failing head is re-checked in the same order
before its own error is raised). Each early check looks only at bytes whose meaning more input
cannot change.
"""

from __future__ import annotations

import functools
import re
from typing import Dict, Final, NamedTuple, Optional, Tuple, Union

from ...errors import RemoteProtocolError
from . import _abnf
from .events import NEED_DATA, Data, EndOfMessage, Headers, Request, Signal

# A bare LF, or a CR that is followed by anything but LF.
_BARE_EOL: Final = re.compile(rb"(?<!\r)\n|\r(?!\n)")
_EOL: Final = re.compile(rb"[\r\n]")
_MAX_CHUNK_LINE: Final = 4096
_MAX_CHUNK_SIZE_DIGITS: Final = 16
_MAX_LEADING_CRLF: Final = 8
_PEEK: Final = 64  # bytes of an incomplete head checked for a request line that cannot be valid
# NamedTuple construction without the generated Python-level __new__ (hot path).
_new_request: Final = functools.partial(tuple.__new__, Request)
# Lines already found valid, with what they parsed into: clients send the same request and
# header lines again and again (a keep-alive connection, a browser, a load balancer's probe),
# and a dict lookup costs far less than the grammar's regular expressions. The same bytes
# always parse the same way, so nothing is loosened. Only short lines are kept, a full cache
# is emptied (a client that sends only new lines costs a lookup, and a bounded memory), and no
# credentials are kept beyond their request.
_SEEN_MAX: Final = 512
_SEEN_LINE: Final = 256
_PRIVATE: Final = re.compile(rb"(?i)(?:cookie|authorization|proxy-authorization):")
_seen_fields: Final[Dict[bytes, Tuple[bytes, bytes]]] = {}
_seen_request_lines: Final[Dict[bytes, Tuple[bytes, bytes, bytes]]] = {}
# Whole heads, for a client that repeats one exactly (a probe, an API client, a load test):
# the parsed Request (immutable: shared by every request of those bytes) with what the limits
# are checked against, (request line length, field count). Kept only when its request line and
# every field line are short enough to be kept above (so no credentials, no long query string),
# up to _HEAD_LEN bytes.
_HEADS_MAX: Final = 256
_HEAD_LEN: Final = 1024
_seen_heads: Final[Dict[bytes, Tuple[Request, int, int]]] = {}


class Limits(NamedTuple):
    max_request_line: int = 8190
    max_header_bytes: int = 65536
    max_header_count: int = 100
    max_body_size: int = 1 << 30


def _check_bare_eol(buf: bytearray, start: int, stop: int) -> None:
    """Refuse a bare CR or LF in buf[start:stop], ignoring a CR that may still get its LF."""
    end = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
    if start < end and start < stop:
        # One byte past ``stop`` is visible, so that a CR just before it sees its LF.
        m = _BARE_EOL.search(buf, start, min(end, stop + 1))
        if m is not None and m.start() < stop:
            raise RemoteProtocolError("bare CR or LF in message framing")


def parse_fields(lines: list[bytes], limit: int) -> Headers:
    """Parse field lines (RFC 9112 5). Returns (lower-case name, value) pairs. Raises 400/431."""
    if len(lines) > limit:
        raise RemoteProtocolError("too many header fields", 431)
    fields = []
    seen = _seen_fields
    for line in lines:
        field = seen.get(line)
        if field is None:
            m = _abnf.FIELD_LINE.fullmatch(line)
            if m is None:
                if line[:1] in (b" ", b"\t"):
                    raise RemoteProtocolError("obsolete line folding is not accepted")
                raise RemoteProtocolError("invalid header field line")
            name, value = m.groups()
            field = (name.lower(), value)
            if len(line) <= _SEEN_LINE and _PRIVATE.match(line) is None:
                if len(seen) >= _SEEN_MAX:
                    seen.clear()
                seen[line] = field
        fields.append(field)
    return tuple(fields)


def _check_target(method: bytes, target: bytes) -> None:
    """Check the request-target form against the method (RFC 9112 3.2)."""
    if method == b"CONNECT":
        if not _abnf.AUTHORITY_FORM.fullmatch(target):
            raise RemoteProtocolError("CONNECT needs authority-form")
    elif target[:1] == b"/":
        if b"#" in target:
            raise RemoteProtocolError("fragment in request-target")
    elif target == b"*":
        if method != b"OPTIONS":
            raise RemoteProtocolError("asterisk-form is only for OPTIONS")
    else:
        m = _abnf.ABSOLUTE_FORM.fullmatch(target)
        if m is None or m.group(1).lower() not in (b"http", b"https"):
            raise RemoteProtocolError("invalid request-target")
        authority = m.group(2)
        # RFC 9110 4.2.1 / 4.2.4: the host must not be empty and userinfo is an error; the
        # authority replaces Host (RFC 9112 3.2.2), so it obeys Host's grammar.
        if authority[:1] in (b"", b":") or not _abnf.HOST.fullmatch(authority):
            raise RemoteProtocolError("invalid authority in the request-target")


def _refuse_bad_start(start: bytes, limits: Limits) -> None:
    """Refuse a request line whose first bytes can never become valid (a TLS, SSH or binary
    client on a plain port) without waiting for the rest. ``start`` is the first ``_PEEK``
    bytes of the head. Raises what the whole line would: 400 (or 505 for a short complete
    line with another HTTP version)."""
    line_end = start.find(b"\r\n")
    if 0 <= line_end <= limits.max_request_line:
        parse_request_line(start[:line_end], limits)  # a short line, complete: check it all
    elif not _abnf.REQUEST_LINE_START.fullmatch(start.partition(b"\r")[0]):
        raise RemoteProtocolError("invalid request line")


def parse_request_line(line: bytes, limits: Limits) -> tuple[bytes, bytes, bytes]:
    """Return (method, target, version). Raises 400, 414 or 505."""
    parsed = _seen_request_lines.get(line)
    if parsed is not None:
        return parsed
    parsed = _parse_request_line(line, limits)
    if len(line) <= _SEEN_LINE:
        if len(_seen_request_lines) >= _SEEN_MAX:
            _seen_request_lines.clear()
        _seen_request_lines[line] = parsed
    return parsed


def _parse_request_line(line: bytes, limits: Limits) -> tuple[bytes, bytes, bytes]:
    m = _abnf.REQUEST_LINE.fullmatch(line)
    if m is None:
        if len(line) > limits.max_request_line:
            raise RemoteProtocolError("request line too long", 414)
        raise RemoteProtocolError("invalid request line")
    method, target, major, minor = m.groups()
    if major != b"1":
        # RFC 9110 15.6.6: 505 for a major version the server does not support.
        raise RemoteProtocolError("HTTP version not supported", 505)
    # (bytes.find, not "in": "in" first tries the operand as an int and builds a TypeError)
    if target[:1] != b"/" or target.find(b"#") >= 0 or method == b"CONNECT":
        _check_target(method, target)  # all but the plain origin-form
    # RFC 9110 2.5: a higher minor version of HTTP/1 is treated as the highest we speak.
    return method, target, (b"1.0" if minor == b"0" else b"1.1")


def _take_head(buf: bytearray, end: int) -> bytes:
    """Remove the head that ends at ``end`` (its CRLFCRLF) from ``buf``; return it, CRLFCRLF
    included."""
    size = end + 4
    if size == len(buf):  # the usual case: the buffer holds just this head
        head = bytes(buf)
        buf.clear()
        return head
    head = bytes(buf[:size])
    del buf[:size]
    return head


class HeadReader:
    """Finds and parses one request head at the front of the buffer."""

    __slots__ = ("limits", "method", "_scanned", "_skipped")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.method = b""  # of the last valid request-line, even if its head failed later
        self._scanned = 0
        self._skipped = 0  # empty lines skipped before this request-line

    def reset(self) -> None:
        self.method = b""
        self._scanned = 0
        self._skipped = 0

    def read(self, buf: bytearray) -> Union[Request, Signal]:
        if buf and buf[0] == 13 and buf[:2] == b"\r\n":  # (no method call when it is not)
            self._skip_leading_crlf(buf)
            self._scanned = 0
        scanned = self._scanned
        end = buf.find(b"\r\n\r\n", scanned - 3 if scanned > 3 else 0)
        if end < 0:
            self._refuse_incomplete(buf)
            self._scanned = len(buf)
            return NEED_DATA
        limits = self.limits
        if end > limits.max_request_line + limits.max_header_bytes:
            self._refuse_incomplete(buf)
            raise RemoteProtocolError("request head too large", 431)
        head = _take_head(buf, end)
        self._scanned = 0
        known = _seen_heads.get(head) if end < _HEAD_LEN else None
        if known is not None:
            request, line_length, count = known
            if (line_length <= limits.max_request_line and count <= limits.max_header_count
                    and end - line_length <= limits.max_header_bytes):
                self.method = request[0]
                return request
            # (over this server's limits: parsed again below, to refuse it as a new head is)
        lines = head.split(b"\r\n")
        del lines[-2:]  # the two empty strings that the final CRLFCRLF splits into
        line = lines[0]
        parsed_line = False
        try:
            if len(line) > limits.max_request_line:
                raise RemoteProtocolError("request line too long", 414)
            method, target, version = parse_request_line(line, limits)
            self.method = method
            if end - len(line) > limits.max_header_bytes:
                raise RemoteProtocolError("request header fields too large", 431)
            del lines[0]
            parsed_line = True
            request = _new_request(
                (method, target, version, parse_fields(lines, limits.max_header_count)))
        except RemoteProtocolError:
            # The first fault in byte order decides, as it would for a head arriving in pieces.
            head = b"\r\n".join([line, *lines] if parsed_line else lines)
            self._refuse_incomplete(bytearray(head + b"\r\n\r\n"))
            raise
        if (len(head) <= _HEAD_LEN and len(line) <= _SEEN_LINE
                and all(field in _seen_fields for field in lines)):
            if len(_seen_heads) >= _HEADS_MAX:
                _seen_heads.clear()
            _seen_heads[head] = (request, len(line), len(lines))
        return request

    def _skip_leading_crlf(self, buf: bytearray) -> None:
        # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line.
        # A few are skipped, however the bytes arrive; more is not a request.
        n = 0
        while buf[n : n + 2] == b"\r\n" and self._skipped < _MAX_LEADING_CRLF:
            n += 2
            self._skipped += 1
        if n:
            del buf[:n]

    def _refuse_incomplete(self, buf: bytearray) -> None:
        """Fail early on a head that cannot become valid by waiting for more bytes. Checks in
        byte order: the start of the request line, its length (the line ends at the first CR
        or LF), bare CR or LF within the head limit, then the head limit."""
        limits = self.limits
        line_max = limits.max_request_line
        _refuse_bad_start(bytes(buf[: min(_PEEK, line_max + 1)]), limits)
        if len(buf) > line_max and _EOL.search(buf, 0, line_max + 1) is None:
            raise RemoteProtocolError("request line too long", 414)
        head_max = line_max + limits.max_header_bytes + 4
        _check_bare_eol(buf, max(0, self._scanned - 1), head_max)
        if len(buf) > head_max:
            raise RemoteProtocolError("request head too large", 431)


class LengthReader:
    """A body of Content-Length bytes (RFC 9112 6.2)."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def read(self, buf: bytearray) -> Union[Data, EndOfMessage, Signal]:
        if self.remaining == 0:
            return EndOfMessage()
        if not buf:
            return NEED_DATA
        if len(buf) <= self.remaining:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[: self.remaining])
            del buf[: self.remaining]
        self.remaining -= len(data)
        return Data(data)

    def eof(self) -> None:
        raise RemoteProtocolError("client closed the connection before the body was complete")


# States of the chunked reader.
_SIZE: Final = 0
_DATA: Final = 1
_DATA_END: Final = 2
_TRAILER: Final = 3
_DONE: Final = 4


class ChunkedReader:
    """A chunked body with extensions and trailers (RFC 9112 7.1)."""

    __slots__ = ("state", "remaining", "total", "limits", "_scanned", "_trailers", "_trailer_bytes")

    def __init__(self, limits: Limits) -> None:
        self.state = _SIZE
        self.remaining = 0
        self.total = 0
        self.limits = limits
        self._scanned = 0
        self._trailers: list[bytes] = []
        self._trailer_bytes = 0

    def read(self, buf: bytearray) -> Union[Data, EndOfMessage, Signal]:
        while True:
            state = self.state
            if state == _DATA:
                return self._data(buf)
            if state == _SIZE:
                line = self._line(buf, _MAX_CHUNK_LINE, 400)
                if line is None:
                    return NEED_DATA
                self._size_line(line)
            elif state == _DATA_END:
                if len(buf) < 2:
                    return NEED_DATA
                if buf[:2] != b"\r\n":
                    raise RemoteProtocolError("chunk data not followed by CRLF")
                del buf[:2]
                self.state = _SIZE
            elif state == _TRAILER:
                event = self._trailer(buf)
                if event is not None:
                    return event
            else:
                return EndOfMessage()

    def _line(self, buf: bytearray, limit: int, status: int) -> Optional[bytes]:
        """The next line of at most ``limit`` bytes, or None until its CRLF arrives. In byte
        order: a bare CR or LF within the limit is a 400, then a line past it ``status``."""
        start = max(0, self._scanned - 1)
        end = buf.find(b"\r\n", start, limit + 2)
        if end < 0:
            _check_bare_eol(buf, start, limit + 1)
            if len(buf) - buf.endswith(b"\r") > limit:  # no CRLF can start within the limit
                raise RemoteProtocolError("chunk line or trailer too long", status)
            self._scanned = len(buf)
            return None
        line = bytes(buf[:end])
        if b"\n" in line or b"\r" in line:  # refused now, as it is when it arrives in pieces
            raise RemoteProtocolError("bare CR or LF in message framing")
        del buf[: end + 2]
        self._scanned = 0
        return line

    def _size_line(self, line: bytes) -> None:
        m = _abnf.CHUNK_LINE.fullmatch(line)
        if m is None:
            raise RemoteProtocolError("invalid chunk size line")
        digits = m.group(1)
        if len(digits) > _MAX_CHUNK_SIZE_DIGITS:
            raise RemoteProtocolError("chunk size has too many digits")
        size = int(digits, 16)
        self.total += size
        if self.total > self.limits.max_body_size:
            raise RemoteProtocolError("request body too large", 413)
        if size:
            self.state, self.remaining = _DATA, size
        else:
            self.state = _TRAILER

    def _data(self, buf: bytearray) -> Union[Data, Signal]:
        if not buf:
            return NEED_DATA
        n = self.remaining
        if len(buf) <= n:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:n])
            del buf[:n]
        self.remaining -= len(data)
        if self.remaining == 0:
            self.state = _DATA_END
        return Data(data)

    def _trailer(self, buf: bytearray) -> Optional[Union[EndOfMessage, Signal]]:
        limits = self.limits
        line = self._line(buf, limits.max_header_bytes, 431)
        if line is None:
            return NEED_DATA
        if line:
            self._trailers.append(line)
            self._trailer_bytes += len(line) + 2
            if self._trailer_bytes > limits.max_header_bytes:
                raise RemoteProtocolError("trailer section too large", 431)
            return None
        self.state = _DONE
        # RFC 9110 6.5: trailers are parsed like header fields; they never affect framing here.
        return EndOfMessage(parse_fields(self._trailers, limits.max_header_count))

    def eof(self) -> None:
        raise RemoteProtocolError("client closed the connection before the body was complete")
