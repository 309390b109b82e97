"""Response heads and body framing, decided in one place.

Strategy: ``plan_framing`` is the only function that decides how a response body is delimited
(RFC 9112 6.3 from the server's side); ``BodyWriter`` then frames every piece the same way.
App-supplied header names and values are validated here, at the last point before bytes leave,
so that no caller can produce a split response: CR, LF, NUL and other controls are refused, as are
hop-by-hop fields (PEP 3333) and a Content-Length that is not a plain number. One hop-by-hop field
is taken instead of refused: an app's ``Connection: close`` (or ``keep-alive``), which real apps
send when they cannot tell their length. It is not sent as the app wrote it; the server writes
its own Connection field, and ``close`` makes it close the connection after the response.
"""

from __future__ import annotations

import re
from typing import Dict, Final, List, NamedTuple, Optional, Tuple

from ...errors import LocalProtocolError
from . import _abnf
from .headers import comma_list

# Framing modes of a response body.
NO_BODY: Final = 0  # HEAD, 1xx, 204, 304 (RFC 9110 9.3.2, 15.3.5, 15.4.5)
LENGTH: Final = 1
CHUNKED: Final = 2
CLOSE_DELIMITED: Final = 3

_NAME: Final = re.compile(_abnf.TOKEN)
_VALUE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_HOP_BY_HOP: Final = frozenset(
    [b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
     b"trailer", b"trailers", b"transfer-encoding", b"upgrade"]
)
# Connection options an app may give: close is honoured, keep-alive is the server's to decide.
# Any other (an Upgrade, a field name to strip) would change the framing: refused like the rest.
_APP_CONNECTION: Final = frozenset([b"close", b"keep-alive"])
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class AppHead(NamedTuple):
    """What the validated app headers say about framing."""

    lines: bytes  # "Name: value\r\n" for every app header, ready to send
    content_length: Optional[int]
    has_date: bool
    has_server: bool
    close: bool = False  # the app asked for Connection: close
    connection: bytes = b""  # the app's Connection value as it gave it (b"": none)


_checked: Final[Dict[Tuple[Tuple[bytes, bytes], ...], AppHead]] = {}
_MAX_CHECKED: Final = 512


def check_app_headers(headers: List[Tuple[bytes, bytes]]) -> AppHead:
    """Validate app headers. Returns their wire form. Raises LocalProtocolError (a 500).
    Apps send the same few header sets again and again; the result is cached per set."""
    key = tuple(headers)
    app = _checked.get(key)
    if app is None:
        app = _check_app_headers(headers)
        if len(_checked) >= _MAX_CHECKED:
            _checked.clear()
        _checked[key] = app
    return app


def _check_app_headers(headers: List[Tuple[bytes, bytes]]) -> AppHead:
    out = []
    content_length = None
    has_date = has_server = False
    connection: list[bytes] = []
    for name, value in headers:
        if _NAME.fullmatch(name) is None:
            raise LocalProtocolError(f"invalid response header name {name!r}", 500)
        if _VALUE.fullmatch(value) is None:
            raise LocalProtocolError(f"invalid character in response header {name!r}", 500)
        lower = name.lower()
        if lower == b"connection" and _APP_CONNECTION.issuperset(comma_list(value)):
            connection.append(value)
            continue
        if lower in _HOP_BY_HOP:
            raise LocalProtocolError(f"hop-by-hop header {name!r} set by the application", 500)
        if lower == b"content-length":
            value = value.strip(b" \t")
            if content_length is not None or not _abnf.DIGITS.fullmatch(value):
                raise LocalProtocolError("invalid or repeated Content-Length", 500)
            content_length = int(value)
        elif lower == b"date":
            has_date = True
        elif lower == b"server":
            has_server = True
        out.append(b"%s: %s\r\n" % (name, value))
    close = any(b"close" in comma_list(value) for value in connection)
    return AppHead(b"".join(out), content_length, has_date, has_server, close,
                   b", ".join(connection))


def plan_framing(
    status: int, head_request: bool, peer_http11: bool, content_length: Optional[int],
    length_hint: Optional[int],
) -> tuple[int, int]:
    """Decide the framing of a response body. Returns (mode, length). For a HEAD request the
    length is that of the body the app gave, if it gave one (a GET response would carry it as
    Content-Length, RFC 9110 9.3.2), else -1: an empty body says nothing of the GET body
    (werkzeug and others return none for HEAD), and RFC 9110 8.6 allows Content-Length in a
    HEAD response only if it equals what GET would send."""
    if status < 200 or status in (204, 304):
        return NO_BODY, -1
    if head_request:
        return NO_BODY, -1 if not length_hint or content_length is not None else length_hint
    if content_length is not None:
        return LENGTH, content_length
    if length_hint is not None:
        return LENGTH, length_hint
    if peer_http11:
        return CHUNKED, 0
    return CLOSE_DELIMITED, 0


_status_lines: Final[Dict[Tuple[int, bytes], bytes]] = {}


def status_line(status: int, reason: bytes) -> bytes:
    """Return the status line (cached per status and reason). Raises LocalProtocolError."""
    key = (status, reason)
    line = _status_lines.get(key)
    if line is None:
        if _VALUE.fullmatch(reason) is None:
            # RFC 9112 4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
            raise LocalProtocolError("invalid character in the reason phrase", 500)
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(_status_lines) >= _MAX_CHECKED:
            _status_lines.clear()
        _status_lines[key] = line
    return line


def build_head(
    status: int, reason: bytes, app: AppHead, mode: int, length: int, *, keep_alive: bool,
    peer_http11: bool, default_lines: bytes,
) -> bytes:
    """Return the response head. ``default_lines`` carries the Date and Server fields."""
    fields = app.lines
    if status == 204 or status < 200:
        # RFC 9110 8.6: a server MUST NOT send Content-Length in a 1xx or 204 response.
        if app.content_length is not None:
            fields = _drop_content_length(fields)
    elif mode == LENGTH:
        if app.content_length is None:
            fields += b"Content-Length: %d\r\n" % length
    elif mode == CHUNKED:
        fields += b"Transfer-Encoding: chunked\r\n"
    elif mode == NO_BODY and length >= 0:
        # HEAD: the Content-Length a GET would have had (RFC 9110 9.3.2, 8.6).
        fields += b"Content-Length: %d\r\n" % length
    if app.has_date or app.has_server:
        default_lines = _without_app_fields(default_lines, app)
    if not keep_alive:
        end = b"Connection: close\r\n\r\n"
    elif not peer_http11:
        end = b"Connection: keep-alive\r\n\r\n"
    else:
        end = b"\r\n"
    return b"".join((status_line(status, reason), fields, default_lines, end))


def _without_app_fields(default_lines: bytes, app: AppHead) -> bytes:
    """Drop the server's Date / Server lines the app set itself (RFC 9110 5.3: neither is a
    list field, so it must not appear twice)."""
    kept = []
    for line in default_lines.split(b"\r\n"):
        name = line.partition(b":")[0].lower()
        if line and not (app.has_date and name == b"date" or app.has_server and name == b"server"):
            kept.append(line + b"\r\n")
    return b"".join(kept)


def _drop_content_length(lines: bytes) -> bytes:
    kept = [ln for ln in lines.split(b"\r\n") if ln and not ln.lower().startswith(b"content-length:")]
    return b"".join(ln + b"\r\n" for ln in kept)


class BodyWriter:
    """Frames body pieces for one response and checks Content-Length is neither exceeded nor
    left short."""

    __slots__ = ("mode", "remaining", "overflowed")

    def __init__(self, mode: int, length: int) -> None:
        self.mode = mode
        self.remaining = length
        self.overflowed = False

    def frame(self, data: bytes) -> bytes:
        """Return the bytes to send for ``data``. Surplus past Content-Length is cut off and
        ``overflowed`` is set."""
        mode = self.mode
        if mode == LENGTH:
            if len(data) > self.remaining:
                data = data[: self.remaining]
                self.overflowed = True
            self.remaining -= len(data)
            return data
        if mode == CHUNKED:
            return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        if mode == CLOSE_DELIMITED:
            return data
        return b""

    def end(self) -> bytes:
        """Return the bytes that end the body. Raises LocalProtocolError if it is short."""
        if self.mode == LENGTH and self.remaining:
            raise LocalProtocolError("response body shorter than its Content-Length", 500)
        if self.mode == CHUNKED:
            return b"0\r\n\r\n"
        return b""
