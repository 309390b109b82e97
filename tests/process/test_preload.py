"""--preload: the app is imported once, in the supervisor, before any worker; an app that cannot
be imported stops the server before any worker starts; SIGHUP forks new workers from the app
already imported (and applies the configuration read again)."""

from __future__ import annotations

import re
import signal

from conftest import run_to_end
from support import APP, who, workers_seen


def test_preload_imports_the_app_once_in_the_supervisor(run):
    proc = run(APP, "--bind", "127.0.0.1:0", "--workers", "2", "--preload")
    url = proc.url()
    seen = workers_seen(url, 2)
    assert proc.pid not in seen.values()
    for _ in range(6):
        assert who(url)["imported_in"] == proc.pid
    assert proc.stop() == 0


def test_without_preload_each_worker_imports_the_app(run):
    proc = run(APP, "--bind", "127.0.0.1:0", "--workers", "2")
    url = proc.url()
    for _ in range(6):
        answer = who(url)
        assert answer["imported_in"] == answer["pid"] != proc.pid
    assert proc.stop() == 0


def test_preload_import_error_stops_before_any_worker(tmp_path):
    done = run_to_end("no_such_module:app", "--bind", "127.0.0.1:0", "--workers", "2",
                      "--preload")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("greenserve: error: cannot import 'no_such_module'")


def test_preload_cannot_be_combined_with_reload():
    done = run_to_end(APP, "--bind", "127.0.0.1:0", "--preload", "--reload")
    assert done.returncode == 2
    assert done.stderr.strip() == ("greenserve: error: --preload: cannot be combined with "
                                   "reload, whose workers each import the app anew")


def test_sighup_with_preload_forks_the_imported_app_with_the_new_config(run, tmp_path):
    conf = tmp_path / "greenserve.toml"
    conf.write_text('workers = 2\nroot_path = "/v1"\n')
    proc = run(APP, "--bind", "127.0.0.1:0", "--config", str(conf), "--preload")
    url = proc.url()
    proc.wait_for(re.compile(r"all 2 workers are ready"))
    conf.write_text('workers = 1\nroot_path = "/v2"\n')
    proc.send(signal.SIGHUP)
    proc.wait_for(re.compile(r"SIGHUP with --preload: the new workers are forked from the app "
                             r"imported at start"))
    proc.wait_for(re.compile(r"reload done: generation 1 serves"), timeout=30)
    proc.wait_for(re.compile(r"worker \d \(pid \d+\) exited with status 0"), count=2)
    answers = [who(url) for _ in range(6)]
    assert {a["index"] for a in answers} == {0} and {a["generation"] for a in answers} == {1}
    assert {a["script_name"] for a in answers} == {"/v2"}
    assert {a["imported_in"] for a in answers} == {proc.pid}  # not imported again
    assert proc.stop() == 0
