"""Shared test helpers: a real server on 127.0.0.1 port 0, raw-socket HTTP, response parsing,
and greenserve run as a real subprocess (``run`` fixture, ``run_to_end``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple
from wsgiref.validate import validator

import pytest

from greenserve.loop.hub import Hub
from greenserve.testing import RunningServer, running_server

WsgiApp = Callable[..., Any]


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningServer]]:
    """``serve(app, validate=True, **options)`` starts a real server; all are stopped at the end.
    Apps are wrapped in wsgiref.validate.validator unless validate=False (for apps that break
    PEP 3333 on purpose)."""
    stack = contextlib.ExitStack()

    def start(app: WsgiApp, *, validate: bool = True, **options: Any) -> RunningServer:
        return stack.enter_context(running_server(validator(app) if validate else app, **options))

    with stack:
        yield start


def connect(server: RunningServer, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    return sock


class RawResponse:
    def __init__(self, status: int, reason: str, headers: List[Tuple[str, str]], body: bytes,
                 raw_head: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.raw_head = raw_head

    def header(self, name: str) -> Optional[str]:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    @property
    def header_dict(self) -> Dict[str, str]:
        return {k.lower(): v for k, v in self.headers}


class Reader:
    """Reads HTTP/1.1 responses from a socket, one at a time (handles pipelining)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError("connection closed mid-line")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed mid-body")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, head_request: bool = False) -> RawResponse:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError("connection closed before a response head")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        version, status, reason = lines[0].decode("latin-1").split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = []
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        resp = RawResponse(int(status), reason, headers, b"", head)
        code = int(status)
        if head_request or code in (204, 304) or 100 <= code < 200:
            return resp
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        if te is not None:
            assert te.lower() == "chunked", te
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exactly(size)
                assert self._exactly(2) == b"\r\n"
            resp.body = body
        elif cl is not None:
            resp.body = self._exactly(int(cl))
        else:
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def at_eof(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection (EOF or reset) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def responses(raw: bytes, strict: bool = False) -> List[RawResponse]:
    """Every whole response in ``raw`` (what one connection received before EOF). ``strict``:
    anything that is not a whole, well-framed response raises instead of ending the list."""
    reader = Reader(None)  # type: ignore[arg-type]
    reader.buf = raw
    reader._fill = lambda: False  # type: ignore[method-assign]
    found = []
    while reader.buf:
        try:
            found.append(reader.read_response())
        except (EOFError, AssertionError, ValueError):
            if strict:
                raise
            break
    return found


def request(server: RunningServer, raw: bytes, head_request: bool = False) -> RawResponse:
    """Send raw bytes on a new connection and read one response."""
    with connect(server) as sock:
        sock.sendall(raw)
        return Reader(sock).read_response(head_request)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes. Returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


HANG = 20.0  # seconds after which a test hub counts as hung


def run_hub(main: Callable[[Hub], Any], timeout: float = HANG) -> Any:
    """Run ``main(hub)`` in a greenlet of a fresh hub in this thread; return its result.
    Re-raises what ``main`` raised; fails if the hub does not stop within ``timeout``."""
    hub = Hub()
    outcome: dict = {}

    def wrapper() -> None:
        try:
            outcome["result"] = main(hub)
        except BaseException as exc:  # noqa: B902 - handed to the test thread
            outcome["error"] = exc
        finally:
            hub.stop()

    def stop_hung() -> None:
        outcome.setdefault("hung", True)
        hub.stop()

    watchdog = threading.Timer(timeout, hub.call_soon_threadsafe, (stop_hung,))
    watchdog.daemon = True
    hub.call_soon(hub.spawn, wrapper)
    watchdog.start()
    try:
        hub.run()
    finally:
        watchdog.cancel()
        hub.close()
    if outcome.get("hung"):
        pytest.fail(f"the hub did not stop within {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


class Tracked:
    """An app iterable that records close() (PEP 3333: the server must always call it)."""

    def __init__(self, pieces: Iterator[bytes], closed: threading.Event) -> None:
        self.pieces = pieces
        self.closed = closed

    def __iter__(self) -> "Tracked":
        return self

    def __next__(self) -> bytes:
        return next(self.pieces)

    def close(self) -> None:
        self.closed.set()


class TLSFiles:
    """A test CA and certificates made by trustme, as PEM files: ``ca`` (the CA certificate),
    ``cert``/``key`` (the server: localhost, 127.0.0.1, ::1), ``client`` (certificate and key
    of a client, in one file) and ``other_client`` (one signed by another CA)."""

    def __init__(self, directory: Any) -> None:
        import trustme

        ca, other_ca = trustme.CA(), trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1", "::1")
        self.ca = str(directory / "ca.pem")
        self.cert = str(directory / "server.pem")
        self.key = str(directory / "server.key")
        self.client = str(directory / "client.pem")
        self.other_client = str(directory / "other-client.pem")
        ca.cert_pem.write_to_path(self.ca)
        server.private_key_pem.write_to_path(self.key)
        server.cert_chain_pems[0].write_to_path(self.cert)
        for pem in server.cert_chain_pems[1:]:
            pem.write_to_path(self.cert, append=True)
        ca.issue_cert("client@example.test").private_key_and_cert_chain_pem.write_to_path(
            self.client)
        other_ca.issue_cert("intruder@example.test").private_key_and_cert_chain_pem.write_to_path(
            self.other_client)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: Any) -> TLSFiles:
    return TLSFiles(tmp_path_factory.mktemp("tls"))


# -- greenserve as a subprocess -----------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (https?://\S+|unix:\S+)")


class Proc:
    """A greenserve subprocess (in a session of its own, so that teardown can end its workers
    too) whose stderr and stdout are collected by threads. ``prefix`` goes before the Python
    command (a wrapper such as ``sh -c``); ``popen`` goes to Popen (pass_fds, cwd)."""

    def __init__(self, *args: str, env: Optional[dict] = None, prefix: Sequence[str] = (),
                 **popen: Any) -> None:
        popen.setdefault("cwd", ROOT)
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "greenserve", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
            start_new_session=True, **popen,
        )
        self.pid = self.proc.pid
        self.lines: List[str] = []
        self.out: List[str] = []
        self._seen = threading.Condition()
        self._open = 2
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True).start()

    def _pump(self, stream, into: List[str]) -> None:
        for line in stream:
            with self._seen:
                into.append(line)
                self._seen.notify_all()
        with self._seen:
            self._open -= 1
            self._seen.notify_all()

    def wait_for(self, pattern: re.Pattern, timeout: float = 15.0, where: str = "err",
                 count: int = 1) -> re.Match:
        """Wait until ``count`` lines match; return the last match. Fails at the deadline or
        when the process has closed its output without printing them."""
        lines = self.lines if where == "err" else self.out
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                found = [m for m in map(pattern.search, lines) if m]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or not self._open:
                    raise AssertionError(f"{pattern.pattern!r} (x{count}) not seen in: "
                                         f"{''.join(lines)}")
                self._seen.wait(min(left, 0.2))

    def matches(self, pattern: re.Pattern, where: str = "err") -> List[re.Match]:
        with self._seen:
            lines = list(self.lines if where == "err" else self.out)
        return [m for m in map(pattern.search, lines) if m]

    @property
    def stderr(self) -> str:
        with self._seen:
            return "".join(self.lines)

    def url(self) -> str:
        return self.wait_for(LISTENING).group(1)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def address(self) -> Tuple[str, int]:
        """(host, port) from the "listening on" line."""
        host, port = self.url().split("://", 1)[1].rsplit(":", 1)
        return host.strip("[]"), int(port)

    def rss(self) -> int:
        """Resident memory of the server process in bytes (Linux /proc)."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def fds(self) -> int:
        """Open file descriptors of the server process (Linux /proc)."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def tracebacks(self) -> List[str]:
        """Lines of its error log that start a traceback or report an internal error."""
        with self._seen:
            return [line for line in self.lines if "Traceback" in line or "internal error" in line]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(15)

    def kill_all(self) -> None:
        """End the process and everything left in its session."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def run() -> Iterator[Callable[..., Proc]]:
    """``run(*args, env=None, **popen)`` starts ``python -m greenserve *args``; whatever is
    still running at the end of the test is killed, workers included."""
    procs: List[Proc] = []

    def start(*args: str, env: Optional[dict] = None, **popen: Any) -> Proc:
        proc = Proc(*args, env=env, **popen)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill_all()


def run_to_end(*args: str, env: Optional[dict] = None, timeout: float = 30,
               prefix: Sequence[str] = (), **popen: Any) -> subprocess.CompletedProcess:
    """Run ``python -m greenserve *args`` to its end (``prefix`` as for Proc)."""
    popen.setdefault("cwd", ROOT)
    return subprocess.run(
        [*prefix, sys.executable, "-m", "greenserve", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})}, **popen,
    )


def serving_in_thread(server: Any) -> Iterator[int]:
    """Run a socketserver-style ``server`` (a peer for the tests: an upstream) in a thread;
    yield its port; shut it down afterwards. For fixtures: ``yield from serving_in_thread(s)``."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- peers shared by several folders: a slow upstream, a self-signed certificate -----------------


class SlowUpstream(socketserver.ThreadingTCPServer):
    request_queue_size = 1024  # accept all 200 at once
    daemon_threads = True
    allow_reuse_address = True


class SlowHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        time.sleep(0.1)
        self.wfile.write(b"pong " + line)


@pytest.fixture
def slow_upstream() -> Iterator[int]:
    yield from serving_in_thread(SlowUpstream(("127.0.0.1", 0), SlowHandler))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> Tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture
def patched() -> Iterator[None]:
    """What ``greenserve --patch`` does, for the length of one test (the patch's own tests
    define a stricter one that also checks what ``undo()`` puts back)."""
    from greenserve import patch

    patch.apply()
    try:
        yield
    finally:
        patch.undo()


# -- real database servers (tests/dbservers.py), one of each per session ------------------------


def _database_server(start: Callable[[], Any], probe: Callable[[Any], bool]) -> Iterator[Any]:
    from dbservers import Unavailable

    try:
        server = start()
    except Unavailable as why:
        pytest.skip(str(why))
    try:
        if not wait_until(lambda: probe(server), timeout=60, interval=0.1):
            pytest.fail(f"{server.name} does not take connections:\n{server.tail()}")
        yield server
    finally:
        server.stop()


def _postgres_answers(server: Any) -> bool:
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2-binary is a test dependency")
    try:
        psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres",
                         dbname="postgres", connect_timeout=2).close()
        return True
    except psycopg2.OperationalError:  # "the database system is starting up"
        return False


def _mariadb_answers(server: Any) -> bool:
    pymysql = pytest.importorskip("pymysql", reason="PyMySQL is a test dependency")
    try:
        pymysql.connect(host="127.0.0.1", port=server.port, user="root",
                        connect_timeout=2).close()
        return True
    except pymysql.err.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A PostgreSQL server of our own: ``.port``; user and database ``postgres``, no password."""
    from dbservers import start_postgres

    yield from _database_server(start_postgres, _postgres_answers)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[Any]:
    """A MariaDB server of our own: ``.port``; user ``root``, no password, no grant checks."""
    from dbservers import start_mariadb

    yield from _database_server(start_mariadb, _mariadb_answers)
