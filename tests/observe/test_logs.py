"""Logs: the access log in combined and JSON formats with hostile request values (a field can
never be forged), proxy-aware client addresses, and --log-config for both logs."""

from __future__ import annotations

import json
import logging
import re
import socket

import pytest

from greenserve.observe.logs import AccessLog, access_logger, escape

from conftest import Reader
from support import COMBINED, lines_of
from conftest import Proc, run_to_end

HOSTILE_AGENT = b'evil", "status": 999, "x": "\\" ] \t\xff\xe9'
HOSTILE_REFERER = b'http://r.example/" 200 1 "forged-referer" "forged-agent'
HOSTILE_TARGET = b'/p"a\\th?q="1"'


def app(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def send(server, target=b"/", headers=b"", source="127.0.0.1"):
    with socket.create_connection((server.host, server.port), timeout=10,
                                  source_address=(source, 0)) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: logs.test\r\n%s\r\n" % (target, headers))
        return Reader(sock).read_response().status


def test_json_access_log_keeps_hostile_values_inside_their_fields(serve, tmp_path):
    path = tmp_path / "access.json"
    server = serve(app, validate=False, access_log=str(path), access_log_format="json")
    status = send(server, HOSTILE_TARGET, b"User-Agent: %s\r\nReferer: %s\r\n" % (
        HOSTILE_AGENT, HOSTILE_REFERER))
    assert status == 200
    assert send(server, b"/boom") == 500
    first, second = (json.loads(line) for line in lines_of(path, 2))
    assert set(first) == {"time", "remote_addr", "method", "target", "protocol", "status",
                          "bytes", "duration", "scheme", "host", "referer", "user_agent"}
    assert first["status"] == 200 and first["bytes"] == 5
    assert first["user_agent"] == HOSTILE_AGENT.decode("latin-1")
    assert first["referer"] == HOSTILE_REFERER.decode("latin-1")
    assert first["target"] == HOSTILE_TARGET.decode("latin-1")
    assert (first["remote_addr"], first["method"], first["protocol"], first["scheme"],
            first["host"]) == ("127.0.0.1", "GET", "HTTP/1.1", "http", "logs.test")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", first["time"])
    assert 0 <= first["duration"] < 10
    assert second["status"] == 500 and second["user_agent"] is None
    assert path.read_text("utf-8").isascii()  # non-ASCII bytes arrive as \u escapes


def unescape(text):
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def test_combined_access_log_keeps_hostile_values_inside_their_fields(serve, tmp_path):
    path = tmp_path / "access.log"
    server = serve(app, validate=False, access_log=str(path))
    send(server, HOSTILE_TARGET, b"User-Agent: %s\r\nReferer: %s\r\n" % (
        HOSTILE_AGENT, HOSTILE_REFERER))
    send(server)
    first, second = lines_of(path, 2)
    m = COMBINED.fullmatch(first)
    assert m, first
    assert unescape(m["agent"]) == HOSTILE_AGENT.decode("latin-1")
    assert unescape(m["referer"]) == HOSTILE_REFERER.decode("latin-1")
    assert unescape(m["request"]) == "GET %s HTTP/1.1" % HOSTILE_TARGET.decode("latin-1")
    assert (m["host"], m["status"], m["bytes"]) == ("127.0.0.1", "200", "5")
    assert first.isascii() and first.isprintable()
    assert re.fullmatch(r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}", m["time"])
    assert COMBINED.fullmatch(second)["referer"] == "-"


def test_escape():
    assert escape("plain text/1.0") == "plain text/1.0"
    assert escape('a"b\\c\td\x7f\xe9\u20ac') == "a\\x22b\\x5cc\\x09d\\x7f\\xe9\\u20ac"


def test_access_log_shows_the_client_named_by_a_trusted_proxy(serve, tmp_path):
    path = tmp_path / "access.log"
    server = serve(app, access_log=str(path), access_log_format="json")
    send(server, headers=b"X-Forwarded-For: 203.0.113.50\r\n")  # 127.0.0.1 is trusted
    send(server, headers=b"X-Forwarded-For: 203.0.113.50\r\n", source="127.0.0.2")
    trusted, untrusted = (json.loads(line) for line in lines_of(path, 2))
    assert trusted["remote_addr"] == "203.0.113.50"
    assert untrusted["remote_addr"] == "127.0.0.2"


def test_two_servers_in_one_process_keep_their_access_lines_apart(serve, tmp_path):
    """Each access log writes through its own handler: no server sees the other's lines, and
    the shared greenserve.access logger is left as it was."""
    before = (list(access_logger.handlers), access_logger.propagate, access_logger.level)
    first_path, second_path = tmp_path / "first.log", tmp_path / "second.log"
    first = serve(app, access_log=str(first_path))
    second = serve(app, access_log=str(second_path), access_log_format="json")
    send(first, b"/one")
    send(second, b"/two")
    send(first, b"/three")
    assert [line.split('"')[1] for line in lines_of(first_path, 2)] == [
        "GET /one HTTP/1.1", "GET /three HTTP/1.1"]
    assert [json.loads(line)["target"] for line in lines_of(second_path, 1)] == ["/two"]
    assert (list(access_logger.handlers), access_logger.propagate, access_logger.level) == before
    assert not AccessLog("").enabled


@pytest.fixture
def restore_logging():
    """--log-config changes the process's logging; put the greenserve loggers back after."""
    names = ("greenserve", "greenserve.error", "greenserve.access")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level,
                 logging.getLogger(n).propagate) for n in names}
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def test_log_config_json_routes_both_logs(tmp_path, restore_logging):
    access = tmp_path / "access.log"
    config = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"tagged": {"format": "TAGGED %(levelname)s %(name)s %(message)s"},
                       "bare": {"format": "%(message)s"}},
        "handlers": {
            "err": {"class": "logging.StreamHandler", "formatter": "tagged",
                    "stream": "ext://sys.stderr"},
            "acc": {"class": "logging.FileHandler", "formatter": "bare",
                    "filename": str(access)}},
        "loggers": {"greenserve": {"handlers": ["err"], "level": "INFO"},
                    "greenserve.access": {"handlers": ["acc"], "level": "INFO",
                                          "propagate": False}},
    }
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    proc = Proc("examples.hello:app", "--bind", "127.0.0.1:0", "--log-config", str(path))
    try:
        proc.wait_for(re.compile(r"TAGGED INFO greenserve.error greenserve .* listening on"))
        port = int(proc.url().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /configured HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert Reader(sock).read_response().status == 200
        lines = lines_of(access, 1)  # on with no --access-log: the config gave it a handler
        assert '"GET /configured HTTP/1.1" 200 14' in lines[0]
        assert proc.stop() == 0
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(5)


def test_log_config_ini_file(tmp_path):
    path = tmp_path / "logging.ini"
    path.write_text(
        "[loggers]\nkeys=root,greenserve\n[handlers]\nkeys=err\n[formatters]\nkeys=f\n"
        "[logger_root]\nhandlers=\n[logger_greenserve]\nqualname=greenserve\nhandlers=err\n"
        "level=INFO\n[handler_err]\nclass=StreamHandler\nformatter=f\nargs=(sys.stderr,)\n"
        "[formatter_f]\nformat=INI %(levelname)s %(message)s\n")
    proc = Proc("examples.hello:app", "--bind", "127.0.0.1:0", "--log-config", str(path))
    try:
        url = proc.wait_for(re.compile(r"^INI INFO greenserve .* listening on (http://\S+)"))[1]
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # serving: signals are handled
            assert Reader(sock).read_response().status == 200
        assert proc.stop() == 0
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(5)


@pytest.mark.parametrize("content, name", [
    (None, "missing.json"), ("{not json", "bad.json"), ('{"version": 1, "handlers": '
                                                        '{"h": {"class": "no.such.Class"}}}',
                                                        "class.json"),
    ("[loggers]\nkeys=root\n", "bad.ini"),
])
def test_bad_log_config_is_one_line_and_exit_2(tmp_path, content, name):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    done = run_to_end("examples.hello:app", "--bind", "127.0.0.1:0", "--log-config", str(path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "log_config" in lines[0] and name in lines[0], done.stderr


def test_bad_access_log_format_names_the_option():
    done = run_to_end("examples.hello:app", "--access-log-format", "xml")
    assert done.returncode == 2 and "--access-log-format" in done.stderr


def test_log_config_json_for_the_root_logger_only_keeps_greenserve_logging(tmp_path):
    """dictConfig disables every existing logger the configuration does not name, unless told
    otherwise: greenserve.error would go silent."""
    config = {
        "version": 1,
        "formatters": {"rooted": {"format": "ROOT %(levelname)s %(name)s %(message)s"}},
        "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "rooted",
                             "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["err"], "level": "INFO"},
    }
    path = tmp_path / "root-only.json"
    path.write_text(json.dumps(config))
    proc = Proc("examples.hello:app", "--bind", "127.0.0.1:0", "--log-config", str(path))
    try:
        url = proc.wait_for(
            re.compile(r"^ROOT INFO greenserve.error greenserve .* listening on (http://\S+)"))[1]
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # serving: signals are handled
            assert Reader(sock).read_response().status == 200
        assert proc.stop() == 0
        proc.wait_for(re.compile(r"^ROOT INFO greenserve.error greenserve stopped"))
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(5)
