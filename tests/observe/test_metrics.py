"""Metrics: the endpoint scraped and parsed by prometheus_client's own parser, counters summed
across forked processes writing their own slots, gauges reset for a replacement worker, and the
option checks."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from greenserve import ConfigError, Server
from greenserve.observe.metrics import BUCKETS, MetricsStore
from greenserve.observe.endpoint import DEADLINE, MAX_CLIENTS

from conftest import Proc, Reader, connect, run_to_end, wait_until
from support import counted, scrape, value


def bucket_labels(samples, name):
    return {dict(labels)["le"] for sample, labels in samples if sample == name + "_bucket"}


EXPECTED_BUCKETS = {repr(bound) for bound in BUCKETS} | {"+Inf"}


def test_endpoint_counts_requests_by_code_latency_and_errors(serve):
    release = threading.Event()

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/slow":
            while not release.is_set():
                environ["greenserve.sleep"](0.01)
        start_response("404 Not Found" if path == "/missing" else "200 OK",
                       [("Content-Type", "text/plain")])
        return [b"ok"]

    server = serve(app, metrics_bind="127.0.0.1:0")
    url = server.server.metrics_url
    assert url and re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url)
    for path, status in (("/", 200), ("/", 200), ("/", 200), ("/missing", 404),
                         ("/missing", 404), ("/boom", 500)):
        assert requests.get(server.url + path, timeout=10).status_code == status
    with connect(server) as sock:  # refused by the parser: counted, but not by the app
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        assert Reader(sock).read_response().status == 400
    slow = threading.Thread(target=requests.get, args=(server.url + "/slow",),
                            kwargs={"timeout": 30})
    slow.start()
    try:
        assert wait_until(lambda: value(scrape(url), "greenserve_requests_in_flight") == 1)
        samples = scrape(url)
        assert value(samples, "greenserve_connections_open") >= 1
    finally:
        release.set()
        slow.join(30)
    # The last request is counted just after its response went out: wait for it.
    assert wait_until(lambda: value(scrape(url), "greenserve_request_duration_seconds_count") == 7)
    samples = scrape(url)
    assert value(samples, "greenserve_requests_total", code="200") == 4
    assert value(samples, "greenserve_requests_total", code="404") == 2
    assert value(samples, "greenserve_requests_total", code="500") == 1
    assert value(samples, "greenserve_requests_total", code="400") == 1
    assert value(samples, "greenserve_protocol_errors_total") == 1
    assert value(samples, "greenserve_requests_in_flight") == 0
    assert value(samples, "greenserve_connections_total") >= 8
    name = "greenserve_request_duration_seconds"
    assert value(samples, name + "_count") == 7
    assert bucket_labels(samples, name) == EXPECTED_BUCKETS
    buckets = [value(samples, name + "_bucket", le=le) for le in
               [repr(b) for b in BUCKETS] + ["+Inf"]]
    assert buckets == sorted(buckets) and buckets[-1] == 7
    assert value(samples, name + "_sum") > 0
    assert requests.get(url.replace("/metrics", "/other"), timeout=10).status_code == 404
    assert requests.head(url, timeout=10).status_code == 200


def test_slots_written_by_forked_processes_are_summed():
    store = MetricsStore.create(3)

    def child(index, requests_done, leave_in_flight):
        pid = os.fork()
        if pid == 0:  # the child: write our slot only, then leave at once
            try:
                slot = store.slot(index)
                for i in range(requests_done):
                    slot.connection_opened()
                    slot.request_started()
                    slot.request_finished(200 if i % 2 else 503, 0.003)
                    slot.connection_closed()
                for _ in range(leave_in_flight):
                    slot.connection_opened()
                    slot.request_started()  # dies mid-request
                slot.blocked_loop_incident()
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0

    child(0, 10, leave_in_flight=2)
    child(1, 5, leave_in_flight=0)
    samples = {}
    for family in text_string_to_metric_families(store.render()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert value(samples, "greenserve_requests_total", code="200") == 5 + 2
    assert value(samples, "greenserve_requests_total", code="503") == 5 + 3
    assert value(samples, "greenserve_requests_in_flight") == 2
    assert value(samples, "greenserve_connections_open") == 2
    assert value(samples, "greenserve_blocked_loop_incidents_total") == 2
    assert value(samples, "greenserve_request_duration_seconds_bucket", le="0.005") == 15
    assert bucket_labels(samples, "greenserve_request_duration_seconds") == EXPECTED_BUCKETS
    with pytest.raises(KeyError):  # no such bucket: not a silent 0
        value(samples, "greenserve_request_duration_seconds_bucket", le="0.0025")
    # A replacement for worker 0 takes its slot: the dead worker's gauges go, counters stay.
    child(0, 1, leave_in_flight=0)
    totals = store.render()
    assert "greenserve_requests_in_flight 0\n" in totals
    assert "greenserve_connections_open 0\n" in totals
    assert 'greenserve_requests_total{code="503"} 9\n' in totals
    assert "greenserve_blocked_loop_incidents_total 3\n" in totals
    with pytest.raises(IndexError):
        store.slot(3)


def test_a_slot_is_claimed_by_one_live_worker_and_released_with_its_counters_kept():
    store = MetricsStore.create(2)
    old, new = store.claim(), store.claim()
    assert (old, new, store.claim()) == (0, 1, None)  # while both live, no third slot
    slot = store.slot(old)
    slot.request_started()
    slot.request_finished(200, 0.001)
    slot.connection_opened()
    slot.request_started()  # the old worker dies with a request in flight
    store.release(old)
    totals = store.render()
    assert "greenserve_requests_in_flight 0\n" in totals
    assert "greenserve_connections_open 0\n" in totals
    assert 'greenserve_requests_total{code="200"} 1\n' in totals
    assert store.claim() == old  # free again; the next worker carries its counters on
    reused = store.slot(old)
    reused.request_started()
    reused.request_finished(200, 0.001)
    assert 'greenserve_requests_total{code="200"} 2\n' in store.render()


def test_tls_handshake_failures_are_counted(serve, tls_files):
    server = serve(lambda e, s: [], certfile=tls_files.cert, keyfile=tls_files.key,
                   ca_certs=tls_files.ca, cert_reqs="required", metrics_bind="127.0.0.1:0")
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(server.url, verify=tls_files.ca, timeout=10)
    url = server.server.metrics_url
    assert wait_until(
        lambda: value(scrape(url), "greenserve_tls_handshake_failures_total") == 1)


def test_metrics_bind_in_use_names_the_option_and_releases_the_listeners():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        server = Server(lambda e, s: [], bind="127.0.0.1:0",
                        metrics_bind="127.0.0.1:%d" % holder.getsockname()[1])
        with pytest.raises(ConfigError) as info:
            server.start()
        assert info.value.option == "metrics_bind"
        assert server.listeners == []
    finally:
        holder.close()


@pytest.mark.parametrize("value_", ["nowhere", "unix:/tmp/metrics.sock", "[::1]"])
def test_bad_metrics_bind_is_one_line_and_exit_2(value_):
    done = run_to_end("examples.hello:app", "--metrics-bind", value_)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--metrics-bind" in lines[0], done.stderr


def test_cli_serves_metrics():
    proc = Proc("examples.hello:app", "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0")
    try:
        metrics = proc.wait_for(re.compile(r"metrics on (http://\S+)"))[1]
        assert requests.get(proc.url(), timeout=10).status_code == 200
        # A request is counted just after its response is sent: the scrape (another thread of
        # the server) may come in between, so poll with a deadline.
        deadline = time.monotonic() + 10
        while counted(scrape(metrics), "greenserve_requests_total", code="200") != 1:
            assert time.monotonic() < deadline, "the request was never counted"
            time.sleep(0.01)
        assert proc.stop() == 0
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(5)


# -- the histogram is consistent in every scrape --------------------------------------------------


def test_histogram_count_is_its_inf_bucket_even_between_the_adds_of_a_request():
    """A request is counted with a few separate adds; a scrape can fall between them. The
    count is the +Inf bucket itself, so the two can never disagree."""
    store = MetricsStore.create(1)
    slot = store.slot(0)
    slot.request_started()
    slot.request_finished(200, 0.02)
    slot.cells[8 + 3] += 1  # the bucket add of a second request (0.025 s), seen mid-way
    samples = {}
    for family in text_string_to_metric_families(store.render()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    name = "greenserve_request_duration_seconds"
    assert value(samples, name + "_bucket", le="+Inf") == 2
    assert value(samples, name + "_count") == 2


def ok(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_histogram_stays_consistent_under_concurrent_scrapes(serve):
    server = serve(ok, metrics_bind="127.0.0.1:0")
    url = server.server.metrics_url
    stop = threading.Event()

    def load():
        with requests.Session() as session:
            while not stop.is_set():
                session.get(server.url, timeout=10)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        name = "greenserve_request_duration_seconds"
        for _ in range(50):
            samples = scrape(url)
            assert value(samples, name + "_count") == value(samples, name + "_bucket", le="+Inf")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)


# -- the open-connections gauge when a server stops at once ---------------------------------------


def test_connections_left_open_at_an_immediate_stop_leave_the_gauge(tmp_path):
    """A worker whose server stops at once (SIGQUIT) closes what is still open; its slot is
    not zeroed unless a replacement takes it, so the gauge must come down by itself."""
    store = MetricsStore.create(1)
    server = Server(ok, bind="127.0.0.1:0", keepalive_timeout=60)
    server.metrics = store.slot(0)
    server.start()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    clients = []
    try:
        assert server.wait_serving(10)
        host, port = server.addresses[0]
        for _ in range(3):
            sock = socket.create_connection((host, port), timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert Reader(sock).read_response().status == 200  # kept alive, idle
            clients.append(sock)
        clients.append(socket.create_connection((host, port), timeout=10))  # silent
        assert wait_until(lambda: server.statistics()["connections_open"] == 4)
        assert "greenserve_connections_open 4\n" in store.render()
        server.hub.call_soon_threadsafe(server.hub.stop)  # what SIGQUIT does
        thread.join(10)
        assert not thread.is_alive()
        assert "greenserve_connections_open 0\n" in store.render()
        assert server.statistics()["connections_open"] == 0
    finally:
        for sock in clients:
            sock.close()


# -- the endpoint's limits -----------------------------------------------------------------------


def metrics_threads():
    return [t for t in threading.enumerate() if t.name.startswith("greenserve-metrics")
            or "process_request_thread" in t.name]


def test_slow_and_idle_clients_hold_no_thread_and_a_scrape_still_succeeds(serve):
    server = serve(lambda e, s: [], validate=False, metrics_bind="127.0.0.1:0")
    url = server.server.metrics_url
    address = (urlsplit(url).hostname, urlsplit(url).port)
    threads_before = threading.active_count()
    idle = [socket.create_connection(address, timeout=10) for _ in range(40)]
    slow = socket.create_connection(address, timeout=10)
    try:
        slow.sendall(b"GET /metr")  # and then, a byte now and again
        for piece in (b"i", b"c", b"s"):
            slow.sendall(piece)
            assert requests.get(url, timeout=10).status_code == 200  # scrapes go through
        assert threading.active_count() == threads_before  # not a thread per connection
        assert len(metrics_threads()) == 1
        # A flood beyond MAX_CLIENTS: the oldest connections make room, a scrape is served.
        flood = [socket.create_connection(address, timeout=10) for _ in range(MAX_CLIENTS)]
        try:
            assert requests.get(url, timeout=10).status_code == 200
            assert Reader(idle[0]).at_eof(timeout=10)  # the oldest was dropped
        finally:
            for sock in flood:
                sock.close()
        # Past the deadline of the whole exchange the slow client is cut off, unanswered.
        started = time.monotonic()
        reader = Reader(slow)
        assert reader.at_eof(timeout=DEADLINE + 10) and reader.buf == b""
        assert time.monotonic() - started < DEADLINE + 10
    finally:
        slow.close()
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("raw, status", [
    (b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 9000 + b"\r\n\r\n", 431),
    (b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 405),
    (b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n", 404),
    (b"BREW /metrics\r\n\r\n", 400),
    (b"GET /metrics?name=x HTTP/1.0\n\n", 200),  # bare LF line ends, HTTP/1.0
])
def test_the_endpoint_answers_each_request_and_closes(serve, raw, status):
    server = serve(lambda e, s: [], validate=False, metrics_bind="127.0.0.1:0")
    url = server.server.metrics_url
    with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port),
                                  timeout=10) as sock:
        sock.sendall(raw)
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.status == status
        assert resp.header("connection") == "close" and reader.at_eof()
    if status == 405:
        assert resp.header("allow") == "GET, HEAD"
    if status == 200:
        assert b"greenserve_connections_total" in resp.body
