"""Listen addresses: parsing ``--bind`` values (no I/O) and the socket address they name.

Forms: ``HOST:PORT``, ``[IPV6]:PORT`` (``[::]`` is dual-stack: IPv6 and IPv4), ``:PORT`` (all
IPv4 interfaces), ``unix:/path``, ``fd://N`` (an inherited, already-bound socket on fd N).

Also ``ip_literal``: the strict reading of an address that a peer claims for a client (proxy
headers, the PROXY protocol), where only a plain IP literal is an address; and
``client_address``: how such an address is then written (REMOTE_ADDR).
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple, Optional, Union


class BindAddress(NamedTuple):
    kind: str  # "tcp", "unix" or "fd"
    host: str  # host name or address; the path for unix; "" for fd
    port: int  # 0 for unix; the descriptor number for fd

    def __str__(self) -> str:
        if self.kind == "unix":
            return "unix:" + self.host
        if self.kind == "fd":
            return f"fd://{self.port}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_bind(text: str) -> BindAddress:
    """Parse one --bind value. Raises ValueError with a message fit for the user."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError(f"{text!r}: unix: needs a path")
        return BindAddress("unix", path, 0)
    if text.startswith("fd://"):
        number = text[5:]
        if not number.isdigit() or not number.isascii():
            raise ValueError(f"{text!r}: fd:// needs a file descriptor number, e.g. fd://3")
        return BindAddress("fd", "", int(number))
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or not host:
            raise ValueError(f"{text!r}: expected [IPV6]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r}: expected HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N")
        if ":" in host:
            raise ValueError(f"{text!r}: put an IPv6 address in brackets: [{host}]:{port}")
        host = host or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port must be a number from 0 to 65535")
    return BindAddress("tcp", host, int(port))


IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_IP_CHARACTERS = frozenset("0123456789abcdefABCDEF:.")


def ip_literal(text: str) -> Optional[IPAddress]:
    """``text`` as an IP address if it is a plain IPv4 or IPv6 literal, else None: a host name,
    brackets, a zone index ('fe80::1%eth0', which ``ipaddress`` accepts), spaces, digits other
    than ASCII, or an IPv4 part with a leading zero (octal to some parsers) are not."""
    if not text or not _IP_CHARACTERS.issuperset(text):
        return None
    if ":" not in text and any(len(part) > 1 and part[0] == "0" for part in text.split(".")):
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(ip: IPAddress) -> str:
    """The text of a client's address, as REMOTE_ADDR gives it, the same on every Python.

    An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, RFC 4291 2.5.5.2) is what a dual-stack
    socket makes of an IPv4 client: it is written as that IPv4 address, as the server does for
    its own dual-stack peers, so a client has the same REMOTE_ADDR whether it comes directly or
    through a proxy, however the proxy listens, and an app's IPv4 allow-list or log matches
    it. Any other address is written canonically (RFC 5952 4 for IPv6). ``str`` alone would
    not do: Python 3.13 writes a mapped address ``::ffff:192.0.2.1``, older versions
    ``::ffff:c000:201``.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
