"""The Date and Server header lines of every response, rebuilt once a second."""

from __future__ import annotations

import time
from email.utils import formatdate


class DateCache:
    """The Date and Server header lines. ``lines`` is an attribute, so reading it costs nothing
    per response; the server calls ``refresh`` from a hub timer at every new second
    (RFC 9110 6.6.1 asks for the best available approximation of the time)."""

    __slots__ = ("_second", "lines", "_server")

    def __init__(self, server_header: bytes) -> None:
        self._second = -1
        self.lines = b""
        self._server = server_header
        self.refresh()

    def refresh(self) -> float:
        """Rebuild the lines if the second changed. Returns seconds until the next second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self.lines = b"Date: %s\r\n%s" % (formatdate(second, usegmt=True).encode(), self._server)
        return 1.0 - (now - second)
