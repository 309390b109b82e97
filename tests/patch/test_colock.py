"""The patched threading locks against the standard library's semantics: in hub tasks, across a
real thread, and mixed; and what is built on them (Condition, Semaphore, Event, Barrier,
queue.Queue). Each test that would deadlock a greenlet server on the plain locks says so.

Every hub here runs under ``run_hub`` (a hung hub fails the test instead of stalling it)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterator, List

import pytest

import greenserve
from conftest import run_hub
from greenserve import patch
from greenserve.patch.colock import CoopLock, CoopRLock


@pytest.fixture
def patched() -> Iterator[None]:
    originals = (threading.Lock, threading._allocate_lock, threading.RLock,  # type: ignore
                 queue.SimpleQueue)
    patch.apply()
    try:
        yield
    finally:
        patch.undo()
        assert (threading.Lock, threading._allocate_lock, threading.RLock,  # type: ignore
                queue.SimpleQueue) == originals


def ticker(ticks: List[float], stop: List[bool]) -> None:
    """A greenlet that records a tick every 10 ms: proof that the hub keeps turning."""
    while not stop:
        ticks.append(time.monotonic())
        greenserve.sleep(0.01)


def test_apply_makes_the_names_cooperative(patched):
    assert type(threading.Lock()) is CoopLock and type(threading.RLock()) is CoopRLock
    assert type(threading.Condition()._lock) is CoopRLock  # type: ignore[attr-defined]
    assert type(queue.Queue().mutex) is CoopLock
    assert queue.SimpleQueue is queue._PySimpleQueue  # type: ignore[attr-defined]


def test_a_held_lock_parks_the_other_greenlet_and_the_hub_turns(patched):
    """On the plain lock the second greenlet would block the thread, and with it the holder:
    a deadlock. Here it parks until the holder releases."""
    lock = threading.Lock()
    order: List[str] = []
    ticks: List[float] = []
    stop: List[bool] = []

    def holder() -> None:
        with lock:
            order.append("held")
            greenserve.sleep(0.1)
            order.append("released")

    def waiter() -> None:
        with lock:
            order.append("waiter got it")

    def main(hub: Any) -> Any:
        greenserve.spawn(ticker, ticks, stop)
        tasks = [greenserve.spawn(holder), greenserve.spawn(waiter)]
        for task in tasks:
            task.join(5)
        stop.append(True)
        return order

    assert run_hub(main, timeout=10) == ["held", "released", "waiter got it"]
    assert len(ticks) >= 5


def test_lock_timeouts_errors_and_nonblocking(patched):
    lock = threading.Lock()

    def main(hub: Any) -> Any:
        assert lock.acquire()
        assert lock.locked() and not lock.acquire(False)
        with pytest.raises(ValueError):
            lock.acquire(False, 1)
        with pytest.raises(ValueError):
            lock.acquire(True, -2)
        started = time.monotonic()
        assert not lock.acquire(timeout=0.05)
        waited = time.monotonic() - started
        lock.release()
        with pytest.raises(RuntimeError):
            lock.release()
        return waited

    assert 0.04 <= run_hub(main) < 1


def test_a_timed_out_waiter_passes_its_wake_up_on(patched):
    """A waiter that times out just as it is woken must not swallow the wake-up: the next
    waiter still gets the lock."""
    lock = threading.Lock()
    got: List[str] = []

    def main(hub: Any) -> Any:
        lock.acquire()
        first = greenserve.spawn(lambda: got.append("first") if lock.acquire(timeout=0.05) else None)
        second = greenserve.spawn(lambda: lock.acquire(timeout=5) and got.append("second"))
        greenserve.sleep(0.05)  # release just as the first one's deadline comes
        lock.release()
        first.join(5)
        second.join(5)
        return got

    assert run_hub(main) in (["second"], ["first"])
    # whoever got it holds it: released once more, the lock is free for anyone
    assert lock.locked()


def test_rlock_is_reentrant_per_greenlet_and_excludes_the_others(patched):
    lock = threading.RLock()
    order: List[str] = []

    def nested() -> None:
        with lock:
            with lock:
                order.append("a in")
                greenserve.sleep(0.05)
            order.append("a still holds")
        order.append("a out")

    def other() -> None:
        with lock:
            order.append("b in")

    def main(hub: Any) -> Any:
        a, b = greenserve.spawn(nested), greenserve.spawn(other)
        a.join(5)
        b.join(5)
        with pytest.raises(RuntimeError):
            lock.release()  # not the owner
        return order

    assert run_hub(main) == ["a in", "a still holds", "a out", "b in"]


def test_condition_wait_notify_and_timeout(patched):
    cond = threading.Condition()
    items: List[int] = []
    seen: List[Any] = []

    def consumer() -> None:
        with cond:
            seen.append(cond.wait_for(lambda: items, timeout=5))
            seen.append(items.pop())

    def main(hub: Any) -> Any:
        tasks = [greenserve.spawn(consumer) for _ in range(3)]
        greenserve.sleep(0.02)
        with cond:
            items.extend([1, 2, 3])
            cond.notify_all()
        for task in tasks:
            task.join(5)
        with cond:
            started = time.monotonic()
            timed_out = not cond.wait(0.05)
        return seen, timed_out, time.monotonic() - started

    seen_values, timed_out, waited = run_hub(main)
    assert sorted(v for v in seen_values if isinstance(v, int)) == [1, 2, 3]
    assert timed_out and 0.04 <= waited < 1


def test_semaphores_events_and_barriers(patched):
    sem = threading.BoundedSemaphore(2)
    event = threading.Event()
    barrier = threading.Barrier(3, timeout=5)
    inside: List[int] = []
    peak: List[int] = [0]

    def limited() -> None:
        with sem:
            inside.append(1)
            peak[0] = max(peak[0], len(inside))
            greenserve.sleep(0.02)
            inside.pop()

    def main(hub: Any) -> Any:
        tasks = [greenserve.spawn(limited) for _ in range(6)]
        for task in tasks:
            task.join(5)
        with pytest.raises(ValueError):
            sem.release()  # bounded: more releases than acquires
        waiters = [greenserve.spawn(event.wait, 5) for _ in range(3)]
        greenserve.sleep(0.01)
        event.set()
        woke = [task.join(5) for task in waiters]
        parties = [greenserve.spawn(barrier.wait) for _ in range(3)]
        indices = sorted(task.join(5) for task in parties)
        return peak[0], woke, indices

    assert run_hub(main) == (2, [True, True, True], [0, 1, 2])


def test_a_queue_pool_with_more_greenlets_than_items_does_not_deadlock(patched):
    """The shape of SQLAlchemy's QueuePool: 20 requests share 2 connections, each held for
    20 ms. On the plain locks the third request blocks the thread forever."""
    pool: "queue.Queue[int]" = queue.Queue(maxsize=2)
    pool.put(0)
    pool.put(1)
    used: List[int] = []

    def request() -> None:
        conn = pool.get(timeout=5)
        greenserve.sleep(0.02)
        used.append(conn)
        pool.put(conn)

    def main(hub: Any) -> Any:
        started = time.monotonic()
        tasks = [greenserve.spawn(request) for _ in range(20)]
        for task in tasks:
            task.join(10)
        return time.monotonic() - started

    elapsed = run_hub(main, timeout=20)
    assert sorted(set(used)) == [0, 1] and len(used) == 20 and pool.qsize() == 2
    assert elapsed < 2  # 10 rounds of 20 ms, two at a time


def test_simple_queue_between_greenlets(patched):
    q = queue.SimpleQueue()

    def main(hub: Any) -> Any:
        getter = greenserve.spawn(lambda: [q.get(timeout=5) for _ in range(3)])
        for i in range(3):
            greenserve.sleep(0.01)
            q.put(i)
        return getter.join(5)

    assert run_hub(main) == [0, 1, 2]


def test_a_real_thread_and_greenlets_exclude_each_other(patched):
    """Across OS threads the lock is still a lock: a greenlet waits (cooperatively, the hub
    turns) while a real thread holds it, and a real thread waits while a greenlet holds it."""
    lock = threading.Lock()
    ticks: List[float] = []
    stop: List[bool] = []
    log: List[str] = []
    holding = threading.Event()

    def thread_holds() -> None:
        with lock:
            log.append("thread in")
            holding.set()
            time.sleep(0.1)  # a real sleep: this is another thread
            log.append("thread out")

    def main(hub: Any) -> Any:
        greenserve.spawn(ticker, ticks, stop)
        thread = threading.Thread(target=thread_holds)
        thread.start()
        assert holding.wait(5)
        with lock:  # parks until the thread releases
            log.append("greenlet in")
            other = threading.Thread(target=lambda: (lock.acquire(), log.append("thread 2 in"),
                                                     lock.release()))
            other.start()
            greenserve.sleep(0.05)  # thread 2 blocks on the lock meanwhile
            log.append("greenlet out")
        stop.append(True)
        return thread, other

    thread, other = run_hub(main, timeout=10)
    thread.join(5)
    other.join(5)
    assert log == ["thread in", "thread out", "greenlet in", "greenlet out", "thread 2 in"]
    assert len(ticks) >= 5  # the hub turned while the greenlet waited for the thread


def test_a_cancelled_waiter_leaves_the_queue(patched):
    lock = threading.Lock()

    def main(hub: Any) -> Any:
        lock.acquire()
        task = greenserve.spawn(lock.acquire)
        greenserve.sleep(0.01)
        task.kill()
        lock.release()
        return lock.acquire(timeout=1)

    assert run_hub(main) is True


def test_event_condition_and_queue_hand_over_between_greenlets_and_threads(patched):
    """What a reader thread and a request do to each other (simple-websocket, a driver's pool):
    a greenlet waits on an Event a real thread sets, a thread waits on a Queue a greenlet
    fills and on a Condition a greenlet notifies; the hub turns throughout."""
    ticks: List[float] = []
    stop: List[bool] = []
    event = threading.Event()
    items: "queue.Queue[str]" = queue.Queue()
    cond = threading.Condition()
    seen: List[str] = []

    got_item = threading.Event()

    def thread_side() -> None:
        time.sleep(0.05)  # a real sleep: this is another thread
        event.set()
        seen.append(items.get(timeout=5))
        got_item.set()
        with cond:
            assert cond.wait_for(lambda: len(seen) == 2, timeout=5)
        seen.append("thread notified")

    def main(hub: Any) -> Any:
        greenserve.spawn(ticker, ticks, stop)
        thread = threading.Thread(target=thread_side)
        thread.start()
        assert event.wait(5)  # the hub turns while the thread sleeps
        items.put("from the greenlet")
        assert got_item.wait(5)  # a greenlet waiting for a thread, again
        with cond:
            seen.append("greenlet")
            cond.notify_all()
        stop.append(True)
        return thread

    thread = run_hub(main, timeout=10)
    thread.join(5)
    assert seen == ["from the greenlet", "greenlet", "thread notified"]
    assert len(ticks) >= 3


# The same calls on the standard library's locks (in a plain thread) and on the patched ones
# (in a hub task): the same results and the same errors. Each call is (name, args, kwargs).
CALLS = [
    ("acquire", (), {}),
    ("acquire", (False,), {}),
    ("acquire", (), {"timeout": 0.01}),
    ("locked", (), {}),
    ("release", (), {}),
    ("release", (), {}),
    ("acquire", (False,), {"timeout": 1}),
    ("acquire", (), {"timeout": -2}),
    ("acquire", (True, 0.01), {}),
    ("acquire", (True, float("nan")), {}),
    ("acquire", (), {"timeout": 1e300}),
]
RCALLS = [
    ("acquire", (), {}),
    ("acquire", (False,), {}),
    ("_is_owned", (), {}),
    ("release", (), {}),
    ("release", (), {}),
    ("_is_owned", (), {}),
    ("release", (), {}),
    ("acquire", (False,), {"timeout": 1}),
]


def _outcomes(lock: Any, calls: List[Any]) -> List[Any]:
    results: List[Any] = []
    for name, args, kwargs in calls:
        try:
            results.append(getattr(lock, name)(*args, **kwargs))
        except (RuntimeError, ValueError, OverflowError) as exc:
            results.append(type(exc).__name__)
    return results


def test_lock_and_rlock_calls_match_the_standard_library(patched):
    import _thread

    expected = (_outcomes(_thread.allocate_lock(), CALLS),
                _outcomes(_thread.RLock(), RCALLS))
    assert "RuntimeError" in expected[0] and "ValueError" in expected[0]
    got = run_hub(lambda hub: (_outcomes(threading.Lock(), CALLS),
                               _outcomes(threading.RLock(), RCALLS)))
    assert got == expected
    assert (_outcomes(threading.Lock(), CALLS), _outcomes(threading.RLock(), RCALLS)) == expected


def test_rlock_release_by_another_greenlet_or_thread_raises(patched):
    rlock = threading.RLock()
    errors: List[str] = []

    def other() -> None:
        try:
            rlock.release()
        except RuntimeError:
            errors.append("refused")

    def main(hub: Any) -> None:
        rlock.acquire()
        greenserve.spawn(other).join(5)  # another greenlet of the same thread
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(5)  # brief: the thread only fails to release
        rlock.release()

    run_hub(main)
    assert errors == ["refused", "refused"]
