"""Request header analysis: framing, Host, Connection and Expect, with the smuggling checks.

Strategy: the head reader hands over the parsed field lines; ``analyse`` walks them once and
returns a ``HeadInfo`` that says how the body is framed and whether the client wants to keep the
connection. Anything ambiguous is refused (RFC 9112 6.3 lists the framing rules; DESIGN.md's
"refuse ambiguity" adds that a repeated Content-Length is refused even when the copies agree).
"""

from __future__ import annotations

import functools
from typing import Final, NamedTuple, Optional

from ...errors import RemoteProtocolError
from . import _abnf
from .events import Headers

# Body framing of a request.
NO_BODY: Final = 0
LENGTH: Final = 1
CHUNKED: Final = 2

# Python ints have no overflow, but a number this long is larger than any body we accept.
_MAX_CL_DIGITS: Final = 18


class HeadInfo(NamedTuple):
    framing: int  # NO_BODY, LENGTH or CHUNKED
    content_length: int  # for LENGTH; 0 otherwise
    keep_alive: bool  # what the client asks for
    expect_continue: bool


def comma_list(value: bytes) -> list[bytes]:
    """Split a comma-separated list (RFC 9110 5.6.1), dropping empty elements, lower-cased."""
    return [item.strip(b" \t").lower() for item in value.split(b",") if item.strip(b" \t")]


def _tokens(value: bytes, field: str) -> list[bytes]:
    items = comma_list(value)
    for item in items:
        if not _abnf.TOKEN_RE.fullmatch(item):
            raise RemoteProtocolError(f"invalid element in {field}: {item!r}")
    return items


def _transfer_coding_is_chunked(values: list[bytes], http11: bool) -> None:
    """Raise unless Transfer-Encoding is exactly one final 'chunked' (RFC 9112 6.1, 6.3)."""
    if not http11:
        # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
        raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 request")
    codings = _tokens(b",".join(values), "Transfer-Encoding")
    if not codings:
        raise RemoteProtocolError("empty Transfer-Encoding")
    if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
        # RFC 9112 6.3 (4): chunked not final means the length cannot be known: 400.
        raise RemoteProtocolError("chunked must be applied once, as the final coding")
    if len(codings) > 1:
        # RFC 9112 6.1: a transfer coding the server does not understand gets 501.
        raise RemoteProtocolError("unsupported transfer coding", 501)


def _content_length(values: list[bytes], max_body: int) -> int:
    if len(values) != 1:
        raise RemoteProtocolError("repeated Content-Length")
    value = values[0]
    if not _abnf.DIGITS.fullmatch(value):
        raise RemoteProtocolError("Content-Length is not a plain decimal number")
    if len(value) > _MAX_CL_DIGITS or int(value) > max_body:
        raise RemoteProtocolError("request body too large", 413)
    return int(value)


# Host values found valid (as the parser keeps lines, see _readers): a server hears the same few
# names again and again, and a set lookup costs far less than the grammar's expression. Only
# short values are kept; a full set is emptied.
_HOSTS_MAX: Final = 256
_HOST_LEN: Final = 256
_valid_hosts: Final[set[bytes]] = set()


def _check_host_value(value: bytes) -> None:
    if value in _valid_hosts:
        return
    if _abnf.HOST.fullmatch(value) is None:
        raise RemoteProtocolError("invalid Host header")
    if len(value) <= _HOST_LEN:
        if len(_valid_hosts) >= _HOSTS_MAX:
            _valid_hosts.clear()
        _valid_hosts.add(value)


# Connection values found valid, with their tokens: a handful in practice (close, keep-alive,
# Upgrade), each split and matched against the token rule once, not on every request.
_CONNECTION_MAX: Final = 64
_CONNECTION_LEN: Final = 64
_seen_connection: Final[dict[bytes, list[bytes]]] = {}


def _connection_tokens(value: bytes) -> list[bytes]:
    """The tokens of one Connection field line (the list is shared: never change it)."""
    tokens = _seen_connection.get(value)
    if tokens is None:
        tokens = _tokens(value, "Connection")
        if len(value) <= _CONNECTION_LEN:
            if len(_seen_connection) >= _CONNECTION_MAX:
                _seen_connection.clear()
            _seen_connection[value] = tokens
    return tokens


def _check_host(values: list[bytes], http11: bool) -> None:
    # RFC 9112 3.2: a server MUST respond 400 to an HTTP/1.1 request without Host, with more
    # than one Host field line, or with an invalid Host value.
    if len(values) > 1:
        raise RemoteProtocolError("repeated Host header")
    if http11 and not values:
        raise RemoteProtocolError("missing Host header")
    if values:
        _check_host_value(values[0])


_FRAMING_FIELDS: Final = frozenset(
    [b"content-length", b"transfer-encoding", b"host", b"connection", b"expect"])
# Building a NamedTuple without its generated Python-level __new__ (hot path).
_new_info: Final = functools.partial(tuple.__new__, HeadInfo)
_PLAIN: Final = HeadInfo(NO_BODY, 0, True, False)  # an HTTP/1.1 request with one Host and no body
_PLAIN_CLOSE: Final = HeadInfo(NO_BODY, 0, False, False)  # the same, the client closing after it


def analyse(headers: Headers, http11: bool, max_body: int) -> HeadInfo:
    """Check the framing-related fields of a request head.

    Returns the body framing and connection wishes. Raises RemoteProtocolError with 400, 413,
    417 or 501 as its status hint.
    """
    special = [field for field in headers if field[0] in _FRAMING_FIELDS]
    if http11 and len(special) == 1 and special[0][0] == b"host":
        # The usual request: only a Host among the fields that matter here.
        _check_host_value(special[0][1])
        return _PLAIN
    if len(special) == 2:
        # The next most usual: a Host and one Connection line (close, keep-alive), no body.
        (first, first_value), (second, second_value) = special
        if first == b"host" and second == b"connection":
            host_value, tokens = first_value, _connection_tokens(second_value)
        elif first == b"connection" and second == b"host":
            host_value, tokens = second_value, _connection_tokens(first_value)
        else:
            host_value, tokens = b"", []
        if tokens:
            _check_host_value(host_value)
            if http11:
                return _PLAIN_CLOSE if b"close" in tokens else _PLAIN
            return _PLAIN if b"keep-alive" in tokens and b"close" not in tokens else _PLAIN_CLOSE
    cl: list[bytes] = []
    te: list[bytes] = []
    host: list[bytes] = []
    connection: Optional[list[bytes]] = None
    expect: Optional[bytes] = None
    for name, value in special:
        if name == b"content-length":
            cl.append(value)
        elif name == b"transfer-encoding":
            te.append(value)
        elif name == b"host":
            host.append(value)
        elif name == b"connection":
            connection = (connection or []) + _connection_tokens(value)
        else:  # expect
            expect = value.lower() if expect is None else expect + b"," + value.lower()
    _check_host(host, http11)
    if te and cl:
        raise RemoteProtocolError("both Content-Length and Transfer-Encoding")
    framing, length = NO_BODY, 0
    if te:
        _transfer_coding_is_chunked(te, http11)
        framing = CHUNKED
    elif cl:
        length = _content_length(cl, max_body)
        framing = LENGTH if length else NO_BODY
    if http11:
        keep_alive = connection is None or b"close" not in connection
    else:
        keep_alive = connection is not None and b"keep-alive" in connection and b"close" not in connection
    expect_continue = False
    if expect is not None:
        if expect != b"100-continue":
            raise RemoteProtocolError("unsupported expectation", 417)
        # RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
        expect_continue = http11 and framing != NO_BODY
    return _new_info((framing, length, keep_alive, expect_continue))
