"""The supervisor with the server's other features: metrics summed over the workers and served
by the supervisor, HTTPS workers (certificates checked once, before forking), and PROXY
protocol listeners inherited by the workers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests

from conftest import Reader, run_to_end, wait_until
from support import counted, scrape, value
from support import APP, refused, start_supervisor, who


def test_metrics_are_summed_over_workers_and_survive_a_replacement(run):
    proc, url = start_supervisor(run, "--metrics-bind", "127.0.0.1:0")
    metrics = proc.wait_for(re.compile(r"metrics on (http://\S+)"))[1]
    answers = [who(url) for _ in range(12)]
    while len({answer["index"] for answer in answers}) < 2:  # until both workers answered
        assert len(answers) < 500, "one worker answers everything"
        answers.append(who(url))
    seen = {answer["index"]: answer["pid"] for answer in answers}
    endpoint = listening_inode(urlsplit(metrics).port)
    assert endpoint in socket_inodes(proc.pid)  # the supervisor serves it...
    assert all(endpoint not in socket_inodes(pid) for pid in seen.values())  # ...workers drop it
    # A request is counted just after its answer went out: wait for the last one to be.
    total = len(answers)
    assert wait_until(lambda: counted(scrape(metrics), "greenserve_requests_total", code="200")
                      == total)
    os.kill(seen[0], signal.SIGKILL)
    proc.wait_for(re.compile(r"worker 0 \(pid \d+\) is ready"), count=2)
    after = scrape(metrics)
    assert value(after, "greenserve_requests_total", code="200") == total  # no counter went down
    assert value(after, "greenserve_requests_in_flight") == 0
    who(url)
    assert wait_until(lambda: value(scrape(metrics), "greenserve_requests_total", code="200")
                      == total + 1)
    assert proc.stop() == 0
    assert wait_until(lambda: refused(metrics), timeout=10)


def listening_inode(port: int) -> str:
    """The inode of the TCP socket listening on 127.0.0.1:port, from /proc/net/tcp."""
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":
                return fields[9]
    raise AssertionError(f"nothing listens on port {port}")


def socket_inodes(pid: int) -> set:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def test_https_workers(run, tls_files):
    proc = run(APP, "--bind", "127.0.0.1:0", "--workers", "2", "--certfile", tls_files.cert,
               "--keyfile", tls_files.key)
    url = proc.url()
    assert url.startswith("https://127.0.0.1:")
    proc.wait_for(re.compile("all 2 workers are ready"))
    # Both workers accept on one shared socket, so which one wins an accept is up to the
    # scheduler: one after another, a warm worker can win every time on a busy machine. Bursts
    # of parallel handshakes keep one worker busy while the other accepts; stop at a deadline.
    def ask(_):
        return requests.get(url, verify=tls_files.ca, timeout=10).json()["pid"]

    pids = set()
    deadline = time.monotonic() + 20
    with ThreadPoolExecutor(6) as pool:
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.update(pool.map(ask, range(6)))
    assert len(pids) == 2, pids
    assert proc.stop() == 0


def test_bad_certificate_stops_before_any_worker_starts(tmp_path):
    missing = tmp_path / "missing.pem"
    done = run_to_end(APP, "--bind", "127.0.0.1:0", "--workers", "2", "--certfile", str(missing))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "certfile" in lines[0], done.stderr


def test_proxy_protocol_listener_is_inherited_by_the_workers(run):
    proc = run(APP, "--bind", "127.0.0.1:0", "--proxy-protocol-bind", "127.0.0.1:0",
               "--workers", "2")
    proc.wait_for(re.compile(r"listening on"), count=2)  # printed once the workers are ready
    urls = [m.group(1) for m in proc.matches(re.compile(r"listening on (http://\S+)"))]
    assert len(urls) == 2
    proxied = urlsplit(urls[1])
    with socket.create_connection((proxied.hostname, proxied.port), timeout=10) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n"
                     b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = json.loads(Reader(sock).read_response().body)
    assert answer["remote"] == "203.0.113.7" and answer["index"] in (0, 1)
    assert who(urls[0])["remote"] == "127.0.0.1"
    assert proc.stop() == 0
