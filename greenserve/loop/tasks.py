"""The cooperative runtime for app code: sleep, spawn, Event, Queue and Timeout.

Strategy: everything here is built on the hub's parking primitive (``parking``, ``park``,
``unpark``), its timers and ``throw_into``; this module never switches greenlets itself. A call
that may wait parks the calling greenlet on the hub of its thread, so the other requests run
meanwhile. It may wait only inside a hub task (a request's greenlet, or one made by ``spawn``);
elsewhere ``sleep`` blocks like ``time.sleep`` and the other waits raise RuntimeError, because
nothing could ever wake them.

Invariants:
- A wake-up is a hint, not a hand-over: a woken waiter checks its condition again. A waiter that
  gives up after being picked (its timeout, a ``Timeout``, a kill) passes the wake-up on, so an
  item put in a Queue is never stranded while another greenlet waits for it.
- A ``Timeout`` is a BaseException raised at the point where its greenlet waits, so an app's
  ``except Exception`` cannot swallow it by accident; leaving the ``with`` block cancels it.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from typing import Any, Callable, Deque, Generic, List, Optional, Tuple, Type, TypeVar

from ..errors import Cancelled, TaskKilled
from .hub import Hub, Parking, current_greenlet, current_hub, waitable_hub
from .timers import Timer

log = logging.getLogger("greenserve.error")
T = TypeVar("T")
_blocking_sleep = time.sleep  # captured before greenserve.patch may replace time.sleep


def _need_hub(what: str) -> Hub:
    hub = waitable_hub()
    if hub is None:
        raise RuntimeError(f"{what} must run in a greenserve task (a request or a spawned "
                           "greenlet), where the hub can wake it")
    return hub


def _deadline(hub: Hub, timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    if math.isnan(timeout):
        raise ValueError("timeout must be a number, not NaN")
    return hub.time() + max(0.0, timeout)


def sleep(seconds: float) -> None:
    """Pause the calling greenlet for ``seconds``; other requests run meanwhile. May switch.
    Outside a hub task (a plain thread, the hub's own callbacks) it blocks like time.sleep.
    Raises ValueError for a negative or NaN duration, as time.sleep does."""
    if seconds < 0 or math.isnan(seconds):
        raise ValueError("sleep length must be a non-negative number")
    hub = waitable_hub()
    if hub is None:
        _blocking_sleep(seconds)
    else:
        hub.sleep(seconds)


# -- Event ----------------------------------------------------------------------------------


class Event:
    """A flag that greenlets wait for. ``set()`` may be called from any thread; ``wait()``
    parks the calling greenlet (in a hub task)."""

    __slots__ = ("_flag", "_waiters", "_lock")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: List[Tuple[Hub, Parking]] = []
        # set() may come from another thread; the lock is never held across a wait
        self._lock = threading.Lock()

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every waiter. Never switches."""
        with self._lock:
            self._flag = True
            waiters, self._waiters = self._waiters, []
        here = current_hub()
        for hub, spot in waiters:
            if hub is here:
                hub.unpark(spot, True)
            else:
                hub.call_soon_threadsafe(hub.unpark, spot, True)

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the flag is set. Returns True, or False if ``timeout`` seconds passed
        first. May switch. Raises RuntimeError outside a hub task."""
        if self._flag:
            return True
        hub = _need_hub("Event.wait")
        deadline = _deadline(hub, timeout)
        entry = (hub, hub.parking())
        with self._lock:
            if self._flag:
                hub.cancel_parking(entry[1])
                return True
            self._waiters.append(entry)
        try:
            hub.park(entry[1], deadline)
        except TimeoutError:
            return self._flag
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
        return True


# -- spawn ----------------------------------------------------------------------------------


class Task(Generic[T]):
    """A function running in its own greenlet, made by ``spawn``: ``join`` waits for its
    result, ``kill`` cancels it."""

    __slots__ = ("_hub", "_glet", "_done", "_value", "_error", "_started", "_joiners")

    def __init__(self, hub: Hub, fn: Callable[..., T], args: Tuple[Any, ...]) -> None:
        self._hub = hub
        self._done = Event()
        self._value: Optional[T] = None
        self._error: Optional[BaseException] = None
        self._started = False
        self._joiners = 0
        self._glet = hub.spawn(self._run, fn, args)

    def _run(self, fn: Callable[..., T], args: Tuple[Any, ...]) -> None:
        self._started = True
        try:
            self._value = fn(*args)
        except Cancelled:
            self._error = TaskKilled(f"the task {fn!r} was killed")
        except BaseException as exc:  # noqa: B902 - kept for join(), SystemExit included
            self._error = exc
            if not self._joiners:
                log.error("unhandled error in the task %r", fn, exc_info=exc)
        finally:
            self._done.set()

    @property
    def dead(self) -> bool:
        """True once the task has finished, failed or been killed."""
        return self._done.is_set()

    def join(self, timeout: Optional[float] = None) -> Optional[T]:
        """Wait for the task to end and return what its function returned. May switch.
        Raises what the function raised, TaskKilled if it was killed, TimeoutError if it has
        not ended within ``timeout`` seconds (it keeps running), RuntimeError in the task
        itself or outside a hub task."""
        if current_greenlet() is self._glet:
            raise RuntimeError("a task cannot join itself")
        self._joiners += 1
        try:
            ended = self._done.wait(timeout)
        finally:
            self._joiners -= 1
        if not ended:
            raise TimeoutError(f"the task did not end within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value

    def kill(self) -> None:
        """Cancel the task: Cancelled is raised in it where it waits next (a task that has not
        started never runs). Returns at once; ``join`` waits for the end. Never switches."""
        if self.dead:
            return
        self._hub.kill(self._glet)
        if not self._started:
            self._error = TaskKilled("the task was killed before it started")
            self._done.set()


def spawn(fn: Callable[..., T], *args: Any) -> Task[T]:
    """Run ``fn(*args)`` in a new greenlet of this thread's hub, in a copy of the caller's
    context (contextvars), starting on the hub's next turn. Returns its Task. Never switches.
    Raises RuntimeError when no hub runs in this thread."""
    hub = current_hub()
    if hub is None:
        raise RuntimeError("spawn() needs a running greenserve hub in this thread")
    return Task(hub, fn, args)


# -- Queue ----------------------------------------------------------------------------------


class Queue(Generic[T]):
    """A bounded first-in first-out queue between greenlets of one hub: ``put`` waits while it
    is full, ``get`` while it is empty. The exceptions are the standard ``queue.Full`` and
    ``queue.Empty``."""

    __slots__ = ("maxsize", "_items", "_getters", "_putters")

    def __init__(self, maxsize: int) -> None:
        if type(maxsize) is not int or maxsize < 1:
            raise ValueError("a Queue needs a bound: maxsize must be an int >= 1")
        self.maxsize = maxsize
        self._items: Deque[T] = collections.deque()
        self._getters: Deque[Tuple[Hub, Parking]] = collections.deque()
        self._putters: Deque[Tuple[Hub, Parking]] = collections.deque()

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put(self, item: T, timeout: Optional[float] = None) -> None:
        """Append ``item``, first waiting while the queue is full. May switch. Raises
        queue.Full if it is still full after ``timeout`` seconds."""
        if self.full():
            hub = _need_hub("Queue.put")
            deadline = _deadline(hub, timeout)
            while self.full():
                if not _wait_in_line(hub, self._putters, deadline, self.full):
                    raise queue.Full
        self._items.append(item)
        _wake_one(self._getters)

    def put_nowait(self, item: T) -> None:
        """Append ``item`` without waiting. Raises queue.Full if the queue is full."""
        if self.full():
            raise queue.Full
        self._items.append(item)
        _wake_one(self._getters)

    def get(self, timeout: Optional[float] = None) -> T:
        """Remove and return the oldest item, first waiting while the queue is empty.
        May switch. Raises queue.Empty if it is still empty after ``timeout`` seconds."""
        if not self._items:
            hub = _need_hub("Queue.get")
            deadline = _deadline(hub, timeout)
            while not self._items:
                if not _wait_in_line(hub, self._getters, deadline, self.empty):
                    raise queue.Empty
        item = self._items.popleft()
        _wake_one(self._putters)
        return item

    def get_nowait(self) -> T:
        """Remove and return the oldest item. Raises queue.Empty if there is none."""
        if not self._items:
            raise queue.Empty
        item = self._items.popleft()
        _wake_one(self._putters)
        return item


def _wait_in_line(
    hub: Hub, line: Deque[Tuple[Hub, Parking]], deadline: Optional[float],
    still_blocked: Callable[[], bool],
) -> bool:
    """Park in ``line`` until woken. Returns False at ``deadline``. May switch. A waiter that
    was picked but gives up (timeout, Timeout, kill) passes the wake-up to the next one."""
    entry = (hub, hub.parking())
    line.append(entry)
    try:
        hub.park(entry[1], deadline)
    except BaseException as exc:  # noqa: B902 - re-raised below, after the hand-on
        try:
            line.remove(entry)
        except ValueError:  # already picked: the wake-up was meant for us
            if not still_blocked():
                _wake_one(line)
        if isinstance(exc, TimeoutError):
            return False
        raise
    return True


def _wake_one(line: Deque[Tuple[Hub, Parking]]) -> None:
    """Wake the first waiter of ``line`` that still waits."""
    here = current_hub()
    while line:
        hub, spot = line.popleft()
        if spot.waiting:
            if hub is here:
                hub.unpark(spot)
            else:
                hub.call_soon_threadsafe(hub.unpark, spot)
            return


# -- Timeout --------------------------------------------------------------------------------


class Timeout(BaseException):
    """``with Timeout(seconds):`` bounds the waits of the block. At the deadline the greenlet's
    current wait (or its next one, if it is busy computing) raises this Timeout instance, which
    propagates out of the block; catch it with ``except Timeout``. It derives from
    BaseException so that ``except Exception`` inside the block cannot swallow it by accident.
    Leaving the block cancels it. ``Timeout(None)`` never fires. Entering it outside a hub task
    raises RuntimeError (nothing could interrupt a blocking call there)."""

    def __init__(self, seconds: Optional[float]) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.expired = False
        self._timer: Optional[Timer] = None
        self._hub: Optional[Hub] = None
        self._glet: Any = None

    def __str__(self) -> str:
        return f"timed out after {self.seconds} s"

    def __enter__(self) -> "Timeout":
        if self._timer is not None:
            raise RuntimeError("this Timeout is already in use")
        if self.seconds is None:
            return self
        if math.isnan(self.seconds):
            raise ValueError("Timeout needs a number of seconds, not NaN")
        hub = _need_hub("Timeout")
        self.expired = False
        self._hub, self._glet = hub, current_greenlet()
        self._timer = hub.call_later(max(0.0, self.seconds), self._expire)
        return self

    def _expire(self) -> None:
        # A hub timer: the greenlet is suspended in a wait; raise in it there.
        self._timer = None
        self.expired = True
        assert self._hub is not None
        self._hub.throw_into(self._glet, self)

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Any, tb: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._glet = None
