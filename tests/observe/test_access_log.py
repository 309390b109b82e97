"""The access log: its bytes field counts body bytes actually sent (Apache %b), requests
refused before the app get their line too, a stalled output never stops the server (lines are
dropped and counted instead), and a target that cannot be opened is refused at start."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import select
import socket
import struct
import sys
import termios
import threading
import time

import pytest

import greenserve.observe.logs
from greenserve import ConfigError, Server

from conftest import Proc, Reader, connect, run_to_end, wait_until
from support import COMBINED, lines_of

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; fcntl names it from Python 3.10
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
PIECE = 65536


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path in ("/204", "/304"):
        start_response(path[1:] + " Nothing", [])
        return [b"a body the status forbids"]
    if path == "/chunked":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"abc", b"", b"defg"])
    if path == "/pieces":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ab", b"", b"cdef"]
    if path == "/surplus":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"hello"]
    if path == "/endless":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * PIECE for _ in range(2000))  # 128 MiB: the client leaves long before
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def exchange(server, raw, head_request=False):
    with connect(server) as sock:
        sock.sendall(raw)
        return Reader(sock).read_response(head_request)


def json_lines(path, count):
    return [json.loads(line) for line in lines_of(path, count)]


# -- the bytes field ----------------------------------------------------------------------------


def test_bytes_counts_only_body_bytes_sent(serve, tmp_path):
    path = tmp_path / "access.json"
    server = serve(app, validate=False, access_log=str(path), access_log_format="json")
    cases = [  # request, bytes expected in the log
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 5),
        (b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", 0),  # Content-Length 5, but no body
        (b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n", 0),
        (b"GET /304 HTTP/1.1\r\nHost: a\r\n\r\n", 0),
        (b"HEAD /chunked HTTP/1.1\r\nHost: a\r\n\r\n", 0),
        (b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n", 7),  # not the chunk framing around them
        (b"GET /chunked HTTP/1.0\r\n\r\n", 7),  # close-delimited
        (b"GET /pieces HTTP/1.1\r\nHost: a\r\n\r\n", 6),  # a list: one Content-Length
        (b"HEAD /pieces HTTP/1.1\r\nHost: a\r\n\r\n", 0),
        (b"GET /surplus HTTP/1.1\r\nHost: a\r\n\r\n", 3),  # cut at its Content-Length
    ]
    for raw, _ in cases:
        resp = exchange(server, raw, head_request=raw.startswith(b"HEAD"))
        assert resp.status in (200, 204, 304)
    logged = json_lines(path, len(cases))
    assert [(line["target"], line["bytes"]) for line in logged] == [
        (raw.split(b" ")[1].decode(), expected) for raw, expected in cases]


def test_combined_format_writes_a_dash_for_no_body(serve, tmp_path):
    path = tmp_path / "access.log"
    server = serve(app, validate=False, access_log=str(path))
    exchange(server, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", head_request=True)
    exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    head, get = (COMBINED.fullmatch(line) for line in lines_of(path, 2))
    assert (head["request"], head["bytes"]) == ("HEAD / HTTP/1.1", "-")
    assert (get["request"], get["bytes"]) == ("GET / HTTP/1.1", "5")


def test_a_response_cut_short_counts_the_pieces_that_went_out(serve, tmp_path):
    path = tmp_path / "access.json"
    server = serve(app, validate=False, access_log=str(path), access_log_format="json")
    with connect(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /endless HTTP/1.1\r\nHost: a\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    (line,) = json_lines(path, 1)  # closed with a reset: the server's next send fails
    assert line["status"] is None and line["target"] == "/endless"  # aborted
    assert 0 < line["bytes"] < 2000 * PIECE
    assert line["bytes"] % PIECE == 0  # whole pieces, without their chunk framing


# -- requests refused before the app ------------------------------------------------------------


def test_refused_requests_get_a_line(serve, tmp_path):
    path = tmp_path / "access.json"
    server = serve(app, access_log=str(path), access_log_format="json", max_request_line=64,
                   header_timeout=0.5)
    assert exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status == 400
    assert exchange(server, b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: a\r\n\r\n").status == 414
    assert exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ").status == 408
    logged = json_lines(path, 3)
    assert [line["status"] for line in logged] == [400, 414, 408]
    for line, body in zip(logged, (b"400 Bad Request\n", b"414 URI Too Long\n",
                                   b"408 Request Timeout\n")):
        assert (line["remote_addr"], line["method"], line["target"], line["protocol"]) == (
            "127.0.0.1", None, None, None)
        assert line["bytes"] == len(body) and line["scheme"] == "http"
    assert logged[2]["duration"] >= 0.4  # the head timed out


def test_a_refused_request_in_combined_format(serve, tmp_path):
    path = tmp_path / "access.log"
    server = serve(app, access_log=str(path))
    assert exchange(server, b"GET / HTTP/1.1\r\n\r\n").status == 400  # no Host
    (line,) = lines_of(path, 1)
    m = COMBINED.fullmatch(line)
    assert m, line
    assert (m["host"], m["request"], m["status"], m["bytes"], m["referer"], m["agent"]) == (
        "127.0.0.1", "-", "400", "16", "-", "-")


# -- a stalled output ---------------------------------------------------------------------------


class StalledPipe:
    """A pipe with a one-page buffer whose read end nobody reads until ``drain()``."""

    def __init__(self):
        self.r, self.w = os.pipe()
        fcntl.fcntl(self.w, F_SETPIPE_SZ, 4096)
        self.text = b""
        self._stop = threading.Event()
        self._thread = None

    def drain(self):
        def read():
            while not self._stop.is_set():
                if select.select([self.r], [], [], 0.05)[0]:
                    data = os.read(self.r, 65536)
                    if not data:
                        return
                    self.text += data
        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()

    def stop_draining(self):
        self._stop.set()
        self._thread.join(10)
        self._stop.clear()

    def fill(self):
        """Fill what the pipe holds with one filler line, so that the next line written blocks
        at once (call it while nothing else writes)."""
        room = fcntl.fcntl(self.w, F_GETPIPE_SZ) - _unread(self.r)
        os.write(self.w, b"#" * (room - 1) + b"\n")

    def lines(self):
        return [line for line in self.text.decode().splitlines() if not line.startswith("#")]


def _unread(fd):
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def keep_alive_requests(server, count, path=b"/"):
    """``count`` requests one after another on one connection; each must be answered."""
    with connect(server, timeout=10) as sock:
        reader = Reader(sock)
        for _ in range(count):
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path)
            assert reader.read_response().status == 200


def test_a_stalled_output_drops_lines_instead_of_stopping_the_server(
        serve, monkeypatch, caplog):
    pipe = StalledPipe()
    out = os.fdopen(pipe.w, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(greenserve.observe.logs, "QUEUE_LINES", 20)
    caplog.set_level(logging.WARNING, logger="greenserve.error")
    server = serve(app, access_log="-")
    try:
        # The pipe is full before the first line, so the writer blocks on that line and stays
        # blocked: one incident. (With the pipe filling as the requests come, the writer could
        # run a while after the queue was first full, and its progress was timing's to decide.)
        pipe.fill()
        started = time.monotonic()
        keep_alive_requests(server, 200)  # the writer holds the first line, 20 fill the queue
        assert time.monotonic() - started < 30
        stats = server.statistics()
        assert stats["requests_total"] == 200 and stats["access_log_dropped"] > 0
        warnings = [r for r in caplog.records if "dropping lines" in r.getMessage()]
        assert len(warnings) == 1  # once per incident, not once per line
        pipe.drain()  # the output moves again: lines are written, none dropped
        dropped = server.statistics()["access_log_dropped"]
        # Every line that was queued is written before the next request: one sent while the
        # writer still catches up could find the queue full and be dropped (seen under load).
        assert wait_until(lambda: len(pipe.lines()) >= 200 - dropped, 10)
        keep_alive_requests(server, 1, b"/after")
        assert wait_until(lambda: any("GET /after " in line for line in pipe.lines()), 10)
        assert server.statistics()["access_log_dropped"] == dropped
        pipe.stop_draining()  # a second stall is a second incident
        pipe.fill()
        keep_alive_requests(server, 200)
        assert len([r for r in caplog.records if "dropping lines" in r.getMessage()]) == 2
    finally:
        if pipe._thread is None or not pipe._thread.is_alive():
            pipe.drain()  # let the writer finish, so that the server stops at once
        server.server.stop(5)
        out.close()
        pipe.stop_draining()
        os.close(pipe.r)


class GatedSink(logging.Handler):
    """An access-log output that writes a line only when the test opens the gate for it."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Semaphore(0)
        self.started = 0  # lines the writer has begun to write

    def emit(self, record):
        self.started += 1
        assert self.gate.acquire(timeout=10)


def test_a_writer_that_frees_a_slot_now_and_then_is_still_one_incident(monkeypatch, caplog):
    """Once the queue is full, a writer that catches up one line at a time lets one put in and
    drops the next: that is the same incident, warned once, until the writer is back to half
    the queue (it warned once per freed slot before)."""
    sink = GatedSink()
    monkeypatch.setattr(greenserve.observe.logs, "open_target", lambda target: sink)
    monkeypatch.setattr(greenserve.observe.logs, "QUEUE_LINES", 4)
    caplog.set_level(logging.WARNING, logger="greenserve.error")
    log = greenserve.observe.logs.AccessLog("-")

    def line():
        log.write_rejected("127.0.0.1", "http", 400, 0, 0.0)

    def warnings():
        return len([r for r in caplog.records if "dropping lines" in r.getMessage()])

    try:
        line()
        assert wait_until(lambda: sink.started == 1, 10)  # the writer holds line 1
        for _ in range(5):
            line()  # four queued, the fifth dropped
        assert (log.dropped, warnings()) == (1, 1)
        sink.gate.release()  # line 1 written: the writer takes line 2, one slot is free
        assert wait_until(lambda: sink.started == 2, 10)
        line()  # queued
        line()  # dropped: the same incident
        assert (log.dropped, warnings()) == (2, 1)
        for _ in range(5):  # lines 2 to 6 written: the writer caught up
            sink.gate.release()
        assert wait_until(lambda: sink.started == 6 and log._queue.qsize() == 0, 10)
        line()  # the incident is over
        assert wait_until(lambda: sink.started == 7, 10)
        for _ in range(5):
            line()
        assert (log.dropped, warnings()) == (3, 2)  # a new incident, a new warning
    finally:
        for _ in range(20):
            sink.gate.release()
        log.close()


def test_a_stdout_pipe_nobody_reads_does_not_stop_the_server(run):
    """greenserve --access-log - with its stdout a pipe that is never read: once the pipe is
    full, writing a line would block; the server must go on answering."""
    pipe = StalledPipe()
    proc = run("examples.hello:app", "--bind", "127.0.0.1:0", "--access-log", "-",
               prefix=("bash", "-c", 'exec "$@" >&%d' % pipe.w, "bash"), pass_fds=(pipe.w,))
    os.close(pipe.w)
    host, port = re.search(r"//([^:/]+):(\d+)", proc.url()).groups()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        reader = Reader(sock)
        for i in range(300):  # about 70 bytes a line: the 4 KiB pipe is full after ~60
            sock.sendall(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            assert reader.read_response().status == 200
    pipe.drain()
    assert wait_until(lambda: len(pipe.lines()) == 300, 20)  # late, but none lost
    assert proc.stop() == 0
    assert pipe.lines()[-1].startswith('127.0.0.1 - - [') and '"GET /299 HTTP/1.1" 200' in \
        pipe.lines()[-1]


# -- a target that cannot be opened -------------------------------------------------------------


def test_an_access_log_that_cannot_be_opened_is_a_config_error_and_leaks_nothing(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    threads = {t.name for t in threading.enumerate()}
    server = Server(app, bind=f"127.0.0.1:{port}", metrics_bind="127.0.0.1:0",
                    access_log=str(tmp_path / "missing" / "access.log"))
    with pytest.raises(ConfigError) as info:
        server.start()
    assert info.value.option == "access_log" and "missing" in info.value.message
    assert server.listeners == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    assert {t.name for t in threading.enumerate()} <= threads  # no metrics or writer thread
    assert server.metrics_url is None


@pytest.mark.parametrize("extra", [(), ("--workers", "2")])
def test_cli_access_log_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path, extra):
    target = str(tmp_path / "missing" / "access.log")
    done = run_to_end("examples.hello:app", "--bind", "127.0.0.1:0", "--access-log", target,
                      *extra)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "access_log" in lines[0] and target in lines[0], done.stderr
