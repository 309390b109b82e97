"""Pyramid (apps/pyramidapp.py) served by greenserve and driven by requests: URL dispatch with
a regex pattern, the json renderer and request.json_body, HTTP exceptions rendered as JSON
for a client that asks for JSON, an exception left to the server, and a streamed app_iter."""

from __future__ import annotations

import re

import pytest

from ._rows import TIMEOUT, check_countdown_sent_chunked, post_json_chunked
from .conftest import Served

pytest.importorskip("pyramid")
requests = pytest.importorskip("requests")

APP = "pyramidapp:app"  # served by the ``site`` fixture
JSON = {"Accept": "application/json"}


def test_routes_with_matchdict_and_json_bodies(site: Served) -> None:
    with requests.Session() as client:  # one keep-alive connection for all of them
        reply = client.get(site.url + "/items/2", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {"id": 2, "name": "teapot", "price": 18}

        # PATH_INFO carries the percent-decoded bytes as latin-1 (PEP 3333); WebOb re-decodes
        # them as UTF-8, so a non-ASCII match must arrive intact.
        reply = client.get(site.url + "/greet/Zoë Ünal", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.json() == {"greeting": "Hello, Zoë Ünal!", "path": "/greet/Zoë Ünal"}

        order = {"customer": "Ada", "lines": [{"id": 1, "qty": 2}, {"id": 2}]}
        reply = client.post(site.url + "/orders", json=order, timeout=TIMEOUT)
        assert reply.status_code == 201
        assert reply.json() == {"customer": "Ada", "lines": 2, "total": 68}
        # WebOb makes the Location absolute from the request's Host: the client's own.
        assert reply.headers["Location"] == site.url + "/orders/1"

        # The same order uploaded chunked, with no length. Pyramid reads it in either of
        # greenserve's readings (a CONTENT_LENGTH, or none with --no-buffer-chunked-body): WebOb
        # takes the length when there is one, and honours wsgi.input_terminated when not.
        reply = post_json_chunked(client, site.url + "/orders", order)
        assert reply.status_code == 201
        assert reply.json() == {"customer": "Ada", "lines": 2, "total": 68}


def test_framework_errors_keep_their_status_and_body(site: Served) -> None:
    with requests.Session() as client:
        reply = client.get(site.url + "/no/such/route", headers=JSON, timeout=TIMEOUT)
        assert reply.status_code == 404
        assert reply.json()["code"] == "404 Not Found"

        # The same error for a browser is an HTML page: the Accept header reached the app.
        reply = client.get(site.url + "/no/such/route", headers={"Accept": "text/html"},
                           timeout=TIMEOUT)
        assert reply.status_code == 404
        assert reply.headers["Content-Type"].startswith("text/html")
        assert "<h1>404 Not Found</h1>" in reply.text

        reply = client.get(site.url + "/items/99", headers=JSON, timeout=TIMEOUT)
        assert reply.status_code == 404
        assert "No item 99" in reply.json()["message"]

        reply = client.post(site.url + "/orders", data=b'{"lines": [', timeout=TIMEOUT,
                            headers={**JSON, "Content-Type": "application/json"})
        assert reply.status_code == 400
        assert "the body is not JSON" in reply.json()["message"]

        reply = client.post(site.url + "/orders", json={"lines": []}, headers=JSON,
                            timeout=TIMEOUT)
        assert reply.status_code == 422
        assert reply.json()["code"] == "422 Unprocessable Entity"
        assert "an order needs at least one line" in reply.json()["message"]

        # The connection outlived the error answers: the same session still gets answers.
        assert client.get(site.url + "/items/1", timeout=TIMEOUT).json()["name"] == "kettle"


def test_unhandled_exception_is_a_500_from_the_server_with_the_traceback_logged(
        site: Served) -> None:
    since = site.log_mark()
    reply = requests.get(site.url + "/boom", timeout=TIMEOUT)
    assert reply.status_code == 500
    assert reply.text == "500 Internal Server Error\n"
    # Pyramid looks for an exception view first, so the log shows a chained traceback.
    site.expect_traceback(since, "RuntimeError: pyramidapp deliberate failure")
    assert site.proc.matches(re.compile(r"\[ERROR\] error in the WSGI app"))
    # The server stays up for the next request.
    assert requests.get(site.url + "/items/1", timeout=TIMEOUT).status_code == 200


def test_app_iter_is_sent_chunked(site: Served) -> None:
    check_countdown_sent_chunked(site.url)
