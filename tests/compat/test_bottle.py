"""Bottle (apps/bottleapp.py) served by greenserve and driven by requests: wildcard routes,
JSON in and out, Bottle's error pages and a JSON error handler, an exception left to the
server, and a generator streamed as the body."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("bottle")
requests = pytest.importorskip("requests")

APP = "bottleapp:app"
TIMEOUT = 10  # seconds for any one request: a hang fails the test


def test_routes_with_wildcards_and_json_bodies(served) -> None:
    server = served(APP)
    with requests.Session() as client:  # one keep-alive connection for all of them
        reply = client.get(server.url + "/items/2", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {"id": 2, "name": "teapot", "price": 18}

        # PATH_INFO carries the percent-decoded bytes as latin-1 (PEP 3333); Bottle re-decodes
        # them as UTF-8, so a non-ASCII wildcard must arrive intact.
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
        # Bottle needs: it reads CONTENT_LENGTH bytes (it would de-chunk itself only if it saw
        # Transfer-Encoding) and takes no length for an empty body.
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
        assert reply.headers["Content-Type"].startswith("text/html")
        assert "Error: 404 Not Found" in reply.text

        reply = client.get(server.url + "/items/99", timeout=TIMEOUT)
        assert reply.status_code == 404
        assert "<pre>No item 99</pre>" in reply.text

        reply = client.post(server.url + "/orders", data=b'{"lines": [', timeout=TIMEOUT,
                            headers={"Content-Type": "application/json"})
        assert reply.status_code == 400
        assert "<pre>Invalid JSON</pre>" in reply.text

        reply = client.post(server.url + "/orders", json={"lines": [{"id": 7}]},
                            timeout=TIMEOUT)
        assert reply.status_code == 422
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {"error": "no item 7"}

        # The connection outlived the error answers: the same session still gets answers.
        assert client.get(server.url + "/items/1", timeout=TIMEOUT).json()["name"] == "kettle"


def test_unhandled_exception_is_a_500_from_the_server_with_the_traceback_logged(served) -> None:
    server = served(APP)
    since = server.log_mark()
    reply = requests.get(server.url + "/boom", timeout=TIMEOUT)
    assert reply.status_code == 500
    assert reply.text == "500 Internal Server Error\n"
    server.expect_traceback(since, "RuntimeError: bottleapp deliberate failure")
    assert server.proc.matches(re.compile(r"\[ERROR\] error in the WSGI app"))
    # The server stays up for the next request.
    assert requests.get(server.url + "/items/1", timeout=TIMEOUT).status_code == 200


def test_generator_body_is_sent_chunked(served) -> None:
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

