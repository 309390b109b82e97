"""The compatibility matrix: real, unmodified third-party WSGI apps served by greenserve as a
real process (the CLI, as users run it) and driven by the clients their users use.

Every case takes the ``served`` fixture (or ``site``, which serves the test module's APP with
it), which starts ``python -m greenserve APP`` in one of three modes: ``single`` (one
process), ``workers2`` (``--workers 2``) and ``patch`` (``--patch``). The ``single`` rows are
the short set that runs by default (and in CI); the other modes and the long cases are marked
``compat_full``. The whole matrix: ``pytest -m compat``.
"""

from __future__ import annotations

import re
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Collection, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

import pytest

from conftest import Proc

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
MODES = {"single": (), "workers2": ("--workers", "2"), "patch": ("--patch",)}


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.compat)


@pytest.fixture(params=[
    "single",
    pytest.param("workers2", marks=pytest.mark.compat_full),
    pytest.param("patch", marks=pytest.mark.compat_full),
])
def mode(request: Any) -> str:
    """How greenserve runs the app: one process, two workers, or with --patch."""
    return str(request.param)


class Served:
    """A greenserve process serving one app: ``url`` is its base URL, ``proc`` the process
    (its stderr is in ``proc.stderr``)."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.url = proc.url().rstrip("/")

    def check_log(self) -> None:
        """Fail if the server logged a traceback or an internal error."""
        assert not self.proc.tracebacks(), self.proc.stderr

    def log_mark(self) -> int:
        """The number of lines in the server's error log so far: pass it to
        ``expect_traceback`` to look only at what is logged after now."""
        return len(self.proc.lines)

    def expect_traceback(self, since: int, last_line: str, timeout: float = 10.0) -> None:
        """Assert that the server's log, after its first ``since`` lines, holds a traceback that
        ends in ``last_line``; then drop the lines that start tracebacks there, so that the
        teardown check (which fails on any such line) still fails on any other traceback. The
        log's reader thread only appends, so deleting earlier lines races with nothing."""
        lines = self.proc.lines
        self.proc.wait_for(re.compile(re.escape(last_line)), timeout=timeout)
        starts = [i for i in range(since, len(lines)) if "Traceback" in lines[i]]
        assert starts, self.proc.stderr
        for i in reversed(starts):
            del lines[i]


@pytest.fixture
def served(mode: str) -> Iterator[Callable[..., Served]]:
    """``served(APP, *flags, cwd=APPS, env=None)`` starts greenserve on 127.0.0.1 port 0 in
    this test's mode and waits for its "listening on" line; everything is ended at teardown,
    where the log is also checked for tracebacks."""
    started: List[Served] = []

    def start(app: str, *flags: str, cwd: Path = APPS, env: Optional[dict] = None) -> Served:
        env = {"PYTHONPATH": str(cwd), **(env or {})}
        proc = Proc(app, "--bind", "127.0.0.1:0", *MODES[mode], *flags, env=env, cwd=cwd)
        server = Served(proc)
        started.append(server)
        _wait_ready(server.url)
        return server

    yield start
    for server in started:
        server.proc.kill_all()
    for server in started:
        server.check_log()


@pytest.fixture
def site(served: Callable[..., Served], request: Any) -> Served:
    """greenserve serving the test module's ``APP`` (in this test's mode). A module whose app
    needs an environment of its own defines its own ``site``."""
    return served(request.module.APP)


def _wait_ready(url: str) -> None:
    """The listening line means ready; one request proves it (any status counts)."""
    try:
        urllib.request.urlopen(url + "/", timeout=10).close()
    except urllib.error.HTTPError:
        pass


def need(program: str) -> str:
    """The path of a client program, or skip the test saying what is missing."""
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed")
    return path


# -- one exchange on a raw socket, where the exact head of a response matters ---------------------

Fields = List[Tuple[str, str]]  # a head's fields in order, names in lower case
Head = Tuple[int, Fields]  # the status code and the fields


def raw_exchange(url: str, method: str, path: str, headers: Optional[Dict[str, str]] = None,
                 timeout: float = 10.0) -> Tuple[Head, bytes]:
    """Send one request on a new connection (``Connection: close``) and read until the server
    closes. Returns the parsed head and every byte that came after it, unparsed."""
    parts = urlsplit(url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        received = bytearray()
        while True:
            data = sock.recv(1 << 16)
            if not data:
                break
            received += data
    head, sep, rest = bytes(received).partition(b"\r\n\r\n")
    assert sep, received[:2000]
    status_line, *fields = head.decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    parsed = [(name.strip().lower(), value.strip())
              for name, _, value in (field.partition(":") for field in fields)]
    return (int(status), parsed), rest


def field_values(fields: Fields, name: str) -> List[str]:
    """The values of every field called ``name`` (lower case), in order."""
    return [value for key, value in fields if key == name]


# Framing: a HEAD response has no body to frame (RFC 9112 6.1 lets it omit Transfer-Encoding).
FRAMING = frozenset({"transfer-encoding", "connection"})


def head_like_get(url: str, path: str, headers: Optional[Dict[str, str]] = None, *,
                  skip: Collection[str] = (), volatile: Collection[str] = ()) -> Head:
    """Check that HEAD ``path`` answers what GET answers, without a body (RFC 9110 9.3.2).
    Returns GET's head.

    The two heads are compared field by field, leaving out the framing fields and those named
    in ``skip``; of the fields named in ``volatile`` (a time, a fresh token) only the presence
    is compared, and of a Set-Cookie the cookie's name. Content-Length is compared too: HEAD
    carries one only if GET carries the same one (a HEAD answer claiming "Content-Length: 0"
    for a body of unknown length is a lie that caches and clients believe)."""
    (get_status, get_fields), _ = raw_exchange(url, "GET", path, headers)
    (head_status, head_fields), rest = raw_exchange(url, "HEAD", path, headers)
    assert rest == b"", f"HEAD {path} answered with {len(rest)} body bytes"
    assert head_status == get_status

    def comparable(fields: Fields) -> Fields:
        kept = []
        for name, value in fields:
            if name in FRAMING or name in skip:
                continue
            if name in volatile:
                value = value.partition("=")[0] if name == "set-cookie" else ""
            kept.append((name, value))
        return sorted(kept)

    assert comparable(head_fields) == comparable(get_fields)
    return get_status, get_fields


def pieces(body: bytes, size: int) -> Iterator[bytes]:
    """A generator body: requests sends it with Transfer-Encoding: chunked, a chunk a piece.
    Yields ``body`` in pieces of ``size`` bytes (the last one shorter)."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


def get_streamed(url: str, timeout: float = 30.0) -> bytes:
    """GET a streamed response with requests and return its body, checking that it came as a
    streamed HTTP/1.1 response does: chunked, with no Content-Length (its length is unknown
    when the head goes out)."""
    import requests

    with requests.get(url, stream=True, timeout=timeout) as reply:
        assert reply.status_code == 200
        assert reply.raw.version == 11
        assert reply.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in reply.headers
        return b"".join(reply.iter_content(None))
