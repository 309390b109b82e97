"""Bottle (apps/bottleapp.py) served by greenserve and driven by requests: wildcard routes,
JSON in and out, Bottle's error pages and a JSON error handler, an exception left to the
server, and a generator streamed as the body."""

from __future__ import annotations

import re

import pytest

from ._rows import TIMEOUT, check_countdown_sent_chunked, post_json_chunked
from .conftest import Served

pytest.importorskip("bottle")
requests = pytest.importorskip("requests")

APP = "bottleapp:app"  # served by the ``site`` fixture


def test_routes_with_wildcards_and_json_bodies(site: Served) -> None:
    with requests.Session() as client:  # one keep-alive connection for all of them
        reply = client.get(site.url + "/items/2", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {"id": 2, "name": "teapot", "price": 18}

        # PATH_INFO carries the percent-decoded bytes as latin-1 (PEP 3333); Bottle re-decodes
        # them as UTF-8, so a non-ASCII wildcard must arrive intact.
        reply = client.get(site.url + "/greet/Zoë Ünal", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.json() == {"greeting": "Hello, Zoë Ünal!", "path": "/greet/Zoë Ünal"}

        order = {"customer": "Ada", "lines": [{"id": 1, "qty": 2}, {"id": 2}]}
        reply = client.post(site.url + "/orders", json=order, timeout=TIMEOUT)
        assert reply.status_code == 201
        assert reply.headers["Location"] == "/orders/1"
        assert reply.json() == {"customer": "Ada", "lines": 2, "total": 68}

        # The same order uploaded chunked, with no length. greenserve's default reading (the
        # body read whole, then a CONTENT_LENGTH) is the one Bottle needs: it reads
        # CONTENT_LENGTH bytes (it would de-chunk itself only if it saw Transfer-Encoding) and
        # takes no length for an empty body.
        reply = post_json_chunked(client, site.url + "/orders", order)
        assert reply.status_code == 201
        assert reply.json() == {"customer": "Ada", "lines": 2, "total": 68}


def test_framework_errors_keep_their_status_and_body(site: Served) -> None:
    with requests.Session() as client:
        reply = client.get(site.url + "/no/such/route", timeout=TIMEOUT)
        assert reply.status_code == 404
        assert reply.headers["Content-Type"].startswith("text/html")
        assert "Error: 404 Not Found" in reply.text

        reply = client.get(site.url + "/items/99", timeout=TIMEOUT)
        assert reply.status_code == 404
        assert "<pre>No item 99</pre>" in reply.text

        reply = client.post(site.url + "/orders", data=b'{"lines": [', timeout=TIMEOUT,
                            headers={"Content-Type": "application/json"})
        assert reply.status_code == 400
        assert "<pre>Invalid JSON</pre>" in reply.text

        reply = client.post(site.url + "/orders", json={"lines": [{"id": 7}]},
                            timeout=TIMEOUT)
        assert reply.status_code == 422
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {"error": "no item 7"}

        # The connection outlived the error answers: the same session still gets answers.
        assert client.get(site.url + "/items/1", timeout=TIMEOUT).json()["name"] == "kettle"


def test_unhandled_exception_is_a_500_from_the_server_with_the_traceback_logged(
        site: Served) -> None:
    since = site.log_mark()
    reply = requests.get(site.url + "/boom", timeout=TIMEOUT)
    assert reply.status_code == 500
    assert reply.text == "500 Internal Server Error\n"
    site.expect_traceback(since, "RuntimeError: bottleapp deliberate failure")
    assert site.proc.matches(re.compile(r"\[ERROR\] error in the WSGI app"))
    # The server stays up for the next request.
    assert requests.get(site.url + "/items/1", timeout=TIMEOUT).status_code == 200


def test_generator_body_is_sent_chunked(site: Served) -> None:
    check_countdown_sent_chunked(site.url)
