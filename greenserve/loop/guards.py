"""Per-request guards of a connection: the request deadline and the client-gone probe.

Strategy:
- The deadline (``request_timeout``) is one hub timer per request, armed only when the option is
  on. At expiry it raises RequestTimedOut in the request's greenlet, at the point where it waits;
  RequestTimedOut is a Cancelled (a BaseException), so an app's ``except Exception`` does not
  swallow it. The handler then answers 504, or closes the connection if the response started.
- Whether the client is gone is asked with a peek (MSG_PEEK): it consumes nothing, so a pipelined
  request or an unread body stays where it is, and it never waits, so it cannot conflict with a
  greenlet reading ``wsgi.input`` on the same fd. The handler asks only when it matters: when the
  app calls ``environ['greenserve.client_disconnected']()``, and before sending a streamed piece
  the app had to wait for. The common path (one-piece bodies) never asks.
"""

from __future__ import annotations

import socket

from ..errors import RequestTimedOut
from .hub import Hub
from .timers import Timer


def arm_deadline(hub: Hub, seconds: float) -> Timer:
    """From the request's greenlet: after ``seconds``, raise RequestTimedOut in it where it
    waits. Returns the timer; cancel it when the request is done."""
    exc = RequestTimedOut(f"the request took longer than request_timeout ({seconds} s)")
    return hub.call_later(seconds, hub.throw_into, hub.current(), exc)


def peer_gone(sock: socket.socket, pipelined: bool) -> bool:
    """Return True if the peer reset the connection, or closed it with nothing left to read.
    ``sock`` must be non-blocking. A close behind unread bytes cannot be seen until they are
    read. End of stream behind a pipelined request (``pipelined``) is a client that half-closed
    after sending its requests and still reads the answers, so it does not count."""
    try:
        # The kernel socket's own recv: a TLS socket refuses flags, and the question is about
        # TCP. (So a TLS client that sends close_notify before leaving reads as still there.)
        data = socket.SocketType.recv(sock, 1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:  # ECONNRESET, EPIPE, ENOTCONN: the connection is gone
        return True
    return not data and not pipelined
