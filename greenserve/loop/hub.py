"""The reactor: a poller (fds.py), a timer heap and a ready queue, one greenlet per thread.

Strategy:
- ``Hub.run`` loops in the greenlet that calls it; every greenlet made by ``spawn`` has that
  greenlet as parent, so a finished task hands control back to the loop.
- Waiting is a checked resume: each wait makes a ``_Waiter``; every path that wakes it (fd ready,
  deadline, fd closed, cancellation) goes through ``_Waiter.wake``, which only switches once and
  only while the waiter is still waiting. A late or duplicate wake-up is a no-op.
- Interest in an fd is lazy: after a wait the poller keeps the fd's READ interest, so a
  connection that waits for each request costs no epoll_ctl call per request. An event that finds
  nobody waiting drops the interest then. A leftover WRITE interest is dropped as soon as the fd
  is waited on for reading (one epoll_ctl turns "connected" into "waiting for the reply").
- Other threads and signal handlers only append to a queue and write a byte to a socketpair.
This is the only module that calls greenlet's switch, throw or getcurrent. It is compiled
(setup.py), so its greenlet type is glet.py's and it tells the watchdog what it does.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, Final, List, Optional, Tuple

from greenlet import getcurrent, greenlet

from ..errors import BusyResourceError, Cancelled, ClosedResourceError
from .fds import (CLOSED, EVENT_READ, EVENT_WRITE, READY, TIMED_OUT, FdEntry, FdTable, Waiter,
                  new_poller)
from .glet import Task
from .timers import Timer, TimerHeap

log = logging.getLogger("greenserve.error")

_PARK_TIMEOUT: Final = object()

_local: Final = threading.local()
MAX_IDLE_WORKERS: Final = 256


class _Waiter(Waiter):
    """One suspended greenlet. ``wake`` resumes it at most once, with a value (a ``Wake``
    token for the hub's own waits, anything for ``park``)."""

    __slots__ = ("glet", "waiting")

    def __init__(self, glet: greenlet) -> None:
        self.glet = glet
        self.waiting = True

    def wake(self, value: Any) -> None:
        if self.waiting:
            self.waiting = False
            self.glet.switch(value)


Parking = _Waiter  # the public name of a waiter made by ``Hub.parking()``


def get_hub() -> "Hub":
    """Return the hub running in this thread. Raises RuntimeError when there is none."""
    hub = getattr(_local, "hub", None)
    if hub is None:
        raise RuntimeError("no greenserve hub is running in this thread")
    return hub  # type: ignore[no-any-return]


def current_hub() -> Optional["Hub"]:
    """Return the hub running in this thread, or None."""
    return getattr(_local, "hub", None)


def waitable_hub() -> Optional["Hub"]:
    """Return the hub running in this thread if the caller may wait on it (it runs in one of
    the hub's task greenlets, not in the loop itself); else None, and a wait must block."""
    hub: Optional[Hub] = getattr(_local, "hub", None)
    if hub is None or getcurrent() is hub._loop:
        return None
    return hub


def current_greenlet() -> greenlet:
    """Return the greenlet running now, in any thread (a thread's own code runs in its main
    greenlet)."""
    return getcurrent()


class Hub(FdTable, TimerHeap):
    """The event loop of one thread. Methods that may switch say so. The fd table and the
    timer heap are its parts (fds.py, timers.py); the switching is all here."""

    def __init__(self) -> None:
        self.poller = new_poller()
        self.time = time.monotonic
        self._entries: Dict[int, FdEntry] = {}
        self._timers: List[Timer] = []
        self._compact_at = 256  # heap size at which cancelled timers are swept out
        self._ready: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]] = collections.deque()
        self._threadsafe: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]] = collections.deque()
        self._open_wakeup()
        self._loop: Optional[greenlet] = None
        self._workers: List[Task] = []  # parked worker greenlets for start_now
        self._base_context = contextvars.Context()
        self._stopping = False
        self.turns = 0  # loop iterations; a watchdog can read it from another thread
        self.running: Optional[greenlet] = None  # the task greenlet being run; None: the loop
        self.polling = False  # waiting in the poller (the watchdog tells idle from blocked)
        self.switches = 0  # task greenlets started or resumed; a watchdog reads it with turns

    # -- running ----------------------------------------------------------------------------

    def run(self) -> None:
        """Run the loop in the calling greenlet until ``stop()``. Blocks the thread."""
        if current_hub() is not None:
            raise RuntimeError("a hub is already running in this thread")
        self._loop = getcurrent()
        self._base_context = contextvars.copy_context()
        _local.hub = self
        self._stopping = False
        try:
            while not self._stopping:
                self._turn()
        finally:
            _local.hub = None
            self._loop = None

    def stop(self) -> None:
        """Make ``run`` return after the current turn. Call from the hub's thread."""
        self._stopping = True

    def _turn(self) -> None:
        self.turns += 1
        timeout: Optional[float] = None
        if self._ready or self._threadsafe:
            timeout = 0
        elif self._timers:
            timeout = max(0.0, self._timers[0].when - self.time())
        self.polling = True
        try:
            events = self.poller.poll(timeout)
        finally:
            self.polling = False
        # Each fd's entry is taken before anyone runs: a woken task may close an fd and get its
        # number again for a new socket, which this turn's event must not wake.
        entries = self._entries
        for entry, fd, mask in [(entries.get(fd), fd, mask) for fd, mask in events]:
            if entry is None:
                if fd == self._wake_fd:
                    self._drain_wakeup()
                continue
            mask &= entry.mask  # the interest it has now (an error or hang-up reports both)
            if mask & EVENT_READ:
                who = entry.reader
                if who is None:
                    # Nobody waits any more: drop the interest now (lazy interest, second half).
                    self._set_mask(fd, entry, entry.mask & ~EVENT_READ)
                else:
                    entry.reader = None
                    if type(who) is _Waiter:
                        who.wake(READY)
                    else:
                        try:
                            who()  # a one-shot watch callback
                        except Exception:
                            log.exception("error in a hub callback %r", who)
            if mask & EVENT_WRITE and entries.get(fd) is entry:
                # (the reader woken above may have released or closed the fd meanwhile)
                who = entry.writer
                if who is None:
                    self._set_mask(fd, entry, entry.mask & ~EVENT_WRITE)
                else:
                    entry.writer = None
                    self._resume(who)
        if self._timers:
            self._run_timers()
        while self._threadsafe:
            self._ready.append(self._threadsafe.popleft())
        for _ in range(len(self._ready)):
            fn, args = self._ready.popleft()
            self._call(fn, args)

    def _resume(self, who: Any) -> None:
        if type(who) is _Waiter:
            who.wake(READY)
        else:
            self._call(who, ())

    def _call(self, fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("error in a hub callback %r", fn)

    # -- scheduling -------------------------------------------------------------------------

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the hub on its next turn. Hub thread only."""
        self._ready.append((fn, args))

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the hub soon. Safe from any thread and from signal handlers."""
        self._threadsafe.append((fn, args))
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already full of wake-up bytes, or closed while stopping

    # -- greenlets --------------------------------------------------------------------------

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Task:
        """Start ``fn(*args)`` in a new greenlet on the next turn, in a copy of the current
        context. Returns the greenlet (a handle for ``kill``)."""
        glet = self._new_greenlet(fn)
        self._ready.append((self._start, (glet, args)))
        return glet

    def start_now(self, fn: Callable[..., Any], *args: Any) -> Task:
        """From a hub callback: run ``fn(*args)`` right away, until it first waits, in a pooled
        worker greenlet (starting and ending a greenlet costs far more than a switch).
        Returns the worker; it belongs to this job only until ``fn`` returns."""
        if self._loop is None:
            raise RuntimeError("the hub is not running")
        workers = self._workers
        while workers:
            worker = workers.pop()
            if not worker.dead:
                break
        else:
            worker = Task(fn, self._worker_main, self._loop)
        previous, self.running = self.running, worker
        self.switches += 1
        try:
            # A job is a list the worker empties (a new worker's run arguments keep its first);
            # the worker sets its context itself (greenlet refuses to on a frameless greenlet).
            worker.switch([fn, args, self._base_context.copy()])
        finally:
            self.running = previous
        return worker

    def _worker_main(self, job: List[Any]) -> None:
        worker = getcurrent()
        assert isinstance(worker, Task) and self._loop is not None
        while True:
            fn, args, context = job
            job.clear()
            worker.gr_context = context
            worker.fn = fn
            try:
                fn(*args)
            except Cancelled:
                pass
            except Exception:
                log.exception("unhandled error in greenlet %r", fn)
            self.running = None  # the loop runs next (the watchdog's record)
            if self._stopping or len(self._workers) >= MAX_IDLE_WORKERS:
                return
            # Idle, it holds neither the job nor its context (every contextvar and patched
            # threading.local value of the last request: a database connection, say).
            worker.fn = fn = _noop
            args, context = (), contextvars.Context()
            worker.gr_context = context
            self._workers.append(worker)
            job = self._loop.switch()

    def _new_greenlet(self, fn: Callable[..., Any]) -> Task:
        # Before run(), the parent is the current greenlet: the one that will call run().
        glet = Task(fn, self._task_main, self._loop or getcurrent())
        glet.gr_context = contextvars.copy_context()
        return glet

    def _start(self, glet: greenlet, args: Tuple[Any, ...]) -> None:
        if glet.dead:  # killed before it started
            return
        previous, self.running = self.running, glet
        self.switches += 1
        try:
            glet.switch(*args)
        finally:
            self.running = previous

    def _task_main(self, *args: Any) -> None:
        task = getcurrent()
        assert isinstance(task, Task)
        fn = task.fn
        try:
            fn(*args)
        except Cancelled:
            pass
        except Exception:
            log.exception("unhandled error in greenlet %r", fn)
        self.running = None  # the loop runs next

    def kill(self, glet: greenlet, exc: Optional[BaseException] = None) -> None:
        """Throw ``exc`` (default Cancelled) into ``glet`` on the next turn. A greenlet that has
        not started is dropped without running."""
        if isinstance(glet, Task) and not glet and not glet.dead:
            glet.fn = _noop  # not started yet: it will start, run nothing and end
            return
        self._ready.append((self._throw, (glet, exc or Cancelled())))

    def _throw(self, glet: greenlet, exc: BaseException) -> None:
        if glet.dead:
            return
        if not glet:  # not started (only plain greenlets get here): nothing to throw into
            return
        try:
            glet.throw(exc)
        except Cancelled:
            pass

    def new_context(self) -> None:
        """Give the current greenlet a fresh copy of the loop's context (one per request)."""
        getcurrent().gr_context = self._base_context.copy()

    def current(self) -> greenlet:
        return getcurrent()

    def _suspend(self) -> Any:
        """Switch to the loop; return the value we are resumed with (a ``Wake`` token for the
        hub's own waits, anything for ``park``). May switch."""
        loop = self._loop
        me = getcurrent()
        if loop is None or me is loop:
            raise RuntimeError("cannot wait in the hub itself or outside a running hub")
        self.running = None  # the loop runs from here until it resumes a greenlet
        try:
            result = loop.switch()
        finally:
            self.running = me  # resumed (or thrown into): the watchdog's record of who runs
            self.switches += 1
        return result

    # -- parking: the primitive that Event, Queue, locks and thread hand-offs are built on ---

    def parking(self) -> Parking:
        """Make a parking spot for the current greenlet; publish it to whoever will
        ``unpark`` it, then ``park`` on it (or ``cancel_parking`` it). Wake-ups are delivered
        on the hub's turn, so one published before ``park`` is called is not lost."""
        return _Waiter(getcurrent())

    def park(self, spot: Parking, deadline: Optional[float] = None) -> Any:
        """Suspend the current greenlet until ``unpark(spot, value)``; returns that value.
        May switch. Raises TimeoutError at ``deadline`` (monotonic)."""
        if not spot.waiting or spot.glet is not getcurrent():
            raise RuntimeError("park() needs a fresh spot made by this greenlet")
        timer = None if deadline is None else self.call_at(deadline, spot.wake, _PARK_TIMEOUT)
        try:
            value = self._suspend()
        finally:
            spot.waiting = False
            if timer is not None:
                self.cancel_timer(timer)
        if value is _PARK_TIMEOUT:
            raise TimeoutError("timed out")
        return value

    def cancel_parking(self, spot: Parking) -> None:
        """Give up a spot without parking on it: later ``unpark`` calls do nothing."""
        spot.waiting = False

    def unpark(self, spot: Parking, value: Any = None) -> None:
        """Wake the greenlet parked on ``spot`` with ``value`` on the hub's next turn. A spot
        is woken at most once; later calls do nothing. Hub thread only (from another thread,
        go through ``call_soon_threadsafe(hub.unpark, spot, value)``)."""
        self._ready.append((spot.wake, (value,)))

    def throw_into(self, glet: greenlet, exc: BaseException) -> None:
        """From hub context (a timer or callback): raise ``exc`` in ``glet`` now, at the point
        where it waits. Does nothing to a greenlet that is dead or has not started."""
        if glet and not glet.dead:
            glet.throw(exc)

    def yield_now(self) -> None:
        """Let every other ready greenlet run, then continue. May switch."""
        waiter = _Waiter(getcurrent())
        self._ready.append((waiter.wake, (READY,)))
        try:
            self._suspend()
        finally:
            waiter.waiting = False

    def sleep(self, seconds: float) -> None:
        """Suspend the current greenlet for ``seconds``. May switch."""
        if seconds <= 0:
            self.yield_now()
            return
        waiter = _Waiter(getcurrent())
        timer = self.call_later(seconds, waiter.wake, READY)
        try:
            self._suspend()
        finally:
            waiter.waiting = False
            self.cancel_timer(timer)

    # -- fds --------------------------------------------------------------------------------

    def wait_readable(self, fd: int, deadline: Optional[float] = None) -> None:
        """Suspend until ``fd`` is readable. May switch. Raises TimeoutError at ``deadline``
        (monotonic), ClosedResourceError if the fd is closed meanwhile, BusyResourceError if
        another greenlet already waits to read it."""
        self._wait(fd, EVENT_READ, deadline)

    def wait_writable(self, fd: int, deadline: Optional[float] = None) -> None:
        """Suspend until ``fd`` is writable. May switch. Raises as ``wait_readable``."""
        self._wait(fd, EVENT_WRITE, deadline)

    def wait_either(self, fd: int, deadline: Optional[float] = None) -> None:
        """Suspend until ``fd`` is readable or writable (ask the fd which). May switch.
        Raises as ``wait_readable``, BusyResourceError if anyone waits on either side."""
        self._wait(fd, EVENT_READ | EVENT_WRITE, deadline)

    def _wait(self, fd: int, events: int, deadline: Optional[float]) -> None:
        entry = self._entry(fd)
        if (events & EVENT_READ and entry.reader is not None) or (
                events & EVENT_WRITE and entry.writer is not None):
            raise BusyResourceError(f"another greenlet already waits on fd {fd}")
        waiter = _Waiter(getcurrent())
        if events & EVENT_READ:
            entry.reader = waiter
        if events & EVENT_WRITE:
            entry.writer = waiter
        if events == EVENT_READ and entry.writer is None:
            # Drop a stale write interest in the same call: a socket is nearly always writable,
            # so leaving it would only bring a spurious event and a second epoll_ctl.
            self._set_mask(fd, entry, EVENT_READ)
        else:
            self._set_mask(fd, entry, entry.mask | events)
        timer = None if deadline is None else self.call_at(deadline, waiter.wake, TIMED_OUT)
        try:
            token = self._suspend()
        finally:
            waiter.waiting = False
            if entry.reader is waiter:
                entry.reader = None
            if entry.writer is waiter:
                entry.writer = None
            if timer is not None:
                self.cancel_timer(timer)
        if token is TIMED_OUT:
            raise TimeoutError("timed out")
        if token is CLOSED:
            raise ClosedResourceError(f"fd {fd} was closed while waiting")


def _noop(*args: Any) -> None:
    return None
