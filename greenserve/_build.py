"""Which build runs: compiled (the hot-path modules that setup.py compiles with mypyc) or pure.

Both builds come from the same Python source; the compiled modules are extension files beside
it (``wsgi.cpython-311-x86_64-linux-gnu.so`` next to ``wsgi.py``), which Python imports first.
``select()`` runs once, from ``greenserve/__init__.py`` before any of those modules is
imported, and makes them import from their source instead, all of them together (compiled
modules call each other directly, so a mix is never loaded), when:

- ``GREENSERVE_PURE=1`` is in the environment (to compare the builds, or to rule the compiled
  one out when hunting a bug). This is the one setting read from the environment at import
  time: later would be too late;
- a source file is newer than its compiled module: an editable install whose source was edited
  since it was built. Running the stale compiled code would ignore the edit; reinstalling
  (``pip install -e .``) compiles again.

``BUILD`` says which build runs ("compiled" or "pure"), for ``greenserve --version``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Dict, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
# Kept in step with setup.py's list (tests/test_build.py checks it).
COMPILED = ("http.h1._abnf", "http.h1._readers", "http.h1._writers", "http.h1.connection",
            "http.h1.events", "http.h1.headers", "http.wsgi", "http.dates", "http.body",
            "http.respond", "http.connection", "http.preamble", "http.port", "loop.hub",
            "loop.fds", "loop.timers", "loop.gsocket", "serving.accepting")
BUILD = "pure"
REASON = ""


def _paths(name: str) -> Dict[str, Optional[str]]:
    """The source and the compiled file of one module (None where there is none)."""
    base = os.path.join(HERE, *name.split("."))
    compiled = None
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if os.path.exists(base + suffix):
            compiled = base + suffix
            break
    return {"source": base + ".py", "compiled": compiled}


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' Python source, ahead of their extension files."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = {f"{__package__}.{name}" for name in names}

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in self.names:
            return None
        source = os.path.join(HERE, *fullname.split(".")[1:]) + ".py"
        return importlib.util.spec_from_file_location(fullname, source)


def select() -> str:
    """Decide the build, and make the compiled modules import from source if it is pure.
    Returns the build's name. Runs once; later calls only return it."""
    global BUILD, REASON
    if any(isinstance(finder, _SourceFirst) for finder in sys.meta_path) or BUILD == "compiled":
        return BUILD
    files = [_paths(name) for name in COMPILED]
    if os.environ.get("GREENSERVE_PURE", "") not in ("", "0"):
        REASON = "GREENSERVE_PURE is set"
    elif not all(f["compiled"] for f in files):
        REASON = "not compiled when installed"
        return BUILD
    elif any(os.path.getmtime(str(f["source"])) > os.path.getmtime(str(f["compiled"]))
             for f in files):
        REASON = "source edited since it was compiled: reinstall to compile again"
    else:
        BUILD = "compiled"
        return BUILD
    sys.meta_path.insert(0, _SourceFirst(COMPILED))
    return BUILD


def describe() -> str:
    """For ``--version``: the build, and why it is pure when it is."""
    if BUILD == "compiled":
        return "compiled build"
    return f"pure Python build ({REASON})" if REASON else "pure Python build"
