"""WebSockets for WSGI apps (RFC 6455), served on the connection's own greenlet.

    import greenserve.websocket

    def app(environ, start_response):
        ws = greenserve.websocket.accept(environ)          # 101; the connection is the app's
        for message in ws:                                 # str or bytes, until closed
            ws.send(message)
        return []                                          # nothing more is sent

``accept(environ, subprotocol=None)`` answers the handshake (a bad one gets 400, 403 or 426 and
raises ``HandshakeError``); the ``WebSocket`` has ``receive(timeout=None)``, ``send``, ``ping``,
``close(code=1000, reason="")``, ``closed`` and iteration. ``environ["wsgi.websocket"]`` is
gevent-websocket's interface on the same request; ``environ["gunicorn.socket"]`` is the raw
socket simple-websocket (flask-sock, Flask-SocketIO) takes, which needs ``--patch``.
"""

from .errors import HandshakeError, WebSocketClosed, WebSocketError
from .http.websocket import accept, offered_subprotocols, wants_websocket
from .http.wsio import WebSocket

__all__ = ["accept", "WebSocket", "WebSocketError", "HandshakeError", "WebSocketClosed",
           "offered_subprotocols", "wants_websocket"]
