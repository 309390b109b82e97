"""Listening sockets: every ``--bind`` form, socket activation, and who removes a unix path.

Strategy:
- Sockets are opened once, by whoever runs the server (the supervisor before it forks, or the
  process itself), and handed to ``Server.start(sockets=...)``. Whoever opened a unix socket
  removes its path at the end, and only if the path still names that very socket (a newer
  server may have replaced it meanwhile).
- ``[::]`` is bound dual-stack (IPV6_V6ONLY off): IPv4 clients arrive as ``::ffff:a.b.c.d``.
- A unix path that exists is replaced only if it is a socket nobody listens on (a stale one
  left by a crash); a live socket or any other file is an error.
- With ``reuse_port`` under the supervisor, the parent binds each TCP address with SO_REUSEPORT
  but does not listen on it (it never accepts): it holds the port, and each worker opens its own
  listener on the same address, so the kernel spreads new connections over the workers.
- Socket activation (``LISTEN_FDS``) replaces ``--bind``; ``fd://N`` adopts one descriptor. Both
  belong to whoever passed them: their paths are never removed.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import List, MutableMapping, Optional, Tuple

from ..config.addresses import BindAddress, parse_bind
from ..config.options import Config
from ..errors import ConfigError
from .systemd import listen_fds


class OwnedPath:
    """A unix socket path this process created, and the identity of the file it made."""

    def __init__(self, path: str) -> None:
        self.path = path
        info = os.stat(path)
        self.identity = (info.st_dev, info.st_ino)

    def remove(self) -> None:
        """Unlink the path if it is still our socket. Never raises."""
        try:
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self.identity and stat.S_ISSOCK(info.st_mode):
                os.unlink(self.path)
        except OSError:
            pass


class BoundSockets:
    """The listening sockets of one run, and the unix paths to remove when it ends."""

    def __init__(self) -> None:
        self.sockets: List[socket.socket] = []  # --bind (or socket activation)
        self.proxy_sockets: List[socket.socket] = []  # --proxy-protocol-bind
        self.owned: List[OwnedPath] = []
        self.activated = False  # from systemd socket activation
        self.listening: List[bool] = []  # per socket: False if bound for SO_REUSEPORT only

    def add(self, sock: socket.socket, owned: Optional[OwnedPath], listening: bool,
            proxy: bool = False) -> None:
        if proxy:
            self.proxy_sockets.append(sock)
        else:
            self.sockets.append(sock)
            self.listening.append(listening)
        if owned is not None:
            self.owned.append(owned)

    def close(self, *, remove_paths: bool = True) -> None:
        """Close every socket (in this process); remove owned unix paths unless told not to
        (a supervisor closes its copies at the start of a stop, and the paths at its end)."""
        for sock in self.sockets + self.proxy_sockets:
            sock.close()
        if remove_paths:
            for owned in self.owned:
                owned.remove()


def open_listeners(config: Config, environ: Optional[MutableMapping[str, str]] = None
                   ) -> BoundSockets:
    """Open the listeners ``config`` asks for (``bind``, ``proxy_protocol_bind``); with
    ``environ``, socket activation found there takes the place of ``bind``. Raises ConfigError
    naming ``bind`` (or LISTEN_FDS)."""
    bound = BoundSockets()
    try:
        fds = listen_fds(environ) if environ is not None else []
        bound.activated = bool(fds)
        for fd in fds:
            bound.add(_adopt_fd(fd, config.backlog, f"LISTEN_FDS (fd {fd})"), None, True)
        hold_only = config.reuse_port and config.prefork
        for text in () if fds else config.bind:
            bound.add(*bind_address(parse_bind(text), config, hold_only))
        for text in config.proxy_protocol_bind:
            sock, owned, _ = bind_address(parse_bind(text), config)
            bound.add(sock, owned, True, proxy=True)
    except BaseException:
        bound.close()
        raise
    return bound


def bind_address(address: BindAddress, config: Config, hold_only: bool = False
                 ) -> Tuple[socket.socket, Optional[OwnedPath], bool]:
    """Open one listener: (socket, the unix path to remove later or None, whether it listens).
    With ``hold_only``, a TCP socket is bound with SO_REUSEPORT but not listening. Raises
    ConfigError naming the address."""
    if address.kind == "fd":
        return _adopt_fd(address.port, config.backlog, str(address)), None, True
    try:
        if address.kind == "unix":
            sock = _bind_unix(address.host, config.umask)
            owned: Optional[OwnedPath] = OwnedPath(address.host)
        else:
            sock = _bind_tcp(address, config.reuse_port)
            owned = None
        if address.kind == "unix" or not hold_only:
            sock.listen(config.backlog)
        sock.setblocking(False)
    except OSError as exc:
        raise ConfigError("bind", f"cannot listen on {address}: {exc.strerror or exc}") from None
    return sock, owned, address.kind == "unix" or not hold_only


def reuse_port_listener(held: socket.socket, backlog: int) -> socket.socket:
    """In a worker: a listener of its own on the address ``held`` is bound to (SO_REUSEPORT).
    Raises OSError."""
    sock = socket.socket(held.family, socket.SOCK_STREAM)
    try:
        _reuse(sock, port=True)
        if held.family == socket.AF_INET6:
            v6only = held.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        sock.bind(held.getsockname())
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _reuse(sock: socket.socket, port: bool) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def _bind_tcp(address: BindAddress, reuse_port: bool) -> socket.socket:
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        _reuse(sock, reuse_port)
        if family == socket.AF_INET6 and address.host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual-stack
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_unix(path: str, umask: int) -> socket.socket:
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # stale: nobody listens on it
        else:
            raise OSError(errno.EADDRINUSE, "address already in use")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(umask)  # bind(2) creates the file with the process umask applied
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(previous)
    return sock


def _adopt_fd(fd: int, backlog: int, name: str) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError("bind", f"{name}: not a usable socket: {exc.strerror or exc}") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ConfigError("bind", f"{name}: not a stream socket")
    try:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.detach()
        raise ConfigError("bind", f"{name}: cannot listen: {exc.strerror or exc}") from None
    return sock


def socket_url(sock: socket.socket, scheme: str = "http") -> str:
    """How a listener is shown: http://HOST:PORT, http://[IPV6]:PORT or unix:PATH."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        path = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        return "unix:" + (path.replace("\0", "@", 1) if path.startswith("\0") else path)
    host, port = name[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
