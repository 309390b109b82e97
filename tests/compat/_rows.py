"""What the Bottle, Falcon and Pyramid rows share. Their apps (apps/bottleapp.py,
apps/falconapp.py, apps/pyramidapp.py) serve the same small shop API, each written as its
framework's documentation writes one: the catalog at /items/<id>, orders POSTed as JSON to
/orders, /greet/<name>, a deliberate failure at /boom and a streamed countdown at
/countdown/<count>. The requests that are the same for all three, and the checks that do not
depend on the framework, are here; what each framework answers stays in its own file."""

from __future__ import annotations

import json
from typing import Any

import pytest

requests = pytest.importorskip("requests")

TIMEOUT = 10  # seconds for any one request: a hang fails the test


def post_json_chunked(client: requests.Session, url: str, document: Any) -> requests.Response:
    """POST ``document`` as JSON in two pieces with no length (requests sends a generator body
    with Transfer-Encoding: chunked) and check that it went chunked. Returns the reply.

    Such a body has two readings: greenserve by default reads it whole and gives the app a
    CONTENT_LENGTH; --no-buffer-chunked-body streams it with none."""
    body = json.dumps(document).encode()
    reply = client.post(url, data=iter([body[:9], body[9:]]),
                        headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    assert reply.request.headers["Transfer-Encoding"] == "chunked"
    return reply


def check_countdown_sent_chunked(url: str, count: int = 2000) -> None:
    """GET ``url``/countdown/``count``, a body the app streams with no length, and check that
    it arrives whole, framed with chunks, and in more than one chunk."""
    expected = b"".join(f"line {n}\n".encode() for n in range(count, 0, -1))
    with requests.get(f"{url}/countdown/{count}", stream=True, timeout=TIMEOUT) as reply:
        assert reply.status_code == 200
        # No length was given, so an HTTP/1.1 server must frame the body with chunks.
        assert reply.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in reply.headers
        assert reply.raw.chunked
        chunks = list(reply.raw.read_chunked(decode_content=False))
    assert b"".join(chunks) == expected
    assert len(chunks) > 1  # streamed as it was produced, not gathered into one piece
