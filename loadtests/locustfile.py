"""Locust scenarios against greenserve's load-test target (greenserve.targetapp).

Start the target with ``greenserve greenserve.targetapp:app`` (or let loadtests/run_locust.py do
it), then e.g. ``locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 20s --host URL``.

This file never imports greenserve: locust monkey-patches the stdlib with gevent, and the
server must be measured as it runs in production, in its own process.

One user class per scenario; each checks what it gets back (catch_response) so a wrong body is
a failure, not a fast success. The thresholds below are enforced when locust quits: crossing
one prints the reason and makes locust exit 1.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import random
import urllib.request

from locust import FastHttpUser, between, events, task
from locust import log as locust_log
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

# -- thresholds (enforced in enforce_thresholds below) -----------------------------------------
MAX_ERROR_RATIO = 0.01   # failed requests / all requests
MAX_P95_MS = 1000        # 95th percentile of every request together, milliseconds
MIN_REQUESTS = 200       # fewer means the run measured nothing worth a verdict

log = logging.getLogger("greenserve.locust")

UPLOAD_SIZES = [4 * 1024, 64 * 1024, 512 * 1024, 3 * 1024 * 1024]
UPLOAD_WEIGHTS = [8, 4, 2, 1]
DOWNLOAD_SIZES = [1024, 64 * 1024, 1024 * 1024]


def pattern(n: int) -> bytes:
    """What /bytes/<n> sends: byte i is i % 256."""
    return (bytes(range(256)) * (n // 256 + 1))[:n]


# built once: random upload bodies with their digests, and the expected download payloads
UPLOADS = {n: (body, hashlib.sha256(body).hexdigest())
           for n, body in ((n, os.urandom(n)) for n in UPLOAD_SIZES)}
DOWNLOADS = {n: pattern(n) for n in DOWNLOAD_SIZES}


class TargetUser(FastHttpUser):
    """Shared settings; not run itself."""

    abstract = True
    wait_time = between(0.01, 0.1)


class HelloUser(TargetUser):
    """The smallest request: GET / (keep-alive, one send per response)."""

    weight = 5

    @task
    def hello(self) -> None:
        with self.client.get("/", catch_response=True) as resp:
            if resp.status_code != 200 or resp.content != b"Hello, world!\n":
                resp.failure(f"unexpected {resp.status_code} {resp.content[:40]!r}")


class JsonApiUser(TargetUser):
    """A JSON API: POST /echo with a JSON document, which must come back unchanged."""

    weight = 3

    @task
    def echo(self) -> None:
        doc = {"id": random.randrange(10**9), "tags": ["a", "b"] * random.randint(1, 20),
               "note": "é" * random.randint(0, 100)}
        with self.client.post("/echo?api=1", json=doc, name="/echo",
                              catch_response=True) as resp:
            try:
                echoed = resp.json()
                ok = (resp.status_code == 200 and echoed["method"] == "POST"
                      and json.loads(echoed["body"]) == doc)
            except (ValueError, KeyError, TypeError) as exc:
                resp.failure(f"bad echo: {exc!r}")
                return
            if not ok:
                resp.failure(f"echo does not match: {resp.status_code}")


class UploadUser(TargetUser):
    """Uploads of 4 KiB to 3 MiB to /upload; the server's sha256 must match ours."""

    weight = 1

    @task
    def upload(self) -> None:
        size = random.choices(UPLOAD_SIZES, UPLOAD_WEIGHTS)[0]
        body, digest = UPLOADS[size]
        with self.client.post("/upload", data=body, name=f"/upload [{size // 1024} KiB]",
                              catch_response=True) as resp:
            try:
                answer = resp.json()
            except ValueError:
                resp.failure(f"not JSON: {resp.status_code} {resp.content[:40]!r}")
                return
            if answer != {"bytes": size, "sha256": digest}:
                resp.failure(f"upload mismatch: {answer}")


class DownloadUser(TargetUser):
    """Downloads of 1 KiB to 1 MiB from /bytes/<n>, with Content-Length or streamed."""

    weight = 2

    @task
    def download(self) -> None:
        size = random.choice(DOWNLOAD_SIZES)
        streamed = random.random() < 0.5
        path = f"/bytes/{size}" + ("?stream=1" if streamed else "")
        name = f"/bytes/[{size // 1024} KiB]" + (" streamed" if streamed else "")
        with self.client.get(path, name=name, catch_response=True) as resp:
            if resp.status_code != 200 or len(resp.content or b"") != size:
                resp.failure(f"{resp.status_code}, {len(resp.content or b'')} of {size} bytes")
            elif resp.content != DOWNLOADS[size]:
                resp.failure("payload differs from the pattern")


class StreamingUser(TargetUser):
    """Chunked responses: /stream/<n>, sometimes with a pause between chunks."""

    weight = 1

    @task
    def stream(self) -> None:
        n, delay = random.choice([(10, 0), (100, 0), (1000, 0), (20, 10)])
        path = f"/stream/{n}" + (f"?delay_ms={delay}" if delay else "")
        name = f"/stream/{n}" + (" paced" if delay else "")
        with self.client.get(path, name=name, catch_response=True) as resp:
            lines = (resp.content or b"").splitlines()
            if resp.status_code != 200 or len(lines) != n or lines[-1] != b"chunk %d" % (n - 1):
                resp.failure(f"{resp.status_code}, {len(lines)} of {n} chunks")


class SlowUser(TargetUser):
    """Slow endpoints: /delay/<ms> holds a request open (cooperatively) for 50-500 ms."""

    weight = 2

    @task
    def delay(self) -> None:
        ms = random.choice([50, 200, 500])
        with self.client.get(f"/delay/{ms}", name=f"/delay/{ms}", catch_response=True) as resp:
            if resp.status_code != 200 or resp.content != b"slept %d ms\n" % ms:
                resp.failure(f"unexpected {resp.status_code} {resp.content[:40]!r}")


class ErrorStatusUser(TargetUser):
    """Error statuses on purpose: /status/<4xx|5xx> succeeds when that very status comes back."""

    weight = 1
    CODES = [400, 401, 403, 404, 409, 418, 429, 500, 502, 503]

    @task
    def status(self) -> None:
        code = random.choice(self.CODES)
        with self.client.get(f"/status/{code}", name="/status/[4xx|5xx]",
                             catch_response=True) as resp:
            if resp.status_code == code and (resp.content or b"").startswith(b"%d " % code):
                resp.success()
            else:
                resp.failure(f"asked for {code}, got {resp.status_code}")


# -- thresholds ---------------------------------------------------------------------------------


def threshold_failures(total) -> list[str]:
    """The thresholds ``total`` (a locust StatsEntry: stats.total) crosses, as reasons."""
    reasons = []
    if total.num_requests < MIN_REQUESTS:
        reasons.append(f"only {total.num_requests} requests (minimum {MIN_REQUESTS})")
    if total.fail_ratio > MAX_ERROR_RATIO:
        reasons.append(f"error ratio {total.fail_ratio:.4f} > {MAX_ERROR_RATIO} "
                       f"({total.num_failures} of {total.num_requests})")
    p95 = total.get_response_time_percentile(0.95) if total.num_requests else 0
    if p95 > MAX_P95_MS:
        reasons.append(f"p95 {p95:.0f} ms > {MAX_P95_MS} ms")
    return reasons


@events.quitting.add_listener
def enforce_thresholds(environment, **_kwargs) -> None:
    """Exit 1 when a threshold is crossed or user code raised; 0 when all is within bounds
    (a few failed requests below MAX_ERROR_RATIO are tolerated)."""
    reasons = threshold_failures(environment.stats.total)
    runner = environment.runner
    if runner is not None and runner.exceptions:
        reasons.append(f"{len(runner.exceptions)} distinct exceptions in user code")
    for reason in reasons:
        print(f"THRESHOLD CROSSED: {reason}")
    if reasons:
        environment.process_exit_code = 1
    elif environment.process_exit_code is None and not locust_log.unhandled_greenlet_exception:
        print(f"thresholds met: error ratio <= {MAX_ERROR_RATIO}, p95 <= {MAX_P95_MS} ms, "
              f">= {MIN_REQUESTS} requests")
        environment.process_exit_code = 0


@events.quitting.add_listener
def write_final_csv(environment, **_kwargs) -> None:
    """Rewrite PREFIX_stats.csv from the final stats: locust writes it once a second, so its
    last periodic write misses the last second of the run (locust issue #2299)."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        with open(f"{prefix}_stats.csv", "w", newline="", encoding="utf-8") as f:
            StatsCSV(environment, PERCENTILES_TO_REPORT).requests_csv(csv.writer(f))


@events.test_stop.add_listener
def print_server_statistics(environment, **_kwargs) -> None:
    """Show what the server itself counted (its /stats endpoint), for the record."""
    if not environment.host:
        return
    try:
        with urllib.request.urlopen(environment.host.rstrip("/") + "/stats", timeout=5) as resp:
            print("server /stats:", resp.read().decode().strip())
    except OSError as exc:
        log.warning("could not read the server's /stats: %s", exc)
