"""wsgi.input over real sockets: every read method, with Content-Length and chunked bodies,
never past the body, b"" at its end, no hang without a body, and a truncated body is an error.

Apps that call read() without a size use validate=False: PEP 3333 defines read(size), and
reading to the end with read() is what wsgi.input_terminated (set by greenserve) allows, an
extension that wsgiref.validate predates (its InputWrapper asserts exactly one argument).
"""

from __future__ import annotations

import socket

import pytest

from greenserve.errors import ClientDisconnected
from conftest import Reader, connect, request, wait_until

TEXT = [("Content-Type", "text/plain")]
BODY = b"first line\nsecond\n\nfourth line is longer\nno newline at the end"
LINES = [b"first line\n", b"second\n", b"\n", b"fourth line is longer\n", b"no newline at the end"]


def chunked(body, sizes=(1, 3, 7, 11)):
    """Encode ``body`` as a chunked request body with uneven chunk sizes."""
    out, i, k = b"", 0, 0
    while i < len(body):
        size = sizes[k % len(sizes)]
        piece = body[i:i + size]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
        i, k = i + size, k + 1
    return out + b"0\r\n\r\n"


def post(body, framing, path=b"/"):
    if framing == "length":
        return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body)
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked(body))


def reading_app(results, read):
    """An app that runs ``read(wsgi_input)``, records its result and echoes its repr."""

    def app(environ, start_response):
        result = read(environ["wsgi.input"])
        results.append(result)
        start_response("200 OK", list(TEXT))
        return [repr(result).encode()]

    return app


def read_all(inp):
    return [inp.read(), inp.read(), inp.read(10)]


def read_pieces(inp):
    pieces = []
    while True:
        piece = inp.read(4)
        pieces.append(piece)
        if not piece:
            return pieces


def readline_mixed(inp):
    return [inp.readline(), inp.readline(3), inp.readline(100), inp.readline(), inp.readline(0),
            inp.readline(), inp.readline(), inp.readline(), inp.readline(5)]


def readlines(inp):
    return inp.readlines()


def iterate(inp):
    return list(inp)


CASES = {
    "read": (read_all, [BODY, b"", b""], False),
    "read_n": (read_pieces,
               [BODY[i:i + 4] for i in range(0, len(BODY), 4)] + [b""], True),
    "readline": (readline_mixed,
                 [b"first line\n", b"sec", b"ond\n", b"\n", b"", b"fourth line is longer\n",
                  b"no newline at the end", b"", b""], True),
    "readlines": (readlines, LINES, True),
    "iterate": (iterate, LINES, True),
}


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("method", list(CASES))
def test_read_methods(serve, method, framing):
    read, expected, validate = CASES[method]
    results = []
    server = serve(reading_app(results, read), validate=validate)
    resp = request(server, post(BODY, framing))
    assert resp.status == 200
    assert results == [expected]
    assert resp.body == repr(expected).encode()


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "streamed"])
def test_chunked_body_reaches_the_app_without_its_transfer_encoding(serve, buffered):
    """Regression: HTTP_TRANSFER_ENCODING: chunked reached the app after the server had
    removed the framing, and dulwich's git server de-chunked the body a second time (RFC 9112
    7.1.3: once decoded, "chunked" is removed). Buffered (the default), the body also has the
    CONTENT_LENGTH that Django and most frameworks read instead of wsgi.input_terminated;
    streamed, it has none and the app reads to the end."""
    seen = []

    def app(environ, start_response):
        seen.append((environ.get("CONTENT_LENGTH", ""), environ.get("HTTP_TRANSFER_ENCODING"),
                     environ["wsgi.input_terminated"], environ["wsgi.input"].read(10**6)))
        start_response("200 OK", list(TEXT))
        return [b"ok"]

    server = serve(app, buffer_chunked_body=buffered)
    assert request(server, post(BODY, "chunked")).status == 200
    assert seen == [(str(len(BODY)) if buffered else "", None, True, BODY)]


@pytest.mark.parametrize("size", [0, 5, (1 << 20) + 12345])  # empty, in memory, spooled to disk
def test_buffered_chunked_body_is_whole_and_has_its_length(serve, size):
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    seen = []

    def app(environ, start_response):
        length = int(environ["CONTENT_LENGTH"])
        data = environ["wsgi.input"].read(length)
        seen.append((length, data == body, environ["wsgi.input"].read(1)))
        start_response("200 OK", list(TEXT))
        return [b"ok"]

    server = serve(app)
    assert request(server, post(body, "chunked")).status == 200
    assert seen == [(size, True, b"")]


def test_truncated_buffered_chunked_body_never_reaches_the_app(serve):
    """The server reads a chunked body before the app; a client that leaves mid-body
    is the server's to notice: the app is not called and nothing is answered."""
    called = []
    server = serve(lambda environ, start_response: called.append(1))
    with connect(server, timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"a\r\nonly ten.\n\r\n64\r\nand then")
        sock.shutdown(socket.SHUT_WR)
        reader = Reader(sock)
        assert reader.at_eof()
        assert reader.buf == b""
    assert called == []


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_body_split_over_many_packets(serve, framing):
    """The client sends its body in pieces; read(n) still returns exactly n until the end."""
    body = bytes(range(256)) * 64
    results = []
    server = serve(reading_app(results, read_pieces))
    raw = post(body, framing)
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(raw), 997):
            sock.sendall(raw[i:i + 997])
        resp = Reader(sock).read_response()
    assert resp.status == 200
    pieces = results[0]
    assert b"".join(pieces) == body
    assert [len(p) for p in pieces] == [4] * (len(body) // 4) + [0]


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_pipelined_request_after_a_fully_read_body(serve, framing):
    seen = []

    def app(environ, start_response):
        data = environ["wsgi.input"].read()
        seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], data))
        start_response("200 OK", list(TEXT))
        return [b"%s %d" % (environ["PATH_INFO"].encode(), len(data))]

    server = serve(app, validate=False)  # read() without a size; see the module docstring
    with connect(server) as sock:
        sock.sendall(post(b"hello world", framing, b"/post")
                     + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
                     + post(b"again", framing, b"/third"))
        reader = Reader(sock)
        bodies = [reader.read_response().body for _ in range(3)]
    assert bodies == [b"/post 11", b"/next 0", b"/third 5"]
    assert seen == [("POST", "/post", b"hello world"), ("GET", "/next", b""),
                    ("POST", "/third", b"again")]


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("amount", [0, 3])
def test_unread_rest_of_the_body_is_not_taken_for_the_next_request(serve, framing, amount):
    """The app reads none or part of a body that looks like a request; the server discards
    the rest, and the next request is the real one that follows the body."""
    seen = []

    def app(environ, start_response):
        seen.append((environ["PATH_INFO"], environ["wsgi.input"].read(amount)))
        start_response("200 OK", list(TEXT))
        return [environ["PATH_INFO"].encode()]

    server = serve(app)
    with connect(server, timeout=5) as sock:
        sock.sendall(post(b"GET /fake HTTP/1.1\r\nHost: x\r\n\r\n", framing, b"/post")
                     + b"GET /real HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response().body == b"/post"
        assert reader.read_response().body == b"/real"
    assert seen == [("/post", b"GET"[:amount]), ("/real", b"")]


def test_read_larger_than_the_body_stops_at_its_end(serve):
    results = []
    server = serve(reading_app(results, lambda inp: [inp.read(1000), inp.read(1000)]))
    with connect(server, timeout=5) as sock:
        sock.sendall(post(b"12345", "length") + b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        first = reader.read_response()
        second = reader.read_response()
    assert results[0] == [b"12345", b""]
    assert first.body == repr([b"12345", b""]).encode()
    assert second.status == 200
    assert results[1] == [b"", b""]  # the GET's app sees an empty body, not the POST's tail


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ],
    ids=["get", "content-length-0", "empty-chunked", "http10"],
)
def test_reading_without_a_body_returns_empty_at_once(serve, raw):
    results = []
    read = lambda inp: [inp.read(), inp.read(100), inp.readline(), inp.readlines(), list(inp)]
    server = serve(reading_app(results, read), validate=False)  # read() without a size
    with connect(server, timeout=3) as sock:  # a hang fails with socket.timeout
        sock.sendall(raw)
        resp = Reader(sock).read_response()
    assert resp.status == 200
    assert results == [[b"", b"", b"", [], []]]


def test_expect_100_continue_is_sent_on_the_first_read(serve):
    results = []
    server = serve(reading_app(results, lambda inp: inp.read(5)))
    with connect(server, timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        interim = reader.read_response()
        assert interim.status == 100
        sock.sendall(b"abcde")
        resp = reader.read_response()
    assert resp.status == 200
    assert results == [b"abcde"]


def test_expect_100_continue_not_sent_when_the_app_does_not_read(serve):
    def app(environ, start_response):
        start_response("403 Forbidden", list(TEXT))
        return [b"no"]

    server = serve(app)
    with connect(server, timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        resp = Reader(sock).read_response()
    assert resp.status == 403
    assert resp.body == b"no"


# -- a truncated body -----------------------------------------------------------------------


def truncating_app(outcome, read):
    def app(environ, start_response):
        try:
            data = read(environ["wsgi.input"])
        except Exception as exc:  # record what the app got, then answer as a naive app would
            outcome.append(("error", exc))
        else:
            outcome.append(("data", data))
        start_response("200 OK", list(TEXT))
        return [b"the app answered"]

    return app


@pytest.mark.parametrize(
    "read",
    [lambda inp: inp.read(), lambda inp: inp.read(100), lambda inp: inp.readlines(),
     lambda inp: list(inp)],
    ids=["read", "read_n", "readlines", "iterate"],
)
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_truncated_body_raises_client_disconnected(serve, read, framing):
    outcome = []
    # read() without a size; a chunked body streamed to the app, which sees it cut short
    server = serve(truncating_app(outcome, read), validate=False, buffer_chunked_body=False)
    if framing == "length":
        raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten.\n"
    else:
        raw = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"a\r\nonly ten.\n\r\n64\r\nand then")
    with connect(server, timeout=5) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        reader = Reader(sock)
        assert reader.at_eof()
    assert wait_until(lambda: outcome)
    kind, value = outcome[0]
    assert kind == "error", f"read returned short data instead of failing: {value!r}"
    assert isinstance(value, ClientDisconnected)
    assert isinstance(value, OSError)
    # The app's answer after the failed read is not sent: the client is gone.
    assert b"the app answered" not in reader.buf


# -- many small pieces: correct, and linear in time ------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from greenserve.http.wsgi import Input  # noqa: E402


def pieces_reader(pieces):
    """The ``read_chunk`` callable the handler gives Input: the next piece, b"" at the end."""
    it = iter(pieces)
    return lambda: next(it, b"")


operations = st.lists(st.tuples(st.sampled_from(["read", "readline"]), st.none() | st.integers(-1, 40)),
                      max_size=30)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"\n")),
       st.lists(st.integers(1, 30), min_size=1, max_size=20), operations)
def test_input_reads_like_a_file_however_the_body_is_cut(body, sizes, ops):
    """Input over any cut of a body answers every read and readline as io.BytesIO does."""
    import io

    pieces, i, k = [], 0, 0
    while i < len(body):
        pieces.append(body[i:i + sizes[k % len(sizes)]])
        i, k = i + sizes[k % len(sizes)], k + 1
    ours, reference = Input(pieces_reader(pieces)), io.BytesIO(body)
    for name, size in ops + [("read", None)]:
        assert getattr(ours, name)(size) == getattr(reference, name)(size), (name, size)
    assert ours.at_end


SMALL_PIECES = 1_000_000


@pytest.mark.parametrize("how", ["read", "read-64k", "readline", "iterate", "readlines"])
def test_input_over_many_one_byte_pieces_is_linear(how):
    """A million one-byte chunks once cost a million copies of a growing buffer (minutes of
    CPU for a 6 MiB chunked upload); every method must be linear."""
    import time

    body = b"x" * SMALL_PIECES if how in ("read", "read-64k", "readline") else b"abcdefghi\n" * (SMALL_PIECES // 10)
    inp = Input(pieces_reader([body[i:i + 1] for i in range(len(body))]))
    started = time.monotonic()
    if how == "read":
        got = inp.read()
    elif how == "read-64k":
        got = b"".join(iter(lambda: inp.read(65536), b""))
    elif how == "readline":
        got = inp.readline()
    elif how == "iterate":
        got = b"".join(inp)
    else:
        got = b"".join(inp.readlines())
    assert got == body
    assert time.monotonic() - started < 10.0  # linear: ~0.5 s; quadratic: 30 to 50 s


def test_one_byte_chunked_upload_over_a_socket_is_read_in_bounded_time(serve):
    """A 'fast chunkloris': 1 MiB sent as one-byte chunks (6 MiB on the wire) and read with
    read(): ~5 s of parsing, where the quadratic wsgi.input took a minute."""
    import time

    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        start_response("200 OK", list(TEXT))
        return [b"%d" % len(body)]

    server = serve(app, validate=False)
    body = b"1\r\nx\r\n" * (1 << 20) + b"0\r\n\r\n"
    started = time.monotonic()
    with connect(server, timeout=30) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        resp = Reader(sock).read_response()
    assert (resp.status, resp.body) == (200, b"%d" % (1 << 20))
    assert time.monotonic() - started < 30
