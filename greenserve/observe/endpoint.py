"""The metrics endpoint: ``GET /metrics`` over HTTP/1.1, served by one thread with a selector.

Strategy:
- Scrapers send one small GET and read a few kilobytes. One thread serves every connection
  with non-blocking sockets and a ``selectors`` poll (no hub: it also runs in a supervisor's
  parent, which has none), so a slow or silent client costs a buffer, never a thread.
- Every limit is named: at most ``MAX_CLIENTS`` connections (at the limit the oldest one is
  dropped for the newcomer: a scrape takes milliseconds, so the client that holds on is the
  one to go), ``REQUEST_BYTES`` of request head, ``DEADLINE`` seconds for the whole exchange
  from accept to the last byte of the answer, and a listen backlog of ``BACKLOG``.
- Each connection gets one answer, with ``Connection: close`` (RFC 9112 9.6), then is closed.
  The body is rendered once the request head is complete.
- The poll selector keeps no descriptor of its own, so a process forked while the thread runs
  inherits only sockets, which ``close_in_child`` closes.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from email.utils import formatdate
from typing import Callable, Dict, List, Optional, Tuple

from ..config.addresses import BindAddress
from ..errors import ConfigError

log = logging.getLogger("greenserve.error")
MAX_CLIENTS = 64
REQUEST_BYTES = 8192
DEADLINE = 5.0
BACKLOG = 128
POLL = 0.1  # seconds between looks at the stop flag and the deadlines
_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error"}


class _Client:
    """One connection: the request head read so far, then the answer left to send."""

    __slots__ = ("sock", "deadline", "received", "answer")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.received = bytearray()
        self.answer: Optional[memoryview] = None


class MetricsEndpoint:
    """An HTTP endpoint serving ``render()`` at /metrics from a thread of its own (see the
    module docstring). Raises ConfigError naming metrics_bind if it cannot listen."""

    def __init__(self, render: Callable[[], str], address: BindAddress) -> None:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address.host, address.port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError("metrics_bind", f"cannot listen on {address}: "
                              f"{exc.strerror or exc}") from None
        host, port = sock.getsockname()[:2]
        self.address: Tuple[str, int] = (str(host), int(port))
        self._render = render
        self._sock = sock
        self._clients: Dict[int, _Client] = {}  # by fd, oldest first
        self._selector: Optional[selectors.BaseSelector] = None
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"

    def start(self) -> None:
        """Serve in a daemon thread until ``close()``."""
        self._thread = threading.Thread(target=self._serve, name="greenserve-metrics",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving (within POLL seconds), close every connection and the listener."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sock.close()

    def close_in_child(self) -> None:
        """In a process forked after ``start()``: close this process's copies of the sockets;
        the serving thread is the parent's and goes on there."""
        for client in list(self._clients.values()):
            client.sock.close()
        self._sock.close()

    # -- the serving thread -------------------------------------------------------------------

    def _serve(self) -> None:
        selector = self._selector = _poll_selector()
        selector.register(self._sock, selectors.EVENT_READ, None)
        try:
            while not self._stopping.is_set():
                for key, _ in selector.select(POLL):
                    if key.data is None:
                        self._accept()
                    else:
                        self._step(key.data)
                self._expire(time.monotonic())
        finally:
            for client in list(self._clients.values()):
                self._drop(client)
            selector.close()

    def _accept(self) -> None:
        for _ in range(MAX_CLIENTS):
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ECONNABORTED...: the backlog keeps the rest
                log.debug("metrics endpoint: accept failed: %s", exc)
                return
            if len(self._clients) >= MAX_CLIENTS:
                self._drop(next(iter(self._clients.values())))
            sock.setblocking(False)
            client = _Client(sock, time.monotonic() + DEADLINE)
            self._clients[sock.fileno()] = client
            assert self._selector is not None
            self._selector.register(sock, selectors.EVENT_READ, client)

    def _step(self, client: _Client) -> None:
        """Read more of the request, or send more of the answer; never waits."""
        try:
            if client.answer is None:
                self._receive(client)
            else:
                client.answer = client.answer[client.sock.send(client.answer):]
                if not client.answer:
                    self._drop(client)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(client)

    def _receive(self, client: _Client) -> None:
        data = client.sock.recv(4096)
        if not data:
            self._drop(client)
            return
        client.received += data
        head = bytes(client.received)
        end = _head_end(head)
        if end < 0 and len(head) <= REQUEST_BYTES:
            return
        answer = self._answer(head[:end]) if 0 <= end <= REQUEST_BYTES else _response(431)
        client.answer = memoryview(answer)
        assert self._selector is not None
        self._selector.modify(client.sock, selectors.EVENT_WRITE, client)
        self._step(client)

    def _answer(self, head: bytes) -> bytes:
        """The response to a complete request head."""
        parts = head.split(b"\n", 1)[0].rstrip(b"\r").split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return _response(400)
        method, target = parts[0], parts[1]
        if method not in (b"GET", b"HEAD"):
            return _response(405, extra=b"Allow: GET, HEAD\r\n")  # RFC 9110 15.5.6
        if target.split(b"?", 1)[0] != b"/metrics":
            return _response(404, b"metrics are at /metrics\n")
        try:
            body = self._render().encode("utf-8")
        except Exception:  # noqa: B902 - a scrape must not end the endpoint
            log.exception("metrics endpoint: rendering failed")
            return _response(500)
        return _response(200, body, content_type=_CONTENT_TYPE, send_body=method == b"GET")

    def _expire(self, now: float) -> None:
        expired: List[_Client] = []
        for client in self._clients.values():  # oldest first: all share one DEADLINE
            if client.deadline > now:
                break
            expired.append(client)
        for client in expired:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if self._clients.pop(fd, None) is not None and self._selector is not None:
            self._selector.unregister(client.sock)
        client.sock.close()


def _head_end(data: bytes) -> int:
    """Where the request head ends (after its empty line, CRLF or a bare LF); -1 if it has
    not arrived yet."""
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    if not ends:
        return -1
    end = min(ends)
    return end + (4 if data.startswith(b"\r\n\r\n", end) else 2)


def _response(status: int, body: Optional[bytes] = None, *, content_type: bytes =
              b"text/plain; charset=utf-8", send_body: bool = True, extra: bytes = b"") -> bytes:
    """A whole response that closes the connection."""
    reason = _REASONS[status]
    if body is None:
        body = b"%d %s\n" % (status, reason)
    head = (b"HTTP/1.1 %d %s\r\nServer: greenserve-metrics\r\nDate: %s\r\nContent-Type: %s\r\n"
            b"Content-Length: %d\r\n%sConnection: close\r\n\r\n" % (
                status, reason, formatdate(usegmt=True).encode(), content_type, len(body), extra))
    return head + body if send_body else head


def _poll_selector() -> selectors.BaseSelector:
    """A selector without a descriptor of its own (poll), where the system has one."""
    if hasattr(selectors, "PollSelector"):
        return selectors.PollSelector()
    return selectors.SelectSelector()
