"""The exception hierarchy of greenserve.

Strategy: every error the server raises on purpose derives from GreenserveError, so callers can
catch the family; protocol errors carry the HTTP status that answers them. Cancellation is a
BaseException so that an app's ``except Exception`` cannot swallow it by accident.
"""

from __future__ import annotations


class GreenserveError(Exception):
    """Base class of every error greenserve raises on purpose."""


class ConfigError(GreenserveError):
    """A configuration value is invalid. ``option`` names the option as the user spelled it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


class AppImportError(GreenserveError):
    """The WSGI application named on the command line cannot be imported or found."""


class BusyResourceError(GreenserveError):
    """A second greenlet tried to wait on a file descriptor in a direction already waited on."""


class ClosedResourceError(GreenserveError, OSError):
    """The file descriptor was closed while a greenlet waited on it."""


class ClientError(GreenserveError, OSError):
    """The client's side of the exchange failed: a malformed or timed-out request body, or a
    response the client stopped taking. Raised from wsgi.input and write() into the app."""


class ClientDisconnected(ClientError):
    """The client went away (closed or reset the connection) mid-request."""


class ProtocolError(GreenserveError):
    """An HTTP/1.1 protocol violation. ``status_hint`` is the status code that answers it."""

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint


class RemoteProtocolError(ProtocolError):
    """The client broke the protocol: answer with ``status_hint`` and close the connection."""


class LocalProtocolError(ProtocolError):
    """The application asked for something illegal: 500, or abort if the head is already sent."""


class Cancelled(BaseException):
    """Thrown into a greenlet by the hub to cancel it (graceful-stop deadline, request timeout)."""


class RequestTimedOut(Cancelled):
    """Thrown into a request's greenlet when it outlives ``request_timeout``: 504, or the
    connection is closed if the response had started."""


class TaskKilled(GreenserveError):
    """Raised by ``join()`` of a task that was killed before it finished."""


class WebSocketError(GreenserveError):
    """A WebSocket could not be used as asked (accepted twice, a subprotocol the client did
    not offer, called from outside its server's hub)."""


class HandshakeError(WebSocketError):
    """The request is not a valid WebSocket opening handshake (RFC 6455 4.2.1), or its Origin
    is not allowed: the server has answered it with ``status`` (400, 403 or 426) and the
    connection closes; whatever the app returns afterwards is not sent."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class WebSocketClosed(WebSocketError, ConnectionError):
    """A message was sent on a WebSocket that is closed (or closing). ``code`` is the close
    code (1006: the connection was lost without a close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"the WebSocket is closed (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason
