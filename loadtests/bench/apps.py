"""WSGI apps for the benchmark scenarios, imported by every server as ``bench.apps:NAME``
(the harness puts ``loadtests/`` on PYTHONPATH).

hello           13-byte body, Content-Length set                          (a, b, c, f, g)
big             1 MiB as 16 x 64 KiB body items, Content-Length set        (d)
upstream        one request to the slow upstream (upstream.py) over a plain
                ``socket``: cooperative under servers that monkey-patch before
                importing this module (gevent, gunicorn -k gevent, meinheld),
                a blocked thread under threaded ones (waitress, granian), the
                whole server under bjoern                                  (e)
upstream_plain  the same function as upstream, under a name greenserve does not rename:
                scenario l runs it under every server, greenserve with --patch    (l)
upstream_green  the same through greenserve.loop.gsocket.GreenSocket, which suspends
                only the calling greenlet (greenserve does not monkey-patch) (e)
sink            reads wsgi.input to the end (chunked uploads included) and
                answers with the byte count                               (h)
download        the file named by $BENCH_FILE through environ['wsgi.file_wrapper']
                (X-Bench-Path: file_wrapper), or read in 1 MiB blocks where the
                server has none (X-Bench-Path: iter)                      (i)
dbapp           Flask + SQLAlchemy + psycopg2: one query that waits 5 ms in
                PostgreSQL, JSON answer; defined in dbapp.py and imported
                only when asked for (module __getattr__)                   (k)

Upstream address: 127.0.0.1:$BENCH_UPSTREAM_PORT (default 18901).
"""

import os
import socket

UPSTREAM = ("127.0.0.1", int(os.environ.get("BENCH_UPSTREAM_PORT", "18901")))
UPSTREAM_TIMEOUT = 10.0

_HELLO = b"Hello, World!"


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [_HELLO]


_PIECE = b"\x5a" * (64 * 1024)
_BIG_ITEMS = 16


def big(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(_PIECE) * _BIG_ITEMS))])
    return [_PIECE] * _BIG_ITEMS


def _respond(start_response, status, body):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def upstream(environ, start_response):
    # socket.create_connection is looked up at call time: monkey-patching applies.
    conn = socket.create_connection(UPSTREAM, timeout=UPSTREAM_TIMEOUT)
    try:
        conn.sendall(b"ping\n")
        reply = _read_line(conn.recv)
    finally:
        conn.close()
    return _upstream_answer(start_response, reply)


upstream_plain = upstream


_green_socket = None


def upstream_green(environ, start_response):
    # Imported on the first call (the other servers' environments have no greenserve), then
    # kept: an import statement per request cost a few microseconds the other apps do not pay.
    global _green_socket
    if _green_socket is None:
        from greenserve.loop.gsocket import GreenSocket

        _green_socket = GreenSocket
    conn = _green_socket.connect(UPSTREAM, timeout=UPSTREAM_TIMEOUT)
    try:
        conn.sendall(b"ping\n", UPSTREAM_TIMEOUT)
        deadline = conn.hub.time() + UPSTREAM_TIMEOUT
        reply = _read_line(lambda size: conn.recv(size, deadline))
    finally:
        conn.close()
    return _upstream_answer(start_response, reply)


def _read_line(recv):
    """Read up to a newline (or the end) with ``recv(size)``."""
    reply = b""
    while not reply.endswith(b"\n"):
        got = recv(64)
        if not got:
            break
        reply += got
    return reply


def _upstream_answer(start_response, reply):
    if not reply.endswith(b"\n"):
        return _respond(start_response, "502 Bad Gateway", b"upstream hung up\n")
    return _respond(start_response, "200 OK", b"upstream: " + reply)


def sink(environ, start_response):
    stream = environ["wsgi.input"]
    length = (environ.get("CONTENT_LENGTH") or "").strip()
    total = 0
    if length:  # never read past a Content-Length body (PEP 3333)
        left = int(length)
        while left > 0:
            got = stream.read(min(left, 1 << 16))
            if not got:
                break
            total += len(got)
            left -= len(got)
    else:  # chunked: the server ends the stream at the last chunk
        while True:
            got = stream.read(1 << 16)
            if not got:
                break
            total += len(got)
    return _respond(start_response, "200 OK", b"%d\n" % total)


def _file_blocks(f, size):
    try:
        while True:
            block = f.read(size)
            if not block:
                return
            yield block
    finally:
        f.close()


def download(environ, start_response):
    path = os.environ["BENCH_FILE"]
    f = open(path, "rb")
    size = os.fstat(f.fileno()).st_size
    wrapper = environ.get("wsgi.file_wrapper")
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size)),
                              ("X-Bench-Path", "file_wrapper" if wrapper else "iter")])
    if wrapper is not None:
        return wrapper(f, 1 << 20)
    return _file_blocks(f, 1 << 20)


def __getattr__(name):
    # bench.apps:dbapp imports Flask, SQLAlchemy and psycopg2, which the other apps (and the
    # meinheld venv) do without: load it only when a server asks for it.
    if name == "dbapp":
        from bench.dbapp import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
