"""Listen addresses: parsing ``--bind`` values (no I/O) and the socket address they name.

Forms: ``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` (all IPv4 interfaces), ``unix:/path``.
"""

from __future__ import annotations

from typing import NamedTuple


class BindAddress(NamedTuple):
    kind: str  # "tcp" or "unix"
    host: str  # host name or address; the path for unix
    port: int  # 0 for unix

    def __str__(self) -> str:
        if self.kind == "unix":
            return "unix:" + self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_bind(text: str) -> BindAddress:
    """Parse one --bind value. Raises ValueError with a message fit for the user."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError(f"{text!r}: unix: needs a path")
        return BindAddress("unix", path, 0)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or not host:
            raise ValueError(f"{text!r}: expected [IPV6]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r}: expected HOST:PORT, [IPV6]:PORT or unix:PATH")
        if ":" in host:
            raise ValueError(f"{text!r}: put an IPv6 address in brackets: [{host}]:{port}")
        host = host or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port must be a number from 0 to 65535")
    return BindAddress("tcp", host, int(port))
