"""A real Flask app served by greenserve, driven by requests and http.client."""

from __future__ import annotations

import hashlib
import io
from typing import Optional
import os

import pytest
import requests

flask = pytest.importorskip("flask")
from flask import Flask, jsonify, request, send_file, stream_with_context, url_for  # noqa: E402

from conftest import Reader, connect  # noqa: E402


def make_app():
    app = Flask(__name__)

    @app.post("/json")
    def echo_json():
        data = request.get_json()
        return jsonify(received=data, total=sum(data["numbers"]), method=request.method)

    @app.get("/hello/<name>")
    def hello(name):
        return jsonify(hello=name, q=request.args.get("q"))

    @app.post("/form")
    def form():
        return jsonify(name=request.form["name"], tags=request.form.getlist("tag"))

    @app.get("/stream")
    def stream():
        count = int(request.args.get("n", "3"))

        @stream_with_context
        def generate():
            for i in range(count):
                yield f"{request.path}:{i}\n"

        return app.response_class(generate(), mimetype="text/plain")

    @app.post("/upload")
    def upload():
        f = request.files["file"]
        data = f.read()
        return jsonify(filename=f.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       note=request.form.get("note"))

    @app.get("/remote")
    def remote():
        return jsonify(remote_addr=request.remote_addr)

    @app.get("/links")
    def links():
        return jsonify(other=url_for("hello", name="x"), external=url_for("remote", _external=True),
                       script_root=request.script_root, path=request.path)

    @app.get("/boom")
    def boom():
        raise RuntimeError("flask view failed")

    @app.errorhandler(500)
    def server_error(error):
        return jsonify(error="custom handler", original=str(error.original_exception)), 500

    return app


@pytest.fixture
def flask_server(serve):
    return serve(make_app())


@pytest.fixture
def flask_server_unvalidated(serve):
    """For JSON and urlencoded bodies: werkzeug reads them with wsgi.input.read() (no size),
    which greenserve allows through wsgi.input_terminated and wsgiref.validate refuses."""
    return serve(make_app(), validate=False)


def test_json_in_and_out(flask_server_unvalidated):
    resp = requests.post(flask_server_unvalidated.url + "/json", json={"numbers": [1, 2, 39]}, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json() == {"received": {"numbers": [1, 2, 39]}, "total": 42, "method": "POST"}


def test_json_out_with_path_and_query(flask_server):
    resp = requests.get(flask_server.url + "/hello/w%C3%B6rld?q=a%20b", timeout=10)
    assert resp.status_code == 200
    assert resp.json() == {"hello": "wörld", "q": "a b"}


def test_json_body_sent_chunked(flask_server_unvalidated):
    def chunks():
        yield b'{"numbers": '
        yield b"[10, 20, 30]}"

    resp = requests.post(flask_server_unvalidated.url + "/json", data=chunks(),
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 200
    assert resp.json()["total"] == 60


def test_form_post(flask_server_unvalidated):
    resp = requests.post(flask_server_unvalidated.url + "/form",
                         data=[("name", "Zoë & co"), ("tag", "a"), ("tag", "b=c")], timeout=10)
    assert resp.status_code == 200
    assert resp.json() == {"name": "Zoë & co", "tags": ["a", "b=c"]}


def test_streamed_response(flask_server):
    with connect(flask_server) as sock:
        sock.sendall(b"GET /stream?n=4 HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = Reader(sock).read_response()
    assert resp.status == 200
    assert resp.header("transfer-encoding") == "chunked"
    assert resp.header("content-length") is None
    assert resp.body == b"/stream:0\n/stream:1\n/stream:2\n/stream:3\n"


def test_head_of_a_streamed_response_claims_no_length(flask_server):
    """Regression: werkzeug answers HEAD with an empty body; the server said Content-Length: 0
    for a streamed GET body of 40 bytes (RFC 9110 9.3.2: HEAD has GET's fields, or none)."""
    with connect(flask_server) as sock:
        sock.sendall(b"HEAD /stream?n=4 HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = Reader(sock).read_response(head_request=True)
    assert resp.status == 200
    assert resp.header("content-length") is None


def test_streamed_response_with_requests(flask_server):
    with requests.get(flask_server.url + "/stream?n=200", stream=True, timeout=10) as resp:
        lines = list(resp.iter_lines())
    assert lines == [b"/stream:%d" % i for i in range(200)]


def test_flask_404(flask_server):
    resp = requests.get(flask_server.url + "/missing", timeout=10)
    assert resp.status_code == 404
    assert "Not Found" in resp.text
    # The connection stays usable after a 404.
    with requests.Session() as session:
        assert session.get(flask_server.url + "/nope", timeout=10).status_code == 404
        assert session.get(flask_server.url + "/remote", timeout=10).status_code == 200


def test_multipart_upload(flask_server):
    payload = os.urandom(300_000)
    resp = requests.post(
        flask_server.url + "/upload",
        files={"file": ("data.bin", payload, "application/octet-stream")},
        data={"note": "hé"},
        timeout=10,
    )
    assert resp.status_code == 200
    assert resp.json() == {"filename": "data.bin", "size": len(payload),
                           "sha256": hashlib.sha256(payload).hexdigest(), "note": "hé"}


def test_remote_addr(flask_server):
    resp = requests.get(flask_server.url + "/remote", timeout=10)
    assert resp.json() == {"remote_addr": "127.0.0.1"}


def test_url_for_under_root_path(serve):
    server = serve(make_app(), root_path="/prefix")
    resp = requests.get(server.url + "/prefix/links", timeout=10)
    assert resp.status_code == 200
    assert resp.json() == {
        "other": "/prefix/hello/x",
        "external": f"http://127.0.0.1:{server.port}/prefix/remote",
        "script_root": "/prefix",
        "path": "/links",
    }
    again = requests.get(server.url + "/prefix/hello/y", timeout=10)
    assert again.json() == {"hello": "y", "q": None}


def test_flask_error_handler_for_500(flask_server):
    resp = requests.get(flask_server.url + "/boom", timeout=10)
    assert resp.status_code == 500
    assert resp.json() == {"error": "custom handler", "original": "flask view failed"}
    # Flask handled it: the server keeps the connection's successor working.
    assert requests.get(flask_server.url + "/remote", timeout=10).status_code == 200


class CountingFile(io.BytesIO):
    """A file in memory that counts the bytes read from it (werkzeug knows its size, as it
    does a real file's)."""

    bytes_read = 0

    def read(self, size: Optional[int] = -1) -> bytes:
        data = super().read(size)
        CountingFile.bytes_read += len(data)
        return data


def test_range_of_a_large_file_seeks_instead_of_reading_up_to_it(serve):
    """Regression: wsgi.file_wrapper had no seekable()/seek()/tell(), so werkzeug answered
    "Range: bytes=-100" of a large file by reading and discarding everything before the range
    (about 1 s of a blocked loop per GiB). With them, it seeks."""
    data = os.urandom(8 << 20)
    app = Flask(__name__)

    @app.get("/big")
    def big():
        return send_file(CountingFile(data), mimetype="application/octet-stream",
                         conditional=True, max_age=0)

    server = serve(app, validate=False)
    CountingFile.bytes_read = 0
    resp = requests.get(server.url + "/big", headers={"Range": "bytes=-100"}, timeout=10)
    assert resp.status_code == 206
    assert resp.content == data[-100:]
    assert CountingFile.bytes_read < 1 << 20
