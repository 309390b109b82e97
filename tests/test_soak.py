"""The soak script (loadtests/soak/run.py): a short run in the default suite (a few seconds:
the script works, every response is checked and none is lost), a longer one under -m slow
(200,000 requests; RSS and fds flat within 5% after warm-up). The million-request run is made
by hand; its report is loadtests/soak/REPORT.md."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = ROOT / "loadtests" / "soak" / "run.py"


def soak(tmp_path, *args: str, timeout: float) -> str:
    report = tmp_path / "soak.md"
    result = subprocess.run([sys.executable, str(SCRIPT), *args, "--report", str(report)],
                            cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    text = report.read_text() if report.exists() else ""
    assert result.returncode == 0, result.stdout + result.stderr + text
    return text


def test_a_short_soak_loses_nothing(tmp_path):
    text = soak(tmp_path, "--requests", "3000", "--clients", "2", "--interval", "0.25",
                "--warmup", "0.5", "--duration", "60", "--no-pin", timeout=90)
    assert "**PASS**: 3,000 requests checked" in text and ", 0 lost or wrong;" in text
    assert "0 tracebacks" in text
    for kind in ("hello", "new-connection", "upload", "upload-chunked", "stream", "download"):
        assert re.search(rf"\| {kind} \| [1-9][\d,]* \|", text), kind
    assert len(re.findall(r"^\| \d+ \| [\d,]+ \| [\d.]+ \| \d+ \| `#+` \|$", text, re.M)) >= 2


def test_bad_arguments_exit_2(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--requests", "0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--requests" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_200000_requests_keep_memory_and_fds_flat(tmp_path):
    text = soak(tmp_path, "--requests", "200000", "--interval", "2", "--warmup", "10",
                "--duration", "900", timeout=1000)
    assert "**PASS**: 200,000 requests checked" in text


def test_the_flatness_rule_catches_growth():
    sys.path.insert(0, str(ROOT))
    from loadtests.soak.run import flat

    assert flat([100.0, 101, 99, 100, 102, 104], 0, 5.0)[0]
    assert not flat([100.0, 100, 100, 104, 106, 108], 0, 5.0)[0]  # +6%
    assert flat([10.0, 10, 10, 14, 15, 16], 6, 5.0)[0]  # fds: client connections come and go
    assert flat([100.0, 200], 0, 5.0)[0]  # too few samples to judge
