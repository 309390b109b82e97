"""Sans-I/O HTTP/1.1, server side: bytes in, events out; response parts in, bytes out.

This package imports nothing that does I/O or keeps time; the handler drives it.
"""

from ...errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._readers import Limits
from ._writers import AppHead, check_app_headers
from .connection import H1Connection, RequestState, ResponseState
from .events import (
    NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage, Headers, Request, Signal,
)

__all__ = [
    "H1Connection", "Limits", "RequestState", "ResponseState", "ProtocolError",
    "RemoteProtocolError", "LocalProtocolError", "Request", "Data", "EndOfMessage",
    "ConnectionClosed", "Signal", "NEED_DATA", "PAUSED", "Headers", "AppHead",
    "check_app_headers",
]
