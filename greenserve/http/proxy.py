"""Trusted proxies: Forwarded (RFC 7239) or X-Forwarded-* applied to the WSGI environ.

Strategy:
- Only a peer in ``forwarded_allow_ips`` is believed. From any other peer every header in
  ``PROXY_KEYS`` is removed from the environ, so an app (or a framework that reads X-Real-IP
  or Front-End-Https) can never be fooled by a client writing them itself.
- From a trusted peer, one family is believed, as ``forwarded_headers`` says: "x-forwarded"
  (X-Forwarded-For, -Proto, -Host, -Port: what nginx, HAProxy and the cloud balancers write)
  or "forwarded" (RFC 7239). The other family is removed: a proxy passes on what it does not
  write itself, so a header of the other family may come from the client.
- Each proxy appends one entry for the peer it heard from, so the client is the Nth entry from
  the right, N being ``proxy_count`` (the number of trusted proxies in front of the server);
  whatever a client wrote in those headers is further to the left and never chosen.
- From the chosen entry: ``for`` -> REMOTE_ADDR (and REMOTE_PORT), ``proto`` ->
  wsgi.url_scheme, ``host`` -> HTTP_HOST, SERVER_NAME, SERVER_PORT. Nothing is guessed: a
  Forwarded header that is not well-formed is ignored whole, an X-Forwarded-* header whose
  value is not well-formed is ignored, and a node that is not a plain IP literal (a name, an
  obfuscated identifier, "unknown", an IPv6 zone index) leaves REMOTE_ADDR the peer's.
- The handler calls ``apply`` only when one of the request's field names is in
  ``PROXY_FIELDS`` (the names behind ``PROXY_KEYS``: a set lookup per field), so requests
  without proxy headers pay nothing more.

This module does no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Dict, List, Optional, Tuple

from ..config.addresses import client_address, ip_literal

FORWARDED_KEYS = ("HTTP_FORWARDED",)
X_FORWARDED_KEYS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                    "HTTP_X_FORWARDED_PORT")
# Not read here, but read by frameworks and middleware as the client's address, scheme or
# mount point: removed from untrusted peers, left as they are from trusted ones.
OTHER_KEYS = ("HTTP_X_REAL_IP", "HTTP_X_FORWARDED_PREFIX", "HTTP_X_FORWARDED_SSL",
              "HTTP_X_FORWARDED_SCHEME", "HTTP_FRONT_END_HTTPS")
PROXY_KEYS = frozenset(FORWARDED_KEYS + X_FORWARDED_KEYS + OTHER_KEYS)
# The header field names (lower case, as parsed) that become those keys: looking at a request's
# few field names is cheaper than asking the environ for each key.
PROXY_FIELDS = frozenset(key[5:].lower().replace("_", "-").encode() for key in PROXY_KEYS)
FAMILIES = ("x-forwarded", "forwarded")
Network = Any  # ipaddress.IPv4Network | ipaddress.IPv6Network
_CACHE_SIZE = 4096

# RFC 9110 5.6.2 token; 5.6.4 quoted-string (qdtext and quoted-pair, obs-text allowed).
_PAIR = re.compile(
    r'[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=([!#$%&\'*+.^_`|~0-9A-Za-z-]+|"(?:[^"\\\x00-\x08'
    r'\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\xff])*")[ \t]*')
# RFC 3986 3.2.2 reg-name or IPv4 (the characters of), or an IP-literal; then an optional port.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::([0-9]{1,5}))?")
# RFC 3986 3.2.3 port = *DIGIT, ASCII digits only: str.isdigit() also accepts '²' or '٣',
# which int() then refuses or reads as another number.
_PORT = re.compile(r"[0-9]{1,5}")


class ProxyHeaders:
    """Apply or strip proxy headers according to ``forwarded_allow_ips``, ``proxy_count`` and
    ``forwarded_headers`` (``family``: "x-forwarded" or "forwarded")."""

    def __init__(self, allow: Tuple[str, ...], count: int, family: str = "x-forwarded") -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown family of proxy headers {family!r}")
        self.trust_all = "*" in allow
        self.networks: List[Network] = [
            ipaddress.ip_network(item, strict=False) for item in allow if item != "*"]
        self.count = count
        self.family = family
        self._other = X_FORWARDED_KEYS if family == "forwarded" else FORWARDED_KEYS
        self._trusted: Dict[str, bool] = {}

    def trusts(self, peer: Optional[Tuple[str, str]]) -> bool:
        """Whether proxy headers from ``peer`` are believed. A unix-socket peer (None) is: only
        processes allowed by the socket file's permissions can connect."""
        if peer is None or self.trust_all:
            return True
        address = peer[0]
        known = self._trusted.get(address)
        if known is None:
            known = self._check(address)
            if len(self._trusted) >= _CACHE_SIZE:
                self._trusted.clear()
            self._trusted[address] = known
        return known

    def _check(self, text: str) -> bool:
        ip = _ip(text)
        if ip is None:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:a.b.c.d on a dual-stack socket
        return any(ip in net or (mapped is not None and mapped in net) for net in self.networks)

    def apply(self, environ: Dict[str, Any], peer: Optional[Tuple[str, str]]) -> None:
        """Rewrite ``environ`` from the believed family of proxy headers if ``peer`` is
        trusted, and remove the other family; from an untrusted peer, remove them all."""
        if not self.trusts(peer):
            for key in PROXY_KEYS:
                environ.pop(key, None)
            return
        for key in self._other:
            environ.pop(key, None)
        if self.family == "forwarded":
            self._apply_forwarded(environ)
        else:
            self._apply_x_forwarded(environ)

    def _apply_forwarded(self, environ: Dict[str, Any]) -> None:
        value = environ.get("HTTP_FORWARDED")
        entry = self._pick(parse_forwarded(value)) if value is not None else None
        if entry is not None:  # None: absent, or not well-formed (RFC 7239 4): nothing applies
            _apply(environ, entry.get("for"), entry.get("proto"), entry.get("host"), None)

    def _apply_x_forwarded(self, environ: Dict[str, Any]) -> None:
        _apply(environ, self._pick_value(environ.get("HTTP_X_FORWARDED_FOR")),
               self._pick_value(environ.get("HTTP_X_FORWARDED_PROTO")),
               self._pick_value(environ.get("HTTP_X_FORWARDED_HOST")),
               self._pick_value(environ.get("HTTP_X_FORWARDED_PORT")))

    def _pick(self, entries: Optional[List[Dict[str, str]]]) -> Optional[Dict[str, str]]:
        """The Nth entry from the right (the leftmost if there are fewer)."""
        if not entries:
            return None
        return entries[max(0, len(entries) - self.count)]

    def _pick_value(self, header: Optional[str]) -> Optional[str]:
        if header is None:
            return None
        items = [item.strip() for item in header.split(",")]
        return items[max(0, len(items) - self.count)] or None


def parse_forwarded(value: str) -> Optional[List[Dict[str, str]]]:
    """Parse a Forwarded field value (RFC 7239 4) into its elements, each a dict of lower-case
    parameter names to unquoted values. Returns None if it is not well-formed, or if a
    parameter repeats within an element (RFC 7239 4: it MUST NOT)."""
    elements: List[Dict[str, str]] = []
    current: Dict[str, str] = {}
    pos, end = 0, len(value)
    while True:
        m = _PAIR.match(value, pos)
        if m is not None:
            name = m.group(1).lower()
            if name in current:
                return None
            raw = m.group(2)
            current[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw[:1] == '"' else raw
            pos = m.end()
        else:  # an empty pair or element: allowed by the list rules (RFC 9110 5.6.1)
            while pos < end and value[pos] in " \t":
                pos += 1
        if pos >= end:
            elements.append(current)
            return [e for e in elements if e]
        if value[pos] == ",":
            elements.append(current)
            current = {}
        elif value[pos] != ";":
            return None
        pos += 1


def _apply(environ: Dict[str, Any], node: Optional[str], proto: Optional[str],
           host: Optional[str], port: Optional[str]) -> None:
    """Set what one proxy entry says; each value that is not well-formed is left out."""
    if node is not None:
        _set_client(environ, node)
    if proto is not None and proto.lower() in ("http", "https"):
        environ["wsgi.url_scheme"] = proto.lower()
    if host is not None:
        _set_host(environ, host)
    port = _port(port) if port is not None else None
    if port is not None and port != "0":
        environ["SERVER_PORT"] = port


def _ip(text: str) -> Optional[Any]:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def split_node(node: str) -> Tuple[Optional[str], Optional[str]]:
    """A Forwarded node or an X-Forwarded-For item -> (IP address, port); None where absent
    or not a plain IP literal (RFC 7239 6: "unknown" and obfuscated identifiers are not
    addresses; nor is a zone index, which names an interface of the proxy's host). The address
    is written by ``client_address``: an IPv4-mapped one as its IPv4 address."""
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host, port = node, None  # IPv4, or a bare IPv6 address (X-Forwarded-For writes them)
    ip = ip_literal(host)
    address = client_address(ip) if ip is not None else None
    return address, (_port(port) if port is not None else None)


def _port(text: str) -> Optional[str]:
    """``text`` as a port number 0..65535, written without leading zeros; None if it is not
    one (1 to 5 ASCII digits)."""
    if _PORT.fullmatch(text) is None or int(text) > 65535:
        return None
    return str(int(text))


def _set_client(environ: Dict[str, Any], node: str) -> None:
    address, port = split_node(node)
    if address is None:
        return
    environ["REMOTE_ADDR"] = address
    if port is not None:
        environ["REMOTE_PORT"] = port
    else:
        environ.pop("REMOTE_PORT", None)  # the proxy's own port says nothing about the client


def _set_host(environ: Dict[str, Any], host: str) -> None:
    m = _HOST.fullmatch(host)
    if m is None:
        return
    name, port = m.group(1), m.group(2)
    if port is not None and int(port) > 65535:
        return
    environ["HTTP_HOST"] = host
    environ["SERVER_NAME"] = name.strip("[]")
    environ["SERVER_PORT"] = str(int(port)) if port else (
        "443" if environ.get("wsgi.url_scheme") == "https" else "80")
