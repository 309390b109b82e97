"""Accepting: the part of ``Server`` that runs for every new connection, compiled (setup.py)
with the port it extends (``http/port.py``), so that a new connection costs no interpreted
frame between the kernel's accept and the connection's first read.

Strategy:
- Accepting is a hub callback, not a greenlet: when a listener is readable the hub accepts what
  waits, up to ``ACCEPT_BATCH`` connections, and serves the first ``SERVE_AT_ONCE`` of them at
  once where the request is already there (``Connection.start``); the others are watched for
  their first byte. A turn of the loop takes long under load (it answers every ready
  connection), so the one accept of a turn must empty the listen queue: at 64 a turn, 10,000
  clients connecting at once were still being accepted seconds later, and a queue that
  overflows drops SYNs, whose clients wait out TCP's 1 s, 3 s... retransmission timers.
- At ``max_connections`` the listener is not watched until a connection closes
  (``resume_accepting``); on EMFILE/ENFILE accepting backs off.
A listener is ``serving/listeners.py``'s ``Listener`` (read here by its attributes only).
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import _socket
from typing import Any, Callable, Final, Tuple

from .._traits import mypyc_attr
from ..http.connection import Connection
from ..http.port import ServerPort

log = logging.getLogger("greenserve.error")
ACCEPT_BATCH: Final = 2048  # per turn at most: as deep as the default --backlog
# Of those, how many are served at once (the rest wait for the next turn): served at once,
# a client whose connection closes after one response reconnects into the same accept loop.
SERVE_AT_ONCE: Final = 64
_c_accept: Final[Callable[[Any], Tuple[int, Any]]] = getattr(_socket.socket, "_accept")  # C accept4
_Socket: Final = socket.socket  # the real class, even if greenserve.patch replaces it later
NODELAY_INHERITED: Final = sys.platform.startswith("linux")
_ACCEPT_BACKOFF: Final = 0.05
_GONE: Final = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@mypyc_attr(allow_interpreted_subclasses=True)
class Acceptor(ServerPort):
    """Watches listeners and turns what they accept into connections."""

    def watch_listener(self, listener: Any) -> None:
        """Accept from ``listener`` when it is readable (once: each accept watches again)."""
        gsock = listener.gsock
        if self.draining or gsock is None or gsock.fd < 0:
            return
        self.hub.watch_readable(gsock.fd, lambda: self._accept(listener))

    def _accept(self, listener: Any) -> None:
        sock = listener.sock
        family, kind, proto = listener.socket_args
        for n in range(ACCEPT_BATCH):
            if len(self.connections) >= self.max_connections:
                self.paused.append(listener)
                return
            try:
                # The C accept, then a socket object made from the listener's known family
                # and socket type (socket.accept() would turn both into enums each time).
                fd, peer = _c_accept(sock)
                client = _Socket(family, kind, proto, fd)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _GONE:
                    self.stats.accept_errors += 1
                    log.warning("cannot accept connections (%s); backing off", exc.strerror)
                    self.hub.call_later(_ACCEPT_BACKOFF, self.watch_listener, listener)
                    return
                continue  # ECONNABORTED and friends: that client is gone, take the next
            self._adopt(client, peer, listener, n < SERVE_AT_ONCE)
        self.watch_listener(listener)

    def _adopt(self, client: socket.socket, peer: Any, listener: Any, serve: bool) -> None:
        if listener.tcp and not NODELAY_INHERITED:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        remote: Any = None
        if isinstance(peer, tuple):
            host: str = peer[0]
            if host.startswith("::ffff:") and "." in host:
                # IPv4 on a dual-stack [::] listener: the mapped address (RFC 4291 2.5.5.2),
                # which the C library (inet_ntop) writes ::ffff:a.b.c.d on every Python, is
                # reported as a.b.c.d, as addresses.client_address writes one a proxy names.
                host = host[7:]
            remote = (host, str(peer[1]))
        conn: Connection = listener.make_connection(self, client, listener.environ, remote)
        self.connections[conn] = None
        self.stats.connections_total += 1
        if self.metrics is not None:
            self.metrics.connection_opened()
        conn.deadline = conn.started + self.header_timeout
        if serve:
            conn.start()
        else:
            conn.watch()

    def resume_accepting(self) -> None:
        paused, self.paused = self.paused, []
        for listener in paused:
            self.watch_listener(listener)
