"""The hub's pollers (loop/fds.py): epoll called directly and the selectors module's selector
answer the same, in selectors' terms, so the hub cannot tell them apart."""

from __future__ import annotations

import select
import socket
import time

import pytest

from greenserve.loop.fds import (EVENT_READ, EVENT_WRITE, EpollPoller, Poller, SelectorPoller,
                                 new_poller)

KINDS = [SelectorPoller] + ([EpollPoller] if hasattr(select, "epoll") else [])


@pytest.fixture(params=KINDS, ids=lambda kind: kind.__name__)
def poller(request):
    made = request.param()
    yield made
    made.close()


def test_the_platform_gets_epoll_where_it_has_it():
    made = new_poller()
    try:
        assert isinstance(made, Poller)
        assert type(made) is (EpollPoller if hasattr(select, "epoll") else SelectorPoller)
    finally:
        made.close()


def test_readable_writable_and_a_changed_interest(poller):
    a, b = socket.socketpair()
    with a, b:
        poller.register(a.fileno(), EVENT_READ)
        assert poller.poll(0) == []  # nothing to read, and writing was not asked
        b.send(b"x")
        assert poller.poll(0) == [(a.fileno(), EVENT_READ)]
        poller.modify(a.fileno(), EVENT_READ | EVENT_WRITE)
        assert poller.poll(0) == [(a.fileno(), EVENT_READ | EVENT_WRITE)]
        poller.modify(a.fileno(), EVENT_WRITE)
        assert poller.poll(0) == [(a.fileno(), EVENT_WRITE)]
        poller.unregister(a.fileno())
        assert poller.poll(0) == []


def test_a_hang_up_is_reported_as_readable(poller):
    a, b = socket.socketpair()
    with a:
        poller.register(a.fileno(), EVENT_READ)
        b.close()
        [(fd, events)] = poller.poll(0)
        assert fd == a.fileno() and events & EVENT_READ


def test_a_timeout_waits_then_answers_nothing(poller):
    a, b = socket.socketpair()
    with a, b:
        poller.register(a.fileno(), EVENT_READ)
        started = time.monotonic()
        assert poller.poll(0.05) == []
        assert time.monotonic() - started >= 0.04


def test_unregistering_an_fd_closed_since_is_not_an_error(poller):
    a, b = socket.socketpair()
    with b:
        fd = a.fileno()
        poller.register(fd, EVENT_READ)
        a.close()  # behind the poller's back, as an app may close its socket
        poller.unregister(fd)
        again, other = socket.socketpair()  # the number may come back: it registers anew
        with again, other:
            poller.register(again.fileno(), EVENT_READ)
            other.send(b"x")
            assert poller.poll(0) == [(again.fileno(), EVENT_READ)]


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll only")
def test_a_poll_takes_a_batch_and_the_next_poll_starts_with_what_it_left():
    """With more ready fds than a batch, the fds one poll leaves come first in the next: no
    connection waits for the others to be served twice."""
    import resource

    from greenserve.loop import fds

    pairs_wanted = fds._MAX_EVENTS + 76
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * pairs_wanted + 64
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} open files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    poller = EpollPoller()
    pairs = []
    try:
        for _ in range(pairs_wanted):
            a, b = socket.socketpair()
            pairs.append((a, b))
            poller.register(a.fileno(), EVENT_READ)
            b.send(b"x")
        first = [fd for fd, _ in poller.poll(0)]
        assert len(first) == fds._MAX_EVENTS
        left = {a.fileno() for a, _ in pairs} - set(first)
        assert len(left) == 76
        second = [fd for fd, _ in poller.poll(0)]
        assert set(second[:76]) == left
    finally:
        poller.close()
        for a, b in pairs:
            a.close()
            b.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
