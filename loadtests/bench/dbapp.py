"""Scenario (k): a Flask endpoint reading PostgreSQL through SQLAlchemy and psycopg2.

Imported on first use of ``bench.apps:dbapp`` (so the other apps need none of Flask,
SQLAlchemy or psycopg2). ``GET /`` takes a connection from the engine's pool, runs

    SELECT pg_sleep(0.005), name FROM items WHERE id = :id      -- id random in 1..BENCH_PG_ROWS

(one short query that also waits 5 ms in the server, as a real query waits on disk, locks or
other sessions), gives the connection back and answers JSON ``{"id": ..., "name": ...}``.

The pool is the same under every server: ``pool_size=20, max_overflow=0`` (at most 20 queries
at once; a request beyond that waits in the pool's queue, up to pool_timeout, 30 s). The
database is 127.0.0.1:$BENCH_PG_PORT, user and database ``postgres`` (database.py).

How psycopg2 waits, per server (the response header X-Bench-Path names the wait callback in
force, and run.py keeps it from the smoke request of each sample):
  greenserve --patch       greenserve.patch hooks psycopg2's wait callback before this module
                           is imported (greenserve.patch.copsycopg): a query suspends only its
                           request's greenlet
  gevent (launch.py) and   the server monkey-patches before importing the app; psycopg2 is a C
  gunicorn -k gevent       extension that the monkey-patch does not reach, so this module calls
                           psycogreen.gevent.patch_psycopg() when it finds gevent's patched
                           socket (the one place that covers both gevent servers)
  threaded servers         no callback: psycopg2 blocks its thread and releases the GIL
"""

import json
import os
import random
import sys


def _gevent_patched():
    monkey = sys.modules.get("gevent.monkey")  # never import gevent where it is not in use
    return monkey is not None and monkey.is_module_patched("socket")


if _gevent_patched():
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()

import psycopg2.extensions  # noqa: E402
from flask import Flask, Response  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
ROWS = int(os.environ.get("BENCH_PG_ROWS", "10000"))
POOL_SIZE = 20
QUERY = text("SELECT pg_sleep(0.005), name FROM items WHERE id = :id")

engine = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{PORT}/postgres",
                       pool_size=POOL_SIZE, max_overflow=0)

_callback = psycopg2.extensions.get_wait_callback()
WAIT_PATH = f"{_callback.__module__}.{_callback.__name__}" if _callback else "blocking"

app = Flask(__name__)


@app.get("/")
def item():
    item_id = random.randint(1, ROWS)
    with engine.connect() as conn:
        name = conn.execute(QUERY, {"id": item_id}).one()[1]
    return Response(json.dumps({"id": item_id, "name": name}), mimetype="application/json",
                    headers={"X-Bench-Path": WAIT_PATH})
