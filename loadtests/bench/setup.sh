#!/usr/bin/env bash
# Installs what loadtests/bench/run.py needs. Idempotent: a second run only checks.
#
#   bash loadtests/bench/setup.sh
#
# Environment:
#   GS_BENCH_VENV      venv with the peers and greenserve   (default /tmp/gs-bench-venv)
#   GS_MEINHELD_VENV   venv for meinheld                    (default /tmp/gs-meinheld-venv)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${GS_BENCH_VENV:-/tmp/gs-bench-venv}"
MVENV="${GS_MEINHELD_VENV:-/tmp/gs-meinheld-venv}"

# --- Debian packages: wrk (load generator), libev-dev (bjoern builds against it), nginx (ceiling);
# PostgreSQL for scenario (k) below
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
dpkg -s libev-dev >/dev/null 2>&1 || need+=(libev-dev)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y "${need[@]}"; then
        apt-get update
        apt-get install -y "${need[@]}"
    fi
fi
# the Debian nginx package starts a system nginx on port 80; the benchmark runs its own
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl stop nginx || true
fi

# --- main venv: peers + greenserve (editable, so it is the working tree being measured)
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
# (gunicorn's gevent worker imports packaging, which gunicorn does not declare)
if ! "$VENV/bin/python" -c 'import gevent, waitress, gunicorn.workers.ggevent, bjoern, granian, greenlet, greenserve' 2>/dev/null; then
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install gevent waitress gunicorn packaging bjoern granian greenlet
    "$VENV/bin/pip" install -e "$REPO"
fi
# scenario (k), an app on PostgreSQL: Flask, SQLAlchemy, psycopg2 and psycogreen (psycopg2's
# wait callback for gevent); the PostgreSQL server itself is Debian's (tests/dbservers.py)
if ! "$VENV/bin/python" -c 'import flask, sqlalchemy, psycopg2, psycogreen.gevent' 2>/dev/null; then
    "$VENV/bin/pip" install flask sqlalchemy psycopg2-binary psycogreen
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || ! command -v psql >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y postgresql || { apt-get update && apt-get install -y postgresql; }
fi

# --- meinheld venv. meinheld 1.0.2 (its last release) pins greenlet<0.5, which does not build on
# Python 3.11, and its C code reads greenlet 0.4's object layout directly (wrong with greenlet 3:
# its cooperative socket crashes). greenlet 1.1.3 keeps the 0.4 layout and has a cp311 wheel,
# so: that greenlet, then meinheld without its dependency pin.
[[ -x "$MVENV/bin/python" ]] || python3 -m venv "$MVENV"
if ! "$MVENV/bin/python" -c 'import meinheld, greenlet; assert greenlet.__version__ == "1.1.3"' 2>/dev/null; then
    "$MVENV/bin/pip" install greenlet==1.1.3
    "$MVENV/bin/pip" install --no-deps meinheld==1.0.2
fi

for py in "$VENV/bin/python" "$MVENV/bin/python"; do
    (cd / && "$py" -) <<'PY'
import importlib.metadata as md, sys
for name in ("greenserve", "gevent", "waitress", "gunicorn", "bjoern", "granian", "meinheld", "greenlet",
             "flask", "sqlalchemy", "psycopg2-binary", "psycogreen"):
    try:
        print(f"  {sys.prefix}: {name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
PY
done
echo "bench ready: $VENV, $MVENV; wrk=$(command -v wrk) nginx=$(command -v nginx)"
