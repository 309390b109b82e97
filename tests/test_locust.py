"""The locust load test's own pieces, quickly: the runner script's command line, that locust's
side never imports greenserve, and the threshold verdict. The load test itself runs in CI as
``python loadtests/run_locust.py`` (see loadtests/README.md)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
RUNNER = ROOT / "loadtests" / "run_locust.py"


def imported_modules(path: Path) -> set:
    """Top-level names of every module a file imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def load_runner():
    spec = importlib.util.spec_from_file_location("run_locust", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_locustfile_never_imports_greenserve():
    names = imported_modules(LOCUSTFILE)
    assert "locust" in names            # the checker sees imports at all
    assert "greenserve" not in names


def test_runner_is_stdlib_only():
    names = imported_modules(RUNNER)
    assert not names & {"greenserve", "locust", "gevent", "requests"}
    if hasattr(sys, "stdlib_module_names"):     # Python 3.10+
        assert names <= set(sys.stdlib_module_names) | {"__future__"}


def test_runner_help():
    proc = subprocess.run([sys.executable, str(RUNNER), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--time", "--users", "--spawn-rate", "--results"):
        assert flag in proc.stdout


def test_runner_rejects_a_bad_run_time():
    proc = subprocess.run([sys.executable, str(RUNNER), "--time", "20x"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "not a run time" in proc.stderr


@pytest.mark.parametrize("text, seconds", [("20s", 20), ("45", 45), ("1m30s", 90), ("2h", 7200),
                                           ("1h1m1s", 3661)])
def test_parse_duration(text, seconds):
    assert load_runner().parse_duration(text) == seconds


def test_locust_command_has_the_reports_and_the_extra_arguments(tmp_path):
    runner = load_runner()
    args = runner.build_parser().parse_args(["--results", str(tmp_path), "-u", "7"])
    command = runner.locust_command(args, "http://127.0.0.1:1", ["--loglevel", "DEBUG"])
    assert command[1:3] == ["-m", "locust"]
    assert "--headless" in command
    assert command[command.index("-u") + 1] == "7"
    assert command[command.index("-t") + 1] == "20s"
    assert command[command.index("--csv") + 1] == str(tmp_path / "locust")
    assert command[command.index("--html") + 1] == str(tmp_path / "locust.html")
    assert command[-2:] == ["--loglevel", "DEBUG"]


def test_threshold_verdict():
    """In a subprocess: importing locust monkey-patches the stdlib with gevent."""
    if importlib.util.find_spec("locust") is None:   # never import it here
        pytest.skip("locust is not installed (pip install -r loadtests/requirements-locust.txt)")
    script = textwrap.dedent(f"""
        import importlib.util, types
        spec = importlib.util.spec_from_file_location("locustfile", {str(LOCUSTFILE)!r})
        lf = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(lf)

        def total(requests, failures, p95):
            return types.SimpleNamespace(
                num_requests=requests, num_failures=failures,
                fail_ratio=failures / requests if requests else 0.0,
                get_response_time_percentile=lambda percent: p95)

        assert lf.threshold_failures(total(10_000, 0, 20)) == []
        assert lf.threshold_failures(total(10_000, 100, 20)) == []     # exactly at the ratio
        reasons = lf.threshold_failures(total(10_000, 101, lf.MAX_P95_MS + 1))
        assert len(reasons) == 2, reasons
        assert "error ratio" in reasons[0] and "p95" in reasons[1], reasons
        assert "only 0 requests" in lf.threshold_failures(total(0, 0, 0))[0]
        assert 0 < lf.MAX_ERROR_RATIO < 0.5 and lf.MAX_P95_MS > 0
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_the_websocket_locustfile_never_imports_greenserve():
    names = imported_modules(ROOT / "loadtests" / "locust_websocket.py")
    assert "locust" in names and "greenserve" not in names
