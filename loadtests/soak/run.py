"""Soak: a long mixed run against greenserve serving its target app, watching for leaks.

    python loadtests/soak/run.py --requests 1000000 --report loadtests/soak/REPORT.md

Client processes (stdlib only, raw sockets) send a fixed mix: keep-alive GETs, GETs on a new
connection each, uploads with Content-Length and chunked, streamed and Content-Length
downloads. Every response is checked whole (status, length, bytes or checksum): a failed check
is an error, and the run must end with none. Every ``--interval`` seconds the server's resident
memory and open file descriptors are read from /proc. After ``--warmup`` seconds both must stay
flat: the mean of the last three samples at most ``--max-growth`` percent above the mean of the
first three after warm-up (fds: plus the client connections, which come and go). The report
file holds the command, the totals and the sampled curve.

With taskset available the server is pinned to ``--server-cpu`` and the clients to
``--client-cpu`` (``--no-pin`` to skip). ``--wrk-connections N`` adds wrk's keep-alive GETs
on N connections as background load, if wrk is installed. Exit status: 0 when nothing was lost
and the curve is flat, 1 otherwise, 2 for bad arguments, 3 when the server failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELLO = b"Hello, world!\n"
PATTERN = bytes(range(256)) * 4096  # the target app's /bytes payload: byte i is i % 256
MIX = [("hello", 78), ("new-connection", 8), ("upload", 5), ("upload-chunked", 3),
       ("stream", 3), ("download", 2), ("download-streamed", 1)]
KINDS = [name for name, _ in MIX]
BLOB = random.Random(7).randbytes(256 * 1024)


class Lost(Exception):
    """A response that was wrong, cut short, or never came."""


# -- one client connection ---------------------------------------------------------------------

class Connection:
    def __init__(self, address: Tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise Lost("connection closed by the server")
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def exchange(self, raw: bytes) -> Tuple[int, Dict[bytes, bytes], bytes]:
        """Send one request; return (status, headers, body) of its response."""
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        if headers.get(b"transfer-encoding") == b"chunked":
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if not size:
                    while self._line():
                        pass
                    break
                parts.append(self._exactly(size))
                if self._exactly(2) != b"\r\n":
                    raise Lost("bad chunk framing")
            body = b"".join(parts)
        else:
            body = self._exactly(int(headers.get(b"content-length", b"0")))
        return int(lines[0][9:12]), headers, body


# -- the mix -------------------------------------------------------------------------------------

def _get(path: bytes, close: bool = False) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: soak\r\n%s\r\n" % (path, b"Connection: close\r\n" if close else b"")


def _upload(rng: random.Random, chunked: bool) -> Tuple[bytes, bytes]:
    size = rng.choice([1024, 16384, 65536, 200000])
    start = rng.randrange(len(BLOB) - size)
    body = BLOB[start:start + size]
    if chunked:
        wire = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 16384]), body[i:i + 16384])
                        for i in range(0, size, 16384)) + b"0\r\n\r\n"
        head = b"POST /upload HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
    else:
        wire = body
        head = b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n" % size
    expected = json.dumps({"bytes": size, "sha256": hashlib.sha256(body).hexdigest()})
    return head + wire, expected.encode()


def one_request(kind: str, conn: Connection, address: Tuple[str, int], rng: random.Random) -> None:
    """Run one request of ``kind``; raise Lost if its response is not exactly right."""
    if kind == "new-connection":
        fresh = Connection(address)
        try:
            status, _, body = fresh.exchange(_get(b"/", close=True))
            if fresh.sock.recv(1):
                raise Lost("bytes after a Connection: close response")
        finally:
            fresh.close()
        expected = HELLO
    elif kind.startswith("upload"):
        raw, expected = _upload(rng, kind == "upload-chunked")
        status, _, body = conn.exchange(raw)
        body = json.dumps(json.loads(body)).encode()
    elif kind == "stream":
        status, _, body = conn.exchange(_get(b"/stream/40"))
        expected = b"".join(b"chunk %d\n" % i for i in range(40))
    elif kind.startswith("download"):
        size = rng.choice([10000, 100000, 500000])
        path = b"/bytes/%d%s" % (size, b"?stream=1" if kind.endswith("streamed") else b"")
        status, _, body = conn.exchange(_get(path))
        expected = PATTERN[:size]
    else:
        status, _, body = conn.exchange(_get(b"/"))
        expected = HELLO
    if (status, body) != (200, expected):  # every response is checked whole
        raise Lost(f"{kind}: status {status}, body {body[:60]!r}")


def worker(index: int, address: Tuple[str, int], quota: int, deadline: float, cpu: Optional[int],
           done: "multiprocessing.Array", results: "multiprocessing.Queue") -> None:
    """One client process: ``quota`` requests of the mix (or until ``deadline``)."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    rng = random.Random(index)
    weights = [weight for _, weight in MIX]
    counts = {kind: 0 for kind in KINDS}
    errors: List[str] = []
    conn: Optional[Connection] = None
    n = 0
    while n < quota and time.time() < deadline:
        kind = rng.choices(KINDS, weights)[0]
        try:
            conn = conn or Connection(address)
            one_request(kind, conn, address, rng)
            counts[kind] += 1
        except (Lost, OSError, ValueError) as exc:
            errors.append(f"{kind}: {exc!r}")
            if conn is not None:
                conn.close()
            conn = None
        n += 1
        if n % 200 == 0:
            done[index] = n
    done[index] = n
    results.put((counts, errors[:50], len(errors)))


# -- the server and its curve ----------------------------------------------------------------------

def start_server(cpu: Optional[int], log_path: str) -> Tuple[subprocess.Popen, Tuple[str, int]]:
    """Start the server (its log to ``log_path``); return it and the address it listens on."""
    command = [sys.executable, "-m", "greenserve", "greenserve.targetapp:app",
               "--bind", "127.0.0.1:0", "--log-level", "info"]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=ROOT, stderr=log, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and server.poll() is None:
        with open(log_path) as log:
            m = re.search(r"listening on http://([\d.]+):(\d+)", log.read())
        if m:
            return server, (m.group(1), int(m.group(2)))
        time.sleep(0.05)  # polling the log for the "listening on" line, with a deadline
    server.kill()
    print(f"the server did not start; see {log_path}", file=sys.stderr)
    raise SystemExit(3)


def sample(pid: int) -> Tuple[int, int]:
    """(RSS in bytes, open fds) of process ``pid``."""
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def flat(values: List[float], slack: float, max_growth: float) -> Tuple[bool, float]:
    """Is the end of ``values`` within ``max_growth`` percent (plus ``slack``) of its start?"""
    if len(values) < 6:
        return True, 0.0
    base, end = sum(values[:3]) / 3, sum(values[-3:]) / 3
    growth = 100.0 * (end - base) / base
    return end <= base * (1 + max_growth / 100) + slack, growth


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="requests in all")
    parser.add_argument("--duration", type=float, default=3600, help="stop after this many seconds")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--interval", type=float, default=10, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before flatness counts")
    parser.add_argument("--max-growth", type=float, default=5.0, help="percent allowed after warm-up")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument("--wrk-connections", type=int, default=0, help="background wrk load")
    parser.add_argument("--report", default=os.path.join(ROOT, "loadtests", "results", "soak.md"))
    args = parser.parse_args(argv)
    if args.requests < 1 or args.clients < 1 or args.interval <= 0 or args.duration <= 0:
        parser.error("--requests, --clients, --interval and --duration must be positive")
    if args.no_pin or not shutil.which("taskset"):
        args.server_cpu = args.client_cpu = None
    return args


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    os.makedirs(os.path.join(ROOT, "loadtests", "results"), exist_ok=True)
    log_path = os.path.join(ROOT, "loadtests", "results", "soak-server.log")
    server, address = start_server(args.server_cpu, log_path)
    started = time.time()
    deadline = started + args.duration
    done = multiprocessing.Array("q", args.clients)
    results: "multiprocessing.Queue" = multiprocessing.Queue()
    quota = -(-args.requests // args.clients)
    procs = [multiprocessing.Process(target=worker, args=(i, address, quota, deadline,
                                                          args.client_cpu, done, results))
             for i in range(args.clients)]
    for proc in procs:
        proc.start()
    wrk = start_wrk(args, address)
    samples = watch(server, procs, done, started, args.interval)
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
    wrk_summary = stop_wrk(wrk)
    counters = server_counters(address)
    server.send_signal(signal.SIGINT)
    server_code = server.wait(30)
    with open(log_path) as log:
        tracebacks = log.read().count("Traceback")
    return report(args, argv, samples, outcomes, wrk_summary, (server_code, tracebacks),
                  time.time() - started, counters)


def watch(server: subprocess.Popen, procs: List[multiprocessing.Process], done: "multiprocessing.Array",
          started: float, interval: float) -> List[Tuple[float, int, int, int]]:
    """Sample (seconds, requests done, RSS, fds) every ``interval`` until the clients end."""
    samples = []
    next_at = time.time()
    while any(proc.is_alive() for proc in procs):
        if server.poll() is not None:
            raise SystemExit(3)
        if time.time() >= next_at:
            rss, fds = sample(server.pid)
            samples.append((time.time() - started, sum(done), rss, fds))
            next_at += interval
        time.sleep(min(0.2, max(0.0, next_at - time.time())))
    rss, fds = sample(server.pid)
    samples.append((time.time() - started, sum(done), rss, fds))
    return samples


def server_counters(address: Tuple[str, int]) -> str:
    """The server's own counters (GET /stats), to set against the clients' count."""
    conn = Connection(address)
    try:
        status, _, body = conn.exchange(_get(b"/stats"))
    finally:
        conn.close()
    stats = json.loads(body)
    return (f"requests {stats['requests_total']:,} (this /stats one included), responses "
            f"{stats['responses']}, aborted {stats['responses_aborted']}, connections "
            f"{stats['connections_total']:,}, protocol errors {stats['protocol_errors']}")


def start_wrk(args: argparse.Namespace, address: Tuple[str, int]) -> Optional[subprocess.Popen]:
    if not args.wrk_connections or not shutil.which("wrk"):
        return None
    command = ["wrk", "-t1", f"-c{args.wrk_connections}", f"-d{int(args.duration)}s",
               f"http://{address[0]}:{address[1]}/"]
    if args.client_cpu is not None:
        command = ["taskset", "-c", str(args.client_cpu), *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def stop_wrk(wrk: Optional[subprocess.Popen]) -> str:
    if wrk is None:
        return ""
    wrk.send_signal(signal.SIGINT)
    out, _ = wrk.communicate(timeout=30)
    return out


def report(args: argparse.Namespace, argv: List[str], samples: List[Tuple[float, int, int, int]],
           outcomes: List[tuple], wrk: str, server: Tuple[int, int], elapsed: float,
           counters: str) -> int:
    counts = {kind: sum(o[0][kind] for o in outcomes) for kind in KINDS}
    errors = sum(o[2] for o in outcomes)
    total = sum(counts.values())
    after = [s for s in samples if s[0] >= args.warmup]
    rss_ok, rss_growth = flat([s[2] for s in after], 0, args.max_growth)
    fds_ok, fds_growth = flat([s[3] for s in after], 2 * args.clients + args.wrk_connections + 2,
                              args.max_growth)
    server_code, tracebacks = server
    ok = errors == 0 and total > 0 and rss_ok and fds_ok and server == (0, 0)
    lines = [
        "# Soak run", "",
        f"Command: `python loadtests/soak/run.py {' '.join(argv)}`", "",
        f"Result: **{'PASS' if ok else 'FAIL'}**: {total:,} requests checked in {elapsed:.0f} s "
        f"({total / elapsed:,.0f}/s), {errors} lost or wrong; server exit status {server_code}, "
        f"{tracebacks} tracebacks in its log.",
        f"RSS growth after {args.warmup:.0f} s of warm-up: {rss_growth:+.1f}% "
        f"(limit {args.max_growth}%); fds: {fds_growth:+.1f}%.",
        f"Server pinned to CPU {args.server_cpu}, {args.clients} client processes on CPU "
        f"{args.client_cpu} (None: not pinned). Python {sys.version.split()[0]}.",
        f"The server counted: {counters}.", "",
        "| kind | requests |", "|---|---:|",
        *[f"| {kind} | {counts[kind]:,} |" for kind in KINDS], "",
    ]
    if wrk:
        lines += ["wrk (background keep-alive GETs):", "", "```", wrk.strip(), "```", ""]
    lines += curve(samples)
    first_errors = [e for o in outcomes for e in o[1]][:20]
    if first_errors:
        lines += ["", "First errors:", "", *[f"- {e}" for e in first_errors]]
    os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    with open(args.report, "w") as out:
        out.write("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))
    return 0 if ok else 1


def curve(samples: List[Tuple[float, int, int, int]]) -> List[str]:
    """The sampled curve: a table, with RSS as a bar (full width: the highest sample)."""
    high = max(s[2] for s in samples)
    lines = ["| t (s) | requests | RSS (MiB) | fds | RSS, 0 to the highest |", "|---:|---:|---:|---:|---|"]
    for t, n, rss, fds in samples:
        lines.append(f"| {t:.0f} | {n:,} | {rss / 2**20:.1f} | {fds} | `{'#' * round(40 * rss / high)}` |")
    return lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
