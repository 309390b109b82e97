"""The RFC 9110 / RFC 9112 grammar used by the parser, each rule written once.

All patterns work on bytes and are meant for ``fullmatch``. Rules are listed under the section
that defines them so that a reader can check each against the RFC text.
"""

from __future__ import annotations

import re

# RFC 9110 5.6.2: token = 1*tchar; tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" /
#   "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TCHAR = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]"
TOKEN = TCHAR + rb"+"

# RFC 9110 5.6.3: OWS = *( SP / HTAB )
OWS = rb"[ \t]*"

# RFC 9110 5.5: field-value = *field-content; field-content = field-vchar
#   [ 1*( SP / HTAB / field-vchar ) field-vchar ]; field-vchar = VCHAR / obs-text
# VCHAR is %x21-7E, obs-text is %x80-FF. CR, LF, NUL and other controls are never allowed.
FIELD_VCHAR = rb"[\x21-\x7e\x80-\xff]"
FIELD_VALUE = rb"(?:" + FIELD_VCHAR + rb"(?:[ \t\x21-\x7e\x80-\xff]*" + FIELD_VCHAR + rb")?)?"

# RFC 9112 5: field-line = field-name ":" OWS field-value OWS. No whitespace before the colon
# (5.1: a server MUST reject such a message with 400).
FIELD_LINE = re.compile(rb"(" + TOKEN + rb"):" + OWS + rb"(" + FIELD_VALUE + rb")" + OWS)

# RFC 9112 3: request-line = method SP request-target SP HTTP-version.
# method = token (RFC 9110 9.1). The request-target is checked loosely here (visible ASCII, no
# spaces or controls, RFC 9112 3.2) and by form below. HTTP-version = "HTTP/" DIGIT "." DIGIT
# (RFC 9112 2.3), case-sensitive.
REQUEST_LINE = re.compile(
    rb"(" + TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])"
)

# RFC 9112 3.2.1 origin-form = absolute-path [ "?" query ]; 3.2.2 absolute-form = absolute-URI;
# 3.2.3 authority-form = uri-host ":" port (CONNECT only); 3.2.4 asterisk-form = "*" (OPTIONS).
# RFC 9110 4.2.1: an "http" URI with an empty host is invalid. The authority ends at the first
# "/", "?" or "#" (RFC 3986 3.2), so the split is unambiguous and the match linear; the
# authority itself is checked with HOST below (RFC 9110 4.2.4: userinfo is an error).
ABSOLUTE_FORM = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)((?:[/?][^#]*)?)")
AUTHORITY_FORM = re.compile(rb"[^/?#@\s]+:[0-9]+")

# RFC 9110 7.2: Host = uri-host [ ":" port ]; uri-host = IP-literal / IPv4address / reg-name
# (RFC 3986 3.2.2). reg-name = *( unreserved / pct-encoded / sub-delims ).
HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.vV]+\]|[-A-Za-z0-9._~!$&'()*+,;=%]*)(?::[0-9]*)?"
)

# What may start a request line (RFC 9112 3): a method token, then SP and target characters,
# then SP and the version's. Bytes that do not fit (a TLS or SSH client on a plain port) can
# never become a request, so they are refused without waiting for the line to end.
REQUEST_LINE_START = re.compile(
    rb"(?:" + TOKEN + rb"(?: (?:[\x21-\x7e]+(?: [\x21-\x7e]*)?)?)?)?"
)

# RFC 9112 7.1: chunk-size = 1*HEXDIG; chunk-ext = *( BWS ";" BWS chunk-ext-name
#   [ BWS "=" BWS chunk-ext-val ] ); chunk-ext-val = token / quoted-string.
# quoted-string (RFC 9110 5.6.4) = DQUOTE *( qdtext / quoted-pair ) DQUOTE.
QUOTED_STRING = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
CHUNK_EXT = (
    rb"(?:" + OWS + rb";" + OWS + TOKEN
    + rb"(?:" + OWS + rb"=" + OWS + rb"(?:" + TOKEN + rb"|" + QUOTED_STRING + rb"))?)*"
)
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)(" + CHUNK_EXT + rb")")

# RFC 9110 5.6.1: comma-separated lists; elements are tokens for Connection, Transfer-Encoding.
TOKEN_RE = re.compile(TOKEN)
DIGITS = re.compile(rb"[0-9]+")
