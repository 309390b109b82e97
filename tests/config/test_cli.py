"""The command line, run as a real subprocess: startup line, requests, signals, bad input."""

from __future__ import annotations

import re
import signal
import socket
import threading

import pytest
import requests

from conftest import LISTENING, run_to_end

def test_serves_example_and_stops_on_ctrl_c(run) -> None:
    proc = run("examples.hello:app", "--bind", "127.0.0.1:0")
    url = proc.url()
    assert requests.get(url, timeout=5).text == "Hello, world!\n"
    assert proc.stop() == 0
    assert any("stopped" in line for line in proc.lines)


def test_factory_and_access_log(run) -> None:
    proc = run("tests.cliapps:create_app()", "--bind", "127.0.0.1:0", "--access-log", "-")
    url = proc.url()
    resp = requests.get(url + "/path?q=1", headers={"User-Agent": 'evil"agent'}, timeout=5)
    assert resp.text == "from factory"
    line = proc.wait_for(re.compile(r'"GET /path\?q=1 HTTP/1.1" 200 12'), where="out").string
    assert re.match(r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] ', line)
    assert '"evil\\x22agent"' in line  # a quote in a header cannot end the field
    assert proc.stop() == 0


def test_sigterm_lets_in_flight_request_finish(run) -> None:
    proc = run("tests.cliapps:slow", "--bind", "127.0.0.1:0")
    url = proc.url()
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(resp=requests.get(url + "/?0.8", timeout=10)))
    worker.start()
    proc.wait_for(re.compile("slow request started"))
    proc.proc.send_signal(signal.SIGTERM)
    worker.join(10)
    assert result["resp"].status_code == 200
    assert result["resp"].text == "slow done"
    assert result["resp"].headers.get("Connection") == "close"
    assert proc.proc.wait(10) == 0


def test_env_variables_configure_and_flags_win(run) -> None:
    proc = run("examples.hello:app", "--bind", "127.0.0.1:0",
               env={"GREENSERVE_BIND": "127.0.0.1:1", "GREENSERVE_MAX_REQUEST_LINE": "64"})
    url = proc.url()
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":1")
    assert requests.get(url + "/" + "a" * 100, timeout=5).status_code == 414
    assert proc.stop() == 0


@pytest.mark.parametrize("args, env, needle", [
    (["examples.hello:app", "--max-body-size", "lots"], {}, "--max-body-size"),
    (["examples.hello:app", "--header-timeout", "-1"], {}, "--header-timeout"),
    (["examples.hello:app", "--bind", "nowhere"], {}, "--bind"),
    (["examples.hello:app", "--no-such-flag"], {}, "--no-such-flag"),
    (["examples.hello:app"], {"GREENSERVE_KEEPALIVE_TIMEOUT": "soon"}, "GREENSERVE_KEEPALIVE_TIMEOUT"),
    (["examples.hello:app"], {"GREENSERVE_NO_SUCH": "1"}, "GREENSERVE_NO_SUCH"),
    (["no_such_module:app"], {}, "no_such_module"),
    (["examples.hello:nothing"], {}, "nothing"),
    (["tests.cliapps:not_callable"], {}, "not callable"),
    (["tests.cliapps:broken_factory()"], {}, "factory exploded"),
    (["examples.hello:app", "--log-level", "loud"], {}, "--log-level"),
])
def test_bad_input_is_one_line_and_exit_2(args, env, needle) -> None:
    done = run_to_end(*args, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("greenserve: error:") and needle in lines[0]


def test_port_in_use_names_the_address() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        done = run_to_end("examples.hello:app", "--bind", f"127.0.0.1:{port}")
    finally:
        holder.close()
    assert done.returncode == 2
    assert f"127.0.0.1:{port}" in done.stderr and "in use" in done.stderr


def test_unix_socket(run, tmp_path) -> None:
    path = tmp_path / "gs.sock"
    proc = run("examples.hello:app", "--bind", f"unix:{path}")
    assert proc.url() == f"unix:{path}"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"Hello, world!\n")
    assert proc.stop() == 0
    assert not path.exists()


def test_ipv6_and_two_binds(run) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("::1 is not available")
    proc = run("examples.hello:app", "--bind", "[::1]:0", "--bind", "127.0.0.1:0")
    urls = [m.group(1) for m in LISTENING.finditer("".join(proc.lines))]
    proc.wait_for(re.compile(r"listening on http://127"))
    urls = [m.group(1) for line in proc.lines for m in [LISTENING.search(line)] if m]
    assert any(u.startswith("http://[::1]:") for u in urls)
    for url in urls:
        assert requests.get(url, timeout=5).status_code == 200
    assert proc.stop() == 0


def test_version_and_help() -> None:
    version = run_to_end("--version")
    assert version.returncode == 0 and version.stdout.startswith("greenserve ")
    helptext = run_to_end("--help")
    assert helptext.returncode == 0
    for flag in ("--bind", "--root-path", "--max-body-size", "--header-timeout",
                 "--keepalive-timeout", "--access-log", "--log-level", "GREENSERVE_BIND"):
        assert flag in helptext.stdout


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_signal_sent_on_seeing_the_listening_line_drains(run, workers):
    """The "listening on" line is printed once the stop handlers are in place: a process
    manager that sends SIGINT as soon as it reads it gets a graceful exit 0, not a death by
    the signal."""
    for _ in range(3):
        proc = run("examples.hello:app", "--bind", "127.0.0.1:0", "--workers", workers)
        proc.url()
        proc.send(signal.SIGINT)
        assert proc.proc.wait(15) == 0, proc.stderr
