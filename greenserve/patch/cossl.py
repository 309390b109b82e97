"""The cooperative TLS socket that ``greenserve.patch`` installs as
``ssl.SSLContext.sslsocket_class`` (what ``context.wrap_socket`` makes).

Strategy: the same as cosocket: the kernel socket stays non-blocking, the caller's timeout
lives in Python (``TimeoutInPython``), and every call that would block is retried after a wait
for the direction OpenSSL asks for (SSLWantReadError: readable, SSLWantWriteError: writable;
a TLS write may need to read and the reverse). In a hub task the wait lets other greenlets run;
elsewhere it blocks in poll as the standard TLS socket does.

``_real_connect`` mirrors the standard one (identical from Python 3.9 to 3.13) with a
cooperative TCP connect; the rest only wraps the standard methods.
"""

from __future__ import annotations

import ssl
from typing import Any, Optional

from .cosocket import TimeoutInPython, connect, retry


def _wants(exc: OSError) -> Optional[bool]:
    if isinstance(exc, ssl.SSLWantReadError):
        return False
    if isinstance(exc, ssl.SSLWantWriteError):
        return True
    return None


class CoopSSLSocket(TimeoutInPython, ssl.SSLSocket):
    """``ssl.SSLSocket`` whose handshake, reads and writes let other greenlets run."""

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        return retry(self, False, ssl.SSLSocket.read, self, len, buffer, wants=_wants)

    def write(self, data: Any) -> int:
        return retry(self, True, ssl.SSLSocket.write, self, data, wants=_wants)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        return retry(self, False, ssl.SSLSocket.recv, self, buflen, flags, wants=_wants)

    def recv_into(self, buffer: Any, nbytes: Optional[int] = None, flags: int = 0) -> int:
        return retry(self, False, ssl.SSLSocket.recv_into, self, buffer, nbytes, flags,
                     wants=_wants)

    def send(self, data: Any, flags: int = 0) -> int:
        return retry(self, True, ssl.SSLSocket.send, self, data, flags, wants=_wants)

    def sendall(self, data: Any, flags: int = 0) -> None:
        with memoryview(data) as view, view.cast("B") as octets:
            sent, total = 0, len(octets)
            while sent < total:
                sent += self.send(octets[sent:], flags)

    def do_handshake(self, block: bool = False) -> None:
        retry(self, False, ssl.SSLSocket.do_handshake, self, wants=_wants, block_anyway=block)

    def unwrap(self) -> Any:
        return retry(self, False, ssl.SSLSocket.unwrap, self, wants=_wants)

    def _real_connect(self, addr: Any, connect_ex: bool) -> Optional[int]:
        if self.server_side:
            raise ValueError("can't connect in server-side mode")
        if self._connected or self._sslobj is not None:  # type: ignore[has-type]
            raise ValueError("attempt to connect already-connected SSLSocket!")
        self._sslobj = self.context._wrap_socket(  # type: ignore[attr-defined]
            self, False, self.server_hostname, owner=self,
            session=self._session,  # type: ignore[attr-defined]
        )
        try:
            rc = connect(self, addr, connect_ex)
            if not rc:
                self._connected = True
                if self.do_handshake_on_connect:  # type: ignore[attr-defined]
                    self.do_handshake()
            return rc if connect_ex else None
        except (OSError, ValueError):
            self._sslobj = None
            raise
