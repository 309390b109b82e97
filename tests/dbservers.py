"""Real database servers for the tests: PostgreSQL and MariaDB from Debian's packages, each
started in a temporary folder on a free port of 127.0.0.1 and stopped afterwards.

Both refuse to run as root, so as root each runs as its own system user (``postgres``,
``mysql``: the Debian packages make them). Where a server is not installed, ``start_*`` raises
``Unavailable`` with the reason, which the fixtures turn into a skip (``.ci/run`` installs both).
Trust / no-grant authentication: nothing here is reachable from outside the machine.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Callable, List, Optional

MAX_CONNECTIONS = 500  # the tests open 200 at once, twice over (two drivers, two workers)


class Unavailable(Exception):
    """The server cannot be had on this machine (the message says why)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class DatabaseServer:
    """One running server: ``port``, ``stop()``, and the folder it lives in."""

    def __init__(self, name: str, command: List[str], folder: str, port: int,
                 user: Optional[str], ready: Callable[[], bool],
                 stop_signal: int = signal.SIGTERM) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.port = port
        self.folder = folder
        self.log = open(os.path.join(folder, "server.log"), "wb")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=_become(user), cwd=folder)
        deadline = time.monotonic() + 60
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start on port {port}:\n{self.tail()}")
            time.sleep(0.05)  # polling the server's port with a deadline

    def tail(self) -> str:
        with open(os.path.join(self.folder, "server.log"), "rb") as log:
            return log.read()[-3000:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _become(user: Optional[str]) -> Optional[Callable[[], None]]:
    if user is None:
        return None
    entry = pwd.getpwnam(user)

    def switch() -> None:
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return switch


def _run_as() -> Callable[[str], Optional[str]]:
    """Which user to run a server as: its system user when we are root, else ourselves."""
    def user(name: str) -> Optional[str]:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise Unavailable(f"running as root and there is no '{name}' user to run the server")
        return name
    return user


def _folder(owner: Optional[str]) -> str:
    folder = tempfile.mkdtemp(prefix="greenserve-db-")
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    return folder


def _prepare(folder: str, command: List[str], user: Optional[str], become: bool) -> None:
    """Run a server's set-up command (its data folder); on failure remove the folder and
    raise Unavailable with what it printed."""
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          preexec_fn=_become(user) if become else None, cwd=folder)
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise Unavailable(f"{os.path.basename(command[0])} failed: "
                          f"{done.stderr.decode(errors='replace')[-500:]}")


def start_postgres() -> DatabaseServer:
    """PostgreSQL with a fresh cluster (user ``postgres``, database ``postgres``, trust auth)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise Unavailable("PostgreSQL is not installed (apt-get install postgresql; .ci/run "
                          "installs it)")
    bin_dir = os.path.dirname(found[-1])
    user = _run_as()("postgres")
    folder = _folder(user)
    data = os.path.join(folder, "data")
    _prepare(folder, [os.path.join(bin_dir, "initdb"), "-D", data, "-U", "postgres", "-A",
                      "trust", "-E", "UTF8", "--no-sync"], user, become=True)
    port = free_port()
    command = [os.path.join(bin_dir, "postgres"), "-D", data, "-p", str(port),
               "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={folder}",
               "-c", f"max_connections={MAX_CONNECTIONS}", "-c", "fsync=off",
               "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
               "-c", "shared_buffers=32MB"]
    # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave.
    return DatabaseServer("PostgreSQL", command, folder, port, user, lambda: _answers(port),
                          stop_signal=signal.SIGINT)


def start_mariadb() -> DatabaseServer:
    """MariaDB with a fresh data folder, grant tables off (any user, no password)."""
    server = shutil.which("mariadbd") or shutil.which("mysqld", path="/usr/sbin:/usr/bin")
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if server is None or install is None:
        raise Unavailable("MariaDB is not installed (apt-get install mariadb-server; .ci/run "
                          "installs it)")
    user = _run_as()("mysql")
    folder = _folder(user)
    data = os.path.join(folder, "data")
    _prepare(folder, [install, "--no-defaults", f"--datadir={data}",
                      "--auth-root-authentication-method=normal", "--skip-test-db"]
             + ([f"--user={user}"] if user else []), user, become=False)
    port = free_port()
    command = [server, "--no-defaults", f"--datadir={data}", f"--port={port}",
               "--bind-address=127.0.0.1", f"--socket={folder}/mysqld.sock",
               f"--pid-file={folder}/mysqld.pid", "--skip-grant-tables",
               f"--max-connections={MAX_CONNECTIONS}", "--innodb-buffer-pool-size=32M",
               "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0"]
    return DatabaseServer("MariaDB", command, folder, port, user, lambda: _answers(port))
