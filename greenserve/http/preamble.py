"""What a connection does before HTTP: read a PROXY protocol header, then the TLS handshake.

Strategy: listeners that need neither make plain ``connection.Connection`` objects, untouched.
The others make a ``PreambleConnection``, which runs its preamble in the connection's greenlet
the first time it is woken, under the deadline of the first request head (``header_timeout``
from the first byte), then serves HTTP as any connection does. Order follows the PROXY
protocol specification: its header comes first, before any TLS byte.

The PROXY header is read with MSG_PEEK and then exactly its length, so the bytes after it (a
TLS ClientHello, a request) stay in the socket for whoever reads next. Only a trusted proxy
(``forwarded_allow_ips``) may send one: a connection from any other peer is closed as soon as
it is accepted, before a byte of it is read.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any, Callable, Dict, Final, Optional, Tuple

from ..errors import RemoteProtocolError
from ..loop.gsocket import GreenSocket
from .connection import Connection
from .port import ServerPort
from .proxyproto import ProxyProtocolError, header_length, parse
from .tls import GreenSSLSocket, NotTLSError

log = logging.getLogger("greenserve.error")
Factory = Callable[[ServerPort, socket.socket, Dict[str, Any], Optional[Tuple[str, str]]], Connection]
_PEEK: Final = 256


def connection_factory(context: Optional[ssl.SSLContext], proxy_protocol: bool) -> Factory:
    """What makes a listener's connections: plain ``Connection`` when there is no preamble."""
    if context is None and not proxy_protocol:
        return Connection

    def make(server: ServerPort, sock: socket.socket, base_env: Dict[str, Any],
             peer: Optional[Tuple[str, str]]) -> Connection:
        return PreambleConnection(server, sock, base_env, peer, context, proxy_protocol)

    return make


class PreambleConnection(Connection):
    """A connection that reads a PROXY header and/or runs the TLS handshake before HTTP."""

    __slots__ = ("proxy_protocol", "prepared")

    def __init__(self, server: ServerPort, sock: socket.socket, base_env: Dict[str, Any],
                 peer: Optional[Tuple[str, str]], context: Optional[ssl.SSLContext],
                 proxy_protocol: bool) -> None:
        super().__init__(server, sock, base_env, peer)
        if context is not None:
            self.gsock = GreenSSLSocket(sock, server.hub, context, server.config.linger_timeout)
        self.proxy_protocol = proxy_protocol
        self.prepared = False

    def start(self) -> None:
        # The PROXY header and the TLS handshake read the first bytes, in the greenlet.
        self.watch()

    def _serve_requests(self) -> bool:
        if not self.prepared and not self._prepare():
            return False
        return super()._serve_requests()

    def _prepare(self) -> bool:
        """Run the preamble. Returns False if the connection is to be closed. May switch."""
        deadline = self.started + self.server.header_timeout
        gsock = self.gsock
        try:
            if self.proxy_protocol:
                self._read_proxy_header(deadline)
            if isinstance(gsock, GreenSSLSocket):
                self._handshake(gsock, deadline)
        except NotTLSError:
            self.gsock = GreenSocket(gsock.sock, self.server.hub)  # answer in plain text
            self._reject(RemoteProtocolError("plain HTTP sent to a TLS port", 400))
            return False
        except ProxyProtocolError as exc:
            log.info("dropped a connection from %s: %s", self.peer and self.peer[0], exc)
            return False
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.debug("connection preamble failed: %s", exc)
            return False
        self.prepared = True
        return True

    def _handshake(self, gsock: GreenSSLSocket, deadline: float) -> None:
        """Run the TLS handshake by ``deadline``; a failure is counted for the metrics, and a
        verified client certificate goes into the environ. May switch. Raises as
        ``GreenSSLSocket.handshake``."""
        try:
            gsock.handshake(deadline)
        except ssl.SSLError:
            self.server.tls_failed()
            raise
        tls = gsock.tls
        if tls is not None and tls.getpeercert() is not None:
            # The verified client certificate (mutual TLS), for the app.
            self.base_env = {**self.base_env, "greenserve.peercert": tls.getpeercert()}

    def _read_proxy_header(self, deadline: float) -> None:
        """Read exactly the PROXY header; its source address becomes the peer. May switch.
        Raises ProxyProtocolError, TimeoutError, ConnectionError."""
        sock, hub, fd = self.gsock.sock, self.server.hub, self.gsock.fd
        header = b""
        total: Optional[int] = None
        while total is None or len(header) < total:
            try:
                if total is None:
                    peeked = sock.recv(_PEEK, socket.MSG_PEEK)
                    total = header_length(header + peeked)
                    take = len(peeked) if total is None else min(len(peeked), total - len(header))
                else:
                    peeked, take = b"?", total - len(header)
                data = sock.recv(take) if peeked else b""
            except BlockingIOError:
                hub.wait_readable(fd, deadline)
                continue
            if not data:
                raise ConnectionResetError("closed inside the PROXY protocol header")
            header += data
        source = parse(header)
        if source is not None:
            self.peer = source

    def watch(self) -> None:
        """Go idle; but if OpenSSL already holds decrypted bytes, the fd will not wake us for
        them: serve them on the next turn instead. A new connection to a PROXY protocol
        listener from a peer that is not a trusted proxy is closed here, unread."""
        if not self.prepared and self.proxy_protocol and not self._from_trusted_proxy():
            self.close()
            return
        gsock = self.gsock
        if self.prepared and isinstance(gsock, GreenSSLSocket) and gsock.pending():
            self.active = False
            self.glet = None
            self.server.hub.call_soon(self._serve_pending)
            return
        super().watch()

    def _from_trusted_proxy(self) -> bool:
        """Whether the real peer may send a PROXY header. The header names the client, and the
        client's address decides whether its X-Forwarded-* are believed: so only the proxies
        of ``forwarded_allow_ips`` may speak it, or anyone could claim any address."""
        if self.server.proxies.trusts(self.peer):
            return True
        log.info("dropped a connection from %s to a PROXY protocol listener: not in "
                 "--forwarded-allow-ips", self.peer[0] if self.peer else "?")
        return False

    def _serve_pending(self) -> None:
        if not self.closed and not self.active:
            self._on_readable()
