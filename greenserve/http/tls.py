"""TLS: the server's SSL context from the options, and a cooperative TLS socket.

Strategy:
- One ``ssl.SSLContext`` per server, built at start from ``certfile``/``keyfile``/``ca_certs``/
  ``cert_reqs``/``ciphers``; TLS 1.2 is the oldest version offered (RFC 8996 retires 1.0 and 1.1).
- Accepted sockets are wrapped in the connection's own greenlet, not in the accept loop: the
  handshake waits on the hub like any read, under the deadline of the request head, so a slow
  or silent client holds up nobody.
- ``GreenSSLSocket`` is a ``GreenSocket`` used only on TLS listeners, so the plain-TCP path has
  no TLS checks at all. Non-blocking TLS calls raise SSLWantRead/SSLWantWrite (a read can need
  the socket writable and a write readable); each call retries after the wait it asks for. A
  plain BlockingIOError (the bare socket, before the handshake or after unwrap) means what the
  call itself needs: readable for a receive, writable for a send.
  Decrypted bytes that OpenSSL holds (``pending()``) are read before waiting on the fd, which
  would not become readable for them. ``sendfile`` cannot encrypt, so files go by read/send.
- close_notify goes out before the TCP side is shut (RFC 8446 6.1). If the send buffer is full
  (a client still taking a response), a greenlet waits for room, up to ``linger`` seconds or
  the deadline it is given (a lingering close passes its own, so that the alert and the
  linger share one ``linger_timeout``); from the hub's own callbacks (closing an idle or a
  lingering connection), which cannot wait, it is one try.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, BinaryIO, Callable, Optional, Sequence, TypeVar

from ..errors import BusyResourceError, ConfigError
from ..loop.gsocket import Buffer, GreenSocket, SendTimeout
from ..loop.hub import Hub, waitable_hub

T = TypeVar("T")
_TLS_HANDSHAKE_RECORD = 0x16  # RFC 8446 5.1 / RFC 5246 6.2.1: ContentType handshake(22)
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_WANT_READ = (ssl.SSLWantReadError,)
_WANT_WRITE = (ssl.SSLWantWriteError,)
# BlockingIOError: from the plain socket, before the handshake (peek) or after unwrap().
_WOULD_BLOCK = (BlockingIOError,)


class NotTLSError(OSError):
    """The client's first byte is not the start of a TLS handshake (plain HTTP, most likely)."""


class _KeyNeedsPassword(Exception):
    """Raised by the password callback: the private key is encrypted."""


def _no_password() -> bytes:
    """The password callback of load_cert_chain. Without one, OpenSSL would prompt for the
    passphrase of an encrypted key on the terminal, and startup would hang on it."""
    raise _KeyNeedsPassword


def make_context(certfile: str, keyfile: str = "", ca_certs: str = "", cert_reqs: str = "none",
                 ciphers: str = "") -> Optional[ssl.SSLContext]:
    """The server-side SSL context for these options; None if ``certfile`` is empty.
    Raises ConfigError naming the option at fault."""
    if not certfile:
        for name, value in (("keyfile", keyfile), ("ca_certs", ca_certs)):
            if value:
                raise ConfigError(name, "needs certfile (TLS is on only with a certificate)")
        if cert_reqs != "none":
            raise ConfigError("cert_reqs", "needs certfile and ca_certs")
        return None
    if cert_reqs != "none" and not ca_certs:
        raise ConfigError("cert_reqs", f"{cert_reqs!r} needs ca_certs to verify clients against")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)  # client renegotiation: a DoS lever
    context.set_alpn_protocols(["http/1.1"])  # RFC 7301; the only protocol spoken here
    try:
        _configure(context.load_cert_chain, "certfile", certfile, keyfile or None, _no_password)
    except _KeyNeedsPassword:
        raise ConfigError("keyfile" if keyfile else "certfile", f"the private key in "
                          f"{keyfile or certfile!r} is encrypted: greenserve cannot ask for its "
                          f"passphrase; give it an unencrypted key (readable only by the "
                          f"server's user)") from None
    if ca_certs:
        _configure(context.load_verify_locations, "ca_certs", ca_certs)
    context.verify_mode = _CERT_REQS[cert_reqs]
    if ciphers:
        _configure(context.set_ciphers, "ciphers", ciphers)
    return context


def _configure(call: Callable[..., Any], option: str, *args: Any) -> None:
    try:
        call(*args)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        detail = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ConfigError(option, f"cannot use {args[0]!r}: {detail}") from None


class GreenSSLSocket(GreenSocket):
    """A GreenSocket that speaks TLS once ``handshake`` has run. Methods that may switch say so."""

    __slots__ = ("context", "linger")

    def __init__(self, sock: socket.socket, hub: Hub, context: ssl.SSLContext,
                 linger: float = 2.0) -> None:
        super().__init__(sock, hub)
        self.context = context
        self.linger = linger  # seconds close_notify may wait for room in the send buffer

    def handshake(self, deadline: Optional[float]) -> None:
        """Wrap the socket and run the TLS handshake by ``deadline``. May switch. Raises
        NotTLSError, TimeoutError, ssl.SSLError (the client's certificate was refused...),
        ConnectionError (closed before any byte)."""
        first = self._call(lambda: self.sock.recv(1, socket.MSG_PEEK), deadline)
        if not first:
            raise ConnectionResetError("closed before the TLS handshake")
        if first[0] != _TLS_HANDSHAKE_RECORD:
            raise NotTLSError("plain bytes on a TLS listener")
        self.sock = self.context.wrap_socket(
            self.sock, server_side=True, do_handshake_on_connect=False)
        self._call(self.sock.do_handshake, deadline)

    @property
    def tls(self) -> Optional[ssl.SSLSocket]:
        return self.sock if isinstance(self.sock, ssl.SSLSocket) else None

    def pending(self) -> int:
        """Decrypted bytes OpenSSL holds that no read has taken yet."""
        tls = self.tls
        return tls.pending() if tls is not None else 0

    def _call(self, op: Callable[[], T], deadline: Optional[float], sending: bool = False) -> T:
        """Run a non-blocking TLS operation, waiting for what it needs until ``deadline``
        (``sending``: a plain EAGAIN waits for writable, else for readable). May switch.
        Raises TimeoutError."""
        while True:
            try:
                return op()
            except _WANT_READ:
                self._wait_readable(deadline)
            except _WANT_WRITE:
                self._unyielded = 0
                self.hub.wait_writable(self.fd, deadline)
            except _WOULD_BLOCK:
                if sending:
                    self._unyielded = 0
                    self.hub.wait_writable(self.fd, deadline)
                else:
                    self._wait_readable(deadline)

    def recv(self, size: int, deadline: Optional[float] = None) -> bytes:
        """Receive up to ``size`` bytes; b"" at EOF (close_notify or not). May switch."""
        try:
            data = self._call(lambda: self.sock.recv(size), deadline)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""
        if len(data) > 4096:
            self._moved(len(data))
        return data

    def recv_into(self, buffer: Any, size: int = 0, deadline: Optional[float] = None) -> int:
        """Receive into ``buffer``; 0 at EOF (close_notify or not). May switch. Raises
        TimeoutError, OSError."""
        try:
            n = self._call(lambda: self.sock.recv_into(buffer, size), deadline)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return 0
        self._moved(n)
        return n

    def has_input(self) -> bool:
        """Decrypted bytes OpenSSL holds, or raw bytes in the kernel. Never switches."""
        return bool(self.pending()) or super().has_input()

    def recv_nowait(self, size: int) -> Optional[bytes]:
        """Receive what OpenSSL can decrypt now: None if nothing is there yet, b"" at EOF.
        Never switches."""
        try:
            return self.sock.recv(size)
        except _WANT_READ + _WANT_WRITE + _WOULD_BLOCK:
            return None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""

    def send(self, data: Buffer, deadline: Optional[float] = None) -> int:
        """Send some of ``data``; returns how much. May switch. Raises TimeoutError,
        OSError."""
        return self._call(lambda: self.sock.send(data), deadline, sending=True)

    def sendall(self, data: Buffer, timeout: SendTimeout = None) -> None:
        """Send all of ``data``; ``timeout`` bounds each wait for progress. May switch."""
        self._sendall_after(memoryview(data), timeout, 0)

    def _sendall_after(self, view: Any, timeout: SendTimeout, done: int) -> None:
        while view:
            # SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets a retried write use a new view.
            try:
                n = self.sock.send(view)
            except _WANT_WRITE + _WOULD_BLOCK:
                self._wait_writable(timeout, done)
                continue
            except _WANT_READ:  # a write that needs the peer's bytes first (rare in TLS 1.3)
                self._wait_readable(self._send_deadline(timeout, done))
                continue
            view = view[n:]
            done += n
            self._moved(n)

    def sendall_parts(self, parts: Sequence[Buffer], timeout: SendTimeout = None) -> None:
        """TLS has no sendmsg: one buffer, one record stream."""
        self.sendall(b"".join(parts), timeout)

    def sendfile(self, file: BinaryIO, offset: int, count: int,
                 timeout: SendTimeout = None) -> int:
        """Read and send: the kernel cannot encrypt for os.sendfile. May switch."""
        return self._sendfile_fallback(file, offset, count, timeout)

    def close_notify(self, deadline: Optional[float] = None) -> None:
        """Send close_notify (RFC 8446 6.1: before closing the write side); the peer's own
        close_notify is not awaited. While the send buffer is full, wait for room until
        ``deadline`` (default: ``linger`` seconds from now) if the caller is a greenlet that
        may wait; else give up. May switch."""
        tls = self.tls
        if tls is None:
            return
        if deadline is None:
            deadline = self.hub.time() + self.linger
        while True:
            try:
                tls.unwrap()
                return
            except ssl.SSLWantWriteError:  # not (all) written: OpenSSL keeps it for a retry
                if waitable_hub() is not self.hub:
                    return
                try:
                    self._unyielded = 0
                    self.hub.wait_writable(self.fd, deadline)
                except (OSError, TimeoutError, BusyResourceError):
                    return
            except (OSError, ValueError):  # sent, the peer's is not in; or unwrapped already
                return

    def shutdown(self, how: int, deadline: Optional[float] = None) -> None:
        """close_notify (waiting for room until ``deadline`` at most), then shut the TCP side
        down. May switch."""
        self.close_notify(deadline)
        try:
            socket.socket.shutdown(self.sock, how)  # not SSLSocket's: reads stay decrypted
        except OSError:
            pass

    def close(self) -> None:
        self.close_notify()
        super().close()
