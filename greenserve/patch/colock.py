"""The locks of ``greenserve.patch``: ``threading.Lock`` and ``threading.RLock`` that suspend a
hub task instead of blocking its thread, and through them every primitive ``threading`` and
``queue`` build on locks (Condition, Semaphore, BoundedSemaphore, Event, Barrier, Queue and its
kin; ``queue.SimpleQueue`` becomes the pure-Python one, which is built on them).

Why: greenlets share a thread, so a greenlet blocking on a lock that another greenlet of the same
thread holds never gets it, and the hub never turns again: SQLAlchemy's connection pool, urllib3's
blocking pool and ``queue.Queue`` deadlock the server that way.

Strategy:
- ``CoopLock`` keeps its state in a real lock (``_thread.allocate_lock``, captured before the
  patch) and tries it first without waiting. On contention, a hub task registers a parking spot
  and parks; any other caller (a plain thread, the hub's own callbacks) blocks on the real lock
  as before. So the lock still excludes across OS threads, and either kind of waiter is woken
  by either kind of releaser.
- ``release`` frees the real lock, then wakes the oldest parked greenlet (through
  ``call_soon_threadsafe`` when it is another thread's hub). A woken greenlet tries again and
  parks again if someone else was faster; a wake it cannot use (it timed out or was cancelled
  meanwhile) is passed on to the next, so no wake-up is lost. A small real lock guards the
  waiter list only, and is never held across a wait.
- ``CoopRLock``'s owner is the current greenlet (a thread's own code runs in its main greenlet),
  not the thread: two requests of one thread must exclude each other. It has the hooks
  ``threading.Condition`` uses (``_is_owned``, ``_release_save``, ``_acquire_restore``).
"""

from __future__ import annotations

import _thread
import collections
from typing import Any, Deque, Optional, Tuple

from ..loop.hub import Hub, Parking, current_greenlet, current_hub, waitable_hub

_real_lock = _thread.allocate_lock  # the C lock, whatever the patch replaces later
Waiting = Tuple[Hub, Parking]


def _check_timeout(blocking: bool, timeout: float) -> None:
    """The standard locks' checks of a timeout given, made before anything else."""
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0:
        raise ValueError("timeout value must be a non-negative number")
    if timeout != timeout:  # NaN: no deadline can be made of it
        raise ValueError("Invalid value NaN (not a number)")
    if timeout > _thread.TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")


class CoopLock:
    """``threading.Lock`` under the patch. See the module doc."""

    __slots__ = ("_lock", "_guard", "_waiters", "__weakref__")

    def __init__(self) -> None:
        self._lock = _real_lock()
        self._guard = _real_lock()
        self._waiters: Deque[Waiting] = collections.deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """As ``threading.Lock.acquire``. May switch (in a hub task, when the lock is held)."""
        if timeout != -1:
            _check_timeout(blocking, timeout)
        if self._lock.acquire(False):
            return True
        if not blocking:
            return False
        hub = waitable_hub()
        if hub is None:
            return self._lock.acquire(True, timeout)
        return self._acquire_parked(hub, None if timeout == -1 else hub.time() + timeout)

    def _acquire_parked(self, hub: Hub, deadline: Optional[float]) -> bool:
        """Park until the lock is ours or ``deadline`` passes. May switch."""
        while True:
            spot = hub.parking()
            entry = (hub, spot)
            with self._guard:
                if self._lock.acquire(False):
                    hub.cancel_parking(spot)
                    return True
                self._waiters.append(entry)
            try:
                hub.park(spot, deadline)
            except TimeoutError:
                return self._give_up(entry)
            except BaseException:  # cancelled (a Timeout, a stopping server): not ours to keep
                self._give_up(entry)
                raise

    def _give_up(self, entry: Waiting) -> bool:
        """Leave the waiters. A wake-up meant for this waiter is used (the lock, if free) or
        passed on. Returns whether the lock is now held."""
        with self._guard:
            try:
                self._waiters.remove(entry)
                return False  # still waiting: no wake-up was spent on us
            except ValueError:
                pass
        if self._lock.acquire(False):
            return True
        self._wake_next()
        return False

    def release(self) -> None:
        """As ``threading.Lock.release``: any thread or greenlet may release. Never switches.
        Raises RuntimeError if the lock is not held."""
        self._lock.release()
        self._wake_next()

    def _wake_next(self) -> None:
        with self._guard:
            if not self._waiters:
                return
            hub, spot = self._waiters.popleft()
        if hub is current_hub():
            hub.unpark(spot)
        else:
            hub.call_soon_threadsafe(hub.unpark, spot)

    def locked(self) -> bool:
        return self._lock.locked()

    def _at_fork_reinit(self) -> None:
        """After fork (``threading`` calls it): a fresh, free lock with no waiters."""
        self._lock = _real_lock()
        self._guard = _real_lock()
        self._waiters.clear()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        return f"<{state} greenserve CoopLock object at {id(self):#x}>"


class CoopRLock:
    """``threading.RLock`` under the patch: reentrant for the greenlet that holds it."""

    __slots__ = ("_block", "_owner", "_count", "__weakref__")

    def __init__(self) -> None:
        self._block = CoopLock()
        self._owner: Any = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """As ``threading.RLock.acquire``. May switch."""
        if timeout != -1:
            _check_timeout(blocking, timeout)
        me = current_greenlet()
        if self._owner is me:
            self._count += 1
            return True
        if not self._block.acquire(blocking, timeout):
            return False
        self._owner, self._count = me, 1
        return True

    def release(self) -> None:
        """Raises RuntimeError unless the current greenlet holds the lock. Never switches."""
        if self._owner is not current_greenlet():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self._owner = None
            self._block.release()

    def _is_owned(self) -> bool:
        return self._owner is current_greenlet()

    def _release_save(self) -> Tuple[int, Any]:
        """For ``Condition.wait``: release whatever the depth; returns the state to restore."""
        if not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._owner, self._count = None, 0
        self._block.release()
        return state

    def _acquire_restore(self, state: Tuple[int, Any]) -> None:
        self._block.acquire()
        self._count, self._owner = state

    def _at_fork_reinit(self) -> None:
        self._block._at_fork_reinit()
        self._owner, self._count = None, 0

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return (f"<{'locked' if self._owner is not None else 'unlocked'} greenserve CoopRLock "
                f"object count={self._count} at {id(self):#x}>")
