"""Every example app, served for real."""

import json
import re
import time

import requests

from examples import flask_app, hello, streaming


def test_hello(serve):
    server = serve(hello.app)
    resp = requests.get(server.url + "/", timeout=5)
    assert resp.status_code == 200
    assert resp.text == "Hello, world!\n"
    assert resp.headers["Content-Length"] == "14"


def test_streaming_sends_lines_as_they_come(serve):
    server = serve(streaming.app)
    started = time.monotonic()
    with requests.get(server.url + "/?count=3&delay=0.3", stream=True, timeout=5) as resp:
        assert resp.headers["Transfer-Encoding"] == "chunked"
        lines = resp.iter_lines()
        first = next(lines)
        first_at = time.monotonic() - started
        rest = list(lines)
    total = time.monotonic() - started
    assert first == b"line 1 of 3"
    assert rest == [b"line 2 of 3", b"line 3 of 3"]
    assert first_at < total - 0.4  # the first line arrived before the pauses were over


def test_streaming_rejects_bad_parameters(serve):
    server = serve(streaming.app)
    resp = requests.get(server.url + "/?count=x", timeout=5)
    assert resp.status_code == 400


def test_flask_example(serve):
    # wsgiref's validator insists on read(size); Werkzeug calls read() because the server sets
    # wsgi.input_terminated, so Flask apps are served unwrapped.
    server = serve(flask_app.app, validate=False)
    assert requests.get(server.url + "/", timeout=5).text.startswith("Hello from Flask")
    resp = requests.post(server.url + "/echo", json={"a": [1, 2]}, timeout=5)
    assert resp.json() == {"received": {"a": [1, 2]}, "length": len(json.dumps({"a": [1, 2]}))}


def test_chat_broadcasts_to_every_client(serve):
    from websockets.sync.client import connect

    from conftest import wait_until
    from examples import chat

    server = serve(chat.app, validate=False)
    assert "new WebSocket" in requests.get(server.url + "/", timeout=5).text
    url = server.url.replace("http://", "ws://") + "/chat"
    with connect(url) as alice, connect(url) as bob, connect(url) as carol:
        assert wait_until(lambda: len(chat.room) == 3)
        alice.send("hello, room")
        assert [c.recv(timeout=5) for c in (alice, bob, carol)] == ["hello, room"] * 3
        bob.close()
        assert wait_until(lambda: len(chat.room) == 2)
        carol.send("bob left")
        assert alice.recv(timeout=5) == "bob left" and carol.recv(timeout=5) == "bob left"
    assert wait_until(lambda: not chat.room)


def test_flask_sock_example_with_the_patch_flag(run):
    """The documented one-line setting, end to end: ``greenserve --patch``."""
    from websockets.sync.client import connect

    proc = run("examples.flask_sock_echo:app", "--bind", "127.0.0.1:0", "--patch")
    url = proc.url().replace("http://", "ws://") + "/echo"
    with connect(url, open_timeout=10) as first, connect(url, open_timeout=10) as second:
        first.send("one")
        second.send("two")  # both sessions at once: neither blocks the server
        assert first.recv(timeout=5) == "one" and second.recv(timeout=5) == "two"
    assert requests.get(proc.url() + "/", timeout=5).text.startswith("flask-sock echo")
    assert "without --patch" not in proc.stderr


def test_socketio_example_with_the_patch_flag(run):
    from websockets.sync.client import connect

    proc = run("examples.socketio_echo:app", "--bind", "127.0.0.1:0", "--patch")
    url = proc.url().replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    with connect(url, open_timeout=10) as client:
        assert client.recv(timeout=5).startswith("0{")
        client.send("40")
        assert client.recv(timeout=5).startswith("40")
        client.send('42["echo","hi"]')
        assert json.loads(client.recv(timeout=5)[2:]) == ["echo", {"got": "hi"}]


def test_flask_sock_without_the_patch_warns(run):
    from websockets.sync.client import connect

    proc = run("examples.flask_sock_echo:app", "--bind", "127.0.0.1:0")
    with connect(proc.url().replace("http://", "ws://") + "/echo", open_timeout=10) as client:
        client.send("x")
        assert client.recv(timeout=5) == "x"
    assert proc.wait_for(re.compile(r"without --patch"), timeout=10)
