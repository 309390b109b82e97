"""Pyramid (apps/pyramidapp.py) served by greenserve and driven by requests: URL dispatch with
a regex pattern, the json renderer and request.json_body, HTTP exceptions rendered as JSON
for a client that asks for JSON, an exception left to the server, and a streamed app_iter."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("pyramid")
requests = pytest.importorskip("requests")

APP = "pyramidapp:app"
TIMEOUT = 10  # seconds for any one request: a hang fails the test
JSON = {"Accept": "application/json"}


def test_routes_with_matchdict_and_json_bodies(served) -> None:
    server = served(APP)
    with requests.Session() as client:  # one keep-alive connection for all of them
        reply = client.get(server.url + "/items/2", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {"id": 2, "name": "teapot", "price": 18}

        # PATH_INFO carries the percent-decoded bytes as latin-1 (PEP 3333); WebOb re-decodes
        # them as UTF-8, so a non-ASCII match must arrive intact.
        reply = client.get(server.url + "/greet/Zoë Ünal", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.json() == {"greeting": "Hello, Zoë Ünal!", "path": "/greet/Zoë Ünal"}

        order = {"customer": "Ada", "lines": [{"id": 1, "qty": 2}, {"id": 2}]}
        reply = client.post(server.url + "/orders", json=order, timeout=TIMEOUT)
        assert reply.status_code == 201
        assert reply.json() == {"customer": "Ada", "lines": 2, "total": 68}
        # WebOb makes the Location absolute from the request's Host: the client's own.
        assert reply.headers["Location"] == server.url + "/orders/1"

        # The same order uploaded chunked (requests sends a generator body so, with no length).
        # Two readings: greenserve by default reads such a body whole and gives the app a
        # CONTENT_LENGTH; --no-buffer-chunked-body streams it with none. Pyramid reads either:
        # WebOb takes the length when there is one, and honours wsgi.input_terminated when not.
        body = json.dumps(order).encode()
        reply = client.post(server.url + "/orders", data=iter([body[:9], body[9:]]),
                            headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
        assert reply.request.headers["Transfer-Encoding"] == "chunked"
        assert reply.status_code == 201
        assert reply.json() == {"customer": "Ada", "lines": 2, "total": 68}


def test_framework_errors_keep_their_status_and_body(served) -> None:
    server = served(APP)
    with requests.Session() as client:
        reply = client.get(server.url + "/no/such/route", headers=JSON, timeout=TIMEOUT)
        assert reply.status_code == 404
        assert reply.json()["code"] == "404 Not Found"

        # The same error for a browser is an HTML page: the Accept header reached the app.
        reply = client.get(server.url + "/no/such/route", headers={"Accept": "text/html"},
                           timeout=TIMEOUT)
        assert reply.status_code == 404
        assert reply.headers["Content-Type"].startswith("text/html")
        assert "<h1>404 Not Found</h1>" in reply.text

        reply = client.get(server.url + "/items/99", headers=JSON, timeout=TIMEOUT)
        assert reply.status_code == 404
        assert "No item 99" in reply.json()["message"]

        reply = client.post(server.url + "/orders", data=b'{"lines": [', timeout=TIMEOUT,
                            headers={**JSON, "Content-Type": "application/json"})
        assert reply.status_code == 400
        assert "the body is not JSON" in reply.json()["message"]

        reply = client.post(server.url + "/orders", json={"lines": []}, headers=JSON,
                            timeout=TIMEOUT)
        assert reply.status_code == 422
        assert reply.json()["code"] == "422 Unprocessable Entity"
        assert "an order needs at least one line" in reply.json()["message"]

        # The connection outlived the error answers: the same session still gets answers.
        assert client.get(server.url + "/items/1", timeout=TIMEOUT).json()["name"] == "kettle"


def test_unhandled_exception_is_a_500_from_the_server_with_the_traceback_logged(served) -> None:
    server = served(APP)
    since = server.log_mark()
    reply = requests.get(server.url + "/boom", timeout=TIMEOUT)
    assert reply.status_code == 500
    assert reply.text == "500 Internal Server Error\n"
    # Pyramid looks for an exception view first, so the log shows a chained traceback.
    server.expect_traceback(since, "RuntimeError: pyramidapp deliberate failure")
    assert server.proc.matches(re.compile(r"\[ERROR\] error in the WSGI app"))
    # The server stays up for the next request.
    assert requests.get(server.url + "/items/1", timeout=TIMEOUT).status_code == 200


def test_app_iter_is_sent_chunked(served) -> None:
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

