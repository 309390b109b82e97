"""Falcon (apps/falconapp.py) served by greenserve and driven by requests, as an API's users
drive it: typed path fields, JSON in and out, Falcon's own error bodies, a failure inside a
responder, and a streamed body."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("falcon")
requests = pytest.importorskip("requests")

APP = "falconapp:app"
TIMEOUT = 10  # seconds for any one request: a hang fails the test


def test_routes_with_path_fields_and_json_bodies(served) -> None:
    server = served(APP)
    with requests.Session() as client:  # one keep-alive connection for all of them
        reply = client.get(server.url + "/items/2", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {"id": 2, "name": "teapot", "price": 18}

        # PATH_INFO carries the percent-decoded bytes as latin-1 (PEP 3333); Falcon turns
        # them back into UTF-8 text, so a non-ASCII path field must arrive intact.
        reply = client.get(server.url + "/greet/Zoë Ünal", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.json() == {"greeting": "Hello, Zoë Ünal!", "path": "/greet/Zoë Ünal"}

        order = {"customer": "Ada", "lines": [{"id": 1, "qty": 2}, {"id": 2}]}
        reply = client.post(server.url + "/orders", json=order, timeout=TIMEOUT)
        assert reply.status_code == 201
        assert reply.headers["Location"] == "/orders/1"
        assert reply.json() == {"customer": "Ada", "lines": 2, "total": 68}

        # The same order uploaded chunked (requests sends a generator body so, with no length).
        # Two readings: greenserve by default reads such a body whole and gives the app a
        # CONTENT_LENGTH; --no-buffer-chunked-body streams it with none. The default is the one
        # Falcon needs: it reads req.content_length bytes and takes no length for an empty body.
        body = json.dumps(order).encode()
        reply = client.post(server.url + "/orders", data=iter([body[:9], body[9:]]),
                            headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
        assert reply.request.headers["Transfer-Encoding"] == "chunked"
        assert reply.status_code == 201
        assert reply.json() == {"customer": "Ada", "lines": 2, "total": 68}


def test_framework_errors_keep_their_status_and_body(served) -> None:
    server = served(APP)
    with requests.Session() as client:
        reply = client.get(server.url + "/no/such/route", timeout=TIMEOUT)
        assert reply.status_code == 404
        assert reply.json() == {"title": "404 Not Found"}

        reply = client.get(server.url + "/items/99", timeout=TIMEOUT)
        assert reply.status_code == 404
        assert reply.json() == {"title": "No such item", "description": "item 99"}

        reply = client.post(server.url + "/orders", data=b'{"lines": [', timeout=TIMEOUT,
                            headers={"Content-Type": "application/json"})
        assert reply.status_code == 400
        assert reply.json()["title"] == "Invalid JSON"

        reply = client.post(server.url + "/orders", json={"lines": []}, timeout=TIMEOUT)
        assert reply.status_code == 422
        assert reply.json() == {"title": "Empty order",
                                "description": "an order needs at least one line"}

        # The connection outlived the error answers: the same session still gets answers.
        assert client.get(server.url + "/items/1", timeout=TIMEOUT).json()["name"] == "kettle"


def test_unhandled_exception_is_a_500_and_its_traceback_reaches_the_server_log(served) -> None:
    # Falcon catches any exception a responder raises, answers its own 500 and writes the
    # traceback to environ["wsgi.errors"]: that stream must end up in greenserve's error log,
    # or the operator never sees why requests fail.
    server = served(APP)
    since = server.log_mark()
    reply = requests.get(server.url + "/boom", timeout=TIMEOUT)
    assert reply.status_code == 500
    assert reply.json() == {"title": "500 Internal Server Error"}
    server.expect_traceback(since, "RuntimeError: falconapp deliberate failure")
    # The server stays up for the next request.
    assert requests.get(server.url + "/items/1", timeout=TIMEOUT).status_code == 200


def test_streamed_body_is_sent_chunked(served) -> None:
    server = served(APP)
    expected = b"".join(f"line {n}\n".encode() for n in range(2000, 0, -1))
    with requests.get(server.url + "/countdown/2000", stream=True, timeout=TIMEOUT) as reply:
        assert reply.status_code == 200
        # No length was given, so an HTTP/1.1 server must frame the body with chunks.
        assert reply.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in reply.headers
        assert reply.raw.chunked
        chunks = list(reply.raw.read_chunked(decode_content=False))
    assert b"".join(chunks) == expected
    assert len(chunks) > 1  # streamed as it was produced, not gathered into one piece

