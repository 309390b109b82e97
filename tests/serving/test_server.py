"""The embedding API: Server start/stop from another thread, graceful drain, cancellation."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

import greenserve
from greenserve import Config, ConfigError, Server
from greenserve.loop.fds import Poller
from greenserve.loop.hub import get_hub

from conftest import Reader, connect, wait_until


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def sleepy(environ, start_response):
    get_hub().sleep(float(environ["QUERY_STRING"] or "0"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]


def run_in_thread(server: Server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    assert server.wait_serving(10)
    return thread


def test_start_binds_port_zero_and_stop_from_another_thread():
    server = Server(hello, bind="127.0.0.1:0")
    server.start()
    host, port = server.addresses[0]
    assert host == "127.0.0.1" and port > 0
    assert server.urls == [f"http://127.0.0.1:{port}"]
    thread = run_in_thread(server)
    assert requests.get(server.urls[0], timeout=5).text == "hello"
    server.stop(1)
    thread.join(5)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_bad_options_name_the_option():
    with pytest.raises(ConfigError) as info:
        Server(hello, keepalive_timeout=0)
    assert info.value.option == "keepalive_timeout"
    with pytest.raises(ConfigError) as info:
        Server(hello, no_such_option=1)
    assert info.value.option == "no_such_option"
    with pytest.raises(ConfigError) as info:
        Config(bind=("localhost",))
    assert info.value.option == "bind"


def test_port_in_use_raises_config_error_naming_address():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(ConfigError) as info:
            Server(hello, bind=f"127.0.0.1:{port}").start()
        assert f"127.0.0.1:{port}" in str(info.value)
    finally:
        holder.close()


def test_graceful_stop_finishes_in_flight_and_closes_idle():
    server = Server(sleepy, bind="127.0.0.1:0")
    server.start()
    thread = run_in_thread(server)
    host, port = server.addresses[0]
    idle = socket.create_connection((host, port), timeout=5)
    idle.sendall(b"GET /?0 HTTP/1.1\r\nHost: x\r\n\r\n")
    idle_reader = Reader(idle)
    assert idle_reader.read_response().status == 200  # now an idle keep-alive connection
    busy = [socket.create_connection((host, port), timeout=5) for _ in range(20)]
    for sock in busy:
        sock.sendall(b"GET /?0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wait_until(lambda: server.statistics()["requests_in_flight"] == 20)
    stopper = threading.Thread(target=server.stop, args=(10,))
    stopper.start()
    assert idle_reader.at_eof(5)  # the quiet idle connection is closed (after DRAIN_QUIET)
    for sock in busy:
        resp = Reader(sock).read_response()
        assert (resp.status, resp.body, resp.header("connection")) == (200, b"done", "close")
        sock.close()
    stopper.join(10)
    thread.join(5)
    assert not thread.is_alive()
    idle.close()


def test_grace_expiry_cancels_and_calls_close():
    closed = threading.Event()

    class Body:
        def __iter__(self):
            get_hub().sleep(30)
            yield b"never"

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    server = Server(app, bind="127.0.0.1:0")
    server.start()
    thread = run_in_thread(server)
    sock = socket.create_connection(server.addresses[0], timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wait_until(lambda: server.statistics()["requests_in_flight"] == 1)
    started = time.monotonic()
    server.stop(0.3)
    assert time.monotonic() - started < 5
    thread.join(5)
    assert closed.is_set()
    resp = Reader(sock).read_response()
    assert resp.status == 503
    sock.close()


def test_statistics_counts():
    server = Server(hello, bind="127.0.0.1:0")
    server.start()
    thread = run_in_thread(server)
    try:
        session = requests.Session()
        for _ in range(3):
            session.get(server.urls[0], timeout=5)
        with socket.create_connection(server.addresses[0], timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400
            assert Reader(sock).read_response().status == 400
        stats = server.statistics()
        assert stats["requests_total"] == 3
        assert stats["responses"]["2xx"] == 3
        assert stats["responses"]["4xx"] == 1
        assert stats["protocol_errors"] == 1
        assert stats["connections_total"] == 2
    finally:
        server.stop(1)
        thread.join(5)


def test_serve_function_blocks_until_stopped():
    holder = {}

    def app(environ, start_response):
        holder["hub"] = get_hub()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    thread = threading.Thread(target=greenserve.serve, args=(app, "127.0.0.1", port), daemon=True)
    thread.start()

    def up() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/", timeout=1).text == "ok"
        except requests.ConnectionError:
            return False

    assert wait_until(up, timeout=10)
    hub = holder["hub"]
    hub.call_soon_threadsafe(hub.stop)
    thread.join(5)
    assert not thread.is_alive()


def test_stop_answers_the_first_request_of_a_new_connection_and_closes_a_silent_one():
    """A client that has just connected has its request on the way: a drain answers it (with
    Connection: close) instead of resetting it; one that sends nothing is closed after a moment."""
    server = Server(sleepy, bind="127.0.0.1:0", header_timeout=30)
    server.start()
    thread = run_in_thread(server)
    host, port = server.addresses[0]
    late = socket.create_connection((host, port), timeout=10)
    silent = socket.create_connection((host, port), timeout=10)
    assert wait_until(lambda: server.statistics()["connections_open"] == 2)
    stopper = threading.Thread(target=server.stop, args=(10,))
    stopper.start()
    assert wait_until(lambda: server.statistics()["draining"])
    late.sendall(b"GET /?0 HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = Reader(late).read_response()
    assert (resp.status, resp.header("connection")) == (200, "close")
    started = time.monotonic()
    assert Reader(silent).at_eof(8)
    assert time.monotonic() - started < 8  # well before its 30 s header timeout
    stopper.join(10)
    thread.join(5)
    assert not thread.is_alive()
    late.close()
    silent.close()


def test_a_new_connection_whose_request_is_there_is_served_at_once():
    """Clients send their request right after connecting, so it is usually there when the
    connection is accepted: the accept serves it at once instead of watching the socket and
    waiting a turn of the loop, and a connection closed after one response never costs a
    selector registration (Connection: close clients, scenario c of loadtests/bench)."""

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    clients = []
    for _ in range(20):  # connected and sent before the server runs: every request is there
        client = socket.create_connection(listener.getsockname(), timeout=10)
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        clients.append(client)
    server = Server(hello, bind="127.0.0.1:1")
    server.start(sockets=[listener])
    watched = []
    poller = server.hub.poller

    class Recording(Poller):
        # Whatever the hub's poller gets, bar the listener: a connection that waits for its
        # request. (Recorded at the poller: the compiled hub's methods are read-only.)
        def register(self, fd, events):
            if fd != listener.fileno():
                watched.append(fd)
            poller.register(fd, events)

        def modify(self, fd, events):
            poller.modify(fd, events)

        def unregister(self, fd):
            poller.unregister(fd)

        def poll(self, timeout):
            return poller.poll(timeout)

        def close(self):
            poller.close()

    server.hub.poller = Recording()
    thread = run_in_thread(server)
    try:
        for client in clients:
            assert Reader(client).read_response().status == 200
            client.close()
        assert watched == []
        # a client that connects first and sends later is watched, and served when it sends
        with socket.create_connection(listener.getsockname(), timeout=10) as late:
            assert wait_until(lambda: len(watched) == 1)
            late.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert Reader(late).read_response().status == 200
    finally:
        server.stop(1)
        thread.join(10)


def test_one_accept_takes_the_whole_listen_queue():
    """Under load a turn of the loop is long (it answers every ready connection) and accepts
    once: taking 64 connections a turn, 10,000 clients connecting together waited seconds to
    be accepted, and an overflowing queue drops SYNs (clients then retry after 1 s, 3 s...)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    clients = [socket.create_connection(listener.getsockname(), timeout=10) for _ in range(300)]
    accepts = []

    class Counted(Server):
        # (A subclass: the compiled accept calls the method through its class, not the
        # instance.)
        def _accept(self, listener):
            accepts.append(len(self.connections))
            super()._accept(listener)

    server = Counted(hello, bind="127.0.0.1:1")
    server.start(sockets=[listener])
    thread = run_in_thread(server)
    try:
        assert wait_until(lambda: server.statistics()["connections_open"] == 300)
        assert accepts == [0]  # one call took all 300
        for client in clients[:3]:  # all of them are served
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert Reader(client).read_response().status == 200
    finally:
        for client in clients:
            client.close()
        server.stop(1)
        thread.join(10)
