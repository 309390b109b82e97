"""What only the Falcon row checks: Falcon answers a failure inside a responder with its own
500. The API contract it shares with the Bottle and Pyramid rows is in test_api_frameworks.py."""

from __future__ import annotations

import pytest

from .conftest import Served

pytest.importorskip("falcon")
requests = pytest.importorskip("requests")

APP = "falconapp:app"  # served by the ``site`` fixture
TIMEOUT = 10  # seconds for any one request: a hang fails the test


def test_unhandled_exception_is_a_500_and_its_traceback_reaches_the_server_log(
        site: Served) -> None:
    """Falcon's own 500 for a failing responder, its traceback in greenserve's log."""
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
