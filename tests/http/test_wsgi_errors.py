"""Apps that break PEP 3333 (or HTTP) on purpose: each gets a 500 if its head was not sent yet,
never a split or half-valid response, the error is logged on "greenserve.error", and the server
goes on serving the next connection.

These apps break the rules on purpose, so they run with validate=False.
"""

from __future__ import annotations

import logging
import socket
import sys
import time

import pytest

from conftest import Reader, connect, request

TEXT = [("Content-Type", "text/plain")]
GET = b"GET /bad HTTP/1.1\r\nHost: x\r\n\r\n"


def with_ok_route(bad_app):
    """``bad_app`` for every path but /ok, which gets a correct 200 'fine'."""

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/ok":
            start_response("200 OK", list(TEXT))
            return [b"fine"]
        return bad_app(environ, start_response)

    return app


def raw_exchange(server, raw=GET):
    """Send ``raw`` on a new connection; return everything received until the server closes."""
    with connect(server, timeout=5) as sock:
        sock.sendall(raw)
        reader = Reader(sock)
        assert reader.at_eof(timeout=5), "the server did not close the connection"
        return reader.buf


def parse(raw):
    reader = Reader(None)
    reader.buf = raw
    reader._fill = lambda: False  # everything is already in the buffer
    return reader.read_response()


def app_starting(status, headers, body=(b"body",)):
    def app(environ, start_response):
        start_response(status, headers)
        return list(body)

    return app


def status_not_str(environ, start_response):
    start_response(b"200 OK", list(TEXT))
    return [b"body"]


def twice_without_exc_info(environ, start_response):
    start_response("200 OK", list(TEXT))
    start_response("201 Created", list(TEXT))
    return [b"body"]


def never_starts(environ, start_response):
    return [b"body"]


def never_starts_empty(environ, start_response):
    return []


def returns_none(environ, start_response):
    start_response("200 OK", list(TEXT))
    return None


def yields_str(environ, start_response):
    start_response("200 OK", list(TEXT))
    return ["text, not bytes"]


def generator_yields_str(environ, start_response):
    start_response("200 OK", list(TEXT))

    def body():
        yield b""
        yield "text, not bytes"

    return body()


def write_str(environ, start_response):
    write = start_response("200 OK", list(TEXT))
    write("text, not bytes")
    return []


def raises(environ, start_response):
    raise ZeroDivisionError("the app failed")


def raises_after_start_response(environ, start_response):
    start_response("200 OK", list(TEXT))
    raise KeyError("the app failed late")


def raises_in_iteration(environ, start_response):
    start_response("200 OK", list(TEXT))

    def body():
        raise LookupError("the body failed")
        yield b"never"

    return body()


def body_before_start_response(environ, start_response):
    # A lazy body whose first chunk comes before any start_response call.
    return iter([b"body"])


def returns_int(environ, start_response):
    start_response("200 OK", list(TEXT))
    return 42


def returns_bytes(environ, start_response):
    # Iterating bytes gives ints (PEP 3333: the app must return an iterable of bytes).
    start_response("200 OK", list(TEXT))
    return b"body"


def returns_str(environ, start_response):
    start_response("200 OK", list(TEXT))
    return "text, not bytes"


class _IterRaises:
    def __iter__(self):
        raise RuntimeError("no iterator today")


def iter_raises(environ, start_response):
    start_response("200 OK", list(TEXT))
    return _IterRaises()


def raises_system_exit(environ, start_response):
    raise SystemExit(3)


def raises_keyboard_interrupt(environ, start_response):
    raise KeyboardInterrupt


BAD_APPS = {
    "status-bytes": status_not_str,
    "status-no-reason-space": app_starting("200", list(TEXT)),
    "status-no-space": app_starting("200OK", list(TEXT)),
    "status-crlf": app_starting("200 OK\r\nX-Injected: yes", list(TEXT)),
    "status-lf": app_starting("200 OK\nX-Injected: yes", list(TEXT)),
    "status-non-latin1": app_starting("200 \u2713", list(TEXT)),
    "status-code-not-3-digits": app_starting("20 OK", list(TEXT)),
    "header-value-crlf": app_starting(
        "200 OK", TEXT + [("X-Evil", "a\r\nX-Injected: yes\r\n\r\nsmuggled")]),
    "header-value-lf": app_starting("200 OK", TEXT + [("X-Evil", "a\nX-Injected: yes")]),
    "header-value-cr": app_starting("200 OK", TEXT + [("X-Evil", "a\rX-Injected: yes")]),
    "header-value-nul": app_starting("200 OK", TEXT + [("X-Evil", "a\x00b")]),
    "header-name-space": app_starting("200 OK", TEXT + [("X Injected", "yes")]),
    "header-name-colon": app_starting("200 OK", TEXT + [("X-Injected: yes\r\nX-A", "b")]),
    "header-name-empty": app_starting("200 OK", TEXT + [("", "yes")]),
    "header-value-int": app_starting("200 OK", TEXT + [("Content-Length", 4)]),
    "header-value-bytes": app_starting("200 OK", TEXT + [("X-Injected", b"yes")]),
    "header-name-bytes": app_starting("200 OK", TEXT + [(b"X-Injected", "yes")]),
    "header-not-a-pair": app_starting("200 OK", TEXT + [("X-Injected", "yes", "3")]),
    "headers-not-a-list": app_starting("200 OK", tuple(TEXT + [("X-Injected", "yes")])),
    "hop-by-hop-connection": app_starting("200 OK", TEXT + [("Connection", "upgrade")]),
    "hop-by-hop-transfer-encoding": app_starting(
        "200 OK", TEXT + [("Transfer-Encoding", "chunked")]),
    "hop-by-hop-upgrade": app_starting("200 OK", TEXT + [("Upgrade", "websocket")]),
    "hop-by-hop-keep-alive": app_starting("200 OK", TEXT + [("Keep-Alive", "timeout=5")]),
    "header-value-not-latin1": app_starting("200 OK", TEXT + [("X-Injected", "\u2603")]),
    "yields-str": yields_str,
    "generator-yields-str": generator_yields_str,
    "write-str": write_str,
    "start-response-twice": twice_without_exc_info,
    "start-response-never-called": never_starts,
    "start-response-never-called-empty-body": never_starts_empty,
    "returns-none": returns_none,
    "raises": raises,
    "raises-after-start-response": raises_after_start_response,
    "raises-in-iteration": raises_in_iteration,
    "body-before-start-response": body_before_start_response,
    "returns-int": returns_int,
    "returns-bytes": returns_bytes,
    "returns-str": returns_str,
    "iter-raises": iter_raises,
    "raises-system-exit": raises_system_exit,
    "raises-keyboard-interrupt": raises_keyboard_interrupt,
}


@pytest.mark.parametrize("name", list(BAD_APPS))
def test_bad_app_gets_500_and_the_server_goes_on(serve, caplog, name):
    caplog.set_level(logging.ERROR, logger="greenserve.error")
    server = serve(with_ok_route(BAD_APPS[name]), validate=False)
    raw = raw_exchange(server)
    resp = parse(raw)
    assert resp.status == 500, raw
    assert resp.reason == "Internal Server Error"
    assert resp.header("connection") == "close"
    # Nothing the app meant to send leaks into the response.
    assert b"Injected" not in raw and b"injected" not in raw
    assert b"smuggled" not in raw
    assert b"body" not in raw and b"text, not bytes" not in raw
    assert raw.count(b"HTTP/1.1 ") == 1
    errors = [r for r in caplog.records if r.name == "greenserve.error" and r.levelno >= logging.ERROR]
    assert errors, "the failure was not logged on greenserve.error"
    # The next connection is served normally.
    ok = request(server, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (ok.status, ok.body) == (200, b"fine")


def test_app_exception_is_logged_with_its_traceback(serve, caplog):
    caplog.set_level(logging.ERROR, logger="greenserve.error")
    server = serve(with_ok_route(raises), validate=False)
    assert parse(raw_exchange(server)).status == 500
    records = [r for r in caplog.records if r.name == "greenserve.error" and r.exc_info]
    assert len(records) == 1
    exc_type, exc, _ = records[0].exc_info
    assert exc_type is ZeroDivisionError
    assert str(exc) == "the app failed"


def test_failure_after_the_head_aborts_the_connection(serve, caplog):
    caplog.set_level(logging.ERROR, logger="greenserve.error")

    def app(environ, start_response):
        start_response("200 OK", list(TEXT))

        def body():
            yield b"partial"
            raise RuntimeError("failed mid-body")

        return body()

    server = serve(with_ok_route(app), validate=False)
    raw = raw_exchange(server)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"partial" in raw
    assert b"500" not in raw  # no second response after the first head
    assert not raw.endswith(b"0\r\n\r\n")  # the chunked body is not ended: the client knows
    messages = [r.getMessage() for r in caplog.records if r.name == "greenserve.error"]
    assert any("aborted" in m for m in messages), messages
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)
    assert request(server, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").body == b"fine"


def test_str_yielded_after_the_head_aborts(serve, caplog):
    caplog.set_level(logging.ERROR, logger="greenserve.error")

    def app(environ, start_response):
        start_response("200 OK", list(TEXT))
        return iter([b"bytes first", "then text"])

    server = serve(with_ok_route(app), validate=False)
    raw = raw_exchange(server)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"bytes first" in raw and b"then text" not in raw
    assert not raw.endswith(b"0\r\n\r\n")
    assert any(r.name == "greenserve.error" for r in caplog.records)


def test_content_length_shorter_than_the_body_is_not_exceeded(serve, caplog):
    """An app that promises 4 bytes and sends 10: the client gets a well-framed 4-byte body and
    the connection is not reused (the surplus would be read as a next response)."""
    caplog.set_level(logging.ERROR, logger="greenserve.error")

    def app(environ, start_response):
        start_response("200 OK", TEXT + [("Content-Length", "4")])
        return iter([b"0123456789"])

    server = serve(with_ok_route(app), validate=False)
    with connect(server, timeout=5) as sock:
        sock.sendall(GET + b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.body == b"0123"
        assert reader.at_eof()
        assert reader.buf == b""  # neither the surplus nor a second response
    assert any(r.name == "greenserve.error" for r in caplog.records)


def test_content_length_longer_than_the_body_aborts(serve, caplog):
    caplog.set_level(logging.ERROR, logger="greenserve.error")

    def app(environ, start_response):
        start_response("200 OK", TEXT + [("Content-Length", "100")])
        return iter([b"only this"])

    server = serve(with_ok_route(app), validate=False)
    raw = raw_exchange(server)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == b"only this"  # the client sees a short body, then EOF
    assert any(r.name == "greenserve.error" for r in caplog.records)
    assert request(server, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").body == b"fine"


@pytest.mark.parametrize("body", [
    [b"12345"],  # one small piece: the one-send path
    [b"123", b"45"],  # several pieces: one Content-Length, sent with sendmsg
    (b"12345",),
    [b"x" * 20000],  # one piece too large for the one-send path
], ids=["one-piece", "pieces", "tuple", "large-piece"])
def test_whole_body_shorter_than_its_content_length_is_a_clean_500(serve, caplog, body):
    """Regression: with the whole body known before anything is sent, a body shorter than the
    app's Content-Length sent nothing at all (an empty reply) and logged "response aborted
    after its head was sent". Now the client gets a 500 and the log says what the app did."""
    caplog.set_level(logging.ERROR, logger="greenserve.error")
    declared = sum(map(len, body)) + 5

    def app(environ, start_response):
        start_response("200 OK", TEXT + [("Content-Length", str(declared))])
        return body

    server = serve(with_ok_route(app), validate=False)
    with connect(server, timeout=5) as sock:
        sock.sendall(GET)
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.status == 500 and resp.header("connection") == "close"
        assert reader.at_eof()
    messages = [r.getMessage() for r in caplog.records if r.name == "greenserve.error"]
    assert any("shorter than its Content-Length" in m for m in messages), messages
    assert not any("aborted" in m for m in messages), messages
    assert request(server, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").body == b"fine"


# -- misbehaving beyond PEP 3333: close() that raises, exc_info late, blocking, leaking ----------

import threading  # noqa: E402
import time  # noqa: E402

from conftest import wait_until  # noqa: E402
from greenserve import Server  # noqa: E402
from greenserve.loop.hub import get_hub  # noqa: E402


def test_close_that_raises_is_logged_and_the_connection_goes_on(serve, caplog):
    """PEP 3333 makes the server call close(); if close() itself fails, the response that was
    sent whole stands, the error is logged, and the connection is still usable."""
    caplog.set_level(logging.ERROR, logger="greenserve.error")

    class Body:
        def __iter__(self):
            yield b"complete"

        def close(self):
            raise OSError("close failed")

    def app(environ, start_response):
        start_response("200 OK", TEXT + [("Content-Length", "8")])
        return Body()

    server = serve(with_ok_route(app), validate=False)
    with connect(server, timeout=5) as sock:
        reader = Reader(sock)
        sock.sendall(GET)
        assert reader.read_response().body == b"complete"
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.read_response().body == b"fine"
    assert any("close()" in r.getMessage() for r in caplog.records)


def test_exc_info_after_the_head_reraises_and_aborts(serve, caplog):
    """PEP 3333: start_response(..., exc_info) after the head went out re-raises the app's
    error; the server can only abort the connection."""
    caplog.set_level(logging.ERROR, logger="greenserve.error")

    def app(environ, start_response):
        write = start_response("200 OK", list(TEXT))
        write(b"partial")
        try:
            raise ValueError("late failure")
        except ValueError:
            start_response("500 Internal Server Error", list(TEXT), sys.exc_info())
        return [b"never"]

    server = serve(with_ok_route(app), validate=False)
    raw = raw_exchange(server)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and b"partial" in raw
    assert b"never" not in raw and b"500" not in raw and not raw.endswith(b"0\r\n\r\n")
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in caplog.records)
    assert request(server, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").body == b"fine"


def test_an_app_that_blocks_the_loop_delays_others_but_all_complete(serve):
    """A plain time.sleep() blocks every request on the server (README: a blocking call
    blocks the hub). The defined outcome: the blocked request and every request that waited
    behind it complete once it returns, and the server serves normally afterwards. (The
    blocked-loop watchdog's report of such a block is tested in test_watchdog.py.)"""
    entered = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/block":
            entered.set()
            time.sleep(0.5)
        start_response("200 OK", list(TEXT))
        return [environ["PATH_INFO"].encode()]

    server = serve(app, validate=False)
    results = {}

    def get(path):
        results[path] = request(server, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode()).body

    blocker = threading.Thread(target=get, args=("/block",))
    blocker.start()
    assert entered.wait(5)
    waiters = [threading.Thread(target=get, args=(f"/w{i}",)) for i in range(5)]
    for thread in waiters:
        thread.start()
    for thread in [blocker, *waiters]:
        thread.join(10)
    assert results == {"/block": b"/block", **{f"/w{i}": f"/w{i}".encode() for i in range(5)}}
    started = time.monotonic()
    assert request(server, b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n").body == b"/after"
    assert time.monotonic() - started < 0.5


def run_server(app, **options):
    server = Server(app, bind="127.0.0.1:0", **options)
    server.start()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    assert server.wait_serving(10)
    return server, thread


def test_an_app_that_leaks_greenlets_does_not_hold_up_serving_or_stopping(caplog):
    """Greenlets an app spawns through the hub and never ends (or that fail later) are the
    app's: the server keeps serving, logs the failures, and stop() still returns on time."""
    caplog.set_level(logging.ERROR, logger="greenserve.error")
    spawned = []

    def forever():
        while True:
            get_hub().sleep(3600)

    def fails_later():
        get_hub().sleep(0.01)
        raise RuntimeError("a leaked greenlet failed")

    def app(environ, start_response):
        hub = get_hub()
        spawned.append(hub.spawn(forever))
        spawned.append(hub.spawn(fails_later))
        start_response("200 OK", list(TEXT))
        return [b"ok"]

    server, thread = run_server(app)
    host, port = server.addresses[0]
    for _ in range(200):
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(GET)
            assert Reader(sock).read_response().body == b"ok"
    assert len(spawned) == 400
    assert wait_until(lambda: sum(r.getMessage().startswith("unhandled error in greenlet")
                                  for r in caplog.records) == 200)
    assert server.statistics()["connections_open"] == 0
    started = time.monotonic()
    server.stop(1)
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 5


def test_an_app_that_swallows_cancellation_cannot_hold_up_stop():
    """An app that catches BaseException around its waits swallows the cancellation sent when
    the grace runs out; stop() still returns, and its client gets no response."""
    entered = threading.Event()

    def app(environ, start_response):
        entered.set()
        while True:
            try:
                get_hub().sleep(10)
            except BaseException:  # noqa: B902 - misbehaving on purpose
                pass

    server, thread = run_server(app)
    with socket.create_connection(server.addresses[0], timeout=5) as sock:
        sock.sendall(GET)
        assert entered.wait(5)
        started = time.monotonic()
        server.stop(0.2)
        thread.join(10)
        assert not thread.is_alive() and time.monotonic() - started < 5
        assert Reader(sock).at_eof(5)


def test_write_kept_past_a_closed_connection_is_a_local_protocol_error(serve):
    """An app that hands start_response's write() to a greenlet of its own, which writes after
    the response ended and the connection closed, gets LocalProtocolError (the app's mistake:
    the response is over), as a write after the end does on an open connection; not an
    internal error."""
    import greenserve
    from greenserve.errors import LocalProtocolError

    outcome = []

    def late(write, statistics):
        deadline = time.monotonic() + 10
        while statistics()["connections_open"] and time.monotonic() < deadline:
            greenserve.sleep(0.01)  # until the response is over and the connection closed
        try:
            write(b"late")
        except Exception as exc:  # noqa: BLE001 - the test records what the app would see
            outcome.append(type(exc))

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        greenserve.spawn(late, write, environ["greenserve.statistics"])
        return [b"ok"]

    server = serve(app, validate=False)
    resp = request(server, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert resp.status == 200 and resp.body == b"ok"
    from conftest import wait_until

    assert wait_until(lambda: bool(outcome), 10)
    assert outcome == [LocalProtocolError]
