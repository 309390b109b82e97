"""Flask/Werkzeug rows of the matrix: a small Flask app (tests/compat/apps/flaskapp.py) served
by greenserve and driven by ``requests``, ``curl`` and raw sockets where the exact head of a
response matters: Range requests on send_file, a streamed response and its HEAD, uploads read
from ``request.stream`` (chunked and with a Content-Length), and ``stream_with_context``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest

from .conftest import (
    Head, field_values, get_streamed, head_like_get, need, pieces, raw_exchange,
)

pytest.importorskip("flask")
requests = pytest.importorskip("requests")

APP = "flaskapp:app"
TIMEOUT = 10  # seconds for each request: a hang fails the test
REPORT_SIZE = (1 << 20) + 4321


@pytest.fixture(scope="module")
def report(tmp_path_factory: Any) -> Tuple[Path, bytes]:
    """The folder the app serves its files from (FLASK_DATA_DIR), and the report's bytes."""
    data = tmp_path_factory.mktemp("flaskapp")
    content = os.urandom(REPORT_SIZE)
    (data / "report.bin").write_bytes(content)
    return data, content


@pytest.fixture
def site(served: Any, report: Tuple[Path, bytes]) -> Any:
    """greenserve serving the Flask app (in this test's mode)."""
    return served(APP, env={"FLASK_DATA_DIR": str(report[0])})


def _check_head_like_get(url: str, path: str, headers: Optional[Dict[str, str]] = None) -> Head:
    """HEAD ``path`` answers what GET answers, without a body; every field but Date (the time)
    compared with its value (see ``head_like_get``). Returns GET's head."""
    return head_like_get(url, path, headers, skip={"date"})


# -- send_file and Range ------------------------------------------------------------------------

def test_send_file_whole(site: Any, report: Tuple[Path, bytes]) -> None:
    content = report[1]
    reply = requests.get(site.url + "/report", timeout=TIMEOUT)
    assert reply.status_code == 200
    assert reply.headers["Content-Length"] == str(len(content))
    assert reply.headers["Accept-Ranges"] == "bytes"
    assert reply.content == content


def test_send_file_ranges(site: Any, report: Tuple[Path, bytes]) -> None:
    content = report[1]
    size = len(content)
    first = requests.get(site.url + "/report", headers={"Range": "bytes=0-99"}, timeout=TIMEOUT)
    assert first.status_code == 206
    assert first.headers["Content-Range"] == f"bytes 0-99/{size}"
    assert first.headers["Content-Length"] == "100"
    assert first.content == content[:100]

    middle = requests.get(site.url + "/report", headers={"Range": "bytes=70000-70999"},
                          timeout=TIMEOUT)
    assert middle.status_code == 206
    assert middle.headers["Content-Range"] == f"bytes 70000-70999/{size}"
    assert middle.content == content[70000:71000]

    suffix = requests.get(site.url + "/report", headers={"Range": "bytes=-500"}, timeout=TIMEOUT)
    assert suffix.status_code == 206
    assert suffix.headers["Content-Range"] == f"bytes {size - 500}-{size - 1}/{size}"
    assert suffix.content == content[-500:]

    beyond = requests.get(site.url + "/report", headers={"Range": f"bytes={size}-"},
                          timeout=TIMEOUT)
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{size}"

    # The connection stays usable after each of them: the same session reuses it.
    with requests.Session() as session:
        for spec, expected in (("bytes=0-99", content[:100]), (f"bytes={size}-", None),
                               ("bytes=-10", content[-10:])):
            reply = session.get(site.url + "/report", headers={"Range": spec}, timeout=TIMEOUT)
            assert reply.status_code == (416 if expected is None else 206)
            if expected is not None:
                assert reply.content == expected


def test_send_file_range_with_curl(site: Any, report: Tuple[Path, bytes], tmp_path: Path) -> None:
    curl = need("curl")
    content = report[1]
    out, heads = tmp_path / "part.bin", tmp_path / "heads.txt"
    done = subprocess.run(
        [curl, "--silent", "--show-error", "--max-time", str(TIMEOUT), "-r", "0-99",
         "-o", str(out), "-D", str(heads), site.url + "/report"],
        capture_output=True, text=True, timeout=TIMEOUT + 5,
    )
    assert done.returncode == 0, done.stderr
    lines = heads.read_text("latin-1").splitlines()
    assert lines[0].split()[1] == "206", lines
    assert f"content-range: bytes 0-99/{len(content)}" in [line.lower() for line in lines]
    assert out.read_bytes() == content[:100]


def test_send_file_revalidation(site: Any, report: Tuple[Path, bytes]) -> None:
    # A browser revalidating its cached copy: 304 without a body, on a connection it keeps.
    with requests.Session() as session:
        first = session.get(site.url + "/report", timeout=TIMEOUT)
        assert first.status_code == 200 and first.content == report[1]
        etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
        for headers in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
            again = session.get(site.url + "/report", headers=headers, timeout=TIMEOUT)
            assert again.status_code == 304
            assert again.content == b""
            assert again.headers["ETag"] == etag
        changed = session.get(site.url + "/report", headers={"If-None-Match": '"other"'},
                              timeout=TIMEOUT)
        assert changed.status_code == 200 and changed.content == report[1]


def test_send_file_head(site: Any) -> None:
    status, fields = _check_head_like_get(site.url, "/report")
    assert status == 200 and field_values(fields, "content-length") == [str(REPORT_SIZE)]
    status, fields = _check_head_like_get(site.url, "/report", {"Range": "bytes=0-99"})
    assert status == 206 and field_values(fields, "content-length") == ["100"]


# -- a streamed response ------------------------------------------------------------------------

def test_streamed_response(site: Any) -> None:
    count = 20000
    body = get_streamed(site.url + f"/numbers?count={count}", TIMEOUT)
    assert body == b"".join(b"%d\n" % n for n in range(count))


def test_streamed_response_head(site: Any) -> None:
    # Werkzeug answers HEAD with an empty iterable (it leaves out the body itself), and sets no
    # Content-Length on a streamed response. An empty body from the app is not a body of
    # length 0 here: the GET body is unknown, so the server must add no Content-Length (a
    # "Content-Length: 0" would tell caches and clients the resource is empty).
    # The same for a generator under stream_with_context (which Flask starts on creation).
    for path in ("/numbers?count=100", "/greet?name=Ann"):
        (status, head_fields), rest = raw_exchange(site.url, "HEAD", path)
        assert status == 200 and rest == b""
        assert not field_values(head_fields, "content-length"), (path, head_fields)
        status, fields = _check_head_like_get(site.url, path)
        assert status == 200
        assert not field_values(fields, "content-length")
        assert field_values(fields, "transfer-encoding") == ["chunked"]


# -- uploads read from request.stream -----------------------------------------------------------

@pytest.mark.parametrize("flags", [(), ("--no-buffer-chunked-body",)], ids=["buffered", "streamed"])
def test_chunked_upload_read_from_stream(served: Any, report: Tuple[Path, bytes],
                                         flags: Tuple[str, ...]) -> None:
    # Werkzeug reads a body to its end when the server says it ends it (wsgi.input_terminated)
    # and there is no CONTENT_LENGTH, so Flask gets a chunked upload whether greenserve reads it
    # whole first (the default, with a CONTENT_LENGTH) or streams it (--no-buffer-chunked-body).
    site = served(APP, *flags, env={"FLASK_DATA_DIR": str(report[0])})
    for piece in (1 << 16, 1000):  # large chunks, and many small ones
        payload = os.urandom(3 << 20)
        reply = requests.post(site.url + "/upload", data=pieces(payload, piece),
                              headers={"Content-Type": "application/octet-stream"},
                              timeout=TIMEOUT)
        assert reply.request.headers.get("Transfer-Encoding") == "chunked"
        assert reply.status_code == 200
        assert reply.json() == {"length": len(payload),
                                "sha256": hashlib.sha256(payload).hexdigest()}, piece


def test_upload_with_length_read_from_stream(site: Any) -> None:
    payload = os.urandom(3 << 20)
    reply = requests.post(site.url + "/upload", data=payload,
                          headers={"Content-Type": "application/octet-stream"}, timeout=TIMEOUT)
    assert reply.request.headers["Content-Length"] == str(len(payload))
    assert reply.status_code == 200
    assert reply.json() == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


def test_empty_chunked_upload(site: Any) -> None:
    reply = requests.post(site.url + "/upload", data=iter([]),
                          headers={"Content-Type": "application/octet-stream"}, timeout=TIMEOUT)
    assert reply.status_code == 200
    assert reply.json() == {"length": 0, "sha256": hashlib.sha256(b"").hexdigest()}


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_upload_with_curl_expecting_100_continue(site: Any, tmp_path: Path, chunked: bool) -> None:
    # curl asks "Expect: 100-continue" before a large or chunked body and waits for the 100
    # (here up to 5 s, longer than the whole transfer may take): the server must send it when
    # the app starts reading the body.
    curl = need("curl")
    payload = os.urandom(2 << 20)
    upload = tmp_path / "payload.bin"
    upload.write_bytes(payload)
    command = [curl, "--silent", "--show-error", "--verbose", "--max-time", "4",
               "--expect100-timeout", "5", "-H", "Content-Type: application/octet-stream",
               "--data-binary", f"@{upload}", site.url + "/upload"]
    if chunked:
        command[1:1] = ["-H", "Transfer-Encoding: chunked"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "> Expect: 100-continue" in done.stderr
    assert "< HTTP/1.1 100 Continue" in done.stderr
    assert json.loads(done.stdout) == {
        "length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


# -- stream_with_context ------------------------------------------------------------------------

def test_stream_with_context(site: Any) -> None:
    with requests.get(site.url + "/greet", params={"name": "Zoë", "times": "50"}, stream=True,
                      timeout=TIMEOUT) as reply:
        assert reply.status_code == 200
        assert reply.headers.get("Transfer-Encoding") == "chunked"
        body = reply.content.decode("utf-8")
    expected = "Hello, Zoë!\n" + "".join(f"{n}: Zoë (/greet)\n" for n in range(50))
    assert body == expected
