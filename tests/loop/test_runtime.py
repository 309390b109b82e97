"""The cooperative runtime (greenserve.loop.tasks): sleep, spawn, Event, Queue and Timeout, on a real
hub (``run_hub``) and through a real server with real clients."""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import queue
import socket
import threading
import time
from typing import Any, List

import pytest
import requests

import greenserve
from greenserve import Event, Queue, TaskKilled, Timeout, sleep, spawn
from greenserve.errors import Cancelled
from greenserve.loop.gsocket import GreenSocket
from greenserve.loop.hub import Hub

from conftest import run_hub


# -- sleep --------------------------------------------------------------------------------------


def test_sleeps_in_two_tasks_overlap():
    def main(hub: Hub) -> float:
        start = time.monotonic()
        tasks = [spawn(sleep, 0.2) for _ in range(20)]
        for task in tasks:
            task.join()
        return time.monotonic() - start

    elapsed = run_hub(main)
    assert 0.19 <= elapsed < 1.5  # 20 x 0.2 s one after the other would be 4 s


def test_sleep_outside_a_hub_blocks_like_time_sleep():
    start = time.monotonic()
    sleep(0.05)
    assert time.monotonic() - start >= 0.045


@pytest.mark.parametrize("bad", [-1, float("nan")])
def test_sleep_rejects_negative_and_nan(bad):
    with pytest.raises(ValueError):
        sleep(bad)


# -- spawn --------------------------------------------------------------------------------------


def test_join_returns_the_result_and_reraises_the_error():
    def fail() -> None:
        raise KeyError("boom")

    def main(hub: Hub) -> Any:
        ok = spawn(lambda a, b: a + b, 2, 3)
        bad = spawn(fail)
        assert ok.join(5) == 5
        with pytest.raises(KeyError):
            bad.join(5)
        return ok.dead and bad.dead

    assert run_hub(main) is True


def test_join_timeout_leaves_the_task_running():
    def main(hub: Hub) -> Any:
        task = spawn(lambda: (sleep(0.2), "done")[1])
        with pytest.raises(TimeoutError):
            task.join(0.01)
        assert not task.dead
        return task.join(5)

    assert run_hub(main) == "done"


def test_kill_cancels_a_waiting_task_and_runs_its_cleanup():
    cleaned: List[str] = []

    def worker() -> None:
        try:
            sleep(10)
        finally:
            cleaned.append("finally")

    def main(hub: Hub) -> None:
        task = spawn(worker)
        sleep(0.01)
        start = time.monotonic()
        task.kill()
        with pytest.raises(TaskKilled):
            task.join(5)
        assert time.monotonic() - start < 1

    run_hub(main)
    assert cleaned == ["finally"]


def test_kill_before_start_means_the_task_never_runs():
    ran: List[int] = []

    def main(hub: Hub) -> None:
        task = spawn(ran.append, 1)
        task.kill()
        with pytest.raises(TaskKilled):
            task.join(5)
        sleep(0.01)

    run_hub(main)
    assert ran == []


def test_a_task_cannot_join_itself():
    def main(hub: Hub) -> Any:
        holder: List[Any] = []

        def selfish() -> None:
            holder[0].join(1)

        holder.append(spawn(selfish))
        with pytest.raises(RuntimeError, match="itself"):
            holder[0].join(5)

    run_hub(main)


def test_spawn_outside_a_hub_raises():
    with pytest.raises(RuntimeError):
        spawn(print)


def test_a_task_sees_a_copy_of_the_spawner_context():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def child() -> str:
        seen = var.get()
        var.set("child")
        return seen

    def main(hub: Hub) -> Any:
        var.set("parent")
        seen = spawn(child).join(5)
        return seen, var.get()

    assert run_hub(main) == ("parent", "parent")


def test_an_unjoined_failing_task_is_logged(caplog):
    def main(hub: Hub) -> None:
        spawn(lambda: 1 / 0)
        sleep(0.01)

    with caplog.at_level(logging.ERROR, logger="greenserve.error"):
        run_hub(main)
    assert any("ZeroDivisionError" in (r.exc_text or "") or r.exc_info for r in caplog.records)


# -- Event --------------------------------------------------------------------------------------


def test_event_wakes_every_waiter_and_wait_times_out():
    def main(hub: Hub) -> Any:
        event = Event()
        waiters = [spawn(event.wait, 5) for _ in range(3)]
        assert event.wait(0.01) is False
        sleep(0.01)
        assert not any(w.dead for w in waiters)
        event.set()
        results = [w.join(5) for w in waiters]
        assert event.wait() is True  # already set: no wait
        event.clear()
        return results, event.is_set()

    assert run_hub(main) == ([True, True, True], False)


def test_event_set_from_another_thread_wakes_the_waiter():
    def main(hub: Hub) -> float:
        event = Event()
        threading.Timer(0.05, event.set).start()
        start = time.monotonic()
        assert event.wait(5)
        return time.monotonic() - start

    assert run_hub(main) < 2


def test_event_wait_outside_a_hub_raises():
    with pytest.raises(RuntimeError):
        Event().wait(0.01)


# -- Queue --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 1.5, None])
def test_queue_needs_a_positive_bound(bad):
    with pytest.raises(ValueError):
        Queue(bad)


def test_queue_is_fifo_and_put_waits_while_full():
    def main(hub: Hub) -> Any:
        q: Queue[int] = Queue(2)
        got: List[int] = []

        def producer() -> None:
            for i in range(6):
                q.put(i)

        task = spawn(producer)
        sleep(0.01)
        assert q.qsize() == 2 and q.full() and not task.dead  # blocked at the bound
        while len(got) < 6:
            got.append(q.get(5))
        task.join(5)
        return got, q.empty()

    assert run_hub(main) == ([0, 1, 2, 3, 4, 5], True)


def test_queue_timeouts_and_nowait_variants():
    def main(hub: Hub) -> None:
        q: Queue[str] = Queue(1)
        with pytest.raises(queue.Empty):
            q.get_nowait()
        start = time.monotonic()
        with pytest.raises(queue.Empty):
            q.get(0.05)
        assert time.monotonic() - start >= 0.045
        q.put_nowait("a")
        with pytest.raises(queue.Full):
            q.put_nowait("b")
        with pytest.raises(queue.Full):
            q.put("b", 0.01)
        assert q.get() == "a"

    run_hub(main)


def test_a_picked_getter_that_is_killed_passes_the_item_on():
    def main(hub: Hub) -> Any:
        q: Queue[str] = Queue(1)
        first = spawn(q.get)
        second = spawn(q.get)
        sleep(0.01)  # both wait, first in line
        first.kill()  # its Cancelled is delivered after...
        q.put_nowait("item")  # ...the queue picked it for this item
        with pytest.raises(TaskKilled):
            first.join(5)
        return second.join(5)

    assert run_hub(main) == "item"


def test_queue_wait_outside_a_hub_raises():
    with pytest.raises(RuntimeError):
        Queue(1).get()


# -- Timeout ------------------------------------------------------------------------------------


def test_timeout_interrupts_a_wait_and_is_not_swallowed_by_except_exception():
    def main(hub: Hub) -> Any:
        swallowed = []
        start = time.monotonic()
        with pytest.raises(Timeout) as info:
            with Timeout(0.05) as timeout:
                try:
                    Event().wait()
                except Exception:  # an app's catch-all must not eat the Timeout
                    swallowed.append(True)
        assert info.value is timeout and timeout.expired
        return time.monotonic() - start, swallowed

    elapsed, swallowed = run_hub(main)
    assert 0.045 <= elapsed < 2 and swallowed == []


@pytest.mark.parametrize("wait", ["sleep", "queue", "socket", "join"])
def test_timeout_interrupts_every_kind_of_wait(wait):
    def main(hub: Hub) -> None:
        a, b = socket.socketpair()
        gs = GreenSocket(a, hub)
        try:
            for _ in range(2):  # twice: the interrupted wait left nothing behind
                with pytest.raises(Timeout):
                    with Timeout(0.02):
                        if wait == "sleep":
                            sleep(10)
                        elif wait == "queue":
                            Queue(1).get()
                        elif wait == "socket":
                            gs.recv(10)
                        else:
                            spawn(sleep, 10).join()
        finally:
            gs.close()
            b.close()

    run_hub(main)


def test_timeout_left_in_time_never_fires():
    def main(hub: Hub) -> None:
        with Timeout(0.05):
            sleep(0.01)
        sleep(0.1)  # past the deadline: nothing is raised

    run_hub(main)


def test_nested_timeouts_each_raise_their_own_instance():
    def main(hub: Hub) -> None:
        with pytest.raises(Timeout) as outer_info:
            with Timeout(0.1) as outer:
                with pytest.raises(Timeout) as inner_info:
                    with Timeout(0.02) as inner:
                        sleep(10)
                assert inner_info.value is inner
                sleep(10)
        assert outer_info.value is outer

    run_hub(main)


def test_a_busy_greenlet_gets_the_timeout_at_its_next_wait():
    def main(hub: Hub) -> None:
        with pytest.raises(Timeout):
            with Timeout(0.01):
                end = time.monotonic() + 0.05
                while time.monotonic() < end:
                    pass  # never waits: the Timeout cannot fire here
                sleep(0)  # the first wait after the deadline raises it

    run_hub(main)


def test_timeout_none_never_fires_and_works_anywhere():
    with Timeout(None):
        time.sleep(0.01)


def test_timeout_outside_a_hub_task_raises():
    with pytest.raises(RuntimeError):
        with Timeout(1):
            pass


def test_timeout_is_a_base_exception_but_not_cancelled():
    assert issubclass(Timeout, BaseException) and not issubclass(Timeout, Exception)
    assert not issubclass(Timeout, Cancelled)


# -- through a real server ----------------------------------------------------------------------


def test_requests_sleeping_with_greenserve_sleep_overlap(serve):
    def app(environ, start_response):
        greenserve.sleep(0.2)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]

    server = serve(app)
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        bodies = list(pool.map(lambda _: requests.get(server.url, timeout=10).content, range(50)))
    elapsed = time.monotonic() - start
    assert bodies == [b"slept"] * 50
    assert elapsed < 2.5  # 50 x 0.2 s one after the other would be 10 s


def test_an_app_fans_out_with_spawn_and_bounds_it_with_timeout(serve):
    def app(environ, start_response):
        tasks = [spawn(lambda i: (sleep(0.05 * (i % 3)), i * i)[1], i) for i in range(10)]
        slow = spawn(sleep, 10)
        try:
            with Timeout(0.1):
                slow.join()
            outcome = b"not interrupted"
        except Timeout:
            outcome = b"interrupted"
            slow.kill()
        squares = [t.join(5) for t in tasks]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr(squares).encode() + b" " + outcome]

    server = serve(app)
    body = requests.get(server.url, timeout=10).content
    assert body == repr([i * i for i in range(10)]).encode() + b" interrupted"
