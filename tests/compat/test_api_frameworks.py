"""The Falcon, Bottle and Pyramid rows: one small shop API written in each framework, as its
documentation writes one (apps/falconapp.py, apps/bottleapp.py, apps/pyramidapp.py), served by
greenserve and driven by requests. Each app has the catalog at /items/<id>, orders POSTed as
JSON to /orders, /greet/<name>, a deliberate failure at /boom and a streamed countdown at
/countdown/<count>.

Every test here runs for each framework it names, in each mode (``falcon-single``,
``bottle-patch``, ...). What a framework answers in its own way is a value or a check in its
row of APIS; Falcon's own 500 is in test_falcon.py."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, NamedTuple, Optional, Tuple, TypeVar

import pytest

from .conftest import Served

if TYPE_CHECKING:
    from requests import Response

requests = pytest.importorskip("requests")

TIMEOUT = 10  # seconds for any one request: a hang fails the test
ORDER = {"customer": "Ada", "lines": [{"id": 1, "qty": 2}, {"id": 2}]}
ORDER_ANSWER = {"customer": "Ada", "lines": 2, "total": 68}
F = TypeVar("F", bound=Callable[..., None])


class ErrorReplies(NamedTuple):
    """The answers to the client errors that every app refuses, in the order they are sent."""

    no_route: Response  # GET /no/such/route: 404
    no_item: Response  # GET /items/99: 404
    bad_json: Response  # POST /orders with malformed JSON: 400
    unprocessable: Response  # POST /orders with the row's ``unprocessable``: 422


def falcon_error_bodies(replies: ErrorReplies) -> None:
    """Falcon's error bodies: JSON with a title, and the description when one was given."""
    assert replies.no_route.json() == {"title": "404 Not Found"}
    assert replies.no_item.json() == {"title": "No such item", "description": "item 99"}
    assert replies.bad_json.json()["title"] == "Invalid JSON"
    assert replies.unprocessable.json() == {"title": "Empty order",
                                            "description": "an order needs at least one line"}


def bottle_error_bodies(replies: ErrorReplies) -> None:
    """Bottle's error bodies: its HTML error page with the abort() text in a <pre> (the page
    for the unknown route is checked by test_an_unknown_route_is_an_html_page_for_a_browser),
    and the app's own JSON error handler for 422."""
    assert "<pre>No item 99</pre>" in replies.no_item.text
    assert "<pre>Invalid JSON</pre>" in replies.bad_json.text
    assert replies.unprocessable.headers["Content-Type"] == "application/json"
    assert replies.unprocessable.json() == {"error": "no item 7"}


def pyramid_error_bodies(replies: ErrorReplies) -> None:
    """Pyramid's error bodies for a client that accepts JSON: the HTTP exception as JSON, with
    its status in ``code`` and its text in ``message``."""
    assert replies.no_route.json()["code"] == "404 Not Found"
    assert "No item 99" in replies.no_item.json()["message"]
    assert "the body is not JSON" in replies.bad_json.json()["message"]
    assert replies.unprocessable.json()["code"] == "422 Unprocessable Entity"
    assert "an order needs at least one line" in replies.unprocessable.json()["message"]


@dataclass(frozen=True)
class Api:
    """One framework's row: its app, and what of the shared contract it answers its own way."""

    framework: str  # the framework's import name: its row is skipped where it is not installed
    app: str  # the WSGI app greenserve serves
    location: str  # the Location of a created order; "{url}" stands for the server's base URL
    error_headers: Dict[str, str]  # sent with each client error
    unprocessable: Dict[str, Any]  # an order the app refuses with 422
    error_bodies: Callable[[ErrorReplies], None]  # checks the bodies of the client errors

    @property
    def module(self) -> str:
        """The app's module, which names itself in its deliberate failure."""
        return self.app.partition(":")[0]


APIS: Dict[str, Api] = {
    # Typed path fields, req.get_media() / resp.media, Falcon's own JSON error bodies, and
    # resp.stream for the countdown.
    # PATH_INFO: Falcon turns its latin-1 back into UTF-8 text, so a non-ASCII path field must
    # arrive intact.
    # A chunked upload: greenserve's default reading (the body read whole, then a
    # CONTENT_LENGTH) is the one Falcon needs: it reads req.content_length bytes and takes no
    # length for an empty body.
    "falcon": Api(
        framework="falcon", app="falconapp:app", location="/orders/1", error_headers={},
        unprocessable={"lines": []}, error_bodies=falcon_error_bodies),
    # Wildcard routes, dicts returned as JSON, request.json, Bottle's error pages with a JSON
    # handler for 422, and a generator for the countdown.
    # PATH_INFO: Bottle re-decodes it as UTF-8, so a non-ASCII wildcard must arrive intact.
    # A chunked upload: greenserve's default reading (the body read whole, then a
    # CONTENT_LENGTH) is the one Bottle needs: it reads CONTENT_LENGTH bytes (it would de-chunk
    # itself only if it saw Transfer-Encoding) and takes no length for an empty body.
    "bottle": Api(
        framework="bottle", app="bottleapp:app", location="/orders/1", error_headers={},
        # An unknown item: abort(422) answered by the app's JSON error handler.
        unprocessable={"lines": [{"id": 7}]}, error_bodies=bottle_error_bodies),
    # URL dispatch with a regex pattern, the json renderer and request.json_body, HTTP
    # exceptions rendered as JSON for a client that asks for JSON, and an app_iter for the
    # countdown.
    # PATH_INFO: WebOb re-decodes it as UTF-8, so a non-ASCII match must arrive intact.
    # A chunked upload: Pyramid reads it in either of greenserve's readings (a CONTENT_LENGTH,
    # or none with --no-buffer-chunked-body): WebOb takes the length when there is one, and
    # honours wsgi.input_terminated when not.
    "pyramid": Api(
        framework="pyramid", app="pyramidapp:app",
        # WebOb makes the Location absolute from the request's Host: the client's own.
        location="{url}/orders/1",
        error_headers={"Accept": "application/json"},
        unprocessable={"lines": []}, error_bodies=pyramid_error_bodies),
}


def only(*names: str) -> Callable[[F], F]:
    """Run the decorated test for the named rows of APIS only (by default: for every row)."""
    def mark(test: F) -> F:
        setattr(test, "apis", names)
        return test
    return mark


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize each test that takes ``api`` over its rows (ids falcon, bottle, pyramid).
    Done here rather than with fixture params so that it comes before the modes in every id:
    ``bottle-single`` whether the test runs for all rows or for some."""
    if "api" in metafunc.fixturenames:
        metafunc.parametrize("api", getattr(metafunc.function, "apis", list(APIS)),
                             indirect=True)


@pytest.fixture
def api(request: Any) -> Api:
    """The framework's row; skipped where the framework is not installed."""
    row = APIS[request.param]
    pytest.importorskip(row.framework)
    return row


@pytest.fixture
def site(api: Api, served: Callable[..., Served]) -> Served:
    """greenserve serving the framework's app (in this test's mode)."""
    return served(api.app)


def test_routes_with_path_fields_and_json_bodies(api: Api, site: Served) -> None:
    """Path fields (a non-ASCII one too) and JSON in and out, an order also uploaded chunked."""
    with requests.Session() as client:  # one keep-alive connection for all of them
        reply = client.get(site.url + "/items/2", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {"id": 2, "name": "teapot", "price": 18}

        # PATH_INFO carries the percent-decoded bytes as latin-1 (PEP 3333); each framework
        # re-decodes them as UTF-8 (see APIS), so a non-ASCII path field must arrive intact.
        reply = client.get(site.url + "/greet/Zoë Ünal", timeout=TIMEOUT)
        assert reply.status_code == 200
        assert reply.json() == {"greeting": "Hello, Zoë Ünal!", "path": "/greet/Zoë Ünal"}

        reply = client.post(site.url + "/orders", json=ORDER, timeout=TIMEOUT)
        assert reply.status_code == 201
        assert reply.headers["Location"] == api.location.format(url=site.url)
        assert reply.json() == ORDER_ANSWER

        # The same order uploaded chunked, in two pieces with no length (requests sends a
        # generator body with Transfer-Encoding: chunked). Such a body has two readings:
        # greenserve by default reads it whole and gives the app a CONTENT_LENGTH;
        # --no-buffer-chunked-body streams it with none. Which one each framework needs is in
        # its row of APIS.
        body = json.dumps(ORDER).encode()
        reply = client.post(site.url + "/orders", data=iter([body[:9], body[9:]]),
                            headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
        assert reply.request.headers["Transfer-Encoding"] == "chunked"
        assert reply.status_code == 201
        assert reply.json() == ORDER_ANSWER


def test_framework_errors_keep_their_status_and_body(api: Api, site: Served) -> None:
    """The framework's 4xx answers reach the client as it made them, and keep the
    connection."""
    headers = api.error_headers
    with requests.Session() as client:
        replies = ErrorReplies(
            no_route=client.get(site.url + "/no/such/route", headers=headers,
                                timeout=TIMEOUT),
            no_item=client.get(site.url + "/items/99", headers=headers, timeout=TIMEOUT),
            bad_json=client.post(site.url + "/orders", data=b'{"lines": [', timeout=TIMEOUT,
                                 headers={**headers, "Content-Type": "application/json"}),
            unprocessable=client.post(site.url + "/orders", json=api.unprocessable,
                                      headers=headers, timeout=TIMEOUT),
        )
        assert [reply.status_code for reply in replies] == [404, 404, 400, 422]
        api.error_bodies(replies)

        # The connection outlived the error answers: the same session still gets answers.
        assert client.get(site.url + "/items/1", timeout=TIMEOUT).json()["name"] == "kettle"


# The Accept header a browser's request sends, and a marker of the HTML page answered.
HTML_404: Dict[str, Tuple[Optional[str], str]] = {
    # Bottle's error page is HTML whatever the client accepts (requests sends */*).
    "bottle": (None, "Error: 404 Not Found"),
    # Pyramid's is HTML for a browser: the Accept header reached the app.
    "pyramid": ("text/html", "<h1>404 Not Found</h1>"),
}


@only(*HTML_404)
def test_an_unknown_route_is_an_html_page_for_a_browser(api: Api, site: Served) -> None:
    """A browser asking for an unknown route gets the framework's HTML 404 page."""
    accept, marker = HTML_404[api.framework]
    headers = {"Accept": accept} if accept else {}
    with requests.Session() as client:
        reply = client.get(site.url + "/no/such/route", headers=headers, timeout=TIMEOUT)
        assert reply.status_code == 404
        assert reply.headers["Content-Type"].startswith("text/html")
        assert marker in reply.text

        # The connection outlived the error page: the same session still gets answers.
        assert client.get(site.url + "/items/1", timeout=TIMEOUT).json()["name"] == "kettle"


# Bottle (catchall off) and Pyramid leave the exception to the server; Falcon answers its own
# 500 (test_falcon.py). Pyramid looks for an exception view first, so the log shows a chained
# traceback.
@only("bottle", "pyramid")
def test_unhandled_exception_is_a_500_from_the_server_with_the_traceback_logged(
        api: Api, site: Served) -> None:
    """An exception the app leaves to the server: greenserve's 500, and its traceback logged."""
    since = site.log_mark()
    reply = requests.get(site.url + "/boom", timeout=TIMEOUT)
    assert reply.status_code == 500
    assert reply.text == "500 Internal Server Error\n"
    site.expect_traceback(since, f"RuntimeError: {api.module} deliberate failure")
    assert site.proc.matches(re.compile(r"\[ERROR\] error in the WSGI app"))
    # The server stays up for the next request.
    assert requests.get(site.url + "/items/1", timeout=TIMEOUT).status_code == 200


def test_streamed_body_is_sent_chunked(site: Served) -> None:
    """/countdown/2000, a body each app streams with no length (Falcon's resp.stream, Bottle's
    generator, Pyramid's app_iter), arrives whole, framed with chunks, in more than one."""
    count = 2000
    expected = b"".join(f"line {n}\n".encode() for n in range(count, 0, -1))
    with requests.get(f"{site.url}/countdown/{count}", stream=True, timeout=TIMEOUT) as reply:
        assert reply.status_code == 200
        # No length was given, so an HTTP/1.1 server must frame the body with chunks.
        assert reply.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in reply.headers
        assert reply.raw.chunked
        chunks = list(reply.raw.read_chunked(decode_content=False))
    assert b"".join(chunks) == expected
    assert len(chunks) > 1  # streamed as it was produced, not gathered into one piece
