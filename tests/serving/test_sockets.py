"""Listeners of every kind, on a real greenserve process: unix sockets (curl --unix-socket,
umask, stale and foreign files), dual-stack [::], fd://N, systemd socket activation and
sd_notify, SO_REUSEPORT workers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys

import pytest

from conftest import run_to_end, wait_until
from greenserve.serving.sockets import socket_url
from support import APP, fetch, who, workers_seen

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed (apt-get install curl)")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not socket.has_ipv6 or not ipv6_loopback(),
                                reason="no IPv6 loopback on this machine")


def curl_unix(path, url_path: str = "/") -> dict:
    done = subprocess.run([CURL, "-sS", "--max-time", "10", "--unix-socket", str(path),
                           f"http://localhost{url_path}"], capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- unix sockets -------------------------------------------------------------------------------


@needs_curl
@pytest.mark.parametrize("workers", [1, 2])
def test_unix_socket_with_curl_umask_and_cleanup(run, tmp_path, workers):
    path = tmp_path / "app.sock"
    proc = run(APP, "--bind", f"unix:{path}", "--umask", "007", "--workers", str(workers))
    assert proc.url() == f"unix:{path}"
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o770
    if workers == 2:
        proc.wait_for(re.compile("all 2 workers are ready"))
        pids = set()
        assert wait_until(lambda: pids.add(curl_unix(path)["pid"]) or len(pids) == 2, 20)
    else:
        assert curl_unix(path)["pid"] == proc.pid
    assert proc.stop() == 0
    assert not path.exists()


@needs_curl
def test_stale_unix_socket_is_replaced(run, tmp_path):
    path = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(path))
    leftover.close()  # the file stays, nobody listens: what a crash leaves behind
    proc = run(APP, "--bind", f"unix:{path}")
    proc.url()
    assert curl_unix(path)["pid"] == proc.pid
    assert proc.stop() == 0


def test_unix_path_that_is_not_a_socket_is_refused(tmp_path):
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    done = run_to_end(APP, "--bind", f"unix:{path}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"greenserve: error: bind: cannot listen on unix:{path}: {path} exists and is not a "
        "socket"]
    assert path.read_text() == "keep me"


def test_unix_socket_in_use_is_refused(tmp_path):
    path = tmp_path / "busy.sock"
    with socket.socket(socket.AF_UNIX) as holder:
        holder.bind(str(path))
        holder.listen()
        done = run_to_end(APP, "--bind", f"unix:{path}")
    assert done.returncode == 2
    assert "bind: cannot listen on unix:" in done.stderr and "in use" in done.stderr


@needs_curl
def test_reload_keeps_the_unix_socket(run, tmp_path):
    path = tmp_path / "reload.sock"
    proc = run(APP, "--bind", f"unix:{path}", "--workers", "2")
    proc.wait_for(re.compile("all 2 workers are ready"))
    proc.send(signal.SIGHUP)
    proc.wait_for(re.compile(r"reload done"))
    proc.wait_for(re.compile(r"exited with status 0"), count=2)  # old workers closed theirs
    assert path.exists() and curl_unix(path)["generation"] == 1
    assert proc.stop() == 0
    assert not path.exists()


# -- IP -----------------------------------------------------------------------------------------


@needs_ipv6
def test_dual_stack_listener_takes_ipv4_and_ipv6(run):
    proc = run(APP, "--bind", "[::]:0")
    url = proc.url()
    port = int(url.rsplit(":", 1)[1])
    assert url == f"http://[::]:{port}"
    assert who(f"http://127.0.0.1:{port}")["remote"] == "127.0.0.1"  # not ::ffff:127.0.0.1
    assert who(f"http://[::1]:{port}")["remote"] == "::1"
    assert proc.stop() == 0


@needs_ipv6
def test_ipv6_only_address_with_workers(run):
    proc = run(APP, "--bind", "[::1]:0", "--workers", "2")
    url = proc.url()
    assert url.startswith("http://[::1]:")
    proc.wait_for(re.compile("all 2 workers are ready"))
    assert set(workers_seen(url, 2)) == {0, 1}
    assert proc.stop() == 0


def test_reuse_port_gives_each_worker_its_own_listener(run):
    proc = run(APP, "--bind", "127.0.0.1:0", "--workers", "2", "--reuse-port")
    url = proc.url()
    proc.wait_for(re.compile("all 2 workers are ready"))
    assert set(workers_seen(url, 2)) == {0, 1}
    for _ in range(20):
        assert fetch(url)[0] == 200
    assert proc.stop() == 0


# -- inherited descriptors ----------------------------------------------------------------------


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("workers", [1, 2])
def test_fd_bind_serves_an_inherited_socket(run, workers):
    with listening_socket() as sock:
        fd = sock.fileno()
        proc = run(APP, "--bind", f"fd://{fd}", "--workers", str(workers), pass_fds=(fd,))
        assert proc.url() == socket_url(sock)
        if workers == 1:
            assert who(proc.url())["pid"] == proc.pid
        else:
            proc.wait_for(re.compile("all 2 workers are ready"))
            assert set(workers_seen(proc.url(), 2)) == {0, 1}
        assert proc.stop() == 0


@pytest.mark.parametrize("bind, needle", [
    ("fd://987", "fd://987: not a usable socket"),
    ("fd://x", "--bind: 'fd://x': fd:// needs a file descriptor number"),
])
def test_bad_fd_bind_is_one_line_and_exit_2(bind, needle):
    done = run_to_end(APP, "--bind", bind)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr


# What systemd does between fork and exec: the socket on fd 3, LISTEN_PID the server's own pid.
ACTIVATE = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='web');"
            " os.execv(sys.argv[2], sys.argv[2:])")


@pytest.mark.parametrize("workers", [1, 2])
def test_systemd_socket_activation(run, workers):
    with listening_socket() as sock:
        fd = sock.fileno()
        proc = run(APP, "--bind", "127.0.0.1:1", "--workers", str(workers), pass_fds=(fd,),
                   prefix=(sys.executable, "-c", ACTIVATE, str(fd)))
        url = proc.url()
        assert url == socket_url(sock)  # --bind is replaced by the passed socket
        if workers == 2:
            proc.wait_for(re.compile("all 2 workers are ready"))
        answer = who(url)
        assert answer["pid"] == proc.pid if workers == 1 else answer["index"] in (0, 1)
        assert proc.stop() == 0


def test_socket_activation_for_another_process_is_ignored(run):
    proc = run(APP, "--bind", "127.0.0.1:0", env={"LISTEN_PID": "1", "LISTEN_FDS": "1"})
    url = proc.url()
    assert who(url)["pid"] == proc.pid
    assert proc.stop() == 0


def test_bad_listen_fds_is_one_line_and_exit_2():
    done = run_to_end(APP, prefix=("sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=two exec "$@"', "sh"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "greenserve: error: LISTEN_FDS: not a number of descriptors: 'two'"]


# -- sd_notify ----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers, abstract", [(1, False), (2, False), (2, True)])
def test_sd_notify_ready_reloading_and_stopping(run, tmp_path, workers, abstract):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        name = f"\0greenserve-test-{os.getpid()}-{workers}" if abstract else str(tmp_path / "n")
        manager.bind(name)
        manager.settimeout(20)
        notify = "@" + name[1:] if abstract else name
        proc = run(APP, "--bind", "127.0.0.1:0", "--workers", str(workers),
                   env={"NOTIFY_SOCKET": notify})
        assert manager.recv(4096) == b"READY=1"
        assert fetch(proc.url())[0] == 200
        if workers > 1:
            proc.send(signal.SIGHUP)
            assert manager.recv(4096) == b"RELOADING=1"
            assert manager.recv(4096) == b"READY=1"
        proc.send(signal.SIGTERM)
        assert manager.recv(4096) == b"STOPPING=1"
        assert proc.proc.wait(15) == 0
