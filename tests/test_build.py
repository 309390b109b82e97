"""The two builds: setup.py compiles the modules greenserve/_build.py names (the same list),
``greenserve --version`` says which build runs, and GREENSERVE_PURE=1 makes an installed
compiled build import every one of those modules from its Python source, all together."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenserve import _build

ROOT = Path(__file__).resolve().parents[1]
PURE_ENV = {**os.environ, "GREENSERVE_PURE": "1"}


def _setup_list() -> list:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED":
            return [ast.literal_eval(element) for element in node.value.elts]  # type: ignore
    raise AssertionError("setup.py has no COMPILED list")


def test_setup_compiles_the_modules_the_build_selector_names():
    assert [f"greenserve/{name.replace('.', '/')}.py" for name in _build.COMPILED] == _setup_list()
    for path in _setup_list():
        assert (ROOT / path).exists(), path


def _loaded_from(env: dict) -> dict:
    code = ("import json, importlib, greenserve, greenserve._build as b; "
            "print(json.dumps({'build': b.BUILD, 'files': [importlib.import_module("
            "'greenserve.' + n).__file__ for n in b.COMPILED]}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    import json

    return json.loads(done.stdout)


def test_pure_setting_loads_every_compiled_module_from_source():
    loaded = _loaded_from(PURE_ENV)
    assert loaded["build"] == "pure"
    assert all(path.endswith(".py") for path in loaded["files"]), loaded["files"]


def test_the_build_that_runs_is_the_one_installed():
    loaded = _loaded_from({k: v for k, v in os.environ.items() if k != "GREENSERVE_PURE"})
    compiled = [path for path in loaded["files"] if not path.endswith(".py")]
    if loaded["build"] == "compiled":
        assert len(compiled) == len(_build.COMPILED)  # all of them, never a mix
    else:
        assert compiled == []


@pytest.mark.parametrize("pure", [False, True])
def test_version_names_the_build(pure):
    env = PURE_ENV if pure else {k: v for k, v in os.environ.items() if k != "GREENSERVE_PURE"}
    done = subprocess.run([sys.executable, "-m", "greenserve", "--version"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("greenserve ")
    if pure:
        assert line.endswith("pure Python build (GREENSERVE_PURE is set)"), line
    else:
        assert ("compiled build" in line) or ("pure Python build" in line), line


@pytest.mark.parametrize("pure", [False, True])
def test_a_connection_keeps_no_instance_dict_in_either_build(pure):
    """The connection's parts (body.py, respond.py) are mypyc traits; interpreted, they are
    remade with empty __slots__ (greenserve/_traits.py), else every connection, idle ones included,
    would carry a __dict__ (about 100 bytes more each: scenario f of loadtests/bench)."""
    env = PURE_ENV if pure else {k: v for k, v in os.environ.items() if k != "GREENSERVE_PURE"}
    code = ("import json, greenserve, greenserve._build as b; "
            "from greenserve.http.connection import Connection as C; "
            "from greenserve.http.preamble import PreambleConnection as P; "
            "print(json.dumps([b.BUILD, C.__dictoffset__, P.__dictoffset__, "
            "[k.__name__ for k in C.__mro__]]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    import json

    build, offset, preamble_offset, mro = json.loads(done.stdout)
    assert offset == 0 and preamble_offset == 0
    assert mro == ["Connection", "Responder", "BodyReader", "object"]
    if pure:
        assert build == "pure"
