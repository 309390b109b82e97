"""The compatibility matrix: real, unmodified third-party WSGI apps served by greenserve as a
real process (the CLI, as users run it) and driven by the clients their users use.

Every case takes the ``served`` fixture, which starts ``python -m greenserve APP`` in one of
three modes: ``single`` (one process), ``workers2`` (``--workers 2``) and ``patch``
(``--patch``). The ``single`` rows are the short set that runs by default (and in CI); the other
modes and the long cases are marked ``compat_full``. The whole matrix: ``pytest -m compat``.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

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
