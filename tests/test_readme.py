"""The README stays true: its option table is the one Config generates, its commands are the
ones CI runs."""

import re
from pathlib import Path

from greenserve.config.options import option_table

ROOT = Path(__file__).resolve().parent.parent


def test_option_table_matches_config():
    assert option_table() in (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest"
    assert command in readme
    assert command in ci


def test_ci_runs_the_oldest_supported_python_and_the_readme_says_which():
    ci = (ROOT / ".ci" / "run").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    versions = re.search(r"^for version in ([0-9. ]+); do$", ci, re.M)
    oldest = re.search(r'^requires-python = ">=([0-9]+\.[0-9]+)"$', pyproject, re.M)
    assert versions is not None and oldest is not None
    assert versions.group(1).split()[0] == oldest.group(1)
    assert "Python " + " and ".join(versions.group(1).split()) in (ROOT / "README.md").read_text()
