"""--preload: the app is imported once, in the supervisor, before any worker; an app that cannot
be imported stops the server before any worker starts."""

from __future__ import annotations

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

