#!/usr/bin/env python3
"""Run the locust scenarios against a real greenserve serving greenserve.targetapp.

    python loadtests/run_locust.py --time 20s            # CI defaults: 50 users, 20 s
    python loadtests/run_locust.py -u 200 -r 50 --time 1m -- --loglevel DEBUG

Steps: start ``python -m greenserve greenserve.targetapp:app --bind 127.0.0.1:0`` (port 0: the
kernel picks a free port, read back from the server's "listening on" line, within a deadline),
run locust headless against it with CSV and HTML reports under loadtests/results/, stop the
server with SIGINT (a graceful stop) and check it exits 0.

Exit status: 0 when locust passed (the thresholds in locustfile.py hold) and the server stopped
cleanly; locust's own code when it failed; 3 when the server failed to start, died or did not
stop cleanly; 2 when locust is not installed. Arguments after ``--`` go to locust as they are.
Stdlib only: it never imports greenserve or locust itself.
"""

from __future__ import annotations

import argparse
import csv
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LISTENING = re.compile(r"listening on (http://\S+)")
SERVER_FAILED = 3


def parse_duration(text: str) -> float:
    """Seconds in a locust run time such as 20s, 1m30s, 2h or a plain 45."""
    if text.isdigit():
        return float(text)
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not text or match is None:
        raise argparse.ArgumentTypeError(f"not a run time like 20s, 1m30s or 2h: {text!r}")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Arguments after -- are passed to locust.")
    parser.add_argument("-t", "--time", default="20s",
                        help="run time for locust, e.g. 20s, 1m30s (default: 20s)")
    parser.add_argument("-u", "--users", type=int, default=50, help="peak users (default: 50)")
    parser.add_argument("-r", "--spawn-rate", type=float, default=25,
                        help="users started per second (default: 25)")
    parser.add_argument("--results", type=Path, default=HERE / "results",
                        help="directory for the CSV and HTML reports (default: loadtests/results)")
    parser.add_argument("--name", default="locust", help="file prefix of the reports")
    parser.add_argument("--locustfile", type=Path, default=HERE / "locustfile.py")
    parser.add_argument("--app", default="greenserve.targetapp:app", help="the app to serve")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for greenserve (repeatable), e.g. --server-arg=--access-log=-")
    parser.add_argument("--startup-timeout", type=float, default=15.0,
                        help="seconds to wait for the server's 'listening on' line")
    parser.add_argument("--stop-timeout", type=float, default=30.0,
                        help="seconds the server gets to exit after SIGINT")
    return parser


class ServerProcess:
    """greenserve in a subprocess; its stderr is copied to a log file and to ours."""

    def __init__(self, app: str, extra: Sequence[str], log_path: Path) -> None:
        command = [sys.executable, "-m", "greenserve", app, "--bind", "127.0.0.1:0", *extra]
        print("server:", " ".join(command), flush=True)
        self.log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.PIPE, text=True)
        self.urls: "queue.Queue[Optional[str]]" = queue.Queue()
        self.copier = threading.Thread(target=self._copy, args=(self.proc.stderr,), daemon=True)
        self.copier.start()

    def _copy(self, stream: IO[str]) -> None:
        for line in stream:
            self.log.write(line)
            self.log.flush()
            sys.stderr.write("[server] " + line)
            match = LISTENING.search(line)
            if match:
                self.urls.put(match.group(1))
        self.urls.put(None)  # EOF: the server is gone

    def wait_url(self, timeout: float) -> str:
        """The URL the server listens on. Raises RuntimeError if it exits or is silent."""
        try:
            url = self.urls.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no 'listening on' line within {timeout:g} s") from None
        if url is None:
            raise RuntimeError(f"the server exited with {self.proc.wait()} before listening")
        return url

    def stop(self, timeout: float) -> Optional[int]:
        """SIGINT, then wait. Returns the exit code, or None if it had to be killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code: Optional[int] = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self.copier.join(5)
        self.log.close()
        return code


def locust_command(args: argparse.Namespace, url: str, extra: List[str]) -> List[str]:
    prefix = args.results / args.name
    return [
        sys.executable, "-m", "locust", "-f", str(args.locustfile), "--headless",
        "-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.time, "--host", url,
        "--csv", str(prefix), "--html", f"{prefix}.html", "--only-summary", *extra,
    ]


def print_summary(stats_csv: Path) -> None:
    """Requests, failures, median and p95 per name, from locust's CSV."""
    if not stats_csv.exists():
        print(f"no {stats_csv}")
        return
    with open(stats_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    print(f"\n| name | requests | failures | median ms | p95 ms | req/s |\n|---|---:|---:|---:|---:|---:|")
    for row in rows:
        name = " ".join(part for part in (row["Type"], row["Name"]) if part)
        print(f"| {name} | {row['Request Count']} | {row['Failure Count']} | "
              f"{float(row['Median Response Time']):.0f} | {row['95%']} | {float(row['Requests/s']):.1f} |")


def locust_installed() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import locust"], capture_output=True)
    return probe.returncode == 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(own)
    try:
        duration = parse_duration(args.time)
    except argparse.ArgumentTypeError as exc:
        build_parser().error(str(exc))
    if not locust_installed():
        print("locust is not installed: pip install -r loadtests/requirements-locust.txt")
        return 2
    args.results.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(args.app, args.server_arg, args.results / f"{args.name}-server.log")
    locust_code: Optional[int] = None
    try:
        url = server.wait_url(args.startup_timeout)
        command = locust_command(args, url, extra)
        print("locust:", " ".join(command), flush=True)
        try:
            locust_code = subprocess.run(command, cwd=ROOT, timeout=duration + 120).returncode
        except subprocess.TimeoutExpired:
            print("locust did not finish in time")
            locust_code = 1
        alive = server.proc.poll() is None
    except RuntimeError as exc:
        print(f"server failed to start: {exc}")
        alive = False
    finally:
        server_code = server.stop(args.stop_timeout)
    print_summary(args.results / f"{args.name}_stats.csv")
    print(f"\nlocust exit code: {locust_code}; server exit code: {server_code}"
          f"{'' if alive else ' (it was not running at the end of the test)'}")
    if locust_code is None or not alive or server_code != 0:
        return SERVER_FAILED
    return locust_code


if __name__ == "__main__":
    sys.exit(main())
