"""run_in_thread: blocking calls (C libraries, disk I/O, name resolution) in a bounded pool of
threads, so that the hub's thread keeps serving while they run.

Strategy: a caller in a hub task queues a job and parks on its hub. One of at most
``MAX_THREADS`` daemon threads, started on demand, runs the call and hands the outcome back
through ``call_soon_threadsafe`` (the hub's wakeup socket), which unparks the caller; the caller
then returns the value or raises the exception. Outside a hub task the call just runs in the
calling thread: there is nothing else to keep going there.

Invariants:
- A thread cannot be interrupted: a caller that gives up (a ``Timeout``, a kill) returns at once,
  its job is skipped if no thread has taken it yet, else it runs to its end and the outcome is
  dropped (a late wake-up of a spot nobody parks on does nothing).
- Threads idle for ``IDLE_SECONDS`` exit; a forked child starts with an empty pool.
"""

from __future__ import annotations

import _socket
import _thread
import os
import queue
import socket
import threading
from typing import Any, Callable, List, Tuple, TypeVar

from .hub import Hub, Parking, waitable_hub

T = TypeVar("T")
MAX_THREADS = 16
IDLE_SECONDS = 60.0
_getaddrinfo = socket.getaddrinfo  # captured before greenserve.patch may replace it
_NUMERIC_HOST = int(socket.AI_NUMERICHOST)
_FAMILIES = {int(family): family for family in socket.AddressFamily}
_KINDS = {int(kind): kind for kind in socket.SocketKind}


class _Job:
    __slots__ = ("fn", "args", "hub", "spot", "cancelled")

    def __init__(self, fn: Callable[..., Any], args: Tuple[Any, ...], hub: Hub,
                 spot: Parking) -> None:
        self.fn = fn
        self.args = args
        self.hub = hub
        self.spot = spot
        self.cancelled = False

    def run(self) -> None:
        """In a pool thread: run the call, then wake the caller with (ok, value)."""
        outcome: Tuple[bool, Any]
        try:
            outcome = (True, self.fn(*self.args))
        except BaseException as exc:  # noqa: B902 - handed to the caller, who re-raises it
            outcome = (False, exc)
        self.hub.call_soon_threadsafe(self.hub.unpark, self.spot, outcome)


class ThreadPool:
    """At most ``max_threads`` daemon threads taking jobs from one queue."""

    def __init__(self, max_threads: int = MAX_THREADS) -> None:
        self.max_threads = max_threads
        self._jobs: "queue.SimpleQueue[_Job]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a job
        self._started = 0

    @property
    def threads(self) -> int:
        """How many pool threads exist now."""
        return self._threads

    def submit(self, job: _Job) -> None:
        """Queue ``job``; start a thread if more jobs wait than threads idle and the bound
        allows. Never blocks and never switches, patched or not: the thread is started with
        ``_thread``, since ``threading.Thread.start`` waits for the thread to run, and under
        greenserve.patch that wait parks the caller (which may have a parking spot published
        already: run_in_thread)."""
        with self._lock:
            self._jobs.put(job)
            if self._jobs.qsize() > self._idle and self._threads < self.max_threads:
                self._threads += 1
                self._started += 1
                _thread.start_new_thread(self._work, (f"greenserve-pool-{self._started}",))

    def _work(self, name: str) -> None:
        threading.current_thread().name = name  # for stack dumps and profilers
        while True:
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._jobs.empty():
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
            if not job.cancelled:
                job.run()
            del job


_pool = ThreadPool()


def _fresh_pool_after_fork() -> None:
    global _pool
    _pool = ThreadPool(_pool.max_threads)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_pool_after_fork)


def pool() -> ThreadPool:
    """The process's pool (for its size and statistics)."""
    return _pool


def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a pool thread while the calling greenlet waits and the hub serves
    everyone else. Returns what ``fn`` returned; raises what it raised. May switch. Outside a
    hub task, calls ``fn(*args)`` directly."""
    hub = waitable_hub()
    if hub is None:
        return fn(*args)
    job = _Job(fn, args, hub, hub.parking())
    _pool.submit(job)
    try:
        ok, value = hub.park(job.spot)
    except BaseException:
        job.cancelled = True
        raise
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def getaddrinfo(
    host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0,
) -> List[Tuple[Any, ...]]:
    """``socket.getaddrinfo`` that resolves names in a pool thread: a numeric address is
    converted in place (no DNS, no thread). May switch. Raises socket.gaierror."""
    if waitable_hub() is not None:
        try:
            return _numeric(host, port, family, type, proto, flags | _NUMERIC_HOST)
        except (socket.gaierror, UnicodeError):
            pass  # a name (or something only the full lookup can judge)
    return run_in_thread(_getaddrinfo, host, port, family, type, proto, flags)


def _numeric(host: Any, port: Any, family: int, kind: int, proto: int,
             flags: int) -> List[Tuple[Any, ...]]:
    """What ``socket.getaddrinfo`` answers, for flags holding AI_NUMERICHOST: the same list,
    without its Python wrapper (an enum call per field) and, for an ASCII host, without the
    Python idna codec the C call would run: one IP literal costs what a whole request to an
    upstream costs otherwise. Raises socket.gaierror for a name."""
    if isinstance(host, str) and host.isascii():
        host = host.encode()
    return [(_FAMILIES.get(af, af), _KINDS.get(socktype, socktype), number, canonname, sockaddr)
            for af, socktype, number, canonname, sockaddr
            in _socket.getaddrinfo(host, port, family, kind, proto, flags)]
