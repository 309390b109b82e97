"""The WebSocket upgrade (RFC 6455 4.2): checking the opening handshake, answering it with 101
(or refusing it), and handing the connection over to a ``wsio.WebSocket``.

Strategy:
- An upgrade request reaches the app as a normal WSGI request. The connection puts an
  ``Upgrade`` in its environ (``greenserve.websocket``); the app accepts with
  ``greenserve.websocket.accept(environ)``, or through gevent-websocket's
  ``environ["wsgi.websocket"]`` (accepted on first use), or takes the raw socket under
  ``gunicorn.socket`` (rawsock.py: what simple-websocket, hence flask-sock and Flask-SocketIO,
  look for). Whichever way, the connection is then *taken*: the server writes nothing after
  the 101 (or after the refusal the handshake got), ignores what the app returns, and closes
  the connection when the app is done.
- The 101 is written here, not by the HTTP/1.1 writer: that writer refuses ``Upgrade`` as an
  app header (a hop-by-hop field), and stays so. Every value of the 101 head is made here from
  checked inputs: the accept token, a subprotocol the client offered (a token), the deflate
  parameters wsproto agreed.
- A bad handshake is answered by ``accept``: 400 (426 with ``Sec-WebSocket-Version: 13`` for a
  version other than 13, RFC 6455 4.2.2), 403 for an Origin not in ``websocket_origins``, 503
  while the server drains; then
  ``HandshakeError`` is raised into the app, and the connection closes after it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from ..errors import Cancelled, HandshakeError, WebSocketError
from ..loop.gsocket import GreenSocket
from .port import ServerPort
from .rawsock import RawSocket
from .wsio import GOING_AWAY, INTERNAL, NORMAL, Settings, WebSocket

log = logging.getLogger("greenserve.error")

ENVIRON_KEY = "greenserve.websocket"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REASONS = {400: b"Bad Request", 403: b"Forbidden", 426: b"Upgrade Required",
            503: b"Service Unavailable"}


class UpgradeHost(Protocol):
    """What an upgrade needs of its connection."""

    server: ServerPort
    gsock: GreenSocket

    def take_connection(self) -> bytes:
        """The connection is taken from HTTP: stop the request's deadline; returns the bytes
        the client sent after the request head (already WebSocket frames). Never switches."""


def _tokens(value: str) -> List[str]:
    return [item.strip().lower() for item in value.split(",") if item.strip()]


def wants_websocket(environ: Dict[str, Any]) -> bool:
    """Whether the request asks to upgrade to a WebSocket (``Upgrade: websocket``)."""
    return "websocket" in _tokens(environ.get("HTTP_UPGRADE", ""))


def handshake_problem(environ: Dict[str, Any]) -> Optional[Tuple[int, str]]:
    """What is wrong with the opening handshake (RFC 6455 4.2.1), as (status, message);
    None if it is valid."""
    if environ.get("REQUEST_METHOD") != "GET":
        return 400, "a WebSocket handshake must be a GET"
    if environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        return 400, "a WebSocket handshake needs HTTP/1.1"
    if not wants_websocket(environ):
        return 400, "no 'Upgrade: websocket'"
    if "upgrade" not in _tokens(environ.get("HTTP_CONNECTION", "")):
        return 400, "no 'Connection: Upgrade'"
    if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ:
        return 400, "a WebSocket handshake has no body"
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        return 426, "Sec-WebSocket-Version must be 13"
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        if len(base64.b64decode(key.encode("ascii"), validate=True)) != 16:
            raise ValueError(key)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        return 400, "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


def origin_allowed(environ: Dict[str, Any], allowed: Tuple[str, ...]) -> bool:
    """Whether the request's Origin may open a WebSocket (any, when ``allowed`` is empty; a
    request without Origin is not from a browser and passes)."""
    origin = environ.get("HTTP_ORIGIN")
    if not allowed or origin is None:
        return True
    return origin.strip().rstrip("/").lower() in {a.rstrip("/").lower() for a in allowed}


def offered_subprotocols(environ: Dict[str, Any]) -> List[str]:
    """The subprotocols the client offers (Sec-WebSocket-Protocol), in its order."""
    return [p.strip() for p in environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "").split(",")
            if p.strip()]


class Upgrade:
    """A request that asks for a WebSocket (``environ["greenserve.websocket"]``). ``taken``:
    the connection no longer speaks HTTP; ``status``: what the handshake was answered
    with (101, or the refusal), for the access log."""

    __slots__ = ("host", "environ", "taken", "status", "websocket", "raw", "closer")

    def __init__(self, host: UpgradeHost, environ: Dict[str, Any]) -> None:
        self.host = host
        self.environ = environ
        self.taken = False
        self.status = 0
        self.websocket: Optional[WebSocket] = None
        self.raw: Any = None  # rawsock.RawSocket, once the app used it
        self.closer: Optional[Callable[[], None]] = None  # how the server ends a raw session

    @property
    def subprotocols(self) -> List[str]:
        return offered_subprotocols(self.environ)

    def accept(self, subprotocol: Optional[str] = None) -> WebSocket:
        """Answer the handshake with 101 and return the WebSocket. May switch. Raises
        HandshakeError (the refusal has been sent), WebSocketError (accepted already, or a
        subprotocol the client did not offer)."""
        if self.taken:
            raise WebSocketError("this request's connection is already taken")
        server = self.host.server
        problem = handshake_problem(self.environ)
        if problem is None and not origin_allowed(self.environ, server.config.websocket_origins):
            problem = 403, "Origin not allowed"
        if problem is None and server.draining:  # it would be closed with 1001 at once
            problem = 503, "the server is shutting down"
        if problem is not None:
            self._refuse(*problem)
        if subprotocol is not None and (subprotocol not in self.subprotocols
                                        or not _TOKEN.fullmatch(subprotocol)):
            raise WebSocketError(f"the client did not offer the subprotocol {subprotocol!r}")
        return self._switch(subprotocol)

    def _switch(self, subprotocol: Optional[str]) -> WebSocket:
        from wsproto.connection import Connection as Framer, ConnectionType
        from wsproto.extensions import PerMessageDeflate
        from wsproto.handshake import server_extensions_handshake
        from wsproto.utilities import generate_accept_token

        server = self.host.server
        key = self.environ["HTTP_SEC_WEBSOCKET_KEY"].strip().encode("ascii")
        lines = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket",
                 b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + generate_accept_token(key)]
        if subprotocol is not None:
            lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii"))
        extensions: List[Any] = []
        offers = self.environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", "")
        if server.config.websocket_deflate and offers:
            deflate = PerMessageDeflate()
            agreed = server_extensions_handshake([o.strip() for o in offers.split(",")],
                                                 [deflate])
            if agreed is not None:
                extensions.append(deflate)
                lines.append(b"Sec-WebSocket-Extensions: " + agreed)
        head = b"\r\n".join(lines) + b"\r\n" + server.dates.lines + b"\r\n"
        trailing = self._take(101)
        config = server.config
        settings = Settings(config.websocket_max_message, config.websocket_ping_interval,
                            config.websocket_close_timeout, config.send_timeout)
        ws = WebSocket(self.host.gsock, Framer(ConnectionType.SERVER, extensions), settings,
                       server, subprotocol)
        self.websocket = ws
        server.websocket_opened(ws)
        try:
            self.host.gsock.sendall(head, config.send_timeout)
        except OSError:
            ws.abort()
            return ws
        if trailing:  # frames the client sent right behind its handshake
            ws.framer.receive_data(trailing)
            ws._handle_events()
        return ws

    def _use_raw(self, raw: RawSocket, status: int) -> None:
        """The app's library took the raw socket (rawsock.py); ``status``: that of the first
        bytes it sent (0: unknown, counted as 101). Never switches."""
        if self.taken:
            return
        self.raw = raw
        self._take(status or 101)
        if self.status == 101:
            self.host.server.websocket_opened(raw)

    def _take(self, status: int) -> bytes:
        self.taken = True
        self.status = status
        return self.host.take_connection()

    def _refuse(self, status: int, message: str) -> None:
        """Answer a bad handshake and raise HandshakeError. May switch."""
        body = f"{status} {message}\n".encode()
        extra = b"Sec-WebSocket-Version: 13\r\n" if status == 426 else b""
        head = (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n%s"
                % (status, _REASONS[status], len(body), extra))
        self._take(status)
        try:
            self.host.gsock.sendall(head + self.host.server.dates.lines + b"\r\n" + body,
                                    self.host.server.config.send_timeout)
        except OSError:
            pass
        raise HandshakeError(message, status)


def accept(environ: Dict[str, Any], subprotocol: Optional[str] = None) -> WebSocket:
    """Accept the WebSocket this request asks for; see ``Upgrade.accept``. May switch.
    Raises HandshakeError (a bad handshake, answered already), WebSocketError (not an upgrade
    request, or not served by greenserve)."""
    upgrade = environ.get(ENVIRON_KEY)
    if not isinstance(upgrade, Upgrade):
        raise WebSocketError("not a WebSocket upgrade request served by greenserve")
    return upgrade.accept(subprotocol)


class GeventWebSocket:
    """``environ["wsgi.websocket"]``, gevent-websocket's interface, set on requests with a valid
    handshake. Accepted lazily, on first use: an app that never touches it (one that answers
    403, say) still answers in plain HTTP."""

    __slots__ = ("upgrade", "_ws")

    def __init__(self, upgrade: Upgrade) -> None:
        self.upgrade = upgrade
        self._ws: Optional[WebSocket] = None

    def _socket(self) -> WebSocket:
        if self._ws is None:
            upgrade = self.upgrade
            self._ws = upgrade.websocket if upgrade.websocket is not None else upgrade.accept()
        return self._ws

    @property
    def closed(self) -> bool:
        return self._ws is not None and self._ws.closed

    @property
    def protocol(self) -> Optional[str]:
        return self._socket().subprotocol

    def receive(self) -> Optional[Any]:
        """The next message (str or bytes); None once closed. May switch."""
        return self._socket().receive()

    def send(self, message: Any, binary: Optional[bool] = None) -> None:
        """Send ``message``; ``binary`` True sends str as UTF-8 bytes, False sends bytes as
        text. May switch. Raises WebSocketClosed."""
        if binary and isinstance(message, str):
            message = message.encode("utf-8")
        elif binary is False and not isinstance(message, str):
            message = bytes(message).decode("utf-8")
        self._socket().send(message)

    def close(self, code: int = 1000, message: Any = b"") -> None:
        """Close with ``code`` and ``message`` (str or bytes). May switch."""
        reason = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        self._socket().close(code, reason or "")


def offer_upgrade(host: UpgradeHost, environ: Dict[str, Any]) -> Optional[Upgrade]:
    """For a request that asks for a WebSocket: its ``Upgrade``, put in the environ with the
    ways to accept it (gevent-websocket's ``wsgi.websocket`` and the raw ``gunicorn.socket``,
    both only for a valid handshake, the raw one only from an allowed Origin). None for any
    other request. Never switches."""
    if not wants_websocket(environ):
        return None
    upgrade = Upgrade(host, environ)
    environ[ENVIRON_KEY] = upgrade
    if handshake_problem(environ) is None:
        environ["wsgi.websocket"] = GeventWebSocket(upgrade)
        if (type(host.gsock) is GreenSocket  # the raw TCP socket: not over TLS
                and origin_allowed(environ, host.server.config.websocket_origins)):
            raw = RawSocket(host.gsock.sock, host.server.hub)
            raw.on_first_use = lambda status: upgrade._use_raw(raw, status)
            environ["gunicorn.socket"] = raw
    return upgrade


def end_session(upgrade: Upgrade, exc: Optional[BaseException]) -> None:
    """The app has returned (or raised ``exc``) from a request whose connection it took:
    close the WebSocket if the app left it open (1000, or 1011 after an error), or wait for
    the raw socket's library to finish, within ``websocket_close_timeout``. After a server
    stop's cancellation, nothing is waited for. May switch."""
    if exc is not None and not isinstance(exc, (StopIteration, WebSocketError, Cancelled,
                                                ConnectionError)):
        log.error("error in the WSGI app during a WebSocket session", exc_info=exc)
    server = upgrade.host.server
    ws = upgrade.websocket
    if ws is not None:
        if isinstance(exc, Cancelled):
            ws.abort(GOING_AWAY)
        elif not ws.closed:
            ws.close(NORMAL if exc is None or isinstance(exc, StopIteration) else INTERNAL)
    raw = upgrade.raw
    if raw is not None:
        if not isinstance(exc, Cancelled) and raw.done is not None:
            raw.done.wait(server.config.websocket_close_timeout)
        raw.kill()
        if upgrade.status == 101:
            server.websocket_closed(raw)


def close_going_away(session: Any) -> None:
    """Server stop: close one open session with 1001 (a raw socket's library gets the close
    frame and its client's answer). Runs in a greenlet of its own. May switch."""
    if isinstance(session, WebSocket):
        session.close(GOING_AWAY, "server shutting down")
    else:
        session.going_away()
