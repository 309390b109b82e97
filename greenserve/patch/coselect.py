"""The cooperative ``select.select`` and ``selectors.DefaultSelector`` of ``greenserve.patch``.

Strategy: ask first without waiting (timeout 0); if nothing is ready and the caller is a hub
task, wait on the hub for one fd that stands for all of them: the fd of a kernel selector (an
epoll or kqueue instance) holding the caller's fds is readable as soon as any of them is ready.
Then ask again without waiting. The hub's own one-waiter-per-fd rule is never touched: the hub
only ever sees that selector fd, for one wait. Outside a hub task, the standard call runs as is.
Where the platform's selector has no fd to wait on, the hub polls every ``POLL_INTERVAL``.
"""

from __future__ import annotations

import select
import selectors
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar

from ..loop.hub import Hub, waitable_hub

T = TypeVar("T")
POLL_INTERVAL = 0.005
_select = select.select  # the standard ones, captured before the patch replaces them
_Selector = selectors.DefaultSelector


def _wait_until_ready(hub: Hub, fd: Optional[int], timeout: Optional[float],
                      check: Callable[[], T]) -> Optional[T]:
    """Wait for ``fd`` to be readable, then ``check()``; until it returns something true or
    ``timeout`` passes (then None). May switch."""
    deadline = None if timeout is None else hub.time() + timeout
    while True:
        try:
            if fd is None:
                hub.sleep(POLL_INTERVAL if deadline is None
                          else max(0.0, min(POLL_INTERVAL, deadline - hub.time())))
            else:
                hub.wait_readable(fd, deadline)
        except TimeoutError:
            return None
        finally:
            if fd is not None:
                hub.release_fd(fd)
        found = check()
        if found:
            return found
        if deadline is not None and hub.time() >= deadline:
            return None


def _fd(obj: Any) -> int:
    return obj if isinstance(obj, int) else int(obj.fileno())


def cooperative_select(rlist: Sequence[Any], wlist: Sequence[Any], xlist: Sequence[Any],
                       timeout: Optional[float] = None) -> Tuple[List[Any], List[Any], List[Any]]:
    """``select.select`` that, in a hub task, waits on the hub. May switch."""
    hub = waitable_hub()
    if hub is None or (timeout is not None and timeout <= 0):
        return _select(rlist, wlist, xlist, timeout)
    ready = _select(rlist, wlist, xlist, 0)
    if any(ready):
        return ready
    with _Selector() as watcher:
        events: Dict[int, int] = {}
        for objs, event in ((rlist, selectors.EVENT_READ), (wlist, selectors.EVENT_WRITE),
                            (xlist, selectors.EVENT_READ)):
            for obj in objs:
                events[_fd(obj)] = events.get(_fd(obj), 0) | event
        for fd, mask in events.items():
            watcher.register(fd, mask)
        found = _wait_until_ready(hub, _selector_fd(watcher), timeout,
                                  lambda: _nonempty(_select(rlist, wlist, xlist, 0)))
    return found if found is not None else ([], [], [])


Ready = Tuple[List[Any], List[Any], List[Any]]


def _nonempty(ready: Ready) -> Optional[Ready]:
    return ready if any(ready) else None


def _selector_fd(selector: selectors.BaseSelector) -> Optional[int]:
    fileno = getattr(selector, "fileno", None)
    return int(fileno()) if fileno is not None else None


class CooperativeSelector(selectors.BaseSelector):
    """``selectors.DefaultSelector`` whose ``select`` waits on the hub in a hub task. It keeps
    the platform's selector inside and hands every other call to it."""

    def __init__(self) -> None:
        self._real = _Selector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def fileno(self) -> int:
        fd = _selector_fd(self._real)
        if fd is None:
            raise AttributeError("this platform's selector has no fileno")
        return fd

    def select(self, timeout: Optional[float] = None) -> List[Tuple[selectors.SelectorKey, int]]:
        """Wait for registered files to be ready. May switch, in a hub task."""
        hub = waitable_hub()
        if hub is None or (timeout is not None and timeout <= 0):
            return self._real.select(timeout)
        ready = self._real.select(0)
        if ready:
            return ready
        found = _wait_until_ready(hub, _selector_fd(self._real), timeout,
                                  lambda: self._real.select(0))
        return found or []
