"""PEP 3333 over real sockets: the environ, start_response/write(), exc_info, wsgi.file_wrapper,
close() of the app's iterable, and one contextvars context per request.

Every app is wrapped in wsgiref.validate.validator unless the test says why it cannot be.
"""

from __future__ import annotations

import contextvars
import http.client
import io
import json
import os
import socket
import struct
import sys
import threading

import pytest

from conftest import Reader, connect, request, wait_until

TEXT = [("Content-Type", "text/plain")]


def recording_app(seen):
    """An app that keeps a copy of each environ it is given and answers 200 'ok'."""

    def app(environ, start_response):
        seen.append(dict(environ))
        start_response("200 OK", list(TEXT))
        return [b"ok"]

    return app


def one_environ(serve, raw, **options):
    seen = []
    server = serve(recording_app(seen), **options)
    resp = request(server, raw)
    assert resp.status == 200
    assert len(seen) == 1
    return seen[0]


def recv_until_eof(sock, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            piece = sock.recv(65536)
            if not piece:
                return data
            data += piece
    except ConnectionResetError:
        return data


# -- environ --------------------------------------------------------------------------------


def test_required_environ_keys_have_the_right_types(serve):
    seen = []
    server = serve(recording_app(seen))
    with connect(server) as sock:
        sock.sendall(b"POST /path?a=b HTTP/1.1\r\nHost: example.org\r\n"
                     b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
        resp = Reader(sock).read_response()
        client_addr, client_port = sock.getsockname()[:2]
    assert resp.status == 200 and resp.body == b"ok"
    env = seen[0]
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/path"
    assert env["QUERY_STRING"] == "a=b"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "5"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_HOST"] == "example.org"
    assert env["REMOTE_ADDR"] == client_addr == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(client_port)
    # PEP 3333: every CGI key is a native str.
    for key, value in env.items():
        if "." not in key:
            assert type(value) is str, key
    assert env["wsgi.version"] == (1, 0)
    assert type(env["wsgi.version"]) is tuple
    assert env["wsgi.url_scheme"] == "http"
    for name in ("read", "readline", "readlines", "__iter__"):
        assert callable(getattr(env["wsgi.input"], name)), name
    for name in ("write", "writelines", "flush"):
        assert callable(getattr(env["wsgi.errors"], name)), name
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert callable(env["wsgi.file_wrapper"])


def test_get_without_body_has_no_content_type_or_length(serve):
    env = one_environ(serve, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    # PEP 3333: CONTENT_TYPE / CONTENT_LENGTH "may be empty or absent".
    assert env.get("CONTENT_TYPE", "") == ""
    assert env.get("CONTENT_LENGTH", "") == ""
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/"
    assert env["QUERY_STRING"] == ""


def test_http10_request_reports_its_protocol(serve):
    env = one_environ(serve, b"GET /old HTTP/1.0\r\n\r\n")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert env["PATH_INFO"] == "/old"


def test_path_info_is_percent_decoded_as_latin1(serve):
    env = one_environ(serve, b"GET /caf%C3%A9/a%2Fb%20c HTTP/1.1\r\nHost: x\r\n\r\n")
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9/a/b c"
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/a/b c"


@pytest.mark.parametrize(
    "target, path_info",
    [(b"/a+b", "/a+b"), (b"/%zz%4", "/%zz%4"), (b"/%ff%00x", "/\u00ff\x00x"), (b"/%25", "/%")],
)
def test_path_info_decoding_edge_cases(serve, target, path_info):
    # "+" is not a space in a path; a malformed escape is kept as it is; every byte maps to
    # the one latin-1 character.
    env = one_environ(serve, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert env["PATH_INFO"] == path_info


def test_query_string_is_not_decoded(serve):
    env = one_environ(serve, b"GET /p?x=%20y&z=caf%C3%A9&s=a+b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert env["QUERY_STRING"] == "x=%20y&z=caf%C3%A9&s=a+b"
    assert env["PATH_INFO"] == "/p"


@pytest.mark.parametrize(
    "target, script_name, path_info",
    [
        (b"/api/users/7", "/api", "/users/7"),
        (b"/api", "/api", ""),
        (b"/api/", "/api", "/"),
    ],
)
def test_root_path_becomes_script_name(serve, target, script_name, path_info):
    env = one_environ(serve, b"GET " + target + b"?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
                      root_path="/api")
    assert env["SCRIPT_NAME"] == script_name
    assert env["PATH_INFO"] == path_info
    assert env["QUERY_STRING"] == "q=1"


def test_root_path_with_a_trailing_slash(serve):
    env = one_environ(serve, b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n", root_path="/api/")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/api", "/x")


def test_encoded_slash_does_not_end_the_root_path(serve):
    env = one_environ(serve, b"GET /api%2Fx HTTP/1.1\r\nHost: x\r\n\r\n", root_path="/api")
    assert env["PATH_INFO"] == "/api/x"  # not under the mount point: left whole, decoded


@pytest.mark.parametrize("target", [b"/other/x", b"/apix/y", b"/"])
def test_path_outside_root_path_is_left_whole(serve, target):
    env = one_environ(serve, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n", root_path="/api")
    assert env["PATH_INFO"] == target.decode()


@pytest.mark.parametrize(
    "target, path_info, query",
    [
        (b"http://example.com/p?q=1", "/p", "q=1"),
        (b"http://example.com:8080/a/b%2Fc", "/a/b/c", ""),
        (b"http://example.com?q=2", "/", "q=2"),
        (b"http://example.com", "/", ""),
    ],
)
def test_absolute_form_target(serve, target, path_info, query):
    env = one_environ(serve, b"GET " + target + b" HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert env["PATH_INFO"] == path_info
    assert env["QUERY_STRING"] == query


def test_absolute_form_target_authority_wins_over_host(serve):
    """RFC 9112 3.2.2: with an absolute-form target the server MUST ignore Host and use the
    target's authority; PEP 3333's URL reconstruction reads HTTP_HOST, so it must say so."""
    env = one_environ(serve, b"GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n")
    assert env["PATH_INFO"] == "/p"
    assert env["HTTP_HOST"] == "example.com:8080"


def test_repeated_headers_are_joined(serve):
    env = one_environ(
        serve,
        b"GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nX-Multi: 1\r\nAccept: text/plain\r\n"
        b"X-Multi: 2\r\nCookie: a=1\r\nCookie: b=2\r\nX-Multi: 3\r\n\r\n",
    )
    assert env["HTTP_ACCEPT"] == "text/html, text/plain"
    assert env["HTTP_X_MULTI"] == "1, 2, 3"
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_header_names_with_underscores_never_reach_the_environ(serve):
    env = one_environ(
        serve,
        b"GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nX-Real_IP: 6.6.6.7\r\n\r\n",
    )
    assert "HTTP_X_FORWARDED_FOR" not in env
    assert "HTTP_X_REAL_IP" not in env
    assert not [k for k, v in env.items() if isinstance(v, str) and v.startswith("6.6.6")]


def test_dashed_header_still_arrives_next_to_an_underscored_twin(serve):
    env = one_environ(
        serve,
        b"GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"X_Forwarded_For: 6.6.6.8\r\n\r\n",
    )
    assert env["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"


def test_content_headers_have_no_http_prefix(serve):
    env = one_environ(
        serve,
        b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
        b"\r\n{}",
    )
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "2"
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


def test_obs_text_header_values_arrive_as_latin1_str(serve):
    env = one_environ(serve, b"GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9 \xff\x80\r\n\r\n")
    assert env["HTTP_X_NAME"] == "caf\u00c3\u00a9 \u00ff\u0080"
    assert env["HTTP_X_NAME"].encode("latin-1") == b"caf\xc3\xa9 \xff\x80"


# -- start_response and write() -------------------------------------------------------------


def test_start_response_returns_write_and_write_goes_first(serve):
    def app(environ, start_response):
        write = start_response("200 OK", list(TEXT))
        assert callable(write)
        write(b"one,")
        write(b"two,")
        return [b"three"]

    server = serve(app)
    resp = request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.status == 200
    assert resp.body == b"one,two,three"


def test_write_sends_before_returning(serve):
    """PEP 3333: write() must not return until the data is sent (or buffered for sending).
    The app writes, then waits for the request body, which the client sends only after it
    received the written bytes."""
    events = []

    def app(environ, start_response):
        write = start_response("200 OK", list(TEXT))
        write(b"early")
        events.append(environ["wsgi.input"].read(1))
        return [b"-late"]

    server = serve(app)
    with connect(server, timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
        got = b""
        while b"early" not in got:
            piece = sock.recv(65536)
            assert piece, got
            got += piece
        assert got.startswith(b"HTTP/1.1 200 OK\r\n")
        assert events == []
        sock.sendall(b"!")
        reader = Reader(sock)
        reader.buf = got
        resp = reader.read_response()
    assert resp.body == b"early-late"
    assert events == [b"!"]


@pytest.mark.parametrize("how", ["yield", "write"])
def test_empty_chunks_do_not_send_the_head(serve, how):
    """The head is held until the first non-empty chunk: an app that produced only b"" before
    failing can still get a 500."""

    def app(environ, start_response):
        write = start_response("200 OK", list(TEXT))

        def body():
            if how == "write":
                write(b"")
            yield b""
            raise RuntimeError("failed before any body")

        return body()

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = Reader(sock).read_response()
    assert resp.status == 500
    assert b"200" not in resp.raw_head.split(b"\r\n")[0]


def test_exc_info_before_the_body_replaces_the_response(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
        try:
            raise ValueError("app trouble")
        except ValueError:
            start_response("500 App Error", [("Content-Type", "text/plain"), ("X-Second", "2")],
                           sys.exc_info())
        return [b"the app's own error page"]

    server = serve(app)
    resp = request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.status == 500
    assert resp.reason == "App Error"
    assert resp.body == b"the app's own error page"
    assert resp.header("x-second") == "2"
    assert resp.header("x-first") is None


def test_exc_info_after_the_head_reraises_and_aborts(serve):
    outcome = []

    def app(environ, start_response):
        start_response("200 OK", list(TEXT))
        if environ["PATH_INFO"] == "/ok":
            return [b"fine"]

        def body():
            yield b"part1"
            try:
                raise ValueError("too late")
            except ValueError as exc:
                try:
                    start_response("500 Oops", list(TEXT), sys.exc_info())
                except ValueError as again:
                    outcome.append(again is exc)
                    raise
                outcome.append("start_response returned")
            yield b"never"

        return body()

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = recv_until_eof(sock)
    assert outcome == [True]
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"part1" in raw
    assert b"never" not in raw
    assert b"Oops" not in raw
    assert not raw.endswith(b"0\r\n\r\n")  # the chunked body was not ended: an abort
    # The server goes on serving.
    assert request(server, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").body == b"fine"


def test_app_supplied_date_and_server_are_not_duplicated(serve):
    """PEP 3333: the server adds headers HTTP requires "if the application omits" them (Date,
    Server); it must not send a second Date (a singleton field, RFC 9110 6.6.1)."""
    date = "Tue, 01 Jan 2030 00:00:00 GMT"

    def app(environ, start_response):
        start_response("200 OK", TEXT + [("Date", date), ("Server", "my-app/1.0")])
        return [b"ok"]

    server = serve(app)
    resp = request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.status == 200
    assert [v for k, v in resp.headers if k.lower() == "date"] == [date]
    assert [v for k, v in resp.headers if k.lower() == "server"] == ["my-app/1.0"]


def test_server_adds_date_and_server_when_the_app_omits_them(serve):
    server = serve(recording_app([]))
    resp = request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len([k for k, v in resp.headers if k.lower() == "date"]) == 1
    assert resp.header("date").endswith(" GMT")
    assert resp.header("server") == "greenserve"


# -- wsgi.file_wrapper ----------------------------------------------------------------------


@pytest.fixture
def big_file(tmp_path):
    data = os.urandom(5 << 20)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data


def file_app(path, opened, offset=0, how="seek"):
    def app(environ, start_response):
        f = open(path, "rb")
        if offset and how == "seek":
            f.seek(offset)
        elif offset:
            assert len(f.read(offset)) == offset  # buffered: the OS offset is further on
        opened.append(f)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f)

    return app


def http_get(server, path="/"):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_file_wrapper_sends_a_real_file_whole(serve, big_file):
    path, data = big_file
    opened = []
    # validate=False: the validator hides the FileWrapper behind its own iterator, and the
    # point here is the server's own path for it (sendfile, Content-Length from the file).
    server = serve(file_app(path, opened), validate=False)
    status, headers, body = http_get(server)
    assert status == 200
    assert headers["content-length"] == str(len(data)) == str(5 << 20)
    assert "transfer-encoding" not in headers
    assert len(body) == len(data)
    assert body == data
    assert wait_until(lambda: opened[0].closed)


@pytest.mark.parametrize("how", ["seek", "read"])
def test_file_wrapper_sends_from_the_current_offset(serve, big_file, how):
    path, data = big_file
    opened = []
    offset = 1_234_567 if how == "seek" else 10
    server = serve(file_app(path, opened, offset=offset, how=how), validate=False)
    status, headers, body = http_get(server)
    assert status == 200
    assert headers["content-length"] == str(len(data) - offset)
    assert body == data[offset:]
    assert wait_until(lambda: opened[0].closed)


def test_file_wrapper_file_is_closed_when_the_client_goes_away(serve, big_file):
    path, data = big_file
    opened = []
    server = serve(file_app(path, opened), validate=False)
    sock = connect(server)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = sock.recv(65536)
        assert got.startswith(b"HTTP/1.1 200 OK\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()
    assert wait_until(lambda: bool(opened) and opened[0].closed, timeout=10)
    assert request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").body == data


def test_file_wrapper_through_the_validator_still_sends_exact_bytes(serve, big_file):
    path, data = big_file
    opened = []
    server = serve(file_app(path, opened))
    status, headers, body = http_get(server)
    assert status == 200
    assert body == data
    assert wait_until(lambda: opened[0].closed)


def test_file_wrapper_with_a_bytesio(serve):
    payload = bytes(range(256)) * 1000
    buffers = []

    def app(environ, start_response):
        buf = io.BytesIO(payload)
        buffers.append(buf)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](buf, 4096)

    server = serve(app, validate=False)  # validate=False: reach the wrapper unwrapped
    status, headers, body = http_get(server)
    assert status == 200
    assert body == payload
    assert wait_until(lambda: buffers[0].closed)


def test_file_wrapper_object_iterates_in_blocks(serve):
    """The wrapper the server offers is usable by middleware as a plain iterable."""
    seen = []

    def app(environ, start_response):
        wrapper = environ["wsgi.file_wrapper"](io.BytesIO(b"abcdefghij"), 4)
        seen.append(list(wrapper))
        wrapper.close()
        start_response("200 OK", list(TEXT))
        return [b"done"]

    server = serve(app)
    assert request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").body == b"done"
    assert seen == [[b"abcd", b"efgh", b"ij"]]


# -- close() of the returned iterable -------------------------------------------------------


class Body:
    """A response iterable that records close(); ``fail_after`` raises after that many
    chunks; ``chunks`` may be large to outlast a client."""

    def __init__(self, chunks, fail_after=None):
        self.chunks = chunks
        self.fail_after = fail_after
        self.yielded = 0
        self.close_calls = 0
        self.closed = threading.Event()

    def __iter__(self):
        for chunk in self.chunks:
            if self.fail_after is not None and self.yielded >= self.fail_after:
                raise RuntimeError("failure while iterating")
            self.yielded += 1
            yield chunk

    def close(self):
        self.close_calls += 1
        self.closed.set()


def body_app(bodies, make):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/plain":
            start_response("200 OK", list(TEXT))
            return [b"plain"]
        body = make()
        bodies.append(body)
        start_response("200 OK", list(TEXT))
        return body

    return app


def test_close_is_called_after_a_normal_response(serve):
    bodies = []
    server = serve(body_app(bodies, lambda: Body([b"a", b"b", b"c"])))
    resp = request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.body == b"abc"
    assert wait_until(bodies[0].closed.is_set)
    assert bodies[0].close_calls == 1


def test_close_is_called_when_iteration_fails_before_the_head(serve):
    bodies = []
    server = serve(body_app(bodies, lambda: Body([b"a", b"b"], fail_after=0)))
    resp = request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.status == 500
    assert wait_until(bodies[0].closed.is_set)


def test_close_is_called_when_iteration_fails_after_the_head(serve):
    bodies = []
    server = serve(body_app(bodies, lambda: Body([b"a", b"b", b"c"], fail_after=2)))
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = recv_until_eof(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\n1\r\na\r\n1\r\nb\r\n" in raw
    assert not raw.endswith(b"0\r\n\r\n")
    assert wait_until(bodies[0].closed.is_set)
    assert bodies[0].yielded == 2
    assert bodies[0].close_calls == 1


def test_close_is_called_when_the_client_goes_away(serve):
    bodies = []
    chunk = b"x" * 65536
    server = serve(body_app(bodies, lambda: Body(iter(lambda: chunk, None))))  # endless
    sock = connect(server)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while len(got) < 200_000:
            got += sock.recv(65536)
        assert got.startswith(b"HTTP/1.1 200 OK\r\n")
        # Reset instead of a polite FIN, with unread data pending.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()
    assert wait_until(lambda: bool(bodies) and bodies[0].closed.is_set(), timeout=10)
    assert bodies[0].close_calls == 1
    assert bodies[0].yielded < 10_000  # the server stopped iterating soon after the reset
    # And the server still answers.
    assert request(server, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n").body == b"plain"


# -- contextvars ------------------------------------------------------------------------------

REQUEST_VAR: contextvars.ContextVar = contextvars.ContextVar("greenserve_test_request_var")


def context_app(events, started):
    def app(environ, start_response):
        name = environ["PATH_INFO"]
        events.append((name, "before", REQUEST_VAR.get(None)))
        REQUEST_VAR.set(name)
        if environ.get("CONTENT_LENGTH"):
            started.set()
            environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))  # waits for the client
        events.append((name, "after", REQUEST_VAR.get(None)))
        start_response("200 OK", list(TEXT))
        return [name.encode()]

    return app


def test_context_var_does_not_leak_to_the_next_request_on_a_connection(serve):
    events = []
    server = serve(context_app(events, threading.Event()))
    with connect(server) as sock:
        reader = Reader(sock)
        # Pipelined: the same connection greenlet answers both.
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.read_response().body == b"/one"
        assert reader.read_response().body == b"/two"
        # Sequential on the kept connection.
        sock.sendall(b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.read_response().body == b"/three"
    assert events == [
        ("/one", "before", None), ("/one", "after", "/one"),
        ("/two", "before", None), ("/two", "after", "/two"),
        ("/three", "before", None), ("/three", "after", "/three"),
    ]


def test_context_var_is_not_shared_by_concurrent_requests(serve):
    events = []
    started = threading.Event()
    server = serve(context_app(events, started))
    with connect(server) as slow, connect(server) as fast:
        slow.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
        assert started.wait(5)  # /slow has set its var and now waits for its body
        fast.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(fast).read_response().body == b"/fast"
        slow.sendall(b"x")
        assert Reader(slow).read_response().body == b"/slow"
    assert events == [
        ("/slow", "before", None),
        ("/fast", "before", None), ("/fast", "after", "/fast"),
        ("/slow", "after", "/slow"),
    ]


def test_json_round_trip_of_environ_values(serve):
    """The environ is usable as-is by an app that reports it (all str values are str)."""

    def app(environ, start_response):
        keys = ["REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "HTTP_X_A"]
        body = json.dumps({k: environ.get(k) for k in keys}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    server = serve(app)
    resp = request(server, b"DELETE /x/y?z HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\r\n")
    assert json.loads(resp.body) == {
        "REQUEST_METHOD": "DELETE", "PATH_INFO": "/x/y", "QUERY_STRING": "z",
        "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_X_A": "b",
    }


# -- kept target strings -------------------------------------------------------------------------


def _environ_of(raw, script_name=""):
    from greenserve.http import wsgi
    from greenserve.http.h1 import H1Connection

    conn = H1Connection()
    conn.receive_data(raw)
    base = wsgi.base_environ("h", "80", url_scheme="http", script_name=script_name,
                             multiprocess=False, software="t")
    return wsgi.request_environ(base, ("192.0.2.1", "5"), conn.next_event(), wsgi.EMPTY_INPUT)


def _target_keys(environ):
    return (environ["SCRIPT_NAME"], environ["PATH_INFO"], environ["QUERY_STRING"],
            environ["REQUEST_URI"], environ["RAW_URI"])


def test_a_target_seen_before_gives_the_same_strings_and_a_mount_point_is_never_kept():
    from greenserve.http import wsgi

    wsgi._targets.clear()
    raw = b"GET /app/a%2Fb?x=%41 HTTP/1.1\r\nHost: h\r\n\r\n"
    first = _target_keys(_environ_of(raw))
    assert first == ("", "/app/a/b", "x=%41", "/app/a%2Fb?x=%41", "/app/a%2Fb?x=%41")
    assert b"/app/a%2Fb?x=%41" in wsgi._targets
    assert _target_keys(_environ_of(raw)) == first
    # Under a mount point the same target means another PATH_INFO, and is worked out anew.
    assert _target_keys(_environ_of(raw, "/app")) == (
        "/app", "/a/b", "x=%41", "/app/a%2Fb?x=%41", "/app/a%2Fb?x=%41")
    assert _target_keys(_environ_of(raw)) == first
    absolute = _environ_of(b"GET http://other.example/p?q HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (absolute["PATH_INFO"], absolute["HTTP_HOST"]) == ("/p", "other.example")
    assert b"http://other.example/p?q" not in wsgi._targets


def test_the_kept_targets_are_bounded_in_number_and_length():
    from greenserve.http import wsgi

    for i in range(3 * wsgi._TARGETS_MAX):
        assert _environ_of(b"GET /n/%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)["PATH_INFO"] == f"/n/{i}"
    assert 0 < len(wsgi._targets) <= wsgi._TARGETS_MAX
    long_target = b"/" + b"t" * (2 * wsgi._TARGET_LEN)
    assert _environ_of(b"GET " + long_target + b" HTTP/1.1\r\nHost: h\r\n\r\n")["PATH_INFO"] == (
        long_target.decode())
    assert long_target not in wsgi._targets
