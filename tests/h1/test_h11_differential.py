"""Differential check: every valid corpus file parsed by h11 (test-only dependency) and by
greenserve.h1 must give the same method, target, version, headers, body and trailers.

Where the two disagree and we believe greenserve follows the RFC, the file is listed in
H11_DIFFERS with the section that decides it; the test then asserts that they really differ, so
a stale entry is noticed.
"""

from __future__ import annotations

import json
import pathlib
from typing import Dict, List, Optional, Tuple

import h11
import pytest

from ._driver import drive, limits_for

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
VALID = sorted((CORPUS / "valid").glob("*.http"))

H11_DIFFERS: Dict[str, str] = {
    "leading-crlf": "RFC 9112 2.2: a server SHOULD ignore at least one empty line before the "
    "request-line; h11 reports 'no request line received'",
    "leading-two-crlf": "RFC 9112 2.2 (as leading-crlf)",
    "crlf-after-body-between-pipelined": "RFC 9112 2.2 (as leading-crlf), between requests",
    "http12-treated-as-11": "RFC 9110 2.5: a higher minor version is processed as the highest "
    "minor version we implement (1.1); h11 reports b'1.2'",
    "http10-keep-alive-pipelined": "RFC 9112 9.3 / Appendix C.2.2: HTTP/1.0 persistence with "
    "'Connection: keep-alive'; h11 always closes after an HTTP/1.0 request",
    "te-chunked-empty-list-elements": "RFC 9110 5.6.1: a recipient MUST accept and ignore empty "
    "list elements; h11 requires the Transfer-Encoding value to be exactly 'chunked'",
    "te-chunked-upper-case": "RFC 9112 7: transfer-coding names are case-insensitive; h11 "
    "reports the Transfer-Encoding value lower-cased, greenserve as received (same framing)",
    "chunked-extension-bws": "RFC 9112 7.1.1: chunk-ext allows BWS before ';' and around '='; "
    "h11 refuses whitespace between chunk-size and ';'",
}


def h11_requests(data: bytes) -> Tuple[List[Dict[str, object]], Optional[str]]:
    """Parse ``data`` with h11 acting as a server. Returns (requests, error or None)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    requests: List[Dict[str, object]] = []
    current: Dict[str, object] = {}
    body = bytearray()
    state = conn.their_state
    try:
        while True:
            state = conn.their_state
            event = conn.next_event()
            if isinstance(event, h11.Request):
                body = bytearray()
                current = {
                    "method": event.method.decode("latin-1"),
                    "target": event.target.decode("latin-1"),
                    "http_version": event.http_version.decode("latin-1"),
                    "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in event.headers],
                }
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                current["body"] = bytes(body).decode("latin-1")
                current["trailers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in event.headers]
                requests.append(current)
            elif event is h11.PAUSED:
                # A non-2xx answer also declines a CONNECT tunnel, so h11 stays in HTTP.
                conn.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE:
                    return requests, None
                conn.start_next_cycle()
            else:  # ConnectionClosed, or NEED_DATA after the end of input
                return requests, None
    except h11.RemoteProtocolError as exc:
        if state is h11.MUST_CLOSE:
            # h11 refuses bytes after a request that closes the connection; greenserve ignores
            # them. Either way nothing after that request is parsed.
            return requests, None
        return requests, f"h11: {exc}"


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_h11_agrees(path: pathlib.Path) -> None:
    data = path.read_bytes()
    ours = drive([data], limits_for(path.stem))
    assert ours.error is None
    expected = json.loads(path.with_suffix(".json").read_text("ascii"))
    assert ours.requests == expected
    theirs, error = h11_requests(data)
    if path.stem in H11_DIFFERS:
        assert (theirs, error) != (ours.requests, None), f"stale H11_DIFFERS entry {path.stem}"
        return
    assert error is None, error
    assert theirs == ours.requests


def test_allowlist_names_exist() -> None:
    stems = {p.stem for p in VALID}
    assert set(H11_DIFFERS) <= stems
    assert all("RFC" in reason for reason in H11_DIFFERS.values())
