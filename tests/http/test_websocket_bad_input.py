"""WebSocket bad input from a raw-socket client: bad handshakes get 400/426/403 and nothing after
them; malformed, unmasked, oversized and badly encoded frames get their close codes (1002,
1009, 1007) and the connection dropped; a client that never answers our close, or never
answers a keepalive ping, is dropped in bounded time; the server keeps serving after each."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
from websockets.sync.client import connect

import greenserve.websocket as gw
from wsclient import RawClient, close_frame, frame, handshake

SHORT = dict(websocket_close_timeout=0.3, websocket_max_message=1000)


def app(environ: Dict[str, Any], start_response: Any) -> Any:
    """/ws echoes; /ws/close closes at once (and so waits for the client's answer)."""
    if environ["PATH_INFO"].startswith("/ws"):
        ws = gw.accept(environ)
        if environ["PATH_INFO"] == "/ws/close":
            ws.close(1000, "done")
        for message in ws:
            ws.send(message)
        return []
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain"]


def still_serving(server: Any) -> None:
    with connect(server.url.replace("http", "ws") + "/ws", open_timeout=5) as client:
        client.send("alive?")
        assert client.recv(timeout=5) == "alive?"


@pytest.mark.parametrize("request_bytes,status", [
    (handshake(Sec_WebSocket_Key=""), 400),
    (handshake(Sec_WebSocket_Key="dG9vIHNob3J0"), 400),  # decodes to 9 bytes, not 16
    (handshake(Sec_WebSocket_Key="not base64!!"), 400),
    (handshake(Connection="keep-alive"), 400),
    (handshake(Sec_WebSocket_Version="8"), 426),
    (handshake(Sec_WebSocket_Version=""), 426),
    (handshake().replace(b"GET", b"POST", 1).replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n"), 400),
    (handshake().replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400),
    (handshake().replace(b"\r\n\r\n", b"\r\nContent-Length: 3\r\n\r\nabc"), 400),
], ids=["no-key", "short-key", "bad-key", "no-connection-upgrade", "version-8", "no-version",
        "post", "http10", "body"])
def test_a_bad_handshake_is_refused_and_nothing_follows(serve, request_bytes, status):
    server = serve(app, validate=False, **SHORT)
    client = RawClient(server.port, request_bytes)
    try:
        assert client.status == status, client.head
        assert b"Connection: close" in client.head
        if status == 426:
            assert b"Sec-WebSocket-Version: 13" in client.head
        assert client.at_eof()
        assert b"\nHTTP/1." not in b"\n" + client.buf  # one response: the app's is not sent
    finally:
        client.close()
    assert server.statistics()["responses"]["4xx"] == 1
    still_serving(server)


def test_a_bad_origin_gets_403(serve):
    server = serve(app, validate=False, websocket_origins=("http://ok.example",))
    client = RawClient(server.port, handshake(Origin="http://evil.example"))
    assert client.status == 403 and client.at_eof()
    client.close()
    good = RawClient(server.port, handshake(Origin="http://ok.example"))
    assert good.status == 101
    good.close()


@pytest.mark.parametrize("bad,code", [
    (frame(0x1, b"unmasked", mask=False), 1002),
    (frame(0x3, b"reserved opcode"), 1002),
    (frame(0x1, b"rsv bits", rsv=2), 1002),
    (frame(0x9, b"x" * 126), 1002),  # control frame longer than 125
    (frame(0x9, b"fragmented ping", fin=False), 1002),
    (frame(0x0, b"continuation of nothing"), 1002),
    (frame(0x1, b"\xff\xfe not utf-8"), 1007),
    (frame(0x1, "é".encode()[:1]), 1007),  # cut in the middle of a character
    (frame(0x2, b"x" * 1001), 1009),
    (frame(0x1, b"x" * 600, fin=False) + frame(0x0, b"x" * 600), 1009),
], ids=["unmasked", "opcode", "rsv", "long-control", "fragmented-control", "bad-continuation",
        "utf8", "utf8-cut", "too-big", "too-big-in-fragments"])
def test_bad_frames_get_their_close_code_and_are_dropped(serve, bad, code):
    server = serve(app, validate=False, **SHORT)
    client = RawClient(server.port)
    try:
        assert client.status == 101
        client.send(frame(0x1, b"fine"))
        assert client.read_frame() == (0x1, b"fine")
        client.send(bad)
        assert client.read_close() == code
        assert client.at_eof(2.0)
    finally:
        client.close()
    still_serving(server)


def test_a_client_that_never_answers_our_close_is_dropped(serve):
    server = serve(app, validate=False, **SHORT)
    client = RawClient(server.port, handshake(path="/ws/close"))
    assert client.status == 101
    assert client.read_close() == 1000
    assert client.at_eof(3.0)  # websocket_close_timeout is 0.3 s
    client.close()
    still_serving(server)


def test_a_client_that_closes_gets_its_close_answered(serve):
    server = serve(app, validate=False, **SHORT)
    client = RawClient(server.port)
    client.send(close_frame(4001, b"bye"))
    opcode, payload = client.read_frame()
    assert opcode == 0x8 and payload[:2] == b"\x0f\xa1"  # 4001 echoed
    assert client.at_eof()
    client.close()


def test_a_silent_client_is_pinged_then_dropped_with_1011(serve):
    server = serve(app, validate=False, websocket_ping_interval=0.2)
    client = RawClient(server.port)
    opcode, _ = client.read_frame()
    assert opcode == 0x9  # the server's keepalive ping, which this client ignores
    assert client.read_close() == 1011
    assert client.at_eof()
    client.close()


def test_a_client_that_answers_pings_is_kept(serve):
    # Each pong must come within the interval: long enough for a busy machine's test client.
    server = serve(app, validate=False, websocket_ping_interval=0.5)
    client = RawClient(server.port)
    for _ in range(3):
        opcode, payload = client.read_frame()
        assert opcode == 0x9
        client.send(frame(0xA, payload))
    client.send(frame(0x1, b"still open"))
    frames: List[Any] = []
    while not frames or frames[-1][0] == 0x9:
        frames.append(client.read_frame())
    assert frames[-1] == (0x1, b"still open")
    client.close()


def test_frames_sent_with_the_handshake_are_not_lost(serve):
    server = serve(app, validate=False, **SHORT)
    client = RawClient(server.port, handshake() + frame(0x1, b"early"))
    assert client.status == 101
    assert client.read_frame() == (0x1, b"early")
    client.close()


def test_an_abrupt_disconnect_ends_the_session(serve):
    server = serve(app, validate=False, **SHORT)
    client = RawClient(server.port)
    client.send(frame(0x1, b"x"))
    assert client.read_frame() == (0x1, b"x")
    client.close()
    from conftest import wait_until

    # The session ends, then its connection closes: a moment apart, so both are waited for.
    assert wait_until(lambda: server.statistics()["websockets_open"] == 0
                      and server.statistics()["connections_open"] == 0)


def test_a_handshake_while_the_server_stops_gets_503():
    import socket
    import threading

    from conftest import wait_until
    from greenserve.testing import running_server

    with running_server(app, grace=5) as server:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        idle.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200")
        stopper = threading.Thread(target=server.server.stop, args=(5,))
        stopper.start()
        assert wait_until(lambda: server.server.draining, timeout=5)
        idle.sendall(handshake())  # on the kept-alive connection, within the drain's quiet time
        answer = idle.recv(4096)
        idle.close()
        stopper.join(10)
    assert answer.startswith(b"HTTP/1.1 503"), answer
