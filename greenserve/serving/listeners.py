"""A listening socket as the server keeps it: its address, its URL, the environ keys its
connections share and what makes their connections (plain, TLS, PROXY protocol)."""

from __future__ import annotations

import socket
from typing import Any, Dict, Optional

from ..config.addresses import BindAddress
from ..config.options import Config
from ..http.connection import Connection
from ..http.preamble import Factory
from ..loop.gsocket import GreenSocket
from .sockets import OwnedPath, bind_address


class Listener:
    """A bound, listening socket and the environ keys its connections share."""

    def __init__(self, sock: socket.socket, address: BindAddress,
                 owned: Optional[OwnedPath] = None) -> None:
        self.sock = sock
        self.address = address
        self.owned = owned  # a unix path this server created, removed when it closes
        self.gsock: Optional[GreenSocket] = None
        self.environ: Dict[str, Any] = {}
        self.tls = False  # set by Server.start: TLS on this listener
        self.proxy_protocol = False  # connections begin with a PROXY protocol header
        self.make_connection: Factory = Connection
        self.tcp = sock.family != socket.AF_UNIX  # its connections get TCP_NODELAY
        # (family, type, proto) as plain ints, for the socket objects of accepted connections
        self.socket_args = (int(sock.family), int(sock.type), sock.proto)
        if not self.tcp:
            self.server_name, self.server_port = "localhost", "80"
        else:
            host, port = sock.getsockname()[:2]
            self.server_name, self.server_port = host, str(port)

    @property
    def url(self) -> str:
        if self.address.kind == "unix":
            return "unix:" + self.address.host
        host = self.server_name
        scheme = "https" if self.tls else "http"
        return f"{scheme}://[{host}]:{self.server_port}" if ":" in host else f"{scheme}://{host}:{self.server_port}"


def bind_listener(address: BindAddress, config: Config) -> Listener:
    """Create, bind and listen (see sockets.py). Raises ConfigError naming the address."""
    sock, owned, _ = bind_address(address, config)
    return Listener(sock, address, owned)


def address_of(sock: socket.socket) -> BindAddress:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return BindAddress("unix", name if isinstance(name, str) else name.decode(), 0)
    return BindAddress("tcp", name[0], name[1])
