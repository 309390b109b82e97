"""The load-test target app (greenserve.targetapp), served for real: every endpoint, its bad
parameters, /stats against the real server's counters, and cooperative /delay under load."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from wsgiref.util import setup_testing_defaults

import pytest
import requests

from greenserve import targetapp
from conftest import request

MiB = 1024 * 1024


def pattern(n):
    """The payload /bytes/<n> promises: byte i is i % 256."""
    return bytes(i % 256 for i in range(n))


@pytest.fixture
def url(serve):
    return serve(targetapp.app).url


def get(url, path, **kwargs):
    kwargs.setdefault("timeout", 10)
    return requests.get(url + path, **kwargs)


def assert_text(resp, status, fragment):
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert fragment in resp.text


def assert_streamed(resp, n):
    """The app gave no Content-Length, so the server chunks the body; an empty body (the app's
    iterable ended before any data) may go out as Content-Length: 0 instead."""
    if n == 0 and "Transfer-Encoding" not in resp.headers:
        assert resp.headers["Content-Length"] == "0"
    else:
        assert "Content-Length" not in resp.headers
        assert resp.headers["Transfer-Encoding"] == "chunked"


# -- simple endpoints ---------------------------------------------------------------------------


def test_hello(url):
    resp = get(url, "/")
    assert (resp.status_code, resp.text) == (200, "Hello, world!\n")
    assert resp.headers["Content-Length"] == "14"
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_health(url):
    resp = get(url, "/health")
    assert (resp.status_code, resp.text) == (200, "ok")


def test_unknown_paths_are_404_with_a_message(url):
    for path in ("/nope", "/delay1/5", "/favicon.ico"):
        assert_text(get(url, path), 404, "no endpoint")


@pytest.mark.parametrize("path, usage", [
    ("/delay", "usage: /delay/<ms>"), ("/bytes/", "usage: /bytes/<n>"),
    ("/status/200/extra", "usage: /status/<code>"), ("/health/x", "usage: /health"),
])
def test_wrong_number_of_segments_is_400_with_usage(url, path, usage):
    assert_text(get(url, path), 400, usage)


# -- /delay -------------------------------------------------------------------------------------


def test_delay_waits(url):
    started = time.monotonic()
    resp = get(url, "/delay/150")
    elapsed = time.monotonic() - started
    assert (resp.status_code, resp.text) == (200, "slept 150 ms\n")
    assert resp.headers["X-Sleep"] == "greenserve.sleep"
    assert 0.15 <= elapsed < 5


@pytest.mark.parametrize("path, message", [
    ("/delay/abc", "ms must be an integer, got 'abc'"),
    ("/delay/1.5", "ms must be an integer"),
    ("/delay/-5", "ms must not be negative, got -5"),
    ("/delay/60001", "ms must be between 0 and 60000, got 60001"),
    ("/delay/99999999999999999999", "ms must be between 0 and 60000"),
    ("/cpu/10001", "ms must be between 0 and 10000, got 10001"),
    ("/cpu/x", "ms must be an integer"),
    ("/bytes/-1", "n must not be negative"),
    ("/bytes/%d" % (64 * MiB + 1), "n must be between 0 and %d" % (64 * MiB)),
    ("/bytes/%d?stream=1" % (1024 * MiB + 1), "n must be between 0 and %d" % (1024 * MiB)),
    ("/bytes/10?stream=yes", "stream must be 0 or 1, got 'yes'"),
    ("/stream/100001", "n must be between 0 and 100000"),
    ("/stream/3?delay_ms=-1", "delay_ms must not be negative"),
    ("/stream/3?delay_ms=x", "delay_ms must be an integer"),
    ("/status/199", "code must be between 200 and 599, got 199"),
    ("/status/600", "code must be between 200 and 599, got 600"),
    ("/status/abc", "code must be an integer"),
])
def test_bad_parameters_are_400_saying_what_is_wrong(url, path, message):
    assert_text(get(url, path), 400, message)


# -- /bytes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 255, 256, 65536, 200_001])
def test_bytes_one_body_with_content_length(url, n):
    resp = get(url, f"/bytes/{n}")
    assert resp.status_code == 200
    assert resp.headers["Content-Length"] == str(n)
    assert "Transfer-Encoding" not in resp.headers
    assert resp.content == pattern(n)


@pytest.mark.parametrize("n", [0, 100, 3 * 65536 + 5])
def test_bytes_streamed_without_content_length(url, n):
    resp = get(url, f"/bytes/{n}?stream=1")
    assert resp.status_code == 200
    assert_streamed(resp, n)
    assert resp.content == pattern(n)


def test_bytes_streamed_in_pieces_of_64k():
    environ = _environ("/bytes/200000", "stream=1")
    pieces = list(targetapp.app(environ, lambda status, headers: None))
    assert [len(p) for p in pieces] == [65536, 65536, 65536, 200000 - 3 * 65536]


def test_head_of_bytes_has_length_and_no_body(serve):
    server = serve(targetapp.app)
    resp = request(server, b"HEAD /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n", head_request=True)
    assert resp.status == 200
    assert resp.header("content-length") == "1000"


# -- /stream ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 5, 1000])
def test_stream_sends_n_chunk_lines(url, n):
    resp = get(url, f"/stream/{n}")
    assert resp.status_code == 200
    assert_streamed(resp, n)
    assert resp.text == "".join(f"chunk {i}\n" for i in range(n))


def test_stream_delay_between_chunks(url):
    started = time.monotonic()
    with get(url, "/stream/4?delay_ms=100", stream=True) as resp:
        lines = resp.iter_lines()
        assert next(lines) == b"chunk 0"
        first_at = time.monotonic() - started
        rest = list(lines)
    total = time.monotonic() - started
    assert rest == [b"chunk 1", b"chunk 2", b"chunk 3"]
    assert total >= 0.3                 # three pauses, none before the first chunk
    assert first_at < total - 0.2       # the first chunk came before the pauses were over


# -- /status ------------------------------------------------------------------------------------


@pytest.mark.parametrize("code, reason", [
    (200, "OK"), (201, "Created"), (301, "Moved Permanently"), (404, "Not Found"),
    (418, "I'm a Teapot"), (429, "Too Many Requests"), (500, "Internal Server Error"),
    (503, "Service Unavailable"), (599, "Unknown"),
])
def test_status_with_body(url, code, reason):
    resp = get(url, f"/status/{code}", allow_redirects=False)
    assert resp.status_code == code
    assert resp.reason == reason
    assert resp.text == f"{code} {reason}\n"


@pytest.mark.parametrize("code", [204, 304])
def test_status_without_body(serve, code):
    server = serve(targetapp.app)
    resp = request(server, f"GET /status/{code} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert resp.status == code
    assert resp.body == b""
    assert resp.header("content-length") is None
    assert resp.header("transfer-encoding") is None


# -- /echo and /upload --------------------------------------------------------------------------


def test_echo_json_request(url):
    doc = {"name": "greenserve", "tags": ["wsgi", "greenlet"], "n": 3}
    resp = requests.post(url + "/echo?a=1&b=two", json=doc, headers={"X-Trace": "abc"},
                         timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    echoed = resp.json()
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo"
    assert echoed["query"] == "a=1&b=two"
    assert echoed["headers"]["x-trace"] == "abc"
    assert echoed["headers"]["content-type"] == "application/json"
    assert json.loads(echoed["body"]) == doc
    assert echoed["body_length"] == len(resp.request.body)
    assert echoed["headers"]["content-length"] == str(echoed["body_length"])


def test_echo_get_without_body(url):
    echoed = get(url, "/echo").json()
    assert (echoed["method"], echoed["body"], echoed["body_length"]) == ("GET", "", 0)


def test_echo_chunked_and_non_utf8_body(url):
    resp = requests.put(url + "/echo", data=iter([b"abc", b"\xff", b"def"]), timeout=10)
    echoed = resp.json()
    # The server removed the chunked framing and read the body whole: the app sees its length.
    assert "transfer-encoding" not in echoed["headers"]
    assert echoed["headers"]["content-length"] == "7"
    assert echoed["body"] == "abc\ufffddef"
    assert echoed["body_length"] == 7


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 3 * MiB + 7])
def test_upload_counts_and_hashes(url, size):
    body = os.urandom(size)
    resp = requests.post(url + "/upload", data=body, timeout=30)
    assert resp.status_code == 200
    assert resp.json() == {"bytes": size, "sha256": hashlib.sha256(body).hexdigest()}


def test_upload_chunked(url):
    pieces = [os.urandom(10_000) for _ in range(20)]
    resp = requests.post(url + "/upload", data=iter(pieces), timeout=30)
    whole = b"".join(pieces)
    assert resp.json() == {"bytes": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}


def test_upload_reads_in_64k_pieces():
    reads = []

    class Input(io.BytesIO):
        def read(self, size=-1):
            reads.append(size)
            return super().read(size)

    environ = _environ("/upload", "", body=b"x" * 150_000)
    environ["wsgi.input"] = Input(b"x" * 150_000)
    body = b"".join(targetapp.app(environ, lambda status, headers: None))
    assert json.loads(body)["bytes"] == 150_000
    assert max(reads) == 65536 and -1 not in reads and None not in reads


# -- /cpu ---------------------------------------------------------------------------------------


def test_cpu_burns_for_the_time_asked(url):
    started = time.monotonic()
    resp = get(url, "/cpu/100")
    assert time.monotonic() - started >= 0.1
    doc = resp.json()
    assert doc["ms"] == 100 and doc["rounds"] > 0


# -- /stats -------------------------------------------------------------------------------------


def test_stats_shows_the_real_servers_counts(url):
    with requests.Session() as session:    # one connection: each response is done before the next
        for path in ("/", "/health", "/nope", "/status/503", "/delay/x"):
            session.get(url + path, timeout=10)
        doc = session.get(url + "/stats", timeout=10).json()
    assert doc["available"] is True
    assert doc["requests_total"] == 6      # five above and this one
    assert doc["requests_in_flight"] == 1  # this one
    assert doc["responses"]["2xx"] == 2
    assert doc["responses"]["4xx"] == 2
    assert doc["responses"]["5xx"] == 1
    assert doc["connections_total"] == 1


# -- concurrency --------------------------------------------------------------------------------


def test_delay_is_cooperative_for_50_concurrent_requests(url):
    if get(url, "/delay/0").headers.get("X-Sleep") != "greenserve.sleep":
        pytest.skip("the server gives no greenserve.sleep: /delay blocks the whole server")
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(lambda _: get(url, "/delay/200"), range(50)))
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * 50
    assert elapsed < 2.5, f"50 x 0.2 s took {elapsed:.2f} s (serial would be 10 s)"


# -- without greenserve (another WSGI server, or none) ------------------------------------------


def _environ(path, query, body=b""):
    environ = {"PATH_INFO": path, "QUERY_STRING": query, "wsgi.input": io.BytesIO(body),
               "CONTENT_LENGTH": str(len(body)) if body else ""}
    setup_testing_defaults(environ)
    return environ


def test_without_greenserve_keys_sleep_blocks_and_stats_are_unavailable():
    statuses = []

    def start_response(status, headers):
        statuses.append((status, dict(headers)))

    assert b"".join(targetapp.app(_environ("/stats", ""), start_response)) == \
        b'{"available": false}\n'
    targetapp.app(_environ("/delay/1", ""), start_response)
    assert statuses[-1][1]["X-Sleep"] == "time.sleep"


def test_body_is_read_only_up_to_content_length_when_input_is_not_terminated():
    environ = _environ("/upload", "", body=b"12345")
    environ["wsgi.input"] = io.BytesIO(b"12345EXTRA")
    body = b"".join(targetapp.app(environ, lambda status, headers: None))
    assert json.loads(body)["bytes"] == 5


def test_ws_echoes_over_wsgi_websocket(serve):
    from websockets.sync.client import connect

    server = serve(targetapp.app, validate=False)  # (no WSGI response after the upgrade)
    with connect(server.url.replace("http://", "ws://") + "/ws") as client:
        client.send("ping me")
        assert client.recv(timeout=5) == "ping me"
        client.send(b"\x01" * 70000)
        assert client.recv(timeout=5) == b"\x01" * 70000
    assert_text(requests.get(server.url + "/ws", timeout=10), 400, "WebSocket handshake")
