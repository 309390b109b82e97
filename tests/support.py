"""Helpers that test modules of several folders share: requests to a server process and what
its workers say, a metrics scrape, the access-log format. (Shared fixtures are in conftest.)"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from typing import Dict, Optional, Tuple
from urllib.parse import urlsplit

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_until


def lines_of(path, count):
    assert wait_until(lambda: path.exists() and len(path.read_text("utf-8").splitlines())
                      >= count)
    return path.read_text("utf-8").splitlines()


COMBINED = re.compile(
    r'(?P<host>\S+) - - \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\x[0-9a-f]{2})*)" '
    r'(?P<status>\d{3}|-) (?P<bytes>\d+|-) "(?P<referer>(?:[^"\\]|\\x[0-9a-f]{2})*)" '
    r'"(?P<agent>(?:[^"\\]|\\x[0-9a-f]{2})*)"')


def scrape(url):
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    """The value of one sample. Raises KeyError if the scrape has no such sample."""
    return samples[(name, tuple(sorted(labels.items())))]


def counted(samples, name, **labels):
    """For samples that are absent until counted once (a status code not seen yet): 0 then."""
    return samples.get((name, tuple(sorted(labels.items()))), 0)


APP = "tests.procapps:app"


def fetch(url: str, path: str = "/", timeout: float = 10.0) -> Tuple[int, Dict[str, str], bytes]:
    """One request on a new connection: (status, headers, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def who(url: str, path: str = "/") -> dict:
    status, _, body = fetch(url, path)
    assert status == 200, body
    return json.loads(body)


def workers_seen(url: str, count: int, timeout: float = 20.0,
                 exclude: Tuple[int, ...] = ()) -> Dict[int, int]:
    """Ask until ``count`` different worker pids (not in ``exclude``) have answered: index -> pid."""
    found: Dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        answer = who(url)
        if answer["pid"] not in exclude:
            found[answer["index"]] = answer["pid"]
    assert len(found) >= count, f"only {found} answered"
    return found


def refused(url: str) -> bool:
    """Whether nothing listens at ``url`` any more. A reset during the connect counts: the
    listener closed with the connection still in its queue (seen when it closes just then)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return False
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def start_supervisor(run, *args: str, env: Optional[dict] = None, app: str = APP,
                     workers: int = 2):
    proc = run(app, "--bind", "127.0.0.1:0", "--workers", str(workers), *args, env=env)
    url = proc.url()
    proc.wait_for(re.compile(r"all \d+ workers are ready"))
    return proc, url
