"""Falcon (apps/falconapp.py) served by greenserve and driven by requests, as an API's users
drive it: typed path fields, JSON in and out, Falcon's own error bodies, a failure inside a
responder, and a streamed body."""

from __future__ import annotations

import pytest

from ._rows import TIMEOUT, check_countdown_sent_chunked, post_json_chunked
from .conftest import Served

pytest.importorskip("falcon")
requests = pytest.importorskip("requests")

APP = "falconapp:app"  # served by the ``site`` fixture


def test_routes_with_path_fields_and_json_bodies(site: Served) -> None:
    with requests.Session() as client:  # one keep-alive connection for all of them
        reply = client.get(site.url + "/items/2", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {"id": 2, "name": "teapot", "price": 18}

        # PATH_INFO carries the percent-decoded bytes as latin-1 (PEP 3333); Falcon turns
        # them back into UTF-8 text, so a non-ASCII path field must arrive intact.
        reply = client.get(site.url + "/greet/Zoë Ünal", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.json() == {"greeting": "Hello, Zoë Ünal!", "path": "/greet/Zoë Ünal"}

        order = {"customer": "Ada", "lines": [{"id": 1, "qty": 2}, {"id": 2}]}
        reply = client.post(site.url + "/orders", json=order, timeout=TIMEOUT)
        assert reply.status_code == 201
        assert reply.headers["Location"] == "/orders/1"
        assert reply.json() == {"customer": "Ada", "lines": 2, "total": 68}

        # The same order uploaded chunked, with no length. greenserve's default reading (the
        # body read whole, then a CONTENT_LENGTH) is the one Falcon needs: it reads
        # req.content_length bytes and takes no length for an empty body.
        reply = post_json_chunked(client, site.url + "/orders", order)
        assert reply.status_code == 201
        assert reply.json() == {"customer": "Ada", "lines": 2, "total": 68}


def test_framework_errors_keep_their_status_and_body(site: Served) -> None:
    with requests.Session() as client:
        reply = client.get(site.url + "/no/such/route", timeout=TIMEOUT)
        assert reply.status_code == 404
        assert reply.json() == {"title": "404 Not Found"}

        reply = client.get(site.url + "/items/99", timeout=TIMEOUT)
        assert reply.status_code == 404
        assert reply.json() == {"title": "No such item", "description": "item 99"}

        reply = client.post(site.url + "/orders", data=b'{"lines": [', timeout=TIMEOUT,
                            headers={"Content-Type": "application/json"})
        assert reply.status_code == 400
        assert reply.json()["title"] == "Invalid JSON"

        reply = client.post(site.url + "/orders", json={"lines": []}, timeout=TIMEOUT)
        assert reply.status_code == 422
        assert reply.json() == {"title": "Empty order",
                                "description": "an order needs at least one line"}

        # The connection outlived the error answers: the same session still gets answers.
        assert client.get(site.url + "/items/1", timeout=TIMEOUT).json()["name"] == "kettle"


def test_unhandled_exception_is_a_500_and_its_traceback_reaches_the_server_log(
        site: Served) -> None:
    # Falcon catches any exception a responder raises, answers its own 500 and writes the
    # traceback to environ["wsgi.errors"]: that stream must end up in greenserve's error log,
    # or the operator never sees why requests fail.
    since = site.log_mark()
    reply = requests.get(site.url + "/boom", timeout=TIMEOUT)
    assert reply.status_code == 500
    assert reply.json() == {"title": "500 Internal Server Error"}
    site.expect_traceback(since, "RuntimeError: falconapp deliberate failure")
    # The server stays up for the next request.
    assert requests.get(site.url + "/items/1", timeout=TIMEOUT).status_code == 200


def test_streamed_body_is_sent_chunked(site: Served) -> None:
    check_countdown_sent_chunked(site.url)
