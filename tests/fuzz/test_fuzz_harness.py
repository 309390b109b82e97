"""The atheris harness (fuzz_h1.py): its checks run in the ordinary suite without atheris, and
where atheris is installed a two-second fuzzing run (``slow``: a five-minute one; CI runs
30 s of it, see .ci/run).
"""

from __future__ import annotations

import pathlib
import random
import subprocess
import sys

import pytest

import fuzz_h1
from h1.strategies import SNIPPETS, mutate

from greenserve.http import h1

HARNESS = pathlib.Path(fuzz_h1.__file__)
SEEDS = sorted(fuzz_h1.CORPUS.glob("*/*.http"))


@pytest.mark.parametrize("mode", [0, 1, 6, 7])
def test_every_corpus_case_passes_the_checks(mode: int) -> None:
    for path in SEEDS:
        fuzz_h1.check(bytes([mode]) + path.read_bytes())


def test_seeded_mutations_pass_the_checks() -> None:
    rng = random.Random(20240)
    for _ in range(1500):
        data = rng.choice(SEEDS).read_bytes()
        edits = [("insert", rng.randrange(10**6), rng.choice(SNIPPETS))]
        edits += [(rng.choice(["repeat", "delete", "replace", "case", "truncate"]),
                   rng.randrange(10**6), rng.randrange(256)) for _ in range(rng.randrange(3))]
        fuzz_h1.check(bytes([rng.randrange(256)]) + mutate(data, edits))


def test_the_checks_catch_a_parser_that_depends_on_the_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutant parser that loses a byte when a piece ends in CR must be caught, so the
    harness can fail."""
    original = h1.H1Connection.receive_data

    def lossy(self: h1.H1Connection, data: bytes) -> None:
        original(self, data[:-1] if len(data) > 1 and data.endswith(b"\r") else data)

    monkeypatch.setattr(h1.H1Connection, "receive_data", lossy)
    with pytest.raises(AssertionError):
        for path in SEEDS:
            fuzz_h1.check(b"\x00" + path.read_bytes())


def run_atheris(seconds: int, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    pytest.importorskip("atheris", reason="atheris is not installed (not a test dependency: it "
                        "has wheels for some Pythons only; .ci/run installs it and fuzzes 30 s)")
    fuzz_h1.CRASHES.mkdir(exist_ok=True)  # kept (git-ignored) to replay and add to the corpus
    return subprocess.run(
        [sys.executable, str(HARNESS), f"-max_total_time={seconds}", "-rss_limit_mb=1024",
         f"-artifact_prefix={fuzz_h1.CRASHES}/", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=seconds + 120,
    )


def crash_report(result: subprocess.CompletedProcess) -> str:
    """The traceback and the crash file's name from a failed run."""
    err = result.stderr
    start = err.find("=== Uncaught Python exception")
    return (err[start:start + 3000] if start >= 0 else err[-3000:])


def test_a_short_atheris_run_finds_nothing(tmp_path: pathlib.Path) -> None:
    (tmp_path / "work").mkdir()
    for path in SEEDS[::10]:
        (tmp_path / "work" / path.name).write_bytes(b"\x00" + path.read_bytes())
    result = run_atheris(2, tmp_path)
    assert result.returncode == 0, crash_report(result)
    assert "Done" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_five_minutes_of_atheris_find_nothing(tmp_path: pathlib.Path) -> None:
    (tmp_path / "work").mkdir()
    for path in SEEDS:
        (tmp_path / "work" / path.name).write_bytes(b"\x00" + path.read_bytes())
    result = run_atheris(300, tmp_path)
    assert result.returncode == 0, crash_report(result)
