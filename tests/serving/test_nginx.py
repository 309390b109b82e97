"""A real nginx in front of two greenserve processes, configured with the server block from
the README (ports and certificate paths replaced): the client's address and scheme reach the app
through nginx's headers; what a client forges in those headers does not."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from conftest import Proc, Reader

ROOT = Path(__file__).resolve().parents[2]


def readme_nginx_block() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"```nginx\n(.*?)```", text, re.S)
    assert m, "the README has no nginx block"
    return m.group(1)


def substitute(block: str, pattern: str, replacements: List[str]) -> str:
    """Replace each match of ``pattern`` in turn; the README must have exactly that many."""
    found = re.findall(pattern, block)
    assert len(found) == len(replacements), f"README nginx block: {pattern!r} matched {found}"
    pending = iter(replacements)
    return re.sub(pattern, lambda m: next(pending), block)


NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Nginx:
    def __init__(self, workdir: Path, upstreams: List[int], tls_files) -> None:
        self.http_port, self.https_port = free_port(), free_port()
        block = readme_nginx_block()
        block = substitute(block, r"server 127\.0\.0\.1:\d+;",
                           [f"server 127.0.0.1:{port};" for port in upstreams])
        block = substitute(block, r"listen 80;", [f"listen 127.0.0.1:{self.http_port};"])
        block = substitute(block, r"listen 443 ssl;",
                           [f"listen 127.0.0.1:{self.https_port} ssl;"])
        block = substitute(block, r"ssl_certificate \S+;", [f"ssl_certificate {tls_files.cert};"])
        block = substitute(block, r"ssl_certificate_key \S+;",
                           [f"ssl_certificate_key {tls_files.key};"])
        temp = "".join(f"    {kind}_temp_path {workdir}/{kind};\n"
                       for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        config = (f"daemon off;\nmaster_process off;\npid {workdir}/nginx.pid;\n"
                  f"error_log stderr warn;\nevents {{ worker_connections 64; }}\n"
                  f"http {{\n    access_log off;\n{temp}{block}}}\n")
        (workdir / "nginx.conf").write_text(config)
        self.proc = subprocess.Popen(
            [str(NGINX), "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", "stderr"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while not (accepts(self.http_port) and accepts(self.https_port)):
            if self.proc.poll() is not None:
                raise RuntimeError("nginx did not start: " + self.proc.stderr.read())
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("nginx did not listen within 15 s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tls_files) -> Iterator[Dict]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    procs = [Proc("tests.cliapps:echo_environ", "--bind", "127.0.0.1:0") for _ in range(2)]
    nginx = None
    try:
        ports = [int(proc.url().rsplit(":", 1)[1]) for proc in procs]
        for attempt in range(3):  # a free port may be taken between the probe and nginx
            try:
                nginx = Nginx(tmp_path_factory.mktemp("nginx"), ports, tls_files)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        yield {"nginx": nginx, "pids": {proc.proc.pid for proc in procs}, "ports": ports}
    finally:
        if nginx is not None:
            nginx.stop()
        for proc in procs:
            if proc.proc.poll() is None:
                proc.stop()


def get(stack, *, source: str, https: bool = False, headers: Optional[Dict[str, str]] = None) -> Dict:
    """GET / through nginx from the loopback address ``source``; the app's JSON answer."""
    nginx = stack["nginx"]
    if https:
        context = ssl.create_default_context(cafile=stack["ca"])
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", nginx.https_port, timeout=10, context=context,
            source_address=(source, 0))
    else:
        conn = http.client.HTTPConnection("127.0.0.1", nginx.http_port, timeout=10,
                                          source_address=(source, 0))
    try:
        conn.request("GET", "/", headers=headers or {})
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        conn.close()


@pytest.fixture
def through(stack, tls_files):
    stack["ca"] = tls_files.ca
    return stack


def test_client_address_and_scheme_come_from_nginx(through):
    nginx = through["nginx"]
    answers = [get(through, source="127.0.0.5") for _ in range(6)]
    assert {a["pid"] for a in answers} == through["pids"]  # both instances served
    for seen in answers:
        assert seen["REMOTE_ADDR"] == "127.0.0.5"  # not nginx's 127.0.0.1
        assert "REMOTE_PORT" not in seen  # nginx does not say which port the client used
        assert seen["wsgi.url_scheme"] == "http"
        assert seen["HTTP_HOST"] == "127.0.0.1"  # $host: no port...
        assert seen["SERVER_PORT"] == str(nginx.http_port)  # ...which X-Forwarded-Port gives
    secure = get(through, source="127.0.0.6", https=True)
    assert secure["REMOTE_ADDR"] == "127.0.0.6"
    assert secure["wsgi.url_scheme"] == "https"
    assert secure["SERVER_PORT"] == str(nginx.https_port)
    assert secure["HTTP_X_FORWARDED_PROTO"] == "https"


def test_headers_forged_by_the_client_are_not_believed(through):
    nginx = through["nginx"]
    forged = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https",
              "X-Forwarded-Host": "evil.example", "X-Forwarded-Port": "1",
              "Forwarded": "for=7.7.7.7;proto=https;host=evil.example"}
    seen = get(through, source="127.0.0.7", headers=forged)
    assert seen["REMOTE_ADDR"] == "127.0.0.7"
    assert seen["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 127.0.0.7"  # the chain, for the app
    assert seen["wsgi.url_scheme"] == "http"
    assert seen["HTTP_HOST"] == "127.0.0.1"
    assert seen["SERVER_NAME"] == "127.0.0.1" and seen["SERVER_PORT"] == str(nginx.http_port)
    assert "HTTP_FORWARDED" not in seen  # nginx passed it on; greenserve removed it


def test_an_http_1_0_request_without_host_gets_through(through):
    """HTTP/1.0 needs no Host. nginx must still send one upstream (it speaks HTTP/1.1 there,
    where a request without Host is a 400): $host falls back to the server_name."""
    nginx = through["nginx"]
    with socket.create_connection(("127.0.0.1", nginx.http_port), timeout=10,
                                  source_address=("127.0.0.9", 0)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        resp = Reader(sock).read_response()
    assert resp.status == 200, resp.body
    seen = json.loads(resp.body)
    assert seen["REMOTE_ADDR"] == "127.0.0.9"
    assert (seen["HTTP_HOST"], seen["SERVER_NAME"]) == ("example.com", "example.com")
    assert seen["SERVER_PORT"] == str(nginx.http_port)


def test_the_same_headers_sent_straight_to_greenserve_are_removed(through):
    port = through["ports"][0]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=("127.0.0.8", 0))
    try:
        conn.request("GET", "/", headers={"X-Forwarded-For": "6.6.6.6",
                                          "X-Forwarded-Proto": "https"})
        seen = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert seen["REMOTE_ADDR"] == "127.0.0.8" and seen["wsgi.url_scheme"] == "http"
    assert "HTTP_X_FORWARDED_FOR" not in seen and "HTTP_X_FORWARDED_PROTO" not in seen
