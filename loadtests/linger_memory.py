#!/usr/bin/env python3
"""What a lingering close costs the server, against what an idle connection costs.

    python loadtests/linger_memory.py -n 10000

Starts ``python -m greenserve greenserve.targetapp:app`` on 127.0.0.1 (port 0, read back from
its "listening on" line) with timeouts long enough that nothing is closed while measuring,
then, for each state in turn (a fresh server each time):

- idle: N connections that each had one GET / answered and stay open (keep-alive);
- linger: N connections that each sent a request whose Content-Length is over
  --max-body-size: answered 413, then the server shuts its write side and lingers, reading
  and discarding until linger_timeout; the clients neither send nor close meanwhile.

For each, it prints the server's resident memory (VmRSS of /proc/PID/status) after warming up
(one request, then 200 connections opened and closed) and once all N are in that state, and
the difference per connection. Stdlib only; Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from typing import List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
TOO_BIG = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n"
OPTIONS = ("--linger-timeout", "600", "--keepalive-timeout", "600", "--header-timeout", "600",
           "--max-body-size", "1000", "--max-connections", "50000", "--log-level", "warning")


def start(python: str) -> Tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([python, "-m", "greenserve", "greenserve.targetapp:app",
                             "--bind", "127.0.0.1:0", *OPTIONS, "--log-level", "info"],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if found:
            return proc, int(found.group(1))
    proc.kill()
    raise SystemExit("the server did not start")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def answer(sock: socket.socket) -> bytes:
    """Read one response head and its Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head


def stats(port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    return json.loads(data.partition(b"\r\n\r\n")[2])  # type: ignore[no-any-return]


def measure(python: str, state: str, count: int) -> Tuple[int, int]:
    proc, port = start(python)
    socks: List[socket.socket] = []
    try:
        for _ in range(200):  # warm up: the first connections allocate what every one reuses
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(GET)
                answer(sock)
        time.sleep(0.5)
        before = rss(proc.pid)
        request, status = (GET, b" 200 ") if state == "idle" else (TOO_BIG, b" 413 ")
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            assert status in answer(sock).split(b"\r\n")[0]
            socks.append(sock)
        deadline = time.monotonic() + 30
        while stats(port)["connections_open"] - 1 < count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stats(port)["connections_open"] - 1 == count
        time.sleep(0.5)
        return before, rss(proc.pid)
    finally:
        for sock in socks:
            sock.close()
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10000, help="connections (default 10000)")
    parser.add_argument("--python", default=sys.executable, help="the server's interpreter")
    args = parser.parse_args()
    for state in ("idle", "linger"):
        before, after = measure(args.python, state, args.n)
        print(f"{state:6} {args.n} connections: RSS {before >> 10} KiB -> {after >> 10} KiB, "
              f"+{(after - before) / args.n:.0f} bytes per connection")


if __name__ == "__main__":
    main()
