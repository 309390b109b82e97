"""Every example app, served for real."""

import json
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
