"""Trusted proxies: Forwarded (RFC 7239) and X-Forwarded-* applied to the WSGI environ.

Strategy:
- Only a peer in ``forwarded_allow_ips`` is believed. From any other peer the proxy headers are
  removed from the environ, so an app can never be fooled by a client writing them itself.
- Each proxy appends one entry for the peer it heard from, so the client is the Nth entry from
  the right, N being ``proxy_count`` (the number of trusted proxies in front of the server);
  whatever a client wrote in those headers is further to the left and never chosen.
- ``Forwarded`` wins over the X-Forwarded-* family when both are present. From the chosen entry:
  ``for`` -> REMOTE_ADDR (and REMOTE_PORT), ``proto`` -> wsgi.url_scheme, ``host`` ->
  HTTP_HOST, SERVER_NAME, SERVER_PORT. A value that is not well-formed is ignored, not guessed at.
- The handler calls ``apply`` only when one of ``PROXY_KEYS`` is in the environ (one
  ``isdisjoint`` call: five dict lookups in C), so requests without proxy headers pay nothing
  more.

This module does no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Dict, List, Optional, Tuple

PROXY_KEYS = frozenset(["HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
                        "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT"])
Network = Any  # ipaddress.IPv4Network | ipaddress.IPv6Network
_CACHE_SIZE = 4096

# RFC 9110 5.6.2 token; 5.6.4 quoted-string (qdtext and quoted-pair, obs-text allowed).
_PAIR = re.compile(
    r'[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=([!#$%&\'*+.^_`|~0-9A-Za-z-]+|"(?:[^"\\\x00-\x08'
    r'\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\xff])*")[ \t]*')
# RFC 3986 3.2.2 reg-name or IPv4 (the characters of), or an IP-literal; then an optional port.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::([0-9]{1,5}))?")


class ProxyHeaders:
    """Apply or strip proxy headers according to ``forwarded_allow_ips`` and ``proxy_count``."""

    def __init__(self, allow: Tuple[str, ...], count: int) -> None:
        self.trust_all = "*" in allow
        self.networks: List[Network] = [
            ipaddress.ip_network(item, strict=False) for item in allow if item != "*"]
        self.count = count
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
        """Rewrite ``environ`` from the proxy headers if ``peer`` is trusted, else remove them."""
        if not self.trusts(peer):
            for key in PROXY_KEYS:
                environ.pop(key, None)
            return
        if "HTTP_FORWARDED" in environ:
            entry = self._pick(parse_forwarded(environ["HTTP_FORWARDED"]))
            if entry is None:
                return
            node, proto, host, port = entry.get("for"), entry.get("proto"), entry.get("host"), None
        else:
            node = self._pick_value(environ.get("HTTP_X_FORWARDED_FOR"))
            proto = self._pick_value(environ.get("HTTP_X_FORWARDED_PROTO"))
            host = self._pick_value(environ.get("HTTP_X_FORWARDED_HOST"))
            port = self._pick_value(environ.get("HTTP_X_FORWARDED_PORT"))
        if node is not None:
            _set_client(environ, node)
        if proto is not None and proto.lower() in ("http", "https"):
            environ["wsgi.url_scheme"] = proto.lower()
        if host is not None:
            _set_host(environ, host)
        if port is not None and port.isdigit() and 0 < int(port) < 65536:
            environ["SERVER_PORT"] = str(int(port))

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


def _ip(text: str) -> Optional[Any]:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def split_node(node: str) -> Tuple[Optional[str], Optional[str]]:
    """A Forwarded node or an X-Forwarded-For item -> (IP address, port); None where absent
    or not an IP (RFC 7239 6: "unknown" and obfuscated identifiers are not addresses)."""
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host, port = node, None  # IPv4, or a bare IPv6 address (X-Forwarded-For writes them)
    ip = _ip(host)
    if port is not None and not (port.isdigit() and len(port) <= 5 and int(port) < 65536):
        port = None
    return (str(ip) if ip is not None else None), port


def _set_client(environ: Dict[str, Any], node: str) -> None:
    address, port = split_node(node)
    if address is None:
        return
    environ["REMOTE_ADDR"] = address
    if port is not None:
        environ["REMOTE_PORT"] = str(int(port))
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
