"""The README stays true: its option table is the one Config generates, its commands are the
ones CI runs."""

from pathlib import Path

from greenserve.config import option_table

ROOT = Path(__file__).resolve().parent.parent


def test_option_table_matches_config():
    assert option_table() in (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest"
    assert command in readme
    assert command in ci
