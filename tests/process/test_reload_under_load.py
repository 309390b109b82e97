"""Reloads (SIGHUP) and worker drains (SIGTERM to a worker, which the supervisor replaces) while
keep-alive clients send requests in a loop: no request fails, and the metrics endpoint, scraped
all along, never sees a counter go down or the in-flight gauge go wrong.

The race the drain must avoid (RFC 9112 9.3.1): a connection idle between two requests that
the server closes while its client is already sending the next one. A draining worker keeps
such a connection until its next request, answers that with ``Connection: close``, and closes
only connections that stay quiet.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
from typing import List, Optional
from urllib.parse import urlsplit

import pytest
import requests

from conftest import wait_until
from support import counted, scrape, start_supervisor, value

RELOADED = re.compile(r"reload done: generation (\d+) serves")
RETIRED = re.compile(r"worker \d+ \(pid \d+\) exited with status 0$")
READY = re.compile(r"worker \d+ \(pid \d+\) is ready")
STARTED = re.compile(r"started worker (\d+) \(pid (\d+)\), generation (\d+)")


class Load:
    """``clients`` threads with a keep-alive connection each (half ``requests.Session``, half
    ``http.client``), sending ``GET /`` in a loop until ``stop()`` (or, as a bound, ``limit``
    requests in all). Every exception or non-200 answer is a failure."""

    def __init__(self, url: str, clients: int, limit: int) -> None:
        parts = urlsplit(url)
        self.url, self.host, self.port = url, parts.hostname, parts.port
        self.limit = limit
        self.sent = self.closes = 0
        self.generations: set = set()
        self.failures: List[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        kinds = [self._session_client, self._http_client_client] * ((clients + 1) // 2)
        self.threads = [threading.Thread(target=kind, daemon=True) for kind in kinds[:clients]]
        for thread in self.threads:
            thread.start()

    def _more(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self.sent >= self.limit:
                return False
            self.sent += 1
            return True

    def _record(self, status: int, close: bool, body: bytes) -> None:
        with self._lock:
            if status != 200:
                self.failures.append(f"status {status}: {body[:200]!r}")
                return
            self.closes += close
            self.generations.add(json.loads(body)["generation"])

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures.append(repr(exc))

    def _session_client(self) -> None:
        with requests.Session() as session:
            while self._more():
                try:
                    resp = session.get(self.url, timeout=15)
                except requests.RequestException as exc:
                    self._failed(exc)
                    continue
                close = resp.headers.get("connection", "").lower() == "close"
                self._record(resp.status_code, close, resp.content)

    def _http_client_client(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        try:
            while self._more():
                try:
                    conn.request("GET", "/")
                    resp = conn.getresponse()
                    body = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    self._failed(exc)
                    conn.close()  # the next request opens a new connection
                    continue
                close = (resp.getheader("connection") or "").lower() == "close"
                self._record(resp.status, close, body)
        finally:
            conn.close()

    def progressed(self, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` more requests have been sent."""
        target = min(self.limit, self.sent + count)
        assert wait_until(lambda: self.sent >= target, timeout=timeout), (self.sent, target)

    def finish(self, timeout: float = 30.0) -> None:
        """Stop, and wait for every client to end."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a client did not finish"

    def stop(self) -> None:
        self._stop.set()


def reload_and_wait(proc, done: int, workers: int) -> None:
    """SIGHUP; wait until reload number ``done`` is over and its old workers have drained."""
    retired_before = len(proc.matches(RETIRED))
    proc.send(signal.SIGHUP)
    proc.wait_for(RELOADED, timeout=30, count=done)
    proc.wait_for(RETIRED, timeout=40, count=retired_before + workers)


def drain_one_worker(proc) -> None:
    """SIGTERM to the newest worker; wait for it to end and for its replacement to be ready."""
    started = proc.matches(STARTED)
    index, pid = started[-1].group(1), int(started[-1].group(2))
    ready_before = len(proc.matches(READY))
    os.kill(pid, signal.SIGTERM)
    proc.wait_for(re.compile(rf"worker {index} \(pid {pid}\) exited"), timeout=40)
    proc.wait_for(READY, timeout=30, count=ready_before + 1)


def run_reloads(run, clients: int, total: int, reloads: int, drains: int,
                metrics: bool = False) -> None:
    """Run the load against two workers through ``reloads`` SIGHUPs and ``drains`` SIGTERMs
    to one worker, spread over it; then check what the clients (and the scrapes) saw."""
    workers = 2
    args = ("--metrics-bind", "127.0.0.1:0") if metrics else ()
    proc, url = start_supervisor(run, *args, workers=workers)
    scraper: Optional[Scraper] = None
    if metrics:
        scraper = Scraper(proc.wait_for(re.compile(r"metrics on (http://\S+)"))[1], clients)
    load = Load(url, clients, 2 * total)
    try:
        events = reloads + drains
        terms = {(2 * k + 1) * events // (2 * drains) for k in range(drains)}
        for i in range(events):
            load.progressed(total // (2 * events + 2))
            if i in terms:
                drain_one_worker(proc)
            else:
                reload_and_wait(proc, len(proc.matches(RELOADED)) + 1, workers)
        load.progressed(total - load.sent, timeout=120)
        load.finish()
    finally:
        load.stop()
        if scraper is not None:
            scraper.stop()
    print(f"{len(load.failures)} of {load.sent} requests failed; {load.closes} answers said "
          f"Connection: close; generations seen {sorted(load.generations)}")
    if scraper is not None:
        scraper.check()
    assert load.failures == [], f"{len(load.failures)} of {load.sent} failed: {load.failures[:5]}"
    assert total <= load.sent < 2 * total
    assert len(load.generations) == reloads + 1  # every generation served
    if scraper is not None:
        scraper.check_final(expected=load.sent)


class Scraper:
    """Scrapes ``/metrics`` in a loop from a thread: each counter must never go down, and the
    in-flight gauge must stay between 0 and the number of clients."""

    COUNTERS = ("greenserve_connections_total", "greenserve_requests_aborted_total",
                "greenserve_request_duration_seconds_count")

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.clients = clients
        self.problems: List[str] = []
        self.scrapes = 0
        self.in_flight: List[float] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        last = {name: 0.0 for name in self.COUNTERS + ("200",)}
        while not self._stop.is_set():
            samples = scrape(self.url)
            now = {name: value(samples, name) for name in self.COUNTERS}
            now["200"] = counted(samples, "greenserve_requests_total", code="200")
            for name, seen in now.items():
                if seen < last[name]:
                    self.problems.append(f"{name} went down: {last[name]} -> {seen}")
            last = now
            self.in_flight.append(value(samples, "greenserve_requests_in_flight"))
            self.scrapes += 1
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(15)

    def check(self) -> None:
        """What the scrapes during the load saw."""
        assert self.problems == [], self.problems[:5]
        assert self.scrapes >= 10
        assert all(0 <= n <= self.clients for n in self.in_flight), (
            min(self.in_flight), max(self.in_flight))

    def check_final(self, expected: int) -> None:
        # Once the load is over, the gauge is back to zero and every answer was counted.
        assert wait_until(lambda: value(scrape(self.url), "greenserve_requests_in_flight") == 0)
        final = scrape(self.url)
        assert counted(final, "greenserve_requests_total", code="200") == expected


def test_keep_alive_clients_lose_no_request_across_reloads_and_drains(run):
    run_reloads(run, clients=30, total=4000, reloads=2, drains=1)


def test_metrics_stay_monotonic_across_reloads_under_load(run):
    run_reloads(run, clients=20, total=3000, reloads=3, drains=0, metrics=True)


@pytest.mark.slow
def test_200_keep_alive_clients_100000_requests_20_reloads_5_drains(run):
    run_reloads(run, clients=200, total=100_000, reloads=20, drains=5, metrics=True)
