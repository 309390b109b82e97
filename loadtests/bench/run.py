#!/usr/bin/env python3
"""greenserve against peer WSGI servers, one core each (stdlib only).

    python3 loadtests/bench/run.py                                # every server, scenarios a-g
    python3 loadtests/bench/run.py --servers greenserve,gevent --scenarios g,h,i --reps 3
    python3 loadtests/bench/run.py --servers greenserve,gunicorn,gunicorn-gthread --scenarios k --ref gunicorn
    python3 loadtests/bench/run.py --report OUT/samples.jsonl [MORE.jsonl ...] [--ref gevent]
    python3 loadtests/bench/run.py --list

Each server runs pinned to core 0 (taskset -c 0); wrk, the small clients of clients.py, the slow
upstream and this script run on core 1. Order: for rep: for scenario: for server, so a slow
drift of the machine touches every server alike; every sample starts a fresh server process in
its own process group and kills the whole group afterwards. A sample starts when the port
accepts (polled, with a deadline) and one request of the scenario's kind answers 200.

Scenarios (metric, better):
  a  hello, keep-alive, 64 connections                         req/s, higher
  b  hello, keep-alive, 1000 connections                       req/s, higher
  c  hello, `Connection: close`, 64 connections                req/s, higher
  d  1 MiB response (16 x 64 KiB), 16 connections              MiB/s, higher
  e  upstream app (50 ms upstream), 1000 connections           req/s, higher
  f  10,000 idle keep-alive connections, one GET each          server RSS KiB per connection, lower
  g  p99 latency of (a) (wrk --latency; run with a)            ms, lower
  h  100 MiB chunked upload to a sink app, one client          MiB/s, higher
  i  50 MiB file via wsgi.file_wrapper, 4 connections          MiB/s, higher
  j  hello, keep-alive, 10,000 connections (compare with a)    req/s, higher
  J  p99 latency of (j) (read from j's wrk run)               ms, lower
  k  Flask + SQLAlchemy + PostgreSQL, 200 connections           req/s, higher
     (dbapp.py: one 5 ms query per request through a pool of 20, the same under every server;
     greenserve with --patch, the gevent servers with psycogreen, threaded ones blocking)
  l  (e) with the app's own socket.create_connection, 1000 conns req/s, higher
     (the path users take: greenserve with --patch, the gevent servers monkey-patched as in e;
     e gives greenserve the app that calls GreenSocket itself)

Server greenserve-pure is greenserve with GREENSERVE_PURE=1 (the pure-Python build), for the
two builds side by side.

Scenario k starts one PostgreSQL server for the whole run (database.py, through
tests/dbservers.py: Debian's PostgreSQL in a temporary folder on a free port, a table of
--pg-rows rows, default 10,000), after this script has pinned itself to core 1, so PostgreSQL
and its backends run on core 1 with the clients, never on the servers' core 0. The apps find it
through $BENCH_PG_PORT and $BENCH_PG_ROWS. wrk's timeout is 10 s there: 200 connections queue
for 20 pooled ones, so a slow server's requests wait long but are still answered. A server whose venv lacks the scenario's imports
(Flask, SQLAlchemy, psycopg2: meinheld's venv) is skipped for it with a message.

Servers run from the venv $GS_BENCH_VENV (default /tmp/gs-bench-venv) and meinheld from
$GS_MEINHELD_VENV (default /tmp/gs-meinheld-venv); loadtests/bench/setup.sh makes both. A server
whose dependency is missing is skipped with a message. Every sample is a JSON line in
OUT/samples.jsonl (wrk's socket errors and non-2xx counts included); server output and wrk
output are in OUT/logs/; the table is printed and written to OUT/table.md.
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOADTESTS = os.path.dirname(HERE)
REPO = os.path.dirname(LOADTESTS)
VENV = os.environ.get("GS_BENCH_VENV", "/tmp/gs-bench-venv")
MVENV = os.environ.get("GS_MEINHELD_VENV", "/tmp/gs-meinheld-venv")

SCENARIOS = {
    "a": dict(title="hello, keep-alive, 64 conns", kind="wrk", app="hello", conns=64,
              metric="rps", unit="req/s", higher=True),
    "b": dict(title="hello, keep-alive, 1000 conns", kind="wrk", app="hello", conns=1000,
              metric="rps", unit="req/s", higher=True),
    "c": dict(title="hello, Connection: close, 64 conns", kind="wrk", app="hello", conns=64,
              headers=["Connection: close"], metric="rps", unit="req/s", higher=True),
    "d": dict(title="1 MiB response, 16 conns", kind="wrk", app="big", conns=16,
              metric="mib_s", unit="MiB/s", higher=True),
    "e": dict(title="upstream app (50 ms), 1000 conns", kind="wrk", app="upstream", conns=1000,
              metric="rps", unit="req/s", higher=True),
    "f": dict(title="10,000 idle keep-alive conns: RSS growth", kind="idle", app="hello",
              conns=10000, metric="kib_per_conn", unit="KiB/conn", higher=False),
    "g": dict(title="p99 latency of (a)", kind="derived", source="a", app="hello",
              metric="p99_ms", unit="ms p99", higher=False),
    "h": dict(title="100 MiB chunked upload", kind="upload", app="sink", mib=100,
              metric="mib_s", unit="MiB/s", higher=True),
    "i": dict(title="50 MiB file via wsgi.file_wrapper, 4 conns", kind="wrk", app="download",
              conns=4, timeout=30, metric="mib_s", unit="MiB/s", higher=True),
    "j": dict(title="hello, keep-alive, 10,000 conns", kind="wrk", app="hello", conns=10000,
              timeout=10, metric="rps", unit="req/s", higher=True),
    "J": dict(title="p99 latency of (j)", kind="derived", source="j", app="hello",
              metric="p99_ms", unit="ms p99", higher=False),
    # patch: the app's libraries block unless the server makes them cooperative (greenserve gets
    # its "patch" arguments; the gevent servers always monkey-patch); database: needs PostgreSQL
    "k": dict(title="Flask + SQLAlchemy + PostgreSQL, 200 conns", kind="wrk", app="dbapp",
              conns=200, timeout=10, patch=True, database=True,
              needs=["flask", "sqlalchemy", "psycopg2"], metric="rps", unit="req/s", higher=True),
    "l": dict(title="upstream app, socket.create_connection under the patch, 1000 conns",
              kind="wrk", app="upstream_plain", conns=1000, patch=True, metric="rps",
              unit="req/s", higher=True),
}
DERIVED = {s["source"]: sid for sid, s in SCENARIOS.items() if s["kind"] == "derived"}
DEFAULT_SCENARIOS = "a,b,c,d,e,f,g"
FILE_MIB = 50

PY = "{venv}/bin/python"
LAUNCH = [PY, f"{HERE}/launch.py"]
# name: command (placeholders {venv} {port} {app}), imports needed in that venv, app renames,
# extra environment,
# arguments put before the app for a scenario with patch=True, scenarios it cannot take part in
# (and why). Non-default settings are explained in launch.py (gevent, waitress, meinheld,
# bjoern, nginx) and in loadtests/README.md. gunicorn-gthread: one worker with 32 threads, more
# than the 20 connections of scenario k's pool, so that the pool and not the thread count sets
# how many queries run at once, with a few threads to spare for parsing and answering.
SERVERS = {
    "greenserve": dict(
        cmd=[PY, "-m", "greenserve", "--bind", "127.0.0.1:{port}", "--log-level", "warning",
             "--backlog", "2048", "--max-connections", "20000", "--keepalive-timeout", "300",
             "bench.apps:{app}"],
        needs=["greenserve"], apps={"upstream": "upstream_green"}, patch=["--patch"]),
    "greenserve-pure": dict(
        cmd=[PY, "-m", "greenserve", "--bind", "127.0.0.1:{port}", "--log-level", "warning",
             "--backlog", "2048", "--max-connections", "20000", "--keepalive-timeout", "300",
             "bench.apps:{app}"],
        needs=["greenserve"], apps={"upstream": "upstream_green"}, patch=["--patch"],
        env={"GREENSERVE_PURE": "1"}),
    "gevent": dict(cmd=LAUNCH + ["gevent", "{port}", "{app}"], needs=["gevent"]),
    "waitress": dict(cmd=LAUNCH + ["waitress", "{port}", "{app}"], needs=["waitress"]),
    "gunicorn": dict(
        cmd=[PY, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", "127.0.0.1:{port}",
             "--backlog", "2048", "--worker-connections", "20000", "--keep-alive", "300",
             "--log-level", "warning", "bench.apps:{app}"],
        needs=["gunicorn.workers.ggevent"]),
    "gunicorn-gthread": dict(
        cmd=[PY, "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads", "32",
             "-b", "127.0.0.1:{port}", "--backlog", "2048", "--worker-connections", "20000",
             "--keep-alive", "300", "--log-level", "warning", "bench.apps:{app}"],
        needs=["gunicorn.workers.gthread"]),
    "meinheld": dict(cmd=LAUNCH + ["meinheld", "{port}", "{app}"], needs=["meinheld"], venv=MVENV),
    "bjoern": dict(cmd=LAUNCH + ["bjoern", "{port}", "{app}"], needs=["bjoern"]),
    "granian": dict(
        cmd=["{venv}/bin/granian", "--interface", "wsgi", "--workers", "1", "--host", "127.0.0.1",
             "--port", "{port}", "--backlog", "2048", "--backpressure", "20000",
             "--blocking-threads", "512", "--log-level", "warning", "--no-access-log",
             "bench.apps:{app}"],
        needs=["granian"]),
    "nginx": dict(cmd=LAUNCH + ["nginx", "{port}", "{app}"], needs=[], binary="nginx",
                  skip={"e": "not WSGI: no upstream app", "h": "not WSGI: no sink app",
                        "k": "not WSGI: no database app"}),
}
ORDER = ["greenserve", "greenserve-pure", "gevent", "waitress", "gunicorn", "gunicorn-gthread", "meinheld", "bjoern",
         "granian", "nginx"]


# ----------------------------------------------------------------------------- process helpers

def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def group_pids(pgid):
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(d))
    return pids


def group_rss_kib(pgid):
    total = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def group_cpu_ticks(pgid):
    total = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 10
    while group_pids(proc.pid) and time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.05)


def port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_port(port, proc, timeout):
    """Poll until 127.0.0.1:port accepts; an error text if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode} before listening"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return None
        except OSError:
            time.sleep(0.05)
    return f"not listening after {timeout:.0f} s"


def http_once(port, request, timeout=30):
    """One request on a fresh connection, read to close: (status, headers dict, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = s.recv(1 << 20)
            if not got:
                break
            data += got
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def smoke(port, app):
    if app == "sink":
        req = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        want = b"5"
    else:
        req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        want = None
    status, headers, body = http_once(port, req)
    info = dict(status=status, body_bytes=len(body))
    if "x-bench-path" in headers:
        info["path"] = headers["x-bench-path"]
    if status != 200:
        return info, f"smoke request: status {status}, body {body[:80]!r}"
    if want is not None and body.strip() != want:
        return info, f"smoke request: body {body[:80]!r}, wanted {want!r}"
    return info, None


# ----------------------------------------------------------------------------- wrk

def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        return None
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1e3, "m": 6e4, "h": 3.6e6}[m.group(2)]


def _bytes(text):
    m = re.fullmatch(r"([\d.]+)(B|KB|MB|GB|TB)", text)
    if not m:
        return None
    return float(m.group(1)) * 1024 ** ["B", "KB", "MB", "GB", "TB"].index(m.group(2))


def parse_wrk(text):
    r = dict(rps=None, mib_s=None, requests=None, err_connect=0, err_read=0, err_write=0,
             err_timeout=0, non2xx=0)
    for line in text.splitlines():
        t = line.split()
        if not t:
            continue
        if t[0] == "Requests/sec:":
            r["rps"] = float(t[1])
        elif t[0] == "Transfer/sec:":
            b = _bytes(t[1])
            r["mib_s"] = round(b / 1048576, 1) if b is not None else None
        elif t[0] == "Latency" and len(t) >= 4 and t[1] != "Distribution":
            r["lat_avg_ms"], r["lat_max_ms"] = _ms(t[1]), _ms(t[3])
        elif t[0] in ("50%", "75%", "90%", "99%") and len(t) == 2:
            r[f"p{t[0][:-1]}_ms"] = _ms(t[1])
        elif len(t) > 2 and t[1] == "requests" and t[2] == "in":
            r["requests"] = int(t[0])
        elif line.strip().startswith("Socket errors:"):
            for kind, n in re.findall(r"(connect|read|write|timeout) (\d+)", line):
                r["err_" + kind] = int(n)
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            r["non2xx"] = int(t[-1])
    r["socket_errors"] = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
    return r


# ----------------------------------------------------------------------------- the harness

def greenserve_digest():
    h = hashlib.sha256()
    root = os.path.join(REPO, "greenserve")
    for dirpath, dirnames, files in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), "rb") as f:
                    h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()[:12]


def git_head():
    try:
        head = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "greenserve"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + (" + uncommitted greenserve/ changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Bench:
    def __init__(self, a):
        self.a = a
        self.out = a.out
        self.logs = os.path.join(self.out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.samples = open(os.path.join(self.out, "samples.jsonl"), "a")
        self.next_port = a.port_base
        self.upstream = None
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [LOADTESTS] + ([self.env["PYTHONPATH"]] if self.env.get("PYTHONPATH") else []))
        self.env["BENCH_UPSTREAM_PORT"] = str(a.upstream_port)
        self.env["BENCH_TMP"] = os.path.join(self.out, "tmp")
        self.env["PYTHONUNBUFFERED"] = "1"
        os.makedirs(self.env["BENCH_TMP"], exist_ok=True)
        self.file = None

    # -- shared resources
    def make_file(self):
        path = os.path.join(self.env["BENCH_TMP"], "download.bin")
        block = bytes(range(256)) * 4096  # 1 MiB
        with open(path, "wb") as f:
            for _ in range(FILE_MIB):
                f.write(block)
        self.env["BENCH_FILE"] = self.file = path

    def ensure_upstream(self):
        if self.upstream is not None and self.upstream.poll() is None:
            return
        log = open(os.path.join(self.logs, "upstream.log"), "a")
        argv = ["taskset", "-c", str(self.a.client_cpu), f"{VENV}/bin/python",
                os.path.join(HERE, "upstream.py"), "--port", str(self.a.upstream_port),
                "--delay", str(self.a.upstream_delay)]
        self.upstream = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)
        err = wait_port(self.a.upstream_port, self.upstream, 15)
        if err:
            raise SystemExit(f"upstream: {err} (see {self.logs}/upstream.log)")

    def stop_upstream(self):
        if self.upstream is not None and self.upstream.poll() is None:
            self.upstream.send_signal(signal.SIGTERM)
            try:
                self.upstream.wait(5)
            except subprocess.TimeoutExpired:
                kill_group(self.upstream)

    def take_port(self):
        for _ in range(1000):
            port = self.next_port
            self.next_port = self.a.port_base if port >= self.a.port_base + 999 else port + 1
            if port != self.a.upstream_port and port_free(port):
                return port
        raise SystemExit("no free port")

    # -- one sample
    def sample(self, rep, sid, name):
        sc = SCENARIOS[sid]
        spec = SERVERS[name]
        app = spec.get("apps", {}).get(sc["app"], sc["app"])
        port = self.take_port()
        tag = f"r{rep}-{sid}-{name}"
        venv = spec.get("venv", VENV)
        cmd = spec["cmd"]
        if sc.get("patch") and spec.get("patch"):
            cmd = cmd[:-1] + spec["patch"] + cmd[-1:]  # the app is the last argument
        argv = ["taskset", "-c", str(self.a.server_cpu)] + [
            x.format(venv=venv, port=port, app=app) for x in cmd]
        rec = dict(rep=rep, scenario=sid, server=name, port=port, app=app,
                   time=datetime.datetime.now().isoformat(timespec="seconds"),
                   cmd=" ".join(argv), loadavg=open("/proc/loadavg").read().split()[:3])
        if name.startswith("greenserve"):
            rec["greenserve_src"] = greenserve_digest()
        if sc["app"].startswith("upstream"):
            self.ensure_upstream()
        logpath = os.path.join(self.logs, f"{tag}.server.log")
        log = open(logpath, "w")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=LOADTESTS,
                                env=dict(self.env, **spec.get("env", {})), start_new_session=True)
        try:
            err = wait_port(port, proc, self.a.ready_timeout)
            if err is None:
                try:
                    rec["smoke"], err = smoke(port, app)
                except (OSError, ValueError, IndexError) as e:
                    err = f"smoke request failed: {e!r}"
            if err:
                rec["error"] = err
                return rec
            rec["rss_start_kib"] = group_rss_kib(proc.pid)
            if sc["kind"] == "wrk":
                self.run_wrk(rec, sc, port, proc.pid, tag)
            elif sc["kind"] == "idle":
                self.run_idle(rec, sc, port, proc.pid, tag)
            elif sc["kind"] == "upload":
                self.run_upload(rec, sc, port, proc.pid)
            rec["rss_end_kib"] = group_rss_kib(proc.pid)
            rec["alive_after"] = proc.poll() is None
            if not rec["alive_after"]:
                rec["error"] = f"server exited with {proc.returncode} during the sample"
        finally:
            kill_group(proc)
            log.close()
            size = os.path.getsize(logpath)
            rec["server_log_bytes"] = size
            if size:
                with open(logpath, "rb") as f:
                    f.seek(max(0, size - 600))
                    rec["server_log_tail"] = f.read().decode("utf-8", "replace")
        return rec

    def run_wrk(self, rec, sc, port, pgid, tag):
        argv = ["taskset", "-c", str(self.a.client_cpu), "wrk", "-t1", f"-c{sc['conns']}",
                f"-d{self.a.duration}s", "--latency", f"--timeout={sc.get('timeout', 2)}s"]
        for h in sc.get("headers", []):
            argv += ["-H", h]
        argv.append(f"http://127.0.0.1:{port}/")
        rec["wrk"] = " ".join(argv[3:])
        c0, t0 = group_cpu_ticks(pgid), time.monotonic()
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=self.a.duration + 60)
        c1, t1 = group_cpu_ticks(pgid), time.monotonic()
        with open(os.path.join(self.logs, f"{tag}.wrk.txt"), "w") as f:
            f.write(cp.stdout + cp.stderr)
        rec.update(parse_wrk(cp.stdout))
        rec["wrk_rc"] = cp.returncode
        rec["server_cpu_pct"] = round(100 * (c1 - c0) / os.sysconf("SC_CLK_TCK") / (t1 - t0), 1)
        if rec["rps"] is None:
            rec["error"] = f"wrk printed no result (rc {cp.returncode}): {cp.stderr[-200:]!r}"

    def run_idle(self, rec, sc, port, pgid, tag):
        rec["rss_before_kib"] = before = group_rss_kib(pgid)
        argv = ["taskset", "-c", str(self.a.client_cpu), sys.executable,
                os.path.join(HERE, "clients.py"), "idle", str(port), "--n", str(sc["conns"]),
                "--open-timeout", "60", "--hold-timeout", "120"]
        cl = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=open(os.path.join(self.logs, f"{tag}.idle.err"), "w"),
                              text=True)
        try:
            rec["idle"] = opened = json.loads(cl.stdout.readline() or "{}")
            # settle: RSS stops moving (two equal readings 250 ms apart), at most 5 s
            last, deadline = None, time.monotonic() + 5
            while time.monotonic() < deadline:
                now = group_rss_kib(pgid)
                if now == last:
                    break
                last = now
                time.sleep(0.25)
            rec["rss_after_kib"] = after = group_rss_kib(pgid)
            cl.stdin.write("check\n")
            cl.stdin.flush()
            held = json.loads(cl.stdout.readline() or "{}").get("still_open", 0)
            rec["idle_still_open"] = held
            rec["kib_per_conn"] = round((after - before) / held, 2) if held else None
            if held < sc["conns"]:
                rec["idle_short"] = f"held {held} of {sc['conns']} ({opened})"
            cl.stdin.write("quit\n")
            cl.stdin.flush()
            cl.wait(30)
        finally:
            if cl.poll() is None:
                cl.kill()
                cl.wait()

    def run_upload(self, rec, sc, port, pgid):
        argv = ["taskset", "-c", str(self.a.client_cpu), sys.executable,
                os.path.join(HERE, "clients.py"), "upload", str(port), "--mib", str(sc["mib"]),
                "--duration", str(self.a.duration), "--max-uploads", "100"]
        c0 = group_cpu_ticks(pgid)
        t0 = time.monotonic()
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=self.a.duration + 120)
        rec["server_cpu_pct"] = round(
            100 * (group_cpu_ticks(pgid) - c0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0), 1)
        try:
            res = json.loads(cp.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            rec["error"] = f"upload client failed: {cp.stderr[-300:]!r}"
            return
        rec["upload"] = res
        rec["mib_s"] = res.get("mib_per_s")
        rec["upload_errors"] = len(res["errors"])

    def run(self, plan):
        t0 = time.monotonic()
        for k, (rep, sid, name) in enumerate(plan, 1):
            rec = self.sample(rep, sid, name)
            self.samples.write(json.dumps(rec) + "\n")
            self.samples.flush()
            print(f"[{k}/{len(plan)} {time.monotonic() - t0:5.0f}s] rep {rep} {sid} {name:<10} "
                  f"{describe(rec)}", flush=True)


def describe(rec):
    if rec.get("error"):
        return "ERROR " + rec["error"]
    sid = rec["scenario"]
    if sid == "f":
        i = rec.get("idle", {})
        return (f"{rec.get('kib_per_conn')} KiB/conn, held {rec.get('idle_still_open')}, "
                f"rss {rec.get('rss_before_kib')}->{rec.get('rss_after_kib')} KiB, open {i.get('open_seconds')} s"
                + (f" SHORT: {rec['idle_short']}" if rec.get("idle_short") else ""))
    if sid == "h":
        u = rec.get("upload", {})
        return f"{rec.get('mib_s')} MiB/s, {u.get('uploads')} uploads, errors {u.get('errors')}"
    return (f"{rec.get('rps')} req/s {rec.get('mib_s')} MiB/s p99 {rec.get('p99_ms')} ms "
            f"sockerr {rec.get('socket_errors')} non2xx {rec.get('non2xx')} cpu {rec.get('server_cpu_pct')}%")


# ----------------------------------------------------------------------------- report

def value(rec, sid):
    if rec.get("error"):
        return None
    return rec.get(SCENARIOS[sid]["metric"])


def fmt(x):
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def report(records, ref, scenarios=None, servers=None, heading=None):
    by = {}
    for r in records:
        sids = [r["scenario"]] + ([DERIVED[r["scenario"]]] if r["scenario"] in DERIVED else [])
        for sid in sids:
            by.setdefault((sid, r["server"]), {})[r["rep"]] = r
    scen = scenarios or [s for s in SCENARIOS if any(k[0] == s for k in by)]
    order = servers or [s for s in ORDER if any(k[1] == s for k in by)]
    lines = []
    if heading:
        lines += [heading, ""]
    lines += [f"| scenario | server | median | min–max | ×{ref} (median of same-rep ratios) | "
              "reps | errors (socket / non-2xx, all reps) |",
              "|---|---|---:|---:|---:|---:|---|"]
    for sid in scen:
        sc = SCENARIOS[sid]
        label = f"{sid}: {sc['title']} ({sc['unit']}, {'higher' if sc['higher'] else 'lower'} is better)"
        first = True
        for name in order:
            reps = by.get((sid, name))
            if not reps:
                continue
            vals = {rep: value(r, sid) for rep, r in reps.items()}
            good = [v for v in vals.values() if v is not None]
            refreps = by.get((sid, ref), {})
            ratios = []
            for rep, v in vals.items():
                rv = value(refreps[rep], sid) if rep in refreps else None
                if v is not None and rv:
                    ratios.append(v / rv)
            errs = []
            for r in reps.values():
                if r.get("error"):
                    errs.append(r["error"][:70])
            sock = sum(r.get("socket_errors") or 0 for r in reps.values())
            non2xx = sum(r.get("non2xx") or 0 for r in reps.values())
            note = f"{sock} / {non2xx}" if sc["kind"] in ("wrk", "derived") else ""
            if sc["kind"] == "upload":
                note = f"{sum(r.get('upload_errors') or 0 for r in reps.values())} failed uploads"
            if sc["kind"] == "idle":
                held = [r.get("idle_still_open") for r in reps.values() if r.get("idle_still_open") is not None]
                note = f"held {min(held)}–{max(held)}" if held else ""
            if errs:
                note = (note + "; " if note else "") + f"{len(errs)} failed: " + "; ".join(sorted(set(errs)))
            lines.append("| {} | {} | {} | {} | {} | {} | {} |".format(
                label if first else "", name,
                fmt(statistics.median(good)) if good else "–",
                f"{fmt(min(good))}–{fmt(max(good))}" if good else "–",
                f"{statistics.median(ratios):.2f}" if ratios and name != ref else ("1" if name == ref and ratios else "–"),
                f"{len(good)}/{len(vals)}", note))
            first = False
    return "\n".join(lines)


def load(paths):
    out = []
    for p in paths:
        with open(p) as f:
            out.extend(json.loads(line) for line in f if line.strip())
    return out


# ----------------------------------------------------------------------------- main

def available(name):
    spec = SERVERS[name]
    venv = spec.get("venv", VENV)
    if spec.get("binary") and not shutil.which(spec["binary"]):
        return f"{spec['binary']} not installed"
    if not os.path.exists(f"{venv}/bin/python"):
        return f"no venv at {venv} (run loadtests/bench/setup.sh)"
    if spec["needs"]:
        cp = subprocess.run([f"{venv}/bin/python", "-c", "import " + ", ".join(spec["needs"])],
                            capture_output=True, text=True, timeout=60, cwd="/")
        if cp.returncode:
            return f"cannot import {', '.join(spec['needs'])} in {venv}: {cp.stderr.strip().splitlines()[-1:]}"
    return None


_imports_cache = {}


def missing_imports(name, sid):
    """Why server `name` cannot run scenario `sid` (its venv lacks the app's imports), or None."""
    needs = SCENARIOS[sid].get("needs")
    if not needs:
        return None
    venv = SERVERS[name].get("venv", VENV)
    key = (venv, tuple(needs))
    if key not in _imports_cache:
        cp = subprocess.run([f"{venv}/bin/python", "-c", "import " + ", ".join(needs)],
                            capture_output=True, text=True, timeout=60, cwd="/")
        _imports_cache[key] = (f"cannot import {', '.join(needs)} in {venv}" if cp.returncode
                               else None)
    return _imports_cache[key]


def versions():
    code = ("import importlib.metadata as m, json, sys\nout = {'python': sys.version.split()[0]}\n"
            "for n in sys.argv[1:]:\n    try: out[n] = m.version(n)\n    except Exception: pass\n"
            "print(json.dumps(out))")
    v = {}
    for venv, names in ((VENV, ["greenserve", "gevent", "waitress", "gunicorn", "bjoern", "granian",
                                "greenlet", "flask", "sqlalchemy", "psycopg2-binary", "psycogreen"]),
                        (MVENV, ["meinheld", "greenlet"])):
        try:
            cp = subprocess.run([f"{venv}/bin/python", "-c", code] + names, capture_output=True,
                                text=True, timeout=60, cwd="/")
            v[venv] = json.loads(cp.stdout)
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    for tool in (["wrk", "-v"], ["nginx", "-v"]):
        try:
            cp = subprocess.run(tool, capture_output=True, text=True, timeout=10)
            v[tool[0]] = (cp.stdout + cp.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            pass
    return v


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default=",".join(ORDER))
    p.add_argument("--scenarios", default=DEFAULT_SCENARIOS)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (and per upload run)")
    p.add_argument("--out", default=None, help="output folder (default /tmp/gs-bench-results/STAMP)")
    p.add_argument("--ref", default="gevent", help="ratios are to this server")
    p.add_argument("--report", nargs="+", metavar="SAMPLES.jsonl", help="only print the table of these")
    p.add_argument("--list", action="store_true", help="print the servers' commands and exit")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--port-base", type=int, default=19000)
    p.add_argument("--upstream-port", type=int, default=18901)
    p.add_argument("--upstream-delay", type=float, default=0.05)
    p.add_argument("--ready-timeout", type=float, default=30)
    p.add_argument("--pg-rows", type=int, default=10000, help="rows in scenario k's table")
    a = p.parse_args()

    if a.list:
        for name in ORDER:
            print(f"{name}: {' '.join(SERVERS[name]['cmd'])}")
        return
    if a.report:
        print(report(load(a.report), a.ref))
        return

    scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}: choose from {','.join(SCENARIOS)}")
    for s in servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}: choose from {','.join(ORDER)}")
    if not shutil.which("wrk") or not shutil.which("taskset"):
        sys.exit("wrk and taskset are needed: bash loadtests/bench/setup.sh")
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 cores: one for the servers, one for the clients")
    nofile = raise_nofile()  # inherited by the servers and the clients
    os.sched_setaffinity(0, {a.client_cpu})

    runnable = []
    for name in servers:
        why = available(name)
        if why:
            print(f"skipping {name}: {why}", flush=True)
        else:
            runnable.append(name)
    # g is read from the wrk run of a; run a for it if only g was asked for
    runs = []
    for s in scenarios:
        s = SCENARIOS[s].get("source", s)
        if s not in runs:
            runs.append(s)
    plan = []
    for rep in range(1, a.reps + 1):
        for sid in runs:
            for name in runnable:
                why = SERVERS[name].get("skip", {}).get(sid) or missing_imports(name, sid)
                if why:
                    if rep == 1:
                        print(f"skipping {name} in scenario {sid}: {why}", flush=True)
                    continue
                plan.append((rep, sid, name))

    a.out = a.out or os.path.join("/tmp/gs-bench-results", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(a.out, exist_ok=True)
    head = git_head()
    meta = dict(argv=sys.argv, started=datetime.datetime.now().isoformat(timespec="seconds"),
                git=head, greenserve_src=greenserve_digest(), nofile=nofile, uname=" ".join(os.uname()),
                cpus=os.cpu_count(), scenarios=scenarios, servers=runnable, reps=a.reps,
                duration=a.duration, versions=versions(),
                commands={n: " ".join(SERVERS[n]["cmd"]) for n in runnable})
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    est = sum(a.duration + 2 if SCENARIOS[s]["kind"] in ("wrk", "upload") else 12 for _, s, _ in plan)
    print(f"greenserve at {head}; {len(plan)} samples, about {est / 60:.0f} min; "
          f"RLIMIT_NOFILE {nofile}; results in {a.out}", flush=True)

    database = None
    try:
        if any(SCENARIOS[sid].get("database") for _, sid, _ in plan):
            import database as db  # loadtests/bench/database.py

            why = db.available()
            if why:
                sys.exit(f"scenario k needs PostgreSQL: {why}")
            database = db.start(a.pg_rows)  # inherits this process's affinity: the client core
            meta["postgres"] = dict(port=database.port, rows=a.pg_rows,
                                    cpus=db.cpus_of(database.proc.pid))
            with open(os.path.join(a.out, "meta.json"), "w") as f:
                json.dump(meta, f, indent=1)
            print(f"PostgreSQL on 127.0.0.1:{database.port}, {a.pg_rows} rows, "
                  f"CPUs {meta['postgres']['cpus']}", flush=True)
        bench = Bench(a)
        if database is not None:
            bench.env["BENCH_PG_PORT"] = str(database.port)
            bench.env["BENCH_PG_ROWS"] = str(a.pg_rows)
        if any(SCENARIOS[s]["app"] == "download" for s in runs):
            bench.make_file()
        try:
            bench.run(plan)
        finally:
            bench.stop_upstream()
    finally:
        if database is not None:
            database.stop()
    records = load([os.path.join(a.out, "samples.jsonl")])
    table = report(records, a.ref, scenarios, [s for s in servers if s in runnable],
                   heading=f"greenserve {head}, {meta['started'][:10]}, --reps {a.reps} --duration {a.duration}")
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table + "\n")
    print()
    print(table)


if __name__ == "__main__":
    main()
