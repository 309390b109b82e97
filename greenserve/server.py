"""Server: listeners, the accept path, idle connections, graceful stop and statistics.

Strategy:
- Accepting is a hub callback, not a greenlet: when a listener is readable the hub accepts up to
  ``ACCEPT_BATCH`` connections and watches each for its first byte. At ``max_connections`` the
  listener is simply not watched until a connection closes; on EMFILE/ENFILE accepting backs off.
- Idle connections (new, or kept alive between requests) live in two insertion-ordered dicts,
  one per timeout, so the oldest is always first: a periodic sweep closes expired ones in O(1)
  per connection, with no timer per request.
- ``stop(grace)`` may be called from any thread: it closes the listeners, closes idle
  connections, lets in-flight requests finish (their responses say ``Connection: close``) until
  ``grace`` runs out, then cancels what is left.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import patch
from ._version import __version__
from .addresses import BindAddress, parse_bind
from .config import Config
from .errors import ConfigError
from .gsocket import GreenSocket
from .h1 import Limits, Request
from .handler import Connection, DateCache
from .hub import Hub
from .watchdog import Watchdog
from .wsgi import base_environ

log = logging.getLogger("greenserve.error")
access_log = logging.getLogger("greenserve.access")
ACCEPT_BATCH = 64
_ACCEPT_BACKOFF = (0.05, 1.0)
SOFTWARE = f"greenserve/{__version__}"


class Listener:
    """A bound, listening socket and the environ keys its connections share."""

    def __init__(self, sock: socket.socket, address: BindAddress) -> None:
        self.sock = sock
        self.address = address
        self.gsock: Optional[GreenSocket] = None
        self.environ: Dict[str, Any] = {}
        if sock.family == socket.AF_UNIX:
            self.server_name, self.server_port = "localhost", "80"
        else:
            host, port = sock.getsockname()[:2]
            self.server_name, self.server_port = host, str(port)

    @property
    def url(self) -> str:
        if self.address.kind == "unix":
            return "unix:" + self.address.host
        host = self.server_name
        return f"http://[{host}]:{self.server_port}" if ":" in host else f"http://{host}:{self.server_port}"


def bind_listener(address: BindAddress, backlog: int) -> Listener:
    """Create, bind and listen. Raises ConfigError naming the address on failure."""
    try:
        if address.kind == "unix":
            sock = _bind_unix(address.host)
        else:
            infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
            except BaseException:
                sock.close()
                raise
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        raise ConfigError("bind", f"cannot listen on {address}: {exc.strerror or exc}") from None
    return Listener(sock, address)


def _bind_unix(path: str) -> socket.socket:
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
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
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    return sock


class Stats:
    """Counters for ``Server.statistics()``."""

    __slots__ = ("connections_total", "requests_total", "in_flight", "by_class", "protocol_errors",
                 "accept_errors")

    def __init__(self) -> None:
        self.connections_total = 0
        self.requests_total = 0
        self.in_flight = 0
        self.by_class = [0] * 6
        self.protocol_errors = 0
        self.accept_errors = 0


class Server:
    """A WSGI server on one hub. ``start()`` binds; ``serve_forever()`` runs; ``stop()`` ends."""

    def __init__(self, app: Callable[..., Any], config: Optional[Config] = None, **options: Any) -> None:
        if config is None:
            config = Config.with_options(options)
        elif options:
            config = Config.with_options({**_as_dict(config), **options})
        self.app = app
        self.config = config
        self.limits = Limits(config.max_request_line, config.max_header_bytes,
                             config.max_header_count, config.max_body_size)
        self.hub = Hub()
        self.dates = DateCache(b"Server: greenserve\r\n")
        self.listeners: List[Listener] = []
        self.connections: Dict[Connection, None] = {}
        self.draining = False
        self.stats = Stats()
        self._idle_new: Dict[Connection, float] = {}
        self._idle_kept: Dict[Connection, float] = {}
        self._paused: List[Listener] = []
        self._started = False
        self._serving = threading.Event()
        self._stopped = threading.Event()
        self._thread: Optional[int] = None
        self._access = _AccessLog(config.access_log)
        self.watchdog = (Watchdog(self.hub, config.block_threshold)
                         if config.block_threshold else None)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, sockets: Optional[List[socket.socket]] = None) -> None:
        """Bind every listener (or adopt ``sockets``). After it, ``addresses`` is known."""
        if self._started:
            return
        if self.config.patch:
            patch.apply()  # late for names the app bound at import; the CLI applies it first
        try:
            if sockets is not None:
                for sock in sockets:
                    sock.setblocking(False)
                    self.listeners.append(Listener(sock, _address_of(sock)))
            else:
                for text in self.config.bind:
                    self.listeners.append(bind_listener(parse_bind(text), self.config.backlog))
        except BaseException:
            for listener in self.listeners:
                listener.sock.close()
            self.listeners = []
            raise
        self._started = True

    @property
    def addresses(self) -> List[Any]:
        """The bound addresses: (host, port) tuples, or paths for unix sockets."""
        return [listener.sock.getsockname() for listener in self.listeners]

    @property
    def urls(self) -> List[str]:
        return [listener.url for listener in self.listeners]

    def serve_forever(self) -> None:
        """Serve until ``stop()``. Blocks the calling thread; its hub lives in this thread."""
        self.start()
        self._thread = threading.get_ident()
        hub = self.hub
        for listener in self.listeners:
            listener.gsock = GreenSocket(listener.sock, hub)
            listener.environ = self._listener_environ(listener)
            hub.call_soon(self._watch_listener, listener)
        hub.call_soon(self._serving.set)
        hub.call_soon(self._schedule_sweep)
        if self.watchdog is not None:
            hub.call_soon(self.watchdog.start)
        try:
            hub.run()
        finally:
            if self.watchdog is not None:
                self.watchdog.stop()
            self._close_everything()
            self._stopped.set()

    def wait_serving(self, timeout: Optional[float] = None) -> bool:
        """Block until the server accepts connections. Returns False on timeout."""
        return self._serving.wait(timeout)

    def stop(self, grace: Optional[float] = None) -> None:
        """Stop gracefully; safe from any thread. From another thread, returns once stopped.
        ``grace`` defaults to the graceful_timeout option."""
        grace = self.config.graceful_timeout if grace is None else grace
        if not self._started or self._stopped.is_set():
            return
        self.hub.call_soon_threadsafe(self._begin_stop, grace)
        if self._thread is not None and threading.get_ident() != self._thread:
            self._stopped.wait()

    def _begin_stop(self, grace: float) -> None:
        if self.draining:
            return
        self.draining = True
        for listener in self.listeners:
            self._close_listener(listener)
        for conn in list(self._idle_new) + list(self._idle_kept):
            conn.close_idle()
        self.hub.spawn(self._drain, self.hub.time() + grace)

    def _drain(self, deadline: float) -> None:
        hub = self.hub
        while self.connections and hub.time() < deadline:
            hub.sleep(min(0.01, max(0.0, deadline - hub.time())))
        for conn in list(self.connections):
            if conn.glet is not None and not conn.glet.dead:
                hub.kill(conn.glet)
            else:
                conn.close_idle()
        rounds = 0
        while self.connections and rounds < 100:
            hub.sleep(0.001)
            rounds += 1
        hub.stop()

    def _close_everything(self) -> None:
        for listener in self.listeners:
            self._close_listener(listener)
        for conn in list(self.connections):
            conn.gsock.sock.close()
        self.connections.clear()
        self.hub.close()

    def _close_listener(self, listener: Listener) -> None:
        if listener.gsock is not None:
            listener.gsock.close()
        else:
            listener.sock.close()
        if listener.address.kind == "unix":
            try:
                os.unlink(listener.address.host)
            except OSError:
                pass

    # -- accepting ----------------------------------------------------------------------------

    def _listener_environ(self, listener: Listener) -> Dict[str, Any]:
        env = base_environ(
            listener.server_name, listener.server_port, url_scheme=self.config.url_scheme,
            script_name=self.config.root_path.rstrip("/"), multiprocess=False, software=SOFTWARE,
        )
        env["greenserve.statistics"] = self.statistics  # for /stats pages and health checks
        env["greenserve.sleep"] = self.hub.sleep  # a cooperative sleep(seconds) for pure WSGI apps
        return env

    def _watch_listener(self, listener: Listener) -> None:
        if self.draining or listener.gsock is None or listener.gsock.fd < 0:
            return
        self.hub.watch_readable(listener.gsock.fd, lambda: self._accept(listener))

    def _accept(self, listener: Listener) -> None:
        sock = listener.sock
        for _ in range(ACCEPT_BATCH):
            if len(self.connections) >= self.config.max_connections:
                self._paused.append(listener)
                return
            try:
                client, peer = sock.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.stats.accept_errors += 1
                    log.warning("cannot accept connections (%s); backing off", exc.strerror)
                    self.hub.call_later(_ACCEPT_BACKOFF[0], self._watch_listener, listener)
                    return
                continue  # ECONNABORTED and friends: that client is gone, take the next
            self._adopt(client, peer, listener)
        self._watch_listener(listener)

    def _adopt(self, client: socket.socket, peer: Any, listener: Listener) -> None:
        if client.family != socket.AF_UNIX:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        remote = (peer[0], str(peer[1])) if isinstance(peer, tuple) else None
        conn = Connection(self, client, listener.environ, remote)
        self.connections[conn] = None
        self.stats.connections_total += 1
        conn.watch()
        self.idle_track(conn, kept=False)

    def connection_closed(self, conn: Connection) -> None:
        self.connections.pop(conn, None)
        self.idle_untrack(conn)
        if self._paused and len(self.connections) < self.config.max_connections:
            paused, self._paused = self._paused, []
            for listener in paused:
                self._watch_listener(listener)

    # -- idle connections ---------------------------------------------------------------------

    def idle_track(self, conn: Connection, *, kept: bool) -> None:
        if kept:
            self._idle_kept[conn] = self.hub.time() + self.config.keepalive_timeout
        else:
            self._idle_new[conn] = conn.started + self.config.header_timeout

    def idle_untrack(self, conn: Connection) -> None:
        self._idle_kept.pop(conn, None)
        self._idle_new.pop(conn, None)

    def _schedule_sweep(self) -> None:
        config = self.config
        interval = min(config.header_timeout, config.keepalive_timeout) / 10
        self.hub.call_later(min(1.0, max(0.01, interval)), self._sweep)

    def _sweep(self) -> None:
        now = self.hub.time()
        for table in (self._idle_new, self._idle_kept):
            expired = []
            for conn, deadline in table.items():
                if deadline > now:
                    break
                expired.append(conn)
            for conn in expired:
                conn.close_idle()
        self._schedule_sweep()

    # -- accounting ---------------------------------------------------------------------------

    def request_started(self) -> None:
        self.stats.requests_total += 1
        self.stats.in_flight += 1

    def request_finished(self, conn: Connection, request: Request, status: int) -> None:
        stats = self.stats
        stats.in_flight -= 1
        stats.by_class[status // 100 if 100 <= status < 600 else 0] += 1
        if self._access.enabled:
            self._access.write(conn, request, status)

    def protocol_error(self, status: int) -> None:
        self.stats.protocol_errors += 1
        self.stats.by_class[status // 100] += 1

    def statistics(self) -> Dict[str, Any]:
        """Counters since start: connections, requests, responses by status class."""
        s = self.stats
        return {
            "connections_total": s.connections_total,
            "connections_open": len(self.connections),
            "connections_idle": len(self._idle_new) + len(self._idle_kept),
            "requests_total": s.requests_total,
            "requests_in_flight": s.in_flight,
            "responses": {f"{i}xx": s.by_class[i] for i in range(1, 6)},
            "responses_aborted": s.by_class[0],
            "protocol_errors": s.protocol_errors,
            "accept_errors": s.accept_errors,
            "draining": self.draining,
            "blocked_loop_incidents": self.watchdog.incidents if self.watchdog else 0,
        }


class _AccessLog:
    """Apache combined log format, to stdout ('-') or a file, through the access logger."""

    def __init__(self, target: str) -> None:
        self.enabled = bool(target)
        if not self.enabled:
            return
        if not access_log.handlers:
            handler: logging.Handler = (
                logging.StreamHandler(sys.stdout) if target == "-" else logging.FileHandler(target)
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            access_log.addHandler(handler)
            access_log.setLevel(logging.INFO)
            access_log.propagate = False

    def write(self, conn: Connection, request: Request, status: int) -> None:
        headers = dict(request.headers)
        line = '%s - - [%s] "%s %s HTTP/%s" %s %s "%s" "%s"' % (
            conn.peer[0] if conn.peer else "-",
            time.strftime("%d/%b/%Y:%H:%M:%S %z"),
            _escape(request.method), _escape(request.target), request.http_version.decode(),
            status or "-", conn.body_sent or "-",
            _escape(headers.get(b"referer", b"-")), _escape(headers.get(b"user-agent", b"-")),
        )
        access_log.info(line)


def _escape(value: bytes) -> str:
    """Escape a request value for the log: quotes, backslashes and non-printables."""
    text = value.decode("latin-1")
    if text.isprintable() and '"' not in text and "\\" not in text and text.isascii():
        return text
    return "".join(
        c if " " <= c < "\x7f" and c not in '"\\' else "\\x%02x" % ord(c) for c in text
    )


def _address_of(sock: socket.socket) -> BindAddress:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return BindAddress("unix", name if isinstance(name, str) else name.decode(), 0)
    return BindAddress("tcp", name[0], name[1])


def _as_dict(config: Config) -> Dict[str, Any]:
    import dataclasses

    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def serve(app: Callable[..., Any], host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve ``app`` on host:port until interrupted (Ctrl-C stops gracefully). Blocks."""
    from .signals import install_stop_handlers

    if "bind" not in options:
        options["bind"] = (str(BindAddress("tcp", host, port)),)
    server = Server(app, **options)
    server.start()
    for url in server.urls:
        log.info("greenserve listening on %s", url)
    with install_stop_handlers(server):
        server.serve_forever()
