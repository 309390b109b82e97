"""Unit tests of greenserve.loop.hub.Hub, driven for real.

Most tests use ``run_hub(main)``: a fresh Hub runs in the test thread, ``main(hub)`` runs in a
spawned greenlet and the hub stops when it returns. An exception in ``main`` is re-raised in the
test; a watchdog thread stops a hub that hangs, so a broken hub fails a test instead of hanging
the run. Tests about other threads run the hub in a thread of its own.
"""

from __future__ import annotations

import contextvars
import logging
import socket
import threading
import time
from typing import Any, Callable, List, Optional

import pytest

from greenserve.errors import BusyResourceError, Cancelled, ClosedResourceError
from greenserve.loop.hub import Hub, current_hub, get_hub

from conftest import run_hub



@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


# -- spawning and scheduling --------------------------------------------------------------------


def test_spawn_runs_tasks_in_order():
    order: List[int] = []

    def main(hub: Hub) -> None:
        for i in range(10):
            hub.spawn(order.append, i)
        hub.sleep(0.01)

    run_hub(main)
    assert order == list(range(10))


def test_spawn_passes_arguments_and_returns_a_handle():
    seen: List[Any] = []

    def main(hub: Hub) -> None:
        glet = hub.spawn(lambda a, b: seen.append((a, b)), 1, "two")
        assert not glet.dead
        hub.sleep(0.01)
        assert glet.dead

    run_hub(main)
    assert seen == [(1, "two")]


def test_spawn_before_run_starts_when_the_hub_runs():
    hub = Hub()
    ran = []
    try:
        hub.spawn(ran.append, "early")
        assert ran == []  # nothing runs until the hub does
        hub.spawn(hub.stop)
        hub.run()
        assert ran == ["early"]
    finally:
        hub.close()


def test_park_and_unpark_hand_over_a_value_once():
    hub = Hub()
    got = []

    def parker():
        spot = hub.parking()
        hub.spawn(unparker, spot)
        got.append(hub.park(spot))
        late = hub.parking()
        with pytest.raises(TimeoutError):
            hub.park(late, hub.time() + 0.05)
        hub.stop()

    def unparker(spot):
        hub.unpark(spot, 42)
        hub.unpark(spot, 43)  # a spot is woken once; this one is dropped

    try:
        hub.spawn(parker)
        hub.run()
    finally:
        hub.close()
    assert got == [42]


def test_sleepers_wake_in_delay_order_and_sleep_at_least_their_delay():
    woke: List[str] = []
    slept: dict = {}
    delays = {"slow": 0.15, "fast": 0.05, "middle": 0.1}

    def sleeper(hub: Hub, name: str) -> None:
        start = time.monotonic()
        hub.sleep(delays[name])
        slept[name] = time.monotonic() - start
        woke.append(name)

    def main(hub: Hub) -> None:
        for name in delays:  # spawned slow, fast, middle
            hub.spawn(sleeper, hub, name)
        hub.sleep(0.3)

    run_hub(main)
    assert woke == ["fast", "middle", "slow"]
    for name, delay in delays.items():
        assert slept[name] >= delay, (name, slept[name])
        assert slept[name] < delay + 0.1, (name, slept[name])


def test_sleep_zero_yields():
    order: List[str] = []

    def a(hub: Hub) -> None:
        order.append("a1")
        hub.sleep(0)
        order.append("a2")

    def main(hub: Hub) -> None:
        hub.spawn(a, hub)
        hub.spawn(order.append, "b")
        hub.sleep(0.01)

    run_hub(main)
    assert order == ["a1", "b", "a2"]


def test_yield_now_interleaves_two_tasks():
    order: List[str] = []

    def task(hub: Hub, name: str) -> None:
        for i in range(4):
            order.append(f"{name}{i}")
            hub.yield_now()

    def main(hub: Hub) -> None:
        hub.spawn(task, hub, "a")
        hub.spawn(task, hub, "b")
        hub.sleep(0.02)

    run_hub(main)
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3"]


def test_call_later_fires_and_cancelled_timer_never_fires():
    fired: List[Any] = []

    def main(hub: Hub) -> None:
        start = time.monotonic()
        hub.call_later(0.05, lambda: fired.append(("kept", time.monotonic() - start)))
        cancelled = hub.call_later(0.02, lambda: fired.append(("cancelled", 0)))
        hub.call_later(0.01, hub.cancel_timer, cancelled)  # cancelled before it is due
        also_cancelled = hub.call_later(0.03, lambda: fired.append(("also", 0)))
        hub.cancel_timer(also_cancelled)
        hub.cancel_timer(also_cancelled)  # twice is harmless
        hub.sleep(0.15)

    run_hub(main)
    assert [name for name, _ in fired] == ["kept"]
    assert fired[0][1] >= 0.05


def test_timer_cancel_method_also_prevents_firing():
    fired: List[str] = []

    def main(hub: Hub) -> None:
        timer = hub.call_later(0.01, fired.append, "cancelled")
        timer.cancel()
        hub.call_later(0.02, fired.append, "kept")
        hub.sleep(0.05)

    run_hub(main)
    assert fired == ["kept"]


def test_many_cancelled_timers_are_purged_and_the_rest_still_fire():
    fired: List[int] = []

    def main(hub: Hub) -> None:
        timers = [hub.call_later(0.02, fired.append, i) for i in range(300)]
        for timer in timers[::2]:
            hub.cancel_timer(timer)
        hub.sleep(0.1)

    run_hub(main)
    assert sorted(fired) == list(range(1, 300, 2))


def test_call_soon_runs_on_the_next_turn():
    order: List[str] = []

    def main(hub: Hub) -> None:
        hub.call_soon(order.append, "soon")
        order.append("before")
        hub.yield_now()
        order.append("after")

    run_hub(main)
    assert order == ["before", "soon", "after"]


# -- waiting on fds -----------------------------------------------------------------------------


def test_wait_readable_wakes_when_the_other_end_writes(pair):
    a, b = pair
    got: List[Any] = []

    def reader(hub: Hub) -> None:
        start = time.monotonic()
        hub.wait_readable(a.fileno())
        got.append((a.recv(100), time.monotonic() - start))

    def main(hub: Hub) -> None:
        glet = hub.spawn(reader, hub)
        hub.sleep(0.05)
        assert got == []  # still waiting
        b.send(b"ping")
        hub.sleep(0.02)
        assert glet.dead

    run_hub(main)
    assert got[0][0] == b"ping"
    assert got[0][1] >= 0.05


def test_wait_writable_returns_for_a_writable_socket(pair):
    a, _ = pair

    def main(hub: Hub) -> None:
        hub.wait_writable(a.fileno(), hub.time() + 1)

    run_hub(main)


def test_wait_readable_deadline_raises_timeout_error(pair):
    a, _ = pair

    def main(hub: Hub) -> float:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            hub.wait_readable(a.fileno(), hub.time() + 0.05)
        return time.monotonic() - start

    elapsed = run_hub(main)
    assert 0.05 <= elapsed < 0.5


def test_wait_writable_deadline_raises_timeout_error(pair):
    a, _ = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    def main(hub: Hub) -> None:
        try:
            while True:
                a.send(b"x" * 65536)
        except BlockingIOError:
            pass
        with pytest.raises(TimeoutError):
            hub.wait_writable(a.fileno(), hub.time() + 0.05)

    run_hub(main)


def test_deadline_in_the_past_times_out_at_once(pair):
    a, _ = pair

    def main(hub: Hub) -> None:
        with pytest.raises(TimeoutError):
            hub.wait_readable(a.fileno(), hub.time() - 1)

    run_hub(main)


def test_second_waiter_same_fd_same_direction_is_busy(pair):
    a, b = pair
    results: List[Any] = []

    def first(hub: Hub) -> None:
        hub.wait_readable(a.fileno())
        results.append("first woke")

    def main(hub: Hub) -> None:
        hub.spawn(first, hub)
        hub.yield_now()
        with pytest.raises(BusyResourceError):
            hub.wait_readable(a.fileno(), hub.time() + 1)
        # The other direction is a different slot: a writer may wait meanwhile.
        hub.wait_writable(a.fileno(), hub.time() + 1)
        b.send(b"x")
        hub.sleep(0.02)

    run_hub(main)
    assert results == ["first woke"]


def test_wait_either_wakes_on_read_when_the_fd_cannot_be_written(pair):
    # A database driver flushing a big query waits for "readable or writable" on one fd: the
    # server may answer (an error) before it has read everything.
    a, b = pair
    results: List[Any] = []

    def main(hub: Hub) -> None:
        try:
            while True:
                a.send(b"x" * 65536)  # fill the buffers until a cannot be written
        except BlockingIOError:
            pass
        hub.call_later(0.05, b.send, b"answer")
        hub.wait_either(a.fileno(), hub.time() + 5)
        results.append(a.recv(100))
        # Both slots are free again: a plain reader and writer can wait now.
        with pytest.raises(TimeoutError):
            hub.wait_readable(a.fileno(), hub.time() + 0.01)
        with pytest.raises(TimeoutError):
            hub.wait_either(a.fileno(), hub.time() + 0.01)

    run_hub(main)
    assert results == [b"answer"]


def test_wait_either_on_an_fd_ready_both_ways_then_released_and_waited_again(pair):
    # A database driver waits "read or write", is woken by an fd that is both (an answer
    # arrived; the socket can be written), drops the hub's interest (release_fd) and waits
    # again at once. The same turn still holds the write half of that event: it must neither
    # touch the released registration (KeyError from the selector) nor revive it (a waiter
    # that is never woken).
    a, b = pair
    results: List[Any] = []

    def main(hub: Hub) -> None:
        for n in range(3):
            b.send(b"x")
            hub.wait_either(a.fileno(), hub.time() + 5)
            hub.release_fd(a.fileno())
            results.append(a.recv(10))
        hub.call_later(0.05, b.send, b"last")
        hub.wait_readable(a.fileno(), hub.time() + 5)
        results.append(a.recv(10))
        hub.release_fd(a.fileno())

    run_hub(main)
    assert results == [b"x", b"x", b"x", b"last"]


def test_wait_either_wakes_on_write_and_refuses_a_taken_side(pair):
    a, b = pair
    woke: List[str] = []

    def reader(hub: Hub) -> None:
        hub.wait_readable(a.fileno())
        woke.append("reader")

    def main(hub: Hub) -> None:
        hub.spawn(reader, hub)
        hub.yield_now()
        with pytest.raises(BusyResourceError):
            hub.wait_either(a.fileno(), hub.time() + 1)
        hub.wait_writable(a.fileno(), hub.time() + 1)  # the writer side was left free
        b.send(b"x")
        hub.sleep(0.02)

    run_hub(main)
    assert woke == ["reader"]


def test_forget_fd_wakes_the_waiter_with_closed_resource_error(pair):
    a, _ = pair
    results: List[Any] = []

    def waiter(hub: Hub) -> None:
        try:
            hub.wait_readable(a.fileno())
        except ClosedResourceError as exc:
            results.append(exc)

    def main(hub: Hub) -> None:
        glet = hub.spawn(waiter, hub)
        hub.yield_now()
        hub.forget_fd(a.fileno())
        assert hub.fd_count() == 0
        hub.sleep(0.01)
        assert glet.dead

    run_hub(main)
    assert len(results) == 1 and isinstance(results[0], OSError)


def test_forget_fd_of_an_unknown_fd_is_a_no_op():
    def main(hub: Hub) -> None:
        hub.forget_fd(12345)

    run_hub(main)


def test_kill_throws_cancelled_into_a_waiter_and_frees_its_fd(pair):
    a, b = pair
    events: List[str] = []

    def victim(hub: Hub) -> None:
        try:
            hub.wait_readable(a.fileno())
        except Cancelled:
            events.append("cancelled")
            raise
        events.append("woke normally")

    def successor(hub: Hub) -> None:
        hub.wait_readable(a.fileno(), hub.time() + 2)
        events.append("successor got " + a.recv(10).decode())

    def main(hub: Hub) -> None:
        glet = hub.spawn(victim, hub)
        hub.yield_now()
        hub.kill(glet)
        hub.sleep(0.01)
        assert glet.dead
        other = hub.spawn(successor, hub)  # must not raise BusyResourceError
        hub.yield_now()
        b.send(b"hello")
        hub.sleep(0.05)
        assert other.dead

    run_hub(main)
    assert events == ["cancelled", "successor got hello"]


def test_kill_a_sleeping_greenlet_cancels_its_timer():
    events: List[str] = []

    def sleeper(hub: Hub) -> None:
        try:
            hub.sleep(0.05)
            events.append("slept")
        except Cancelled:
            events.append("cancelled")
            raise

    def main(hub: Hub) -> None:
        glet = hub.spawn(sleeper, hub)
        hub.yield_now()
        hub.kill(glet)
        hub.sleep(0.1)
        assert glet.dead

    run_hub(main)
    assert events == ["cancelled"]


def test_kill_with_a_custom_exception():
    events: List[str] = []

    class Stop(Exception):
        pass

    def sleeper(hub: Hub) -> None:
        try:
            hub.sleep(1)
        except Stop:
            events.append("stopped")

    def main(hub: Hub) -> None:
        glet = hub.spawn(sleeper, hub)
        hub.yield_now()
        hub.kill(glet, Stop())
        hub.sleep(0.01)

    run_hub(main)
    assert events == ["stopped"]


def test_kill_before_start_means_it_never_runs():
    ran: List[str] = []

    def main(hub: Hub) -> None:
        glet = hub.spawn(ran.append, "ran")
        hub.kill(glet)
        hub.sleep(0.02)
        assert glet.dead

    run_hub(main)
    assert ran == []


def test_kill_of_a_dead_greenlet_is_harmless():
    def main(hub: Hub) -> None:
        glet = hub.spawn(lambda: None)
        hub.sleep(0.01)
        assert glet.dead
        hub.kill(glet)
        hub.sleep(0.01)

    run_hub(main)


# -- threads, the current hub -------------------------------------------------------------------


def test_call_soon_threadsafe_wakes_a_hub_blocked_in_select():
    hub = Hub()
    calls: List[Any] = []
    thread = threading.Thread(target=hub.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while hub.turns < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.1)
        turns_before = hub.turns
        time.sleep(0.1)
        assert hub.turns == turns_before  # blocked in select: no timers, nothing ready

        def on_hub() -> None:
            calls.append((threading.current_thread() is thread, get_hub() is hub))
            hub.stop()

        hub.call_soon_threadsafe(on_hub)
        thread.join(2)
        assert not thread.is_alive(), "the hub did not wake up"
        assert calls == [(True, True)]
    finally:
        if thread.is_alive():
            hub.call_soon_threadsafe(hub.stop)
            thread.join(2)
        hub.close()


def test_call_soon_threadsafe_from_many_threads():
    count = [0]
    n_threads, per_thread = 8, 200

    def main(hub: Hub) -> None:
        def bump() -> None:
            count[0] += 1

        def worker() -> None:
            for _ in range(per_thread):
                hub.call_soon_threadsafe(bump)

        threads = [threading.Thread(target=worker) for _ in range(n_threads)]
        for t in threads:
            t.start()
        deadline = hub.time() + 5
        while count[0] < n_threads * per_thread and hub.time() < deadline:
            hub.sleep(0.005)
        for t in threads:
            t.join()

    run_hub(main)
    assert count[0] == n_threads * per_thread


def test_get_hub_inside_a_running_hub_and_outside():
    with pytest.raises(RuntimeError):
        get_hub()
    assert current_hub() is None

    def main(hub: Hub) -> bool:
        return get_hub() is hub and current_hub() is hub

    assert run_hub(main) is True
    with pytest.raises(RuntimeError):
        get_hub()
    assert current_hub() is None


def test_get_hub_in_another_thread_is_not_this_threads_hub():
    def main(hub: Hub) -> Optional[BaseException]:
        errors: List[BaseException] = []

        def other() -> None:
            try:
                get_hub()
            except RuntimeError as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        return errors[0] if errors else None

    assert isinstance(run_hub(main), RuntimeError)


def test_a_second_hub_cannot_run_in_the_same_thread():
    def main(hub: Hub) -> None:
        other = Hub()
        try:
            with pytest.raises(RuntimeError):
                other.run()
        finally:
            other.close()

    run_hub(main)


def test_waiting_outside_a_task_raises():
    hub = Hub()
    try:
        with pytest.raises(RuntimeError):
            hub.sleep(0.01)
    finally:
        hub.close()


# -- errors, callbacks, lazy interest, contexts -------------------------------------------------


def test_exception_in_a_task_is_logged_and_the_hub_goes_on(caplog):
    after: List[str] = []

    def bad() -> None:
        raise ValueError("boom in a task")

    def bad_callback() -> None:
        raise KeyError("boom in a callback")

    def main(hub: Hub) -> None:
        hub.spawn(bad)
        hub.call_soon(bad_callback)
        hub.spawn(after.append, "still running")
        hub.sleep(0.02)
        after.append("main done")

    with caplog.at_level(logging.ERROR, logger="greenserve.error"):
        run_hub(main)
    assert after == ["still running", "main done"]
    records = [r for r in caplog.records if r.name == "greenserve.error"]
    errors = [r.exc_info[1] for r in records if r.exc_info]
    assert any(isinstance(e, ValueError) and "boom in a task" in str(e) for e in errors)
    assert any(isinstance(e, KeyError) for e in errors)


def test_cancelled_escaping_a_task_is_not_logged(caplog):
    def quits() -> None:
        raise Cancelled()

    def main(hub: Hub) -> None:
        hub.spawn(quits)
        hub.sleep(0.01)

    with caplog.at_level(logging.DEBUG, logger="greenserve.error"):
        run_hub(main)
    assert not [r for r in caplog.records if r.name == "greenserve.error"]


def test_watch_readable_fires_the_callback_once(pair):
    a, b = pair
    calls: List[bytes] = []

    def main(hub: Hub) -> None:
        hub.watch_readable(a.fileno(), lambda: calls.append(b"fired"))
        with pytest.raises(BusyResourceError):
            hub.watch_readable(a.fileno(), lambda: None)
        hub.sleep(0.02)
        assert calls == []
        b.send(b"1")
        hub.sleep(0.02)
        b.send(b"2")  # data still unread: a level-triggered fd stays readable
        hub.sleep(0.02)
        assert calls == [b"fired"]
        # after firing, the slot is free again
        hub.watch_readable(a.fileno(), lambda: calls.append(b"again"))
        hub.sleep(0.02)
        assert calls == [b"fired", b"again"]

    run_hub(main)


def test_unwatch_cancels_a_watch(pair):
    a, b = pair
    calls: List[str] = []

    def main(hub: Hub) -> None:
        hub.watch_readable(a.fileno(), lambda: calls.append("fired"))
        hub.unwatch(a.fileno())
        b.send(b"x")
        hub.sleep(0.03)
        hub.unwatch(a.fileno())  # twice, and on an unknown fd: harmless
        hub.unwatch(98765)

    run_hub(main)
    assert calls == []


def test_lazy_read_interest_does_not_spin(pair):
    a, b = pair

    def main(hub: Hub) -> int:
        b.send(b"1")
        hub.wait_readable(a.fileno(), hub.time() + 1)  # ready: the fd may stay registered
        assert a.recv(10) == b"1"
        b.send(b"unexpected data, nobody waits for it")
        hub.sleep(0.02)  # let the hub see the readiness with no waiter
        before = hub.turns
        hub.sleep(0.2)
        turns = hub.turns - before
        assert a.recv(100) == b"unexpected data, nobody waits for it"  # dropped, not consumed
        # and the fd can be waited on again afterwards
        b.send(b"2")
        hub.wait_readable(a.fileno(), hub.time() + 1)
        assert a.recv(10) == b"2"
        return turns

    turns = run_hub(main)
    assert turns < 50, f"the hub turned {turns} times in 0.2 s with nothing to do"


def test_lazy_write_interest_does_not_spin(pair):
    a, _ = pair

    def main(hub: Hub) -> int:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        hub.wait_writable(a.fileno(), hub.time() + 1)  # writable at once; stays registered
        hub.sleep(0.02)
        before = hub.turns
        hub.sleep(0.2)
        return hub.turns - before

    turns = run_hub(main)
    assert turns < 50, f"the hub turned {turns} times in 0.2 s with nothing to do"


def test_a_timed_out_wait_then_data_does_not_spin(pair):
    a, b = pair

    def main(hub: Hub) -> int:
        with pytest.raises(TimeoutError):
            hub.wait_readable(a.fileno(), hub.time() + 0.01)
        b.send(b"late")
        hub.sleep(0.02)
        before = hub.turns
        hub.sleep(0.2)
        return hub.turns - before

    turns = run_hub(main)
    assert turns < 50, f"the hub turned {turns} times in 0.2 s with nothing to do"


def test_context_var_set_in_one_task_is_not_seen_by_another():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: dict = {}

    def a(hub: Hub) -> None:
        var.set("a")
        hub.yield_now()
        seen["a after yield"] = var.get()

    def b(hub: Hub) -> None:
        seen["b sees"] = var.get()
        var.set("b")

    def main(hub: Hub) -> None:
        hub.spawn(a, hub)
        hub.spawn(b, hub)
        hub.sleep(0.02)
        seen["main sees"] = var.get()

    run_hub(main)
    assert seen == {"b sees": "unset", "a after yield": "a", "main sees": "unset"}


def test_new_context_gives_a_fresh_context():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var2", default="unset")

    def main(hub: Hub) -> str:
        var.set("request 1")
        hub.new_context()
        return var.get()

    assert run_hub(main) == "unset"


# -- pooled workers (start_now) -----------------------------------------------------------------


class _Held:
    """Something a request keeps in its context: a database connection, say."""


_request_value: "contextvars.ContextVar[_Held]" = contextvars.ContextVar("request_value")


def test_an_idle_pooled_worker_lets_go_of_its_last_jobs_context():
    import weakref

    held: List[Any] = []

    def job(hub: Hub) -> None:
        hub.new_context()  # as a connection does for each request
        value = _Held()
        _request_value.set(value)
        held.append(weakref.ref(value))
        hub.sleep(0.01)  # wait once, as a request does

    def main(hub: Hub) -> None:
        hub.call_soon(hub.start_now, job, hub)
        hub.sleep(0.1)  # the job ends and its worker goes back to the pool
        assert hub._workers, "the worker was not pooled"
        # While the worker idles in the pool (no garbage collection: freed as it is dropped)
        assert held and held[0]() is None, "an idle worker still holds the request's context"

    run_hub(main)


def test_an_idle_pooled_worker_lets_go_of_the_context_it_was_given():
    """The same for a job that uses the context start_now gave it, without new_context (the
    first request of a connection): the idle worker keeps neither that context nor the job."""
    import weakref

    held: List[Any] = []

    def job(hub: Hub, payload: _Held) -> None:
        _request_value.set(_Held())
        held.append(weakref.ref(_request_value.get()))
        hub.sleep(0.01)

    def main(hub: Hub) -> None:
        payload = _Held()
        held.append(weakref.ref(payload))
        hub.call_soon(hub.start_now, job, hub, payload)
        del payload
        hub.sleep(0.1)
        assert hub._workers, "the worker was not pooled"
        assert len(held) == 2 and held[1]() is None, "an idle worker holds the job's context"
        assert held[0]() is None, "an idle worker holds the job's arguments"

    run_hub(main)
