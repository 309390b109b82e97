"""greenserve.patch against real peers: an HTTP upstream answering after 100 ms (requests,
http.client, TLS), a real redis-server, select/selectors, time.sleep and threading.local, in a
real server; and the patched calls outside a hub behaving as before."""

from __future__ import annotations

import concurrent.futures
import contextvars
import http.client
import http.server
import queue
import select
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator, List, Tuple

import pytest
import requests

import greenserve
from greenserve import patch
from greenserve.loop.fds import EpollPoller
from greenserve.patch import coselect as patch_select
from greenserve.patch.cosocket import CoopSocket

from burst import burst
from conftest import run_hub, serving_in_thread, wait_until

DELAY = 0.1  # the upstream's answer time


@pytest.fixture
def patched() -> Iterator[None]:
    originals = (socket.socket, socket.getaddrinfo, time.sleep, select.select,
                 selectors.DefaultSelector, threading.local, ssl.SSLContext.sslsocket_class)
    patch.apply()
    try:
        yield
    finally:
        patch.undo()
        assert (socket.socket, socket.getaddrinfo, time.sleep, select.select,
                selectors.DefaultSelector, threading.local,
                ssl.SSLContext.sslsocket_class) == originals


def concurrently(fetch: Callable[[int], Any], n: int) -> Tuple[float, List[Any]]:
    """Run fetch(0..n-1) from n client threads at once. Returns (seconds, results)."""
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        start = time.monotonic()
        results = list(pool.map(fetch, range(n)))
        return time.monotonic() - start, results


# -- the upstreams ------------------------------------------------------------------------------


class _SlowHTTP(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(DELAY)  # a plain thread: even patched, this is the real, blocking sleep
        body = b"upstream " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Upstream(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True
    tls: Any = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:  # the handshake in the request's own thread
            request = self.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)


def _serve_upstream(tls: Any = None) -> Iterator[int]:
    upstream = _Upstream(("127.0.0.1", 0), _SlowHTTP)
    upstream.tls = tls
    yield from serving_in_thread(upstream)


@pytest.fixture
def http_upstream() -> Iterator[int]:
    yield from _serve_upstream()


@pytest.fixture
def https_upstream(certificate) -> Iterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    yield from _serve_upstream(context)


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory) -> Iterator[int]:
    pytest.importorskip("redis", reason="redis-py is a test dependency: pip install -e '.[test]'")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run "
                    "installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16) == b"+PONG\r\n"
        except OSError:
            return False

    try:
        if not wait_until(answers, timeout=15, interval=0.05):
            pytest.fail(f"redis-server did not answer on port {port}")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


# -- the switch itself --------------------------------------------------------------------------


def test_apply_replaces_undo_restores_and_applying_twice_is_harmless(patched):
    assert patch.applied()
    assert socket.socket is CoopSocket and time.sleep is greenserve.sleep
    patch.apply()
    patch.undo()
    assert not patch.applied() and socket.socket is not CoopSocket
    patch.apply()  # the fixture undoes it and checks everything is back


def test_importing_greenserve_patches_nothing():
    code = (
        "import select, selectors, socket, ssl, threading, time\n"
        "before = (socket.socket, socket.getaddrinfo, time.sleep, select.select,\n"
        "          selectors.DefaultSelector, threading.local, ssl.SSLContext.sslsocket_class)\n"
        "import greenserve, greenserve.patch, greenserve.cli\n"
        "after = (socket.socket, socket.getaddrinfo, time.sleep, select.select,\n"
        "         selectors.DefaultSelector, threading.local, ssl.SSLContext.sslsocket_class)\n"
        "assert before == after and not greenserve.patch.applied(), after\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_server_asked_to_patch_applies_it_and_keeps_its_own_selector(serve):
    try:
        server = serve(sleepy, patch=True)
        assert patch.applied()
        # the hub took the platform's poller, not the patched selector
        assert selectors.DefaultSelector is patch_select.CooperativeSelector
        poller = server.server.hub.poller
        if hasattr(select, "epoll"):
            assert type(poller) is EpollPoller
        else:
            assert type(poller._selector) is patch_select._Selector
        elapsed, _ = concurrently(lambda i: requests.get(server.url, timeout=20).content, 20)
        assert elapsed < 1.0, f"20 x time.sleep(0.1) took {elapsed:.2f} s"
    finally:
        patch.undo()


# -- real clients of a slow upstream: 200 at once -----------------------------------------------


def _with_requests(port: int, path: str) -> bytes:
    return requests.get(f"http://127.0.0.1:{port}/{path}", timeout=10).content


def _with_http_client(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("localhost", port, timeout=10)  # a name to resolve
    try:
        conn.request("GET", "/" + path)
        return conn.getresponse().read()
    finally:
        conn.close()


@pytest.mark.parametrize("client", [_with_requests, _with_http_client],
                         ids=["requests", "http.client"])
def test_http_clients_of_a_slow_upstream_run_concurrently(patched, http_upstream, serve, client):
    def app(environ, start_response):
        answer = client(http_upstream, environ["QUERY_STRING"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [answer]

    server = serve(app)
    elapsed, answers = burst(server.url + "?{i}", 200)
    assert answers == [(200, "upstream /%d" % i) for i in range(200)]
    assert elapsed < 2.0, f"200 requests took {elapsed:.2f} s (one at a time: 20 s)"


def test_redis_calls_run_concurrently(patched, redis_port, serve):
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_port, socket_timeout=10,
                         max_connections=256)
    client.delete("greenserve:hits")

    def app(environ, start_response):
        # BLPOP on an empty list: redis-server itself answers after 100 ms
        assert client.blpop(["greenserve:empty"], timeout=DELAY) is None
        hits = client.incr("greenserve:hits")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d" % hits]

    server = serve(app)
    try:
        elapsed, answers = burst(server.url, 200)
        assert sorted(int(text) for _, text in answers) == list(range(1, 201))
        assert elapsed < 2.0, f"200 requests took {elapsed:.2f} s (one at a time: 20 s)"
    finally:
        client.close()


def test_tls_to_a_slow_upstream_runs_concurrently(patched, https_upstream, certificate, serve):
    context = ssl.create_default_context(cafile=certificate[0])

    def app(environ, start_response):
        conn = http.client.HTTPSConnection("localhost", https_upstream, timeout=10,
                                           context=context)
        try:
            conn.request("GET", "/" + environ["QUERY_STRING"])
            tls = conn.sock.version()
            body = conn.getresponse().read()
        finally:
            conn.close()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body + b" " + tls.encode()]

    server = serve(app)
    elapsed, answers = burst(server.url + "?{i}", 50)
    assert all(text.startswith("upstream /%d TLSv1." % i) for i, (_, text) in enumerate(answers)), (
        answers[:3])
    assert elapsed < 2.0, f"50 TLS requests took {elapsed:.2f} s (one at a time: 5 s)"
    # and a plain thread still speaks TLS through the patched classes
    with socket.create_connection(("127.0.0.1", https_upstream), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /direct HTTP/1.0\r\n\r\n")
            assert b"upstream /direct" in tls.recv(4096) + tls.recv(4096)


# -- time.sleep ---------------------------------------------------------------------------------


def sleepy(environ, start_response):
    time.sleep(DELAY)  # looked up at call time: patched or not
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"rested"]


def test_time_sleep_in_100_requests_overlaps_with_the_patch(patched, serve):
    server = serve(sleepy)
    elapsed, answers = burst(server.url, 100)
    assert answers == [(200, "rested")] * 100
    assert elapsed < 1.0, f"100 x time.sleep(0.1) took {elapsed:.2f} s"


def test_time_sleep_without_the_patch_blocks_every_request(serve):
    server = serve(sleepy, block_threshold=0)  # blocking on purpose: no watchdog noise
    elapsed, _ = concurrently(lambda i: requests.get(server.url, timeout=20).content, 5)
    # one after the other: 100 requests would take 10 s
    assert elapsed >= 5 * DELAY * 0.9, f"5 unpatched sleeps took only {elapsed:.2f} s"


def test_a_connection_pool_smaller_than_the_requests_with_the_patch(patched, serve):
    """The shape of SQLAlchemy's QueuePool (a queue.Queue of connections) under 20 concurrent
    requests that each hold one of 2 "connections" for 0.1 s. Unpatched, the third request
    blocks the hub's thread on the queue's lock and the server deadlocks; patched, the requests
    wait their turn and the whole takes about 10 rounds."""
    pool: "queue.Queue[int]" = queue.Queue(maxsize=2)
    for conn in range(2):
        pool.put(conn)

    def app(environ, start_response):
        conn = pool.get(timeout=10)
        try:
            time.sleep(DELAY)
        finally:
            pool.put(conn)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"conn %d" % conn]

    server = serve(app)
    elapsed, bodies = concurrently(lambda i: requests.get(server.url, timeout=20).content, 20)
    assert sorted(set(bodies)) == [b"conn 0", b"conn 1"] and len(bodies) == 20
    assert elapsed < 2 * 20 * DELAY / 2, f"20 requests on 2 connections took {elapsed:.2f} s"


# -- request-local state ------------------------------------------------------------------------


def test_context_var_and_threading_local_are_per_request(patched, serve):
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="")
    state = threading.local()  # made after apply(): one namespace per greenlet

    def app(environ, start_response):
        mine = environ["QUERY_STRING"]
        before = (var.get(), getattr(state, "value", ""))
        var.set(mine)
        state.value = mine
        time.sleep(0.05)  # the other requests run now and set theirs
        child = greenserve.spawn(lambda: (var.get(), getattr(state, "value", ""))).join(5)
        body = "|".join([*before, var.get(), state.value, *child])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body.encode()]

    server = serve(app)
    for _ in range(2):  # twice: pooled greenlets must not carry a request's values to the next
        _, bodies = concurrently(
            lambda i: requests.get(server.url, params=f"r{i}", timeout=20).text, 20)
        # nothing inherited; its own values after the wait; a spawned greenlet copies the
        # context (ContextVar) but starts with an empty threading.local, as a thread would
        assert bodies == [f"||r{i}|r{i}|r{i}|" for i in range(20)]


def test_threading_local_subclass_runs_init_per_greenlet(patched):
    made: List[str] = []

    class Counter(threading.local):
        def __init__(self, start: int) -> None:
            made.append("init")
            self.count = start

        @property
        def doubled(self) -> int:
            return self.count * 2

    counter = Counter(5)
    counter.count += 1

    def main(hub: Any) -> Any:
        counter.count += 10  # a fresh namespace: __init__ ran again with 5
        seen = counter.doubled
        other = greenserve.spawn(lambda: counter.count).join(5)
        return seen, other

    assert run_hub(main) == (30, 5)
    assert counter.count == 6 and made == ["init"] * 3  # this thread's value is untouched


# -- select and selectors -----------------------------------------------------------------------


def _ask_upstream(port: int, wait: Callable[[socket.socket], bool]) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.setblocking(False)
        sock.sendall(b"ping\n")
        assert wait(sock), "timed out"
        return sock.recv(100)
    finally:
        sock.close()


WAITS = {
    "select": lambda sock: bool(select.select([sock], [], [], 10)[0]),
    "selectors": lambda sock: _selector_wait(sock),
}


def _selector_wait(sock: socket.socket) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(10))


@pytest.mark.parametrize("how", sorted(WAITS))
def test_select_and_selectors_wait_cooperatively(patched, slow_upstream, serve, how):
    def app(environ, start_response):
        answer = _ask_upstream(slow_upstream, WAITS[how])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [answer]

    server = serve(app)
    elapsed, bodies = concurrently(lambda i: requests.get(server.url, timeout=20).content, 50)
    assert bodies == [b"pong ping\n"] * 50
    assert elapsed < 1.5, f"50 waits took {elapsed:.2f} s (one at a time: 5 s)"


def test_select_and_selectors_time_out_in_a_hub(patched, serve):
    def app(environ, start_response):
        a, b = socket.socketpair()
        with a, b:
            start = time.monotonic()
            r = select.select([a], [], [], 0.05)
            with selectors.DefaultSelector() as sel:
                sel.register(a, selectors.EVENT_READ)
                s = sel.select(0.05)
            elapsed = time.monotonic() - start
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr((r, s, 0.09 <= elapsed < 1)).encode()]

    server = serve(app)
    assert requests.get(server.url, timeout=10).text == "(([], [], []), [], True)"


# -- outside a hub, as before -------------------------------------------------------------------


def test_outside_a_hub_patched_sockets_block_and_time_out_as_before(patched, slow_upstream):
    sock = socket.create_connection(("localhost", slow_upstream), timeout=5)
    with sock:
        assert isinstance(sock, CoopSocket) and sock.gettimeout() == 5 and sock.getblocking()
        sock.settimeout(0.05)
        start = time.monotonic()
        with pytest.raises(socket.timeout):
            sock.recv(10)  # the upstream says nothing before a line
        assert time.monotonic() - start >= 0.045
        sock.setblocking(False)
        assert sock.timeout == 0.0
        with pytest.raises(BlockingIOError):
            sock.recv(10)
        sock.setblocking(True)
        sock.sendall(b"ping\n")
        assert sock.makefile("rb").readline() == b"pong ping\n"  # waits 0.1 s, blocking
    start = time.monotonic()
    time.sleep(0.05)
    assert select.select([], [], [], 0.05) == ([], [], [])
    assert time.monotonic() - start >= 0.09


def test_a_timeout_interrupts_a_patched_socket_wait(patched, slow_upstream):
    def main(hub: Any) -> Any:
        sock = socket.create_connection(("127.0.0.1", slow_upstream), timeout=10)
        with sock:
            with pytest.raises(greenserve.Timeout):
                with greenserve.Timeout(0.05):
                    sock.recv(10)
            sock.sendall(b"ping\n")  # the socket still works: its fd was left clean
            return sock.recv(100)

    assert run_hub(main) == b"pong ping\n"


def test_closing_a_patched_socket_wakes_the_greenlet_waiting_on_it(patched, slow_upstream):
    def main(hub: Any) -> None:
        sock = socket.create_connection(("127.0.0.1", slow_upstream), timeout=10)
        reader = greenserve.spawn(sock.recv, 10)
        greenserve.sleep(0.02)  # the reader waits on the hub
        sock.close()
        with pytest.raises(OSError):  # not a hang until the timeout
            reader.join(1)

    run_hub(main)


def test_connecting_to_an_ip_literal_looks_nothing_up(patched, slow_upstream, monkeypatch):
    """``create_connection`` to an IP literal: the patched getaddrinfo answers it in place and
    ``connect`` sees the literal needs no lookup (before: two through the standard library's
    Python wrapper, a third of an upstream request's cost). A name is still looked up."""
    from greenserve.loop import threadpool
    from greenserve.patch import cosocket

    lookups: List[Any] = []
    real = threadpool._getaddrinfo

    def recording(*args: Any) -> Any:
        lookups.append(args[0])
        return real(*args)

    monkeypatch.setattr(threadpool, "_getaddrinfo", recording)

    def main(hub: Any) -> Any:
        with socket.create_connection(("127.0.0.1", slow_upstream), timeout=10) as sock:
            sock.sendall(b"ping\n")
            answer = sock.recv(100)
        with socket.socket() as sock:
            sock.settimeout(10)
            sock.connect(("localhost", slow_upstream))  # a name: resolved, in a pool thread
            peer = sock.getpeername()[1]
        with socket.socket() as sock:  # a port given as text: the lookup makes it a number
            sock.settimeout(10)
            sock.connect(("127.0.0.1", str(slow_upstream)))
            return answer, peer, sock.getpeername()[1]

    assert run_hub(main) == (b"pong ping\n", slow_upstream, slow_upstream)
    assert lookups == ["localhost"]
    with socket.socket(socket.AF_INET6) as six:
        assert cosocket._family(six) == socket.AF_INET6


def test_name_lookups_run_in_pool_threads_in_a_hub(patched):
    def main(hub: Any) -> Any:
        return socket.gethostbyname("localhost"), socket.getaddrinfo("localhost", 80)[0][4][1]

    assert run_hub(main) == ("127.0.0.1", 80)


# -- the command line applies the patch before importing the app --------------------------------


def _timed_burst(url: str, n: int) -> Tuple[float, List[str]]:
    return concurrently(lambda i: requests.get(url, params=f"v{i}", timeout=20).text, n)


def test_the_patch_flag_applies_before_the_app_is_imported(run):
    proc = run("tests.patchapp:app", "--bind", "127.0.0.1:0", "--patch")
    elapsed, bodies = _timed_burst(proc.url(), 20)
    assert bodies == [f"v{i}" for i in range(20)]  # threading.local made at import: per request
    assert elapsed < 2.0, f"20 x 0.2 s took {elapsed:.2f} s"  # one at a time: 4 s
    assert proc.stop() == 0


def test_without_the_patch_the_same_app_blocks(run):
    proc = run("tests.patchapp:app", "--bind", "127.0.0.1:0", "--block-threshold", "0",
               env={"GREENSERVE_PATCH": "0"})
    elapsed, _ = _timed_burst(proc.url(), 3)
    assert elapsed >= 3 * 0.2 * 0.9
    assert proc.stop() == 0


def test_a_bad_patch_setting_is_one_line_and_exit_2(run):
    proc = run("tests.patchapp:app", env={"GREENSERVE_PATCH": "maybe"})
    assert proc.proc.wait(30) == 2
    assert wait_until(lambda: len(proc.lines) >= 1)
    assert "GREENSERVE_PATCH" in proc.lines[0] and len(proc.lines) == 1

