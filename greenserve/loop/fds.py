"""The hub's table of file descriptors: who waits on each, the interest it has, and the
poller that asks the kernel which fds are ready.

Strategy: one poller registration per fd holding (reader, writer); ``modify`` only when the
mask changes. A reader or writer is either a ``Waiter`` (a suspended greenlet, woken with a
``Wake`` token) or a one-shot callback (``watch_readable``). Nothing here switches greenlets:
waking goes through the hub's ready queue. ``FdTable`` is a part of ``Hub`` (see hub.py).

The poller is epoll, called directly, where the platform has it (``EpollPoller``), and the
``selectors`` module's best selector elsewhere (``SelectorPoller``); both speak in selectors'
EVENT_READ and EVENT_WRITE, an error or hang-up being both, as selectors reports it. Why not
the selector everywhere: its bookkeeping is Python (a SelectorKey made per registration, a
second map from fd to key beside this table, a Python loop over each poll's answer), run on
every turn of the loop and twice on every wait of an app's socket (register, then release):
about a quarter of the instructions of an app's request to an upstream over a patched socket
(loadtests/README.md). The table below is the one map from fd to waiters.
"""

from __future__ import annotations

import enum
import math
import select
import selectors
import socket
from typing import Any, Callable, Deque, Dict, Final, List, Optional, Tuple

from .._traits import mypyc_attr, trait
from ..errors import BusyResourceError

EVENT_READ: Final = selectors.EVENT_READ
EVENT_WRITE: Final = selectors.EVENT_WRITE
# Captured at import, before greenserve.patch can replace DefaultSelector: the hub needs the
# platform's own.
_DefaultSelector: Final = selectors.DefaultSelector


@mypyc_attr(allow_interpreted_subclasses=True)
class Poller:
    """Which registered fds are ready. ``unregister`` of an fd the kernel already dropped (it
    was closed) is not an error; the others raise as the platform answers (OSError; the
    selector also KeyError or ValueError)."""

    def register(self, fd: int, events: int) -> None:
        raise NotImplementedError

    def modify(self, fd: int, events: int) -> None:
        raise NotImplementedError

    def unregister(self, fd: int) -> None:
        raise NotImplementedError

    def poll(self, timeout: Optional[float]) -> List[Tuple[int, int]]:
        """Wait up to ``timeout`` seconds (None: until an event; 0: not at all). Returns
        (fd, events) pairs; an interrupted wait returns none."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


_EPOLLIN: Final = select.EPOLLIN if hasattr(select, "epoll") else 1
_EPOLLOUT: Final = select.EPOLLOUT if hasattr(select, "epoll") else 4


# Events taken in one poll at most. The ready list is first in, first out, and what one poll
# leaves is the next one's: with 10,000 busy connections, one turn serving them all made a
# request that came in just after its connection was polled wait for two whole turns; in
# batches, a request waits for about the ones ahead of it.
_MAX_EVENTS: Final = 1024


class EpollPoller(Poller):
    """``select.epoll``, by fd number."""

    def __init__(self) -> None:
        self._epoll: Any = select.epoll()

    def register(self, fd: int, events: int) -> None:
        self._epoll.register(fd, _to_epoll(events))

    def modify(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, _to_epoll(events))

    def unregister(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass  # closed since it was registered: the kernel dropped it with its last fd

    def poll(self, timeout: Optional[float]) -> List[Tuple[int, int]]:
        wait = -1.0
        if timeout is not None:
            # whole milliseconds, rounded up: epoll's resolution (as selectors rounds it)
            wait = 0.0 if timeout <= 0 else math.ceil(timeout * 1e3) * 1e-3
        try:
            answer = self._epoll.poll(wait, _MAX_EVENTS)
        except InterruptedError:
            return []
        ready: List[Tuple[int, int]] = []
        for fd, flags in answer:
            events = 0
            if flags & ~_EPOLLIN:
                events |= EVENT_WRITE
            if flags & ~_EPOLLOUT:
                events |= EVENT_READ
            ready.append((fd, events))
        return ready

    def close(self) -> None:
        self._epoll.close()


def _to_epoll(events: int) -> int:
    return (_EPOLLIN if events & EVENT_READ else 0) | (_EPOLLOUT if events & EVENT_WRITE else 0)


class SelectorPoller(Poller):
    """The platform's ``selectors.DefaultSelector``, where there is no epoll."""

    def __init__(self) -> None:
        self._selector = _DefaultSelector()

    def register(self, fd: int, events: int) -> None:
        self._selector.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._selector.modify(fd, events)

    def unregister(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def poll(self, timeout: Optional[float]) -> List[Tuple[int, int]]:
        return [(key.fd, events) for key, events in self._selector.select(timeout)]

    def close(self) -> None:
        self._selector.close()


def new_poller() -> Poller:
    """The platform's best poller."""
    return EpollPoller() if hasattr(select, "epoll") else SelectorPoller()


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

    poller: Poller
    _wake_r: socket.socket  # other threads and signal handlers write a byte to wake the hub
    _wake_w: socket.socket
    _wake_fd: int
    _entries: Dict[int, FdEntry]
    _ready: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]]

    def close(self) -> None:
        """Release the poller and the wakeup sockets. The hub must not be running."""
        self.poller.close()
        self._wake_r.close()
        self._wake_w.close()

    def _open_wakeup(self) -> None:
        """Make the socketpair other threads and signal handlers wake the hub through."""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_fd = self._wake_r.fileno()
        self.poller.register(self._wake_fd, EVENT_READ)

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
            self.poller.register(fd, mask)
        elif mask == 0:
            self.poller.unregister(fd)
        else:
            self.poller.modify(fd, mask)
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
            self.poller.unregister(fd)
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
            self.poller.unregister(fd)
            entry.mask = 0  # a turn still holding this entry must not touch the poller

    def fd_count(self) -> int:
        """How many fds the hub knows about (for statistics)."""
        return len(self._entries)
