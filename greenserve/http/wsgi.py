"""The PEP 3333 adapter: environ, start_response, write(), wsgi.input and wsgi.file_wrapper.

Strategy: this module knows no sockets and no greenlets. The connection handler gives it two
callables: ``read_chunk()`` (the next piece of request body, b"" at its end; it may block the
greenlet and raises ClientDisconnected on a truncated body) and ``emit(data)`` (send a piece of
the response body, sending the head first if it has not gone out). Everything PEP 3333 says about
types, the order of start_response and body, and exc_info is enforced here.

The per-request environ is a copy of a base built once per connection, plus the request's keys.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import (Any, Callable, Dict, Final, Iterable, Iterator, List, Optional, Sequence, Set,
                    Tuple)
from urllib.parse import unquote_to_bytes

from ..errors import LocalProtocolError
from .h1 import AppHead, Request, check_app_headers

log = logging.getLogger("greenserve.error")
Environ = Dict[str, Any]
ExcInfo = Tuple[Any, Any, Any]

_STATUS: Final = re.compile(r"([1-5][0-9][0-9]) ([\t\x20-\x7e\x80-\xff]*)")
_HEADER_KEYS: Final[Dict[bytes, Optional[str]]] = {}
_MAX_CACHED_KEYS: Final = 2048
# Origin-form targets and their (PATH_INFO, QUERY_STRING, REQUEST_URI): see request_environ.
_targets: Final[Dict[bytes, Tuple[str, str, str]]] = {}
_TARGETS_MAX: Final = 512
_TARGET_LEN: Final = 256


def _environ_key(name: bytes) -> Optional[str]:
    """Map a lower-case header name to its environ key; None for a field that never reaches
    the app: names with '_' (dropped so that 'X-Foo' and 'X_Foo' cannot be confused) and
    Transfer-Encoding."""
    key = _HEADER_KEYS.get(name)
    if key is None and name not in _HEADER_KEYS:
        if b"_" in name:
            key = None
        elif name == b"content-type":
            key = "CONTENT_TYPE"
        elif name == b"content-length":
            key = "CONTENT_LENGTH"
        elif name == b"transfer-encoding":
            # The server has removed the chunked framing (the only coding it accepts); RFC 9112
            # 7.1.3 then removes "chunked" from Transfer-Encoding. An app that still saw it
            # would de-chunk wsgi.input a second time (dulwich's smart-HTTP server does).
            key = None
        else:
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(_HEADER_KEYS) < _MAX_CACHED_KEYS:
            _HEADER_KEYS[name] = key
    return key


def base_environ(
    server_name: str, server_port: str, *, url_scheme: str, script_name: str,
    multiprocess: bool, software: str, errors: Any = None,
) -> Environ:
    """Return the keys shared by every request on one listener (built once, copied per
    request)."""
    return {
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SCRIPT_NAME": script_name,
        "SERVER_SOFTWARE": software,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.errors": errors if errors is not None else sys.stderr,
        # Greenlets interleave on one thread: concurrent calls happen, as with threads.
        "wsgi.multithread": True,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }


_PROTOCOLS: Final = {b"1.1": "HTTP/1.1", b"1.0": "HTTP/1.0"}
_METHODS: Final = {m.encode(): m
                   for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
_MISSING: Final = "?"  # not a valid environ key: marks a header name not seen before


def request_environ(
    base: Environ, remote: Optional[Tuple[str, str]], request: Request, wsgi_input: "Input"
) -> Environ:
    """Return the environ of one request (PEP 3333, CGI variables from RFC 3875).
    ``remote`` is the client's (address, port) as text, None on a unix socket."""
    env = base.copy()
    if remote is not None:
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = remote
    method, raw_target, version, headers = request
    authority = None
    script_name = env["SCRIPT_NAME"]
    if raw_target[:1] == b"/" and not script_name:
        # The usual target: its strings depend on its bytes alone, kept as the parser keeps
        # lines (short targets only; a full cache is emptied).
        parts = _targets.get(raw_target)
        if parts is None:
            path, _, query = raw_target.partition(b"?")
            parts = _target_strings(path, query, raw_target)
            if len(raw_target) <= _TARGET_LEN:
                if len(_targets) >= _TARGETS_MAX:
                    _targets.clear()
                _targets[raw_target] = parts
    else:
        target = raw_target
        if target[:1] != b"/" and target != b"*" and method != b"CONNECT":
            authority, target = _split_absolute_form(target)
        path, _, query = target.partition(b"?")
        if script_name:
            # Match the mount point on the raw path, so that an encoded "/" (%2F) never ends it.
            root = script_name.encode("latin-1")
            if path == root or path.startswith(root + b"/"):
                path = path[len(root):]
        parts = _target_strings(path, query, raw_target)
    env["REQUEST_METHOD"] = _METHODS.get(method) or method.decode("latin-1")
    env["PATH_INFO"], env["QUERY_STRING"], uri = parts
    env["RAW_URI"] = env["REQUEST_URI"] = uri
    env["SERVER_PROTOCOL"] = _PROTOCOLS[version]
    env["wsgi.input"] = wsgi_input
    keys = _HEADER_KEYS
    for name, value in headers:
        key = keys.get(name, _MISSING)
        if key is _MISSING:
            key = _environ_key(name)
        if key is None:
            continue
        if key in env and key[:5] == "HTTP_":
            # RFC 9110 5.3: repeated fields combine with ", "; cookies combine with "; "
            # (RFC 6265 5.4 sends one Cookie field, and "," is not a cookie separator).
            env[key] = env[key] + ("; " if key == "HTTP_COOKIE" else ", ") + value.decode("latin-1")
        else:
            env[key] = value.decode("latin-1")
    if authority is not None:
        # RFC 9112 3.2.2: with an absolute-form target, the server MUST ignore Host and use
        # the target's authority.
        env["HTTP_HOST"] = authority.decode("latin-1")
    return env


def _target_strings(path: bytes, query: bytes, raw_target: bytes) -> Tuple[str, str, str]:
    """PATH_INFO (percent-decoded), QUERY_STRING and REQUEST_URI, as latin-1 strings."""
    return ((unquote_to_bytes(path) if path.find(b"%") >= 0 else path).decode("latin-1"),
            query.decode("latin-1"), raw_target.decode("latin-1"))


def _split_absolute_form(target: bytes) -> Tuple[bytes, bytes]:
    """Split an absolute-form target (RFC 9112 3.2.2) into (authority, origin-form)."""
    rest = target.split(b"://", 1)[1]
    ends = [i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0]
    end = min(ends) if ends else len(rest)
    path = rest[end:] or b"/"
    return rest[:end], (b"/" + path if path[:1] == b"?" else path)


class Input:
    """``wsgi.input``: reads the request body through ``read_chunk`` and never past its end.

    Reading may switch greenlets. A body cut short by the client raises ClientDisconnected.
    Every method runs in time linear in the bytes it returns plus those it receives: pieces
    are gathered once, and what is left of a piece is kept with an offset instead of being
    copied again (a body of a million one-byte chunks must not cost a million copies of a
    growing buffer)."""

    __slots__ = ("_read_chunk", "_buf", "_pos", "_eof")

    def __init__(self, read_chunk: Callable[[], bytes]) -> None:
        self._read_chunk = read_chunk
        self._buf = b""  # received and not yet returned from _pos on
        self._pos = 0
        self._eof = False

    def _next(self) -> bytes:
        """The next piece of body, b"" at its end. May switch."""
        if self._eof:
            return b""
        chunk = self._read_chunk()
        if not chunk:
            self._eof = True
        return chunk

    def _collect(self, want: int, line: bool) -> bytes:
        """The unread rest and further pieces until ``want`` bytes (if >= 0), the end of a
        line (if ``line``) or the end of the body; what comes after is kept. One piece is
        returned as it is; more are gathered in a bytearray (amortised linear). May switch."""
        buf, pos = self._buf, self._pos
        data = buf[pos:] if pos else buf
        gathered: Optional[bytearray] = None
        have, end = len(data), -1
        while (want < 0 or have < want) and end < 0:
            chunk = self._next()
            if not chunk:
                break
            if line:
                nl = chunk.find(b"\n")
                end = have + nl + 1 if nl >= 0 else -1
            if not data:
                data = chunk
            elif gathered is None:
                gathered = bytearray(data)
                gathered += chunk
            else:
                gathered += chunk
            have += len(chunk)
        if gathered is not None:
            data = bytes(gathered)
        cut = want if end < 0 or 0 <= want < end else end
        if 0 <= cut < len(data):
            self._buf, self._pos = data, cut
            return data[:cut]
        self._buf, self._pos = b"", 0
        return data

    def read(self, size: Optional[int] = -1) -> bytes:
        want = -1 if size is None or size < 0 else size
        buf, pos = self._buf, self._pos
        if 0 <= want <= len(buf) - pos:
            self._pos = pos + want
            return buf[pos : pos + want]
        return self._collect(want, False)

    def readline(self, size: Optional[int] = -1) -> bytes:
        limit = -1 if size is None or size < 0 else size
        buf, pos = self._buf, self._pos
        stop = len(buf) if limit < 0 else min(len(buf), pos + limit)
        nl = buf.find(b"\n", pos, stop)
        if nl >= 0 or stop - pos == limit:
            end = nl + 1 if nl >= 0 else stop
            self._pos = end
            return buf[pos:end]
        return self._collect(limit, True)

    def readlines(self, hint: Optional[int] = -1) -> List[bytes]:
        lines: List[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    @property
    def at_end(self) -> bool:
        return self._eof and self._pos >= len(self._buf)


EMPTY_INPUT = Input(lambda: b"")  # stateless: wsgi.input of every request without a body
EMPTY_INPUT._eof = True
EMPTY_HEAD: Final = AppHead(b"", None, False, False)


class FileWrapper:
    """``wsgi.file_wrapper``: the server sends a real file with sendfile; otherwise iterates."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return bytes(data)
        raise StopIteration

    # A file's position, passed through: werkzeug answers a Range request by seeking the
    # wrapper when it can, and otherwise reads and discards everything before the range.
    def seekable(self) -> bool:
        seekable = getattr(self.filelike, "seekable", None)
        return bool(seekable()) if seekable is not None else False

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.filelike.seek(offset, whence))

    def tell(self) -> int:
        return int(self.filelike.tell())


_app_heads: Final[Dict[Tuple[Tuple[str, str], ...], AppHead]] = {}
_warned: Final[Set[bytes]] = set()  # the app Connection values logged already
_statuses: Final[Dict[str, Tuple[int, bytes]]] = {}
_MAX_CACHED: Final = 512


def app_head(headers: Any) -> AppHead:
    """Check the app's header list (PEP 3333: a list of (str, str) tuples, latin-1; then the
    HTTP rules in h1) and return its wire form. Apps repeat the same few header sets, so the
    result is cached per set. Raises LocalProtocolError."""
    if type(headers) is not list:
        raise LocalProtocolError("response headers must be a list", 500)
    try:
        key = tuple(headers)
        cached = _app_heads.get(key)
    except TypeError:  # an unhashable item: not a (str, str) tuple; _encode says which
        key, cached = (), None
    if cached is not None:
        return cached
    head = check_app_headers(_encode(headers))
    if head.connection:
        _warn_once(head.connection)
    if key:
        if len(_app_heads) >= _MAX_CACHED:
            _app_heads.clear()
        _app_heads[key] = head
    return head


def _warn_once(connection: bytes) -> None:
    """Log, once per value, that the app set a Connection field (a hop-by-hop field that PEP
    3333 leaves to the server) and what the server does with it."""
    if connection in _warned or len(_warned) >= _MAX_CACHED:
        return
    _warned.add(connection)
    log.warning("the app set the hop-by-hop header 'Connection: %s'; it is not sent as given: "
                "the server closes the connection after such a response if it asks for close, "
                "and otherwise decides persistence itself", connection.decode("latin-1"))


def _encode(headers: List[Any]) -> List[Tuple[bytes, bytes]]:
    out = []
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise LocalProtocolError("each response header must be a (name, value) tuple", 500)
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise LocalProtocolError("response header names and values must be str", 500)
        try:
            out.append((name.encode("latin-1"), value.encode("latin-1")))
        except UnicodeEncodeError:
            raise LocalProtocolError(f"response header {name!r} is not latin-1", 500) from None
    return out


def parse_status(status: Any) -> Tuple[int, bytes]:
    """Check a PEP 3333 status string ("200 OK"). Returns (code, reason). Cached per string.
    Raises LocalProtocolError."""
    if type(status) is not str:
        raise LocalProtocolError("status must be a str", 500)
    parsed = _statuses.get(status)
    if parsed is not None:
        return parsed
    m = _STATUS.fullmatch(status)
    if m is None:
        raise LocalProtocolError(f"invalid status {status!r}", 500)
    code = int(m.group(1))
    if code < 200:
        raise LocalProtocolError("informational (1xx) statuses are sent by the server", 500)
    parsed = (code, m.group(2).encode("latin-1"))
    if len(_statuses) >= _MAX_CACHED:
        _statuses.clear()
    _statuses[status] = parsed
    return parsed


class Response:
    """The state of one response as the app describes it, with ``start_response`` and
    ``write`` bound to it. ``emit(data)`` is supplied by the handler."""

    __slots__ = ("emit", "status", "reason", "headers", "headers_sent")

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self.emit = emit
        self.status = 0
        self.reason = b""
        self.headers = EMPTY_HEAD
        self.headers_sent = False

    def start_response(
        self, status: str, headers: List[Tuple[str, str]], exc_info: Optional[ExcInfo] = None
    ) -> Callable[[bytes], None]:
        """PEP 3333 start_response. Returns ``write``."""
        if exc_info is not None:
            try:
                if self.headers_sent:
                    # PEP 3333: too late to change the response; re-raise the app's error.
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status:
            raise LocalProtocolError("start_response called twice without exc_info", 500)
        self.status, self.reason = parse_status(status)
        self.headers = app_head(headers)
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333 write(): send ``data`` before returning. May switch greenlets."""
        if not self.status:
            raise LocalProtocolError("write() called before start_response", 500)
        if type(data) is not bytes:
            raise LocalProtocolError("write() needs bytes", 500)
        self.emit(data)


def whole_body(result: Iterable[bytes]) -> Optional[Sequence[bytes]]:
    """Return ``result`` if it is a list or tuple of bytes (the whole body known up front: the
    handler can give it a Content-Length and send it at once), else None."""
    if type(result) in (list, tuple):
        pieces: Sequence[bytes] = result  # type: ignore[assignment]
        for piece in pieces:
            if type(piece) is not bytes:
                return None
        return pieces
    return None
