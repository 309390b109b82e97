"""Apps written for other servers' WebSocket conventions, unchanged: gevent-websocket's
``environ["wsgi.websocket"]``, flask-sock and Flask-SocketIO (threading mode, websocket
transport; both on simple-websocket, which takes ``environ["gunicorn.socket"]``, under the
patch). Each with a real client: the `websockets` library's."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import wait_until


def ws_url(server: Any, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def gevent_style_app(environ: Dict[str, Any], start_response: Any) -> Any:
    """As written for gevent-websocket: a plain HTTP answer when there is no WebSocket."""
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"no websocket here"]
    while True:
        message = ws.receive()
        if message is None:
            break
        if message == "binary please":
            ws.send("as bytes", binary=True)
        elif message == "close":
            ws.close(4002, b"asked to")
        else:
            ws.send(message)
    return []


def test_gevent_websocket_apps_run_unchanged(serve):
    import requests

    server = serve(gevent_style_app, validate=False)
    assert requests.get(server.url + "/", timeout=5).text == "no websocket here"
    with connect(ws_url(server, "/")) as client:
        client.send("hi")
        assert client.recv(timeout=5) == "hi"
        client.send("binary please")
        assert client.recv(timeout=5) == b"as bytes"
        client.send("close")
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=5)
        assert client.close_code == 4002 and client.close_reason == "asked to"


def test_wsgi_websocket_is_only_there_for_a_valid_handshake(serve):
    seen: List[Any] = []

    def app(environ, start_response):
        seen.append(environ.get("wsgi.websocket"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    import requests

    server = serve(app, validate=False)
    requests.get(server.url + "/", headers={"Upgrade": "websocket", "Connection": "Upgrade"},
                 timeout=5)
    requests.get(server.url + "/", timeout=5)
    assert seen == [None, None]


def flask_sock_app() -> Any:
    from flask import Flask
    from flask_sock import Sock

    app = Flask(__name__)
    sock = Sock(app)

    @sock.route("/echo")
    def echo(ws: Any) -> None:
        while True:
            message = ws.receive()
            if message == "bye":
                ws.close(reason=1000, message="bye")
                return
            ws.send(message)

    @app.route("/")
    def index() -> str:
        return "flask here"

    return app


def test_flask_sock_runs_under_the_patch(serve, patched):
    import requests

    server = serve(flask_sock_app(), validate=False)
    assert requests.get(server.url + "/", timeout=5).text == "flask here"
    with connect(ws_url(server, "/echo")) as a, connect(ws_url(server, "/echo")) as b:
        a.send("one")
        b.send(b"two")
        assert a.recv(timeout=5) == "one" and b.recv(timeout=5) == b"two"
        a.send("bye")
        with pytest.raises(ConnectionClosed):
            a.recv(timeout=5)
        assert a.close_code == 1000
        b.send("b is still served")
        assert b.recv(timeout=5) == "b is still served"
    assert wait_until(lambda: server.statistics()["websockets_open"] == 0)
    stats = server.statistics()
    assert stats["websockets_total"] == 2 and stats["responses"]["1xx"] == 2
    assert stats["responses"]["5xx"] == 0


def test_flask_sock_sessions_get_1001_on_stop(patched):
    from greenserve.testing import running_server

    with running_server(flask_sock_app(), grace=10) as server:
        with connect(ws_url(server, "/echo")) as client:
            client.send("x")
            assert client.recv(timeout=5) == "x"
            server.server.stop(10)
            with pytest.raises(ConnectionClosed):
                client.recv(timeout=5)
            assert client.close_code == 1001


def test_flask_socketio_threading_mode_over_websocket(serve, patched):
    from flask import Flask
    from flask_socketio import SocketIO, emit

    app = Flask(__name__)
    socketio = SocketIO(app, async_mode="threading")

    @socketio.on("echo")
    def on_echo(data: Any) -> None:
        emit("echo", {"got": data})

    server = serve(app, validate=False)
    # Engine.IO 4 over the websocket transport, spoken by the websockets client.
    with connect(ws_url(server, "/socket.io/?EIO=4&transport=websocket")) as client:
        opened = client.recv(timeout=5)
        assert opened.startswith("0") and "sid" in json.loads(opened[1:])
        client.send("40")  # Socket.IO connect to the default namespace
        assert client.recv(timeout=5).startswith("40")
        client.send('42["echo","hello"]')
        assert json.loads(client.recv(timeout=5)[2:]) == ["echo", {"got": "hello"}]
    assert server.statistics()["websockets_total"] == 1
