"""Django on PostgreSQL under ``greenserve --patch --workers 2``: the admin and a view making
three queries (one waiting in the server), 200 clients at once, with Django's per-request
connections (``CONN_MAX_AGE`` 0, its default, with ``CONN_HEALTH_CHECKS``) and with Django's
connection pool (Django >= 5.1 on psycopg 3). Under the patch each request's greenlet has its
own ``threading.local``, hence its own database connection; the test checks that every one is
given back afterwards: closed (``pg_stat_activity`` back to where it started) or idle in the
pool, none left in a transaction.

Persistent connections (``CONN_MAX_AGE`` > 0) are not reused between requests under the patch,
as under any server with a thread per request: the README says so and points to the pool.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from conftest import wait_until

pytest.importorskip("django")
psycopg2 = pytest.importorskip("psycopg2")
requests = pytest.importorskip("requests")

APPS = Path(__file__).resolve().parent / "apps"
APP = "djangoproj.wsgi:application"
USER, PASSWORD = "admin", "a-long-enough-password-7"
CLIENTS = 200
WAIT = 0.5  # seconds each /queries/ request waits in the server
# One at a time on two workers, the 100 waiting requests alone would take 100 * WAIT / 2 = 25 s.
LIMIT = 12.0


def _backends(port: int, database: str) -> int:
    with psycopg2.connect(host="127.0.0.1", port=port, user="postgres",
                          dbname="postgres") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,))
        return int(cur.fetchone()[0])


def _new_database(port: int, name: str) -> None:
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
            cur.execute(f"CREATE DATABASE {name}")
    finally:
        conn.close()


def _states(port: int, database: str) -> List[str]:
    with psycopg2.connect(host="127.0.0.1", port=port, user="postgres",
                          dbname="postgres") as conn, conn.cursor() as cur:
        cur.execute("SELECT state FROM pg_stat_activity WHERE datname = %s", (database,))
        return [row[0] for row in cur.fetchall()]


POOL_SIZE = 40  # per worker, as settings.py says


@pytest.fixture(params=["per_request", "pooled"])
def site(request: Any, postgres: Any, run: Any, tmp_path: Path) -> Iterator[Tuple[Any, Dict]]:
    if request.param == "pooled":
        import django

        if django.VERSION < (5, 1):
            pytest.skip("Django's connection pool came with Django 5.1")
        pytest.importorskip("psycopg_pool", reason="psycopg[pool] is a test dependency")
    database = f"djangoproj_{request.param}"
    _new_database(postgres.port, database)
    (tmp_path / "media").mkdir()
    (tmp_path / "tmp").mkdir()
    env = {"PYTHONPATH": str(APPS), "DJANGO_SETTINGS_MODULE": "djangoproj.settings",
           "DJANGOPROJ_DATA": str(tmp_path), "DJANGOPROJ_PG_PORT": str(postgres.port),
           "DJANGOPROJ_PG_NAME": database}
    if request.param == "pooled":
        env["DJANGOPROJ_PG_POOL"] = "1"
    for command in (["migrate", "--noinput", "-v", "0"],
                    ["createsuperuser", "--noinput", "--username", USER, "--email", "admin@example.com"]):
        done = subprocess.run([sys.executable, "-m", "django", *command], cwd=APPS,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD})
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert wait_until(lambda: _backends(postgres.port, database) == 0, timeout=10)
    proc = run(APP, "--bind", "127.0.0.1:0", "--workers", "2", "--patch", env=env, cwd=APPS)
    proc.url()
    yield proc, {"port": postgres.port, "database": database, "pooled": request.param == "pooled"}
    assert not proc.tracebacks(), proc.stderr


def _logged_in(url: str) -> requests.Session:
    session = requests.Session()
    page = session.get(url + "/admin/login/?next=/admin/", timeout=30)
    token = page.text.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    reply = session.post(url + "/admin/login/?next=/admin/", allow_redirects=False, timeout=30,
                         data={"csrfmiddlewaretoken": token, "username": USER,
                               "password": PASSWORD, "next": "/admin/"},
                         headers={"Referer": url + "/admin/login/"})
    assert reply.status_code == 302, reply.text[:500]
    return session


def test_admin_and_queries_under_200_clients_leak_no_connection(site):
    proc, db = site
    url = proc.url().rstrip("/")
    cookies = _logged_in(url).cookies

    def client(i: int) -> Tuple[int, str]:
        if i % 2:
            reply = requests.get(f"{url}/queries/?wait={WAIT}", timeout=60)
            return reply.status_code, reply.text
        reply = requests.get(url + "/admin/auth/user/", cookies=cookies, timeout=60)
        return reply.status_code, "admin" if f"<strong>{USER}</strong>" in reply.text else ""

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        started = time.monotonic()
        answers: List[Tuple[int, str]] = list(pool.map(client, range(CLIENTS)))
        elapsed = time.monotonic() - started
    assert [status for status, _ in answers] == [200] * CLIENTS, answers[:3]
    assert all(text == "admin" for status, text in answers[::2])
    counts = [requests.compat.json.loads(text) for _, text in answers[1::2]]
    assert all(c["users"] == 1 and c["sessions"] >= 1 for c in counts)
    assert len({c["backend"] for c in counts}) > 20  # many requests in the database at once
    assert elapsed < LIMIT, f"{CLIENTS} clients took {elapsed:.1f} s"
    if db["pooled"]:  # the pools keep theirs open, all idle: none left in a transaction
        assert wait_until(lambda: set(_states(db["port"], db["database"])) == {"idle"},
                          timeout=15), _states(db["port"], db["database"])
        assert len(_states(db["port"], db["database"])) <= 2 * POOL_SIZE
    else:  # every request's connection is closed once it is done: nothing stays behind
        assert wait_until(lambda: _backends(db["port"], db["database"]) == 0, timeout=15), (
            f"{_backends(db['port'], db['database'])} connections left open")
