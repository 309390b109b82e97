"""The PostgreSQL server of scenario (k), one for the whole run (stdlib only).

``start(rows)`` starts Debian's PostgreSQL through ``tests/dbservers.py`` (a fresh cluster in a
temporary folder on a free port of 127.0.0.1; user and database ``postgres``, trust auth; run
as the ``postgres`` user when we are root), fills the table the app reads with ``psql``, and
returns the server (``.port``, ``.stop()``). The server inherits the CPU affinity of the
process that starts it: run.py starts it after pinning itself to the client core, so
PostgreSQL and every backend it forks run there, never on the servers' core.

    items(id integer primary key, name text)   -- ids 1..rows, names 'item <id>'
"""

import glob
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests")

TABLE_SQL = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, {rows}) AS g;
ANALYZE items;
"""


def _dbservers():
    if TESTS not in sys.path:
        sys.path.insert(0, TESTS)
    import dbservers

    return dbservers


def psql_binary():
    found = shutil.which("psql") or (sorted(glob.glob("/usr/lib/postgresql/*/bin/psql")) or [None])[-1]
    if found is None:
        raise RuntimeError("psql is not installed (bash loadtests/bench/setup.sh)")
    return found


def available():
    """None when a PostgreSQL server can be started here, else the reason."""
    if not glob.glob("/usr/lib/postgresql/*/bin/postgres"):
        return "PostgreSQL is not installed (bash loadtests/bench/setup.sh)"
    try:
        psql_binary()
    except RuntimeError as e:
        return str(e)
    return None


def psql(port, sql):
    subprocess.run([psql_binary(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                    "-p", str(port), "-U", "postgres", "-d", "postgres", "-c", sql],
                   check=True, capture_output=True, text=True, timeout=120)


def start(rows):
    server = _dbservers().start_postgres()
    try:
        psql(server.port, TABLE_SQL.format(rows=int(rows)))
    except BaseException:
        server.stop()
        raise
    return server


def cpus_of(pid):
    """The CPU list a process may run on (from /proc), for the record."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
