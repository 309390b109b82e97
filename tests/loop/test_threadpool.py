"""run_in_thread and name resolution through the pool, on a real hub, with real threads and
sockets."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, List

import pytest

from greenserve import Timeout, spawn
from greenserve.loop import threadpool
from greenserve.loop.gsocket import GreenSocket
from greenserve.loop.hub import Hub
from greenserve.loop.threadpool import ThreadPool, run_in_thread

from conftest import run_hub, wait_until


@pytest.fixture
def small_pool(monkeypatch):
    """A pool of its own with one thread, so tests can fill it."""
    pool = ThreadPool(max_threads=1)
    monkeypatch.setattr(threadpool, "_pool", pool)
    return pool


def test_the_call_runs_in_a_pool_thread_and_returns_its_value():
    def main(hub: Hub) -> Any:
        return run_in_thread(lambda a, b: (threading.current_thread().name, a * b), 6, 7)

    name, product = run_hub(main)
    assert name.startswith("greenserve-pool-") and product == 42


def test_the_exception_of_the_call_is_raised_in_the_caller():
    def main(hub: Hub) -> None:
        with pytest.raises(FileNotFoundError):
            run_in_thread(open, "/nonexistent/greenserve/file")

    run_hub(main)


def test_the_hub_keeps_turning_while_a_blocking_call_runs():
    ticks: List[float] = []

    def ticker(hub: Hub) -> None:
        for _ in range(1000):
            ticks.append(time.monotonic())
            hub.sleep(0.01)

    def main(hub: Hub) -> float:
        task = hub.spawn(ticker, hub)
        start = time.monotonic()
        run_in_thread(time.sleep, 0.3)  # the real, blocking time.sleep
        elapsed = time.monotonic() - start
        hub.kill(task)
        during = [t for t in ticks if start <= t <= start + elapsed]
        assert len(during) >= 5, f"only {len(during)} ticks in {elapsed:.2f} s"
        return elapsed

    assert run_hub(main) >= 0.29


def test_the_pool_is_bounded():
    peak = [0, 0]  # running now, most ever
    lock = threading.Lock()

    def job() -> None:
        with lock:
            peak[0] += 1
            peak[1] = max(peak[1], peak[0])
        time.sleep(0.05)
        with lock:
            peak[0] -= 1

    def main(hub: Hub) -> None:
        tasks = [spawn(run_in_thread, job) for _ in range(3 * threadpool.MAX_THREADS)]
        for task in tasks:
            task.join(30)

    run_hub(main)
    assert 1 < peak[1] <= threadpool.MAX_THREADS


def test_outside_a_hub_the_call_runs_in_the_calling_thread():
    assert run_in_thread(threading.current_thread) is threading.current_thread()


def test_a_timeout_frees_the_caller_and_a_job_not_started_never_runs(small_pool):
    release = threading.Event()
    ran: List[str] = []

    def main(hub: Hub) -> float:
        blocker = spawn(run_in_thread, release.wait, 10)  # takes the only thread
        hub.sleep(0.02)
        start = time.monotonic()
        with pytest.raises(Timeout):
            with Timeout(0.05):
                run_in_thread(ran.append, "queued")  # waits behind the blocker
        waited = time.monotonic() - start
        release.set()
        assert blocker.join(5) is True
        assert run_in_thread(lambda: "after") == "after"
        return waited

    assert run_hub(main) < 2
    assert ran == []


def test_idle_threads_exit(small_pool, monkeypatch):
    monkeypatch.setattr(threadpool, "IDLE_SECONDS", 0.05)
    run_hub(lambda hub: run_in_thread(int, "1"))
    assert wait_until(lambda: small_pool.threads == 0)


# -- name resolution ----------------------------------------------------------------------------


@pytest.fixture
def resolver_threads(monkeypatch) -> List[str]:
    """The real getaddrinfo, recording which thread each call ran in."""
    names: List[str] = []
    real = threadpool._getaddrinfo

    def recording(*args: Any) -> Any:
        names.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(threadpool, "_getaddrinfo", recording)
    return names


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def test_connect_resolves_a_host_name_in_a_pool_thread(resolver_threads, listener):
    port = listener.getsockname()[1]

    def main(hub: Hub) -> Any:
        gs = GreenSocket.create_connection(("localhost", port), timeout=5)
        try:
            return gs.sock.getpeername()[:2]
        finally:
            gs.close()

    assert run_hub(main) == ("127.0.0.1", port)  # localhost may say ::1 first: refused, next
    # a quick numeric-only try in place (the C call, not recorded), then the real lookup in a
    # pool thread
    assert len(resolver_threads) == 1 and resolver_threads[0].startswith("greenserve-pool-")


LITERALS = [
    ("127.0.0.1", 80), ("127.0.0.1", "80"), ("127.0.0.1", "http"), (b"127.0.0.1", None),
    ("127.0.0.1", 80, socket.AF_INET, socket.SOCK_STREAM), ("127.0.0.1", 53, 0, socket.SOCK_DGRAM),
    ("::1", 443, socket.AF_INET6), ("::1", 8080, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP),
    ("127.0.0.1", 80, 0, 0, 0, socket.AI_PASSIVE), (None, 80, socket.AF_INET, socket.SOCK_STREAM),
]


@pytest.mark.parametrize("args", LITERALS, ids=repr)
def test_an_ip_literal_gets_the_standard_answer_without_a_lookup(resolver_threads, args):
    """In a hub, an IP literal is answered in place by the C call alone: the same list, the
    same enum members as ``socket.getaddrinfo`` gives, and neither its Python wrapper nor a
    pool thread (a whole upstream request's cost with them: enum calls, the idna codec)."""
    try:
        expected = socket.getaddrinfo(*args)
    except socket.gaierror:
        pytest.skip("no such address on this host")
    answer = run_hub(lambda hub: threadpool.getaddrinfo(*args))
    assert answer == expected
    assert [tuple(map(type, info)) for info in answer] == [
        tuple(map(type, info)) for info in expected]
    assert resolver_threads == []


def test_a_literal_the_family_cannot_hold_is_refused_as_the_standard_call_refuses_it():
    with pytest.raises(socket.gaierror) as expected:
        socket.getaddrinfo("::1", 80, socket.AF_INET)
    with pytest.raises(socket.gaierror) as got:
        run_hub(lambda hub: threadpool.getaddrinfo("::1", 80, socket.AF_INET))
    assert got.value.errno == expected.value.errno


def test_a_numeric_address_needs_no_thread(resolver_threads, listener):
    port = listener.getsockname()[1]

    def main(hub: Hub) -> None:
        GreenSocket.connect(("127.0.0.1", port), timeout=5).close()

    run_hub(main)
    # an IP literal is turned into an address in place: no lookup in a pool thread
    assert not [name for name in resolver_threads if name.startswith("greenserve-pool-")]


def test_ip_literals_connect_over_their_own_family():
    """IPv4 and IPv6 literals connect without a lookup; AF_INET refuses an IPv6 literal the way
    getaddrinfo does (the literal is handed to it and it says no)."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            server = socket.socket(family)
            server.bind((host, 0))
        except OSError:
            continue  # no IPv6 on this host
        server.listen(4)
        port = server.getsockname()[1]

        def main(hub: Hub) -> Any:
            gs = GreenSocket.create_connection((host, port), timeout=5)
            try:
                return gs.sock.family
            finally:
                gs.close()

        try:
            assert run_hub(main) == family
        finally:
            server.close()

    def wrong_family(hub: Hub) -> None:
        GreenSocket.connect(("::1", 9), timeout=5, family=socket.AF_INET)

    with pytest.raises(socket.gaierror):
        run_hub(wrong_family)
