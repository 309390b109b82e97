"""The pre-fork supervisor, run as a real process tree and driven with real signals: workers
serve, die and come back, drain, reload under load, grow and shrink, recycle and time out."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from typing import Dict, List, Tuple
from urllib.parse import urlsplit

import pytest

from conftest import Reader, wait_until
from support import APP, fetch, refused, start_supervisor, who, workers_seen
from greenserve.process.pool import Pool, WorkerProc, lowest_free, respawn_delay
from greenserve.process.worker import WorkerInfo

READY = re.compile(r"worker (\d+) \(pid (\d+)\) is ready")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- policies -----------------------------------------------------------------------------------


def test_respawn_delay_grows_and_is_capped():
    delays = [respawn_delay(n) for n in range(1, 12)]
    assert delays[0] == 0.0  # the first death in a while: replaced at once
    assert delays[1:5] == [0.5, 1.0, 2.0, 4.0]
    assert all(a <= b for a, b in zip(delays, delays[1:]))
    assert delays[-1] == 30.0


def test_lowest_free_index():
    assert lowest_free(set()) == 0
    assert lowest_free({0, 1, 3}) == 2
    assert lowest_free({1, 2}) == 0


def test_max_requests_jitter_spreads_the_limits():
    from greenserve.config.options import Config
    from greenserve.serving.server import Server
    from greenserve.process.worker import _Channel, _Heartbeat

    config = Config(max_requests=100, max_requests_jitter=50)
    server = Server(who, config.one_process())
    try:
        limits = [_Heartbeat(server, _Channel(-1), config).limit for _ in range(40)]
    finally:
        server.hub.close()
    assert all(100 <= limit <= 150 for limit in limits) and len(set(limits)) > 5
    plain = Config(max_requests=7)
    server = Server(who, plain.one_process())
    try:
        assert _Heartbeat(server, _Channel(-1), plain).limit == 7
    finally:
        server.hub.close()


def test_pool_indices_back_off_and_readiness():
    pool = Pool(2)
    assert pool.due(0.0) == [0, 1]
    first = pool.workers[100] = WorkerProc(WorkerInfo(0, 0), 100, -1, 0.0)
    pool.workers[101] = WorkerProc(WorkerInfo(1, 0), 101, -1, 0.0)
    assert pool.due(0.0) == [] and not pool.all_ready() and not pool.serving()
    first.ready_at = 1.0
    assert pool.serving() and not pool.all_ready()
    pool.workers[101].ready_at = 1.0
    assert pool.all_ready() and not pool.all_ready(generation=1)
    # deaths in a row at index 0: at once, then 0.5 s, then 1 s; a stable life starts over
    del pool.workers[100]
    assert pool.died(first, 2.0) == 0.0 and pool.due(2.0) == [0]
    assert pool.died(WorkerProc(WorkerInfo(0, 0), 102, -1, 2.0), 3.0) == 0.5
    assert pool.due(3.0) == [] and pool.next_due() == 3.5 and pool.due(3.5) == [0]
    assert pool.died(WorkerProc(WorkerInfo(0, 0), 103, -1, 3.5), 4.0) == 1.0
    steady = WorkerProc(WorkerInfo(0, 0), 104, -1, 5.0)
    steady.ready_at = 5.0
    assert pool.died(steady, 60.0) == 0.0
    # SIGTTIN takes the lowest free index, SIGTTOU the highest, never the last
    assert pool.grow() == 2 and pool.wanted == {0, 1, 2}
    assert pool.shrink() == 2 and pool.shrink() == 1 and pool.shrink() is None
    assert pool.wanted == {0} and pool.grow() == 1
    # indices stay below the capacity (the metrics block has a slot for each)
    assert pool.capacity == 64 and Pool(20).capacity == 80
    while pool.grow() is not None:
        pass
    assert pool.wanted == set(range(64))


# -- serving, dying, coming back ----------------------------------------------------------------


def test_the_listening_line_means_every_worker_is_ready(run):
    """Regression: the supervisor printed "listening on" and then waited a loop tick (0.5 s)
    before it forked, so a client that connected on seeing the line waited for the workers.
    Now the line comes once every first worker has said it is ready."""
    proc = run(APP, "--bind", "127.0.0.1:0", "--workers", "2")
    proc.url()
    lines = proc.stderr.splitlines()
    listening = next(i for i, line in enumerate(lines) if "listening on" in line)
    ready = [i for i, line in enumerate(lines) if READY.search(line)]
    assert len(ready) == 2 and max(ready) < listening, proc.stderr
    status, _, _ = fetch(proc.url(), timeout=5)
    assert status == 200


def test_two_workers_serve_and_a_killed_one_comes_back_with_its_index(run):
    proc, url = start_supervisor(run)
    seen = workers_seen(url, 2)
    assert set(seen) == {0, 1}
    answer = who(url)
    assert answer["multiprocess"] is True and answer["generation"] == 0
    os.kill(seen[1], signal.SIGKILL)
    proc.wait_for(re.compile(rf"worker 1 \(pid {seen[1]}\) was killed by signal 9"))
    replacement = proc.wait_for(READY, count=3)
    assert replacement.group(1) == "1" and int(replacement.group(2)) != seen[1]
    again = workers_seen(url, 2, exclude=(seen[1],))
    assert again == {0: seen[0], 1: int(replacement.group(2))}
    assert proc.stop() == 0
    assert not alive(seen[0]) and not alive(again[1])


def test_a_worker_dying_before_it_is_ready_is_replaced_with_back_off(run):
    proc = run("tests.procdies:app", "--bind", "127.0.0.1:0", "--workers", "1",
               "--max-requests", "100")
    proc.wait_for(re.compile(r"replacing worker 0 in 0\.5 s \(2 deaths in a row\)"))
    proc.wait_for(re.compile(r"replacing worker 0 in 1\.0 s \(3 deaths in a row\)"))
    assert "status 7" in proc.stderr
    proc.send(signal.SIGTERM)
    assert proc.proc.wait(15) == 0


def test_app_that_cannot_be_imported_stops_the_server(run):
    proc = run("no_such_module:app", "--bind", "127.0.0.1:0", "--workers", "2")
    assert proc.proc.wait(20) == 2
    proc.wait_for(re.compile(r"greenserve: error: cannot import 'no_such_module'"))
    assert len(proc.matches(re.compile(r"started worker"))) == 2  # no respawn loop


def test_workers_end_when_the_supervisor_is_killed(run):
    proc, url = start_supervisor(run)
    seen = workers_seen(url, 2)
    proc.proc.kill()
    proc.proc.wait(5)
    assert wait_until(lambda: not any(alive(pid) for pid in seen.values()), timeout=15)


# -- stopping -----------------------------------------------------------------------------------


def slow_requests(url: str, count: int, seconds: float) -> Tuple[List[threading.Thread], list]:
    results: list = []

    def one() -> None:
        try:
            results.append(fetch(url, f"/slow?{seconds}", timeout=30))
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, results


def test_sigterm_under_load_finishes_in_flight_refuses_new_and_exits_0(run):
    proc, url = start_supervisor(run)
    parts = urlsplit(url)
    idle = socket.create_connection((parts.hostname, parts.port), timeout=10)
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    idle_reader = Reader(idle)
    assert idle_reader.read_response().status == 200  # now an idle keep-alive connection
    threads, results = slow_requests(url, 8, 4.0)
    proc.wait_for(re.compile("slow request started"), count=8)
    proc.send(signal.SIGTERM)
    assert wait_until(lambda: refused(url), timeout=10), "listeners still open"
    assert idle_reader.at_eof(5), "the idle keep-alive connection was not closed"
    idle.close()
    assert any(t.is_alive() for t in threads), "refusal came only after the drain"
    for thread in threads:
        thread.join(30)
    assert len(results) == 8
    for result in results:
        assert not isinstance(result, Exception), result
        status, headers, body = result
        assert status == 200 and json.loads(body)["index"] in (0, 1)
        assert headers.get("connection") == "close"
    assert proc.proc.wait(15) == 0
    assert "greenserve stopped" in proc.stderr


@pytest.mark.parametrize("signals", [(signal.SIGQUIT,), (signal.SIGINT, signal.SIGINT)],
                         ids=["SIGQUIT", "second-SIGINT"])
def test_immediate_stop_does_not_wait_for_in_flight(run, signals):
    proc, url = start_supervisor(run, "--graceful-timeout", "60")
    threads, results = slow_requests(url, 2, 60.0)
    proc.wait_for(re.compile("slow request started"), count=2)
    started = time.monotonic()
    for number, sig in enumerate(signals, 1):
        proc.send(sig)  # one at a time: a signal sent while the same one is pending is lost
        proc.wait_for(re.compile(f"supervisor received {sig.name}"), count=number)
    assert proc.proc.wait(15) == 0
    assert time.monotonic() - started < 12
    for thread in threads:
        thread.join(10)
    assert all(isinstance(r, Exception) for r in results), results


# -- reload, grow, shrink -----------------------------------------------------------------------


APP_SOURCE = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"VERSION"]
'''


def write_app(directory, version: str) -> None:
    (directory / "reloadme.py").write_text(APP_SOURCE.replace("VERSION", version))


class Load:
    """Clients that keep sending requests, each on a new connection, and count the outcomes."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url = url
        self.bodies: Dict[bytes, int] = {}
        self.failures: List[str] = []
        self.lock = threading.Lock()
        self.running = True
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _client(self) -> None:
        while self.running:
            try:
                status, _, body = fetch(self.url, timeout=15)
                outcome = body if status == 200 else None
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                outcome, body = None, repr(exc).encode()
            with self.lock:
                if outcome is None:
                    self.failures.append(body.decode())
                else:
                    self.bodies[outcome] = self.bodies.get(outcome, 0) + 1

    def count(self, body: bytes) -> int:
        with self.lock:
            return self.bodies.get(body, 0)

    def stop(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(30)


def test_sighup_under_load_serves_new_code_with_zero_failed_requests(run, tmp_path):
    write_app(tmp_path, "v1")
    env = {"PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    proc, url = start_supervisor(run, env=env, app="reloadme:app")
    load = Load(url)
    try:
        assert wait_until(lambda: load.count(b"v1") >= 20, timeout=20)
        write_app(tmp_path, "v2")
        proc.send(signal.SIGHUP)
        proc.wait_for(re.compile(r"reload done: generation 1 serves"), timeout=30)
        proc.wait_for(re.compile(r"worker \d \(pid \d+\) exited with status 0"), count=2)
        served_v2 = load.count(b"v2")
        assert wait_until(lambda: load.count(b"v2") >= served_v2 + 20, timeout=20)
    finally:
        load.stop()
    assert load.failures == []
    assert who_says(url) == b"v2"
    assert proc.stop() == 0


def who_says(url: str) -> bytes:
    return fetch(url)[2]


def test_failed_reload_keeps_the_running_workers(run, tmp_path):
    write_app(tmp_path, "v1")
    env = {"PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    proc, url = start_supervisor(run, env=env, app="reloadme:app")
    (tmp_path / "reloadme.py").write_text("def app(:\n")
    proc.send(signal.SIGHUP)
    proc.wait_for(re.compile(r"reload failed \(importing 'reloadme' failed: SyntaxError"))
    for _ in range(10):
        assert who_says(url) == b"v1"
    assert proc.proc.poll() is None
    assert proc.stop() == 0


def test_sigttin_adds_the_lowest_free_index_and_sigttou_removes_the_highest(run):
    proc, url = start_supervisor(run)
    proc.send(signal.SIGTTIN)
    third = proc.wait_for(READY, count=3)
    assert third.group(1) == "2"
    assert set(workers_seen(url, 3)) == {0, 1, 2}
    proc.send(signal.SIGTTOU)
    proc.wait_for(re.compile(rf"worker 2 \(pid {third.group(2)}\) exited with status 0"))
    assert wait_until(lambda: not alive(int(third.group(2))))
    proc.send(signal.SIGTTIN)
    assert proc.wait_for(READY, count=4).group(1) == "2"
    assert proc.stop() == 0


# -- heartbeat and recycling --------------------------------------------------------------------


def test_a_stuck_worker_is_aborted_with_its_stack_and_replaced(run):
    proc, url = start_supervisor(run, "--worker-timeout", "1")
    seen = workers_seen(url, 2)
    with pytest.raises(Exception):
        fetch(url, "/stuck?60", timeout=20)  # the worker dies under this request
    stuck = int(proc.wait_for(re.compile(r"blocking the loop in (\d+)")).group(1))
    proc.wait_for(re.compile(rf"\(pid {stuck}\) is stuck: its event loop has not turned"))
    proc.wait_for(re.compile(rf"\(pid {stuck}\) was killed by signal {int(signal.SIGABRT)}"))
    assert re.search(r'File ".*procapps\.py", line \d+ in stuck_in_c', proc.stderr)
    proc.wait_for(READY, count=3)
    assert stuck not in workers_seen(url, 2, exclude=(stuck,)).values()
    assert stuck in seen.values()
    assert proc.stop() == 0


def test_max_requests_recycles_workers_without_failed_requests(run):
    proc, url = start_supervisor(run, "--max-requests", "10", "--max-requests-jitter", "3")
    pids = set()
    deadline = time.monotonic() + 30
    while len(pids) < 4 and time.monotonic() < deadline:
        pids.add(who(url)["pid"])  # fails the test on any failed request
    assert len(pids) >= 4
    proc.wait_for(re.compile(r"is recycling itself \(--max-requests\)"), count=2)
    assert proc.stop() == 0


def test_one_worker_with_max_requests_runs_the_supervisor(run):
    proc, url = start_supervisor(run, "--max-requests", "5", workers=1)
    first = who(url)
    assert first["index"] == 0 and first["multiprocess"] is True
    assert wait_until(lambda: who(url)["pid"] != first["pid"], timeout=20)
    assert proc.stop() == 0


def test_in_process_mode_has_no_worker_and_ignores_sighup(run):
    proc = run(APP, "--bind", "127.0.0.1:0")
    url = proc.url()
    answer = who(url)
    assert answer["index"] is None and answer["pid"] == proc.pid
    assert answer["multiprocess"] is False
    proc.send(signal.SIGHUP)
    proc.wait_for(re.compile(r"SIGHUP ignored: it needs the supervisor"))
    assert who(url)["pid"] == proc.pid
    proc.send(signal.SIGQUIT)
    assert proc.proc.wait(10) == 0


def test_reload_option_restarts_the_workers_when_a_source_file_changes(run, tmp_path):
    write_app(tmp_path, "v1")
    env = {"PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    proc, url = start_supervisor(run, "--reload", env=env, app="reloadme:app", workers=1)
    assert who_says(url) == b"v1"
    source = tmp_path / "reloadme.py"
    write_app(tmp_path, "v2")
    stamp = source.stat().st_mtime + 2  # as an editor saving a little later would leave it
    os.utime(source, (stamp, stamp))
    proc.wait_for(re.compile(r"reloadme\.py changed: reloading"))
    assert wait_until(lambda: who_says(url) == b"v2", timeout=20)
    assert proc.stop() == 0


def test_a_refused_fork_is_tried_again_later(monkeypatch):
    """fork() failing (EAGAIN: out of processes) cannot be provoked for root, so it is faked."""
    import errno

    from greenserve.config.options import Config
    from greenserve.serving.sockets import BoundSockets
    from greenserve.process.supervisor import Supervisor
    from greenserve.serving.systemd import Notifier

    supervisor = Supervisor(Config(workers=2), lambda: who, BoundSockets(), Notifier({}))

    def refuse() -> int:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    try:
        before = time.monotonic()
        assert supervisor._spawn(1) is False
        assert not supervisor.workers
        assert supervisor.pool.respawn_at[1] >= before + 1.0
        assert supervisor.pool.due(before) == [0]  # index 1 waits for its second
    finally:
        supervisor._close()


def test_ctrl_c_in_a_terminal_drains_once(run):
    """A terminal sends SIGINT to the whole process group: the workers leave it to the
    supervisor, which drains them once; an in-flight request still completes."""
    proc, url = start_supervisor(run)
    threads, results = slow_requests(url, 2, 2.0)
    proc.wait_for(re.compile("slow request started"), count=2)
    os.killpg(proc.pid, signal.SIGINT)
    for thread in threads:
        thread.join(20)
    assert [r[0] for r in results] == [200, 200], results
    assert proc.proc.wait(15) == 0
    assert len(proc.matches(re.compile(r"exited with status 0"))) == 2
    assert "supervisor received SIGQUIT" not in proc.stderr
