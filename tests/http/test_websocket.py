"""WebSockets through greenserve's own API (greenserve.websocket.accept), driven by a real client:
the `websockets` library's sync client. Echo of text and binary, subprotocols, receive timeouts,
iteration, close codes, deflate, the counters, the access log, and the close 1001 of a stop."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any, Dict, List

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import greenserve
import greenserve.websocket as gw
from conftest import wait_until
from greenserve.testing import running_server


def ws_url(server: Any, path: str = "/ws") -> str:
    return server.url.replace("http://", "ws://") + path


def echo_app(environ: Dict[str, Any], start_response: Any) -> Any:
    """/ws echoes every message; /ws/twice closes after two; anything else is plain HTTP."""
    if environ["PATH_INFO"].startswith("/ws"):
        ws = gw.accept(environ)
        for count, message in enumerate(ws, 1):
            ws.send(message)
            if environ["PATH_INFO"] == "/ws/twice" and count == 2:
                ws.close(4000, "two is enough")
        return []
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain"]


def test_echo_text_binary_and_large_messages(serve):
    server = serve(echo_app, validate=False)
    with connect(ws_url(server)) as client:
        client.send("héllo")
        assert client.recv(timeout=5) == "héllo"
        client.send(b"\x00\xff")
        assert client.recv(timeout=5) == b"\x00\xff"
        big = "x" * 300_000
        client.send(big)
        assert client.recv(timeout=5) == big
        client.send(["frag", "ment", "ed"])  # one message in three frames
        assert client.recv(timeout=5) == "fragmented"
    assert wait_until(lambda: server.statistics()["websockets_open"] == 0)
    stats = server.statistics()
    assert stats["websockets_total"] == 1 and stats["responses"]["1xx"] == 1
    assert stats["websocket_messages_in"] == 4 and stats["websocket_messages_out"] == 4


def test_plain_requests_still_work_next_to_websockets(serve):
    import requests

    server = serve(echo_app, validate=False)
    with connect(ws_url(server)) as client:
        assert requests.get(server.url + "/", timeout=5).text == "plain"
        client.send("still here")
        assert client.recv(timeout=5) == "still here"


def test_the_app_closes_with_its_code_and_reason(serve):
    server = serve(echo_app, validate=False)
    with connect(ws_url(server, "/ws/twice")) as client:
        client.send("1")
        client.send("2")
        assert client.recv(timeout=5) == "1" and client.recv(timeout=5) == "2"
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=5)
        assert client.close_code == 4000 and client.close_reason == "two is enough"


def test_the_subprotocol_is_the_apps_choice(serve):
    seen: List[Any] = []

    def app(environ, start_response):
        offered = gw.offered_subprotocols(environ)
        seen.append(offered)
        ws = gw.accept(environ, subprotocol="chat.v2")
        ws.send(ws.subprotocol)
        ws.receive()
        return []

    server = serve(app, validate=False)
    with connect(ws_url(server), subprotocols=["chat.v1", "chat.v2"]) as client:
        assert client.subprotocol == "chat.v2"
        assert client.recv(timeout=5) == "chat.v2"
    assert seen == [["chat.v1", "chat.v2"]]


def test_receive_timeout_raises_and_the_websocket_stays_usable(serve):
    def app(environ, start_response):
        ws = gw.accept(environ)
        try:
            ws.receive(timeout=0.05)
        except TimeoutError:
            ws.send("timed out")
        ws.send(ws.receive(timeout=5))
        return []

    server = serve(app, validate=False)
    with connect(ws_url(server)) as client:
        assert client.recv(timeout=5) == "timed out"
        client.send("then this")
        assert client.recv(timeout=5) == "then this"


def test_an_app_that_returns_leaves_a_clean_close_and_an_error_1011(serve):
    def app(environ, start_response):
        ws = gw.accept(environ)
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("the app broke")
        ws.send("bye")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"never sent after a 101"]

    server = serve(app, validate=False)
    with connect(ws_url(server, "/bye")) as client:
        assert client.recv(timeout=5) == "bye"
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=5)
        assert client.close_code == 1000
    with connect(ws_url(server, "/boom")) as client:
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=5)
        assert client.close_code == 1011


def test_ping_from_the_app_and_from_the_client(serve):
    def app(environ, start_response):
        ws = gw.accept(environ)
        ws.ping(b"app")
        ws.send("pinged")
        ws.receive()
        return []

    server = serve(app, validate=False)
    with connect(ws_url(server)) as client:
        assert client.recv(timeout=5) == "pinged"
        assert client.ping(b"client").wait(5)  # the server answers with a pong


def test_deflate_is_off_by_default_and_on_by_option(serve):
    plain = serve(echo_app, validate=False)
    with connect(ws_url(plain)) as client:  # the client offers permessage-deflate
        assert "Sec-WebSocket-Extensions" not in client.response.headers
    deflating = serve(echo_app, validate=False, websocket_deflate=True)
    with connect(ws_url(deflating)) as client:
        assert "permessage-deflate" in client.response.headers["Sec-WebSocket-Extensions"]
        client.send("z" * 100_000)
        assert client.recv(timeout=5) == "z" * 100_000


def test_allowed_origins(serve):
    server = serve(echo_app, validate=False, websocket_origins=("https://good.example",))
    with connect(ws_url(server), origin="https://good.example") as client:
        client.send("ok")
        assert client.recv(timeout=5) == "ok"
    with pytest.raises(InvalidStatus) as info:
        with connect(ws_url(server), origin="https://evil.example", open_timeout=5):
            pass
    assert info.value.response.status_code == 403


def test_broadcast_from_another_greenlet_while_the_owner_waits_in_receive(serve):
    room: List[Any] = []

    def app(environ, start_response):
        ws = gw.accept(environ)
        room.append(ws)
        for message in ws:
            for other in list(room):
                if not other.closed:
                    other.send(message)
        room.remove(ws)
        return []

    server = serve(app, validate=False)
    with connect(ws_url(server)) as a, connect(ws_url(server)) as b:
        assert wait_until(lambda: len(room) == 2)
        a.send("to everyone")
        assert a.recv(timeout=5) == "to everyone" and b.recv(timeout=5) == "to everyone"


def test_access_log_records_the_upgrade_and_its_duration(tmp_path):
    log_path = tmp_path / "access.log"

    def app(environ, start_response):
        ws = gw.accept(environ)
        ws.receive()
        return []

    with running_server(app, access_log=str(log_path), access_log_format="json") as server:
        with connect(ws_url(server)) as client:
            time.sleep(0.2)  # the session's length, which the log line must show
            client.send("bye")
        assert wait_until(lambda: log_path.exists() and log_path.read_text().strip() != "")
    line = json.loads(log_path.read_text().splitlines()[0])
    assert line["status"] == 101 and line["duration"] >= 0.2


def test_metrics_count_websockets(serve):
    pytest.importorskip("prometheus_client")
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> Dict[str, float]:
        text = requests.get(server.server.metrics_url, timeout=5).text
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}

    expected = {"greenserve_websockets_open": 1, "greenserve_websockets_total": 1,
                "greenserve_request_duration_seconds_count": 0,
                "greenserve_websocket_messages_received_total": 1,
                "greenserve_websocket_messages_sent_total": 1}
    server = serve(echo_app, validate=False, metrics_bind="127.0.0.1:0")
    with connect(ws_url(server)) as client:
        client.send("one")
        client.recv(timeout=5)
        # (the echo can reach the client before the server has counted it as sent)
        assert wait_until(lambda: {k: scrape()[k] for k in expected} == expected), scrape()
    assert wait_until(lambda: scrape()["greenserve_websockets_open"] == 0)
    final = scrape()  # the session counts as a 101, outside the request duration histogram
    assert final["greenserve_request_duration_seconds_count"] == 0
    assert final["greenserve_requests_total"] == 1


def test_graceful_stop_closes_every_websocket_with_1001():
    codes: List[Any] = []
    with running_server(echo_app, grace=10) as server, contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(ws_url(server))) for _ in range(3)]
        for client in clients:
            client.send("hi")
            assert client.recv(timeout=5) == "hi"
        started = time.monotonic()
        stopper = threading.Thread(target=server.server.stop, args=(10,))
        stopper.start()
        for client in clients:
            with pytest.raises(ConnectionClosed):
                client.recv(timeout=5)
            codes.append(client.close_code)
        stopper.join(10)
        assert not stopper.is_alive() and time.monotonic() - started < 5
    assert codes == [1001, 1001, 1001]


def test_the_public_names():
    assert greenserve.websocket.accept is gw.accept
    with pytest.raises(gw.WebSocketError):
        gw.accept({"REQUEST_METHOD": "GET"})


def test_websockets_over_tls(serve, tls_files):
    import ssl

    server = serve(echo_app, validate=False, certfile=tls_files.cert, keyfile=tls_files.key)
    context = ssl.create_default_context(cafile=tls_files.ca)
    # TLS 1.2 for this client: the websockets sync client reads its TLS socket in one thread
    # while another writes, which OpenSSL does not allow; TLS 1.3 session tickets arriving during
    # a write then garble its stream now and then (0.3-0.6% of connections, the same against
    # websockets' own server; none with tickets off or with a single-threaded client). TLS 1.3
    # is covered by tests/http/test_websocket_tls.py, whose client uses one thread.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    url = server.url.replace("https://", "wss://") + "/ws"
    with connect(url, ssl=context) as client:
        client.send("secret")
        assert client.recv(timeout=5) == "secret"
        client.send(b"x" * 200_000)
        assert client.recv(timeout=5) == b"x" * 200_000


def test_request_timeout_does_not_cut_a_websocket(serve):
    def app(environ, start_response):
        ws = gw.accept(environ)
        greenserve.sleep(0.4)
        ws.send("outlived request_timeout")
        ws.receive()
        return []

    server = serve(app, validate=False, request_timeout=0.1)
    with connect(ws_url(server)) as client:
        assert client.recv(timeout=5) == "outlived request_timeout"


def test_a_websocket_refuses_a_foreign_thread(serve):
    errors: List[Any] = []

    def app(environ, start_response):
        ws = gw.accept(environ)

        def from_a_thread():
            try:
                ws.send("from a thread")
            except gw.WebSocketError as exc:
                errors.append(exc)

        thread = threading.Thread(target=from_a_thread)
        thread.start()
        greenserve.run_in_thread(thread.join)
        ws.send("refused" if errors else "sent from a thread?")
        ws.receive()
        return []

    server = serve(app, validate=False)
    with connect(ws_url(server)) as client:
        assert client.recv(timeout=5) == "refused"
