"""The hub's table of file descriptors: who waits on each, and the selector interest it has.

Strategy: one selector entry per fd holding (reader, writer); ``modify`` only when the mask
changes. A reader or writer is either a ``Waiter`` (a suspended greenlet, woken with a ``Wake``
token) or a one-shot callback (``watch_readable``). Nothing here switches greenlets: waking goes
through the hub's ready queue. ``FdTable`` is a part of ``Hub`` (see hub.py).
"""

from __future__ import annotations

import enum
import selectors
import socket
from typing import Any, Callable, Deque, Dict, Tuple

from .._traits import trait
from ..errors import BusyResourceError

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class Wake(enum.Enum):
    """Tokens a waiter is resumed with."""

    READY = "ready"
    TIMED_OUT = "timed-out"
    CLOSED = "closed"


# Module-level names for the tokens: an attribute of an Enum class goes through
# EnumType.__getattr__ (slow on Python 3.11), and these are used on every wait.
READY, TIMED_OUT, CLOSED = Wake.READY, Wake.TIMED_OUT, Wake.CLOSED


class Waiter:
    """What the hub suspends a greenlet as (``hub._Waiter``): ``wake(token)`` resumes it."""

    __slots__ = ()

    def wake(self, value: Any) -> None:
        raise NotImplementedError


class FdEntry:
    """Who waits on one fd: a reader and a writer, each a Waiter or a one-shot callback."""

    __slots__ = ("reader", "writer", "mask")

    def __init__(self) -> None:
        self.reader: Any = None
        self.writer: Any = None
        self.mask = 0


@trait
class FdTable:
    """The fd half of the hub."""

    selector: selectors.BaseSelector
    _wake_r: socket.socket  # other threads and signal handlers write a byte to wake the hub
    _wake_w: socket.socket
    _entries: Dict[int, FdEntry]
    _ready: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]]

    def close(self) -> None:
        """Release the selector and the wakeup sockets. The hub must not be running."""
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _set_mask(self, fd: int, entry: FdEntry, mask: int) -> None:
        if mask == entry.mask:
            return
        if entry.mask == 0:
            self.selector.register(fd, mask, entry)
        elif mask == 0:
            self.selector.unregister(fd)
        else:
            self.selector.modify(fd, mask, entry)
        entry.mask = mask

    def _entry(self, fd: int) -> FdEntry:
        entry = self._entries.get(fd)
        if entry is None:
            entry = self._entries[fd] = FdEntry()
        return entry

    def watch_readable(self, fd: int, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` in the hub once ``fd`` is readable (one-shot, holds no greenlet).
        Raises BusyResourceError if someone already waits to read it."""
        entry = self._entries.get(fd) or self._entry(fd)
        if entry.reader is not None:
            raise BusyResourceError(f"fd {fd} is already watched")
        entry.reader = callback
        mask = EVENT_READ if entry.writer is None else EVENT_READ | EVENT_WRITE
        if mask != entry.mask:
            self._set_mask(fd, entry, mask)

    def unwatch(self, fd: int) -> None:
        """Cancel ``watch_readable`` on ``fd``."""
        entry = self._entries.get(fd)
        if entry is not None and entry.reader is not None and not isinstance(entry.reader, Waiter):
            entry.reader = None

    def forget_fd(self, fd: int) -> None:
        """Before closing ``fd``: wake its waiters with ClosedResourceError and unregister it."""
        entry = self._entries.pop(fd, None)
        if entry is None:
            return
        for who in (entry.reader, entry.writer):
            if isinstance(who, Waiter):
                self._ready.append((who.wake, (CLOSED,)))
        entry.reader = entry.writer = None
        if entry.mask:
            try:
                self.selector.unregister(fd)
            except (KeyError, ValueError):
                pass
        entry.mask = 0

    def release_fd(self, fd: int) -> None:
        """Drop the hub's interest in ``fd`` unless someone waits on it. For fds the hub does
        not own (an app's patched socket), which may be closed behind its back: a stale
        registration would break the next fd to get that number."""
        entry = self._entries.get(fd)
        if entry is None or entry.reader is not None or entry.writer is not None:
            return
        del self._entries[fd]
        if entry.mask:
            try:
                self.selector.unregister(fd)
            except (KeyError, ValueError, OSError):
                pass
            entry.mask = 0  # a turn still holding this entry must not touch the selector

    def fd_count(self) -> int:
        """How many fds the hub knows about (for statistics)."""
        return len(self._entries)
