"""Listen addresses: parsing ``--bind`` values (no I/O) and the socket address they name.

Forms: ``HOST:PORT``, ``[IPV6]:PORT`` (``[::]`` is dual-stack: IPv6 and IPv4), ``:PORT`` (all
IPv4 interfaces), ``unix:/path``, ``fd://N`` (an inherited, already-bound socket on fd N).
"""

from __future__ import annotations

from typing import NamedTuple


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
