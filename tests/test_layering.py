"""The import direction of DESIGN.md, checked with ``ast`` over every module of greenserve.

errors, h1, config, targetapp import nothing of greenserve above them; the parser (h1) never
imports socket, selectors, greenlet, time, logging or threading; only hub.py touches greenlet
(switch, throw, getcurrent); wsgi.py knows no hub, sockets or greenlets; the cooperative runtime
(runtime, threadpool, guards, watchdog) builds on the hub only, and the patch on the runtime;
nothing but the entry points imports the patch.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "greenserve"
IO_MODULES = {"socket", "selectors", "greenlet", "time", "logging", "threading"}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imports_of(path: Path, root: Path = ROOT) -> Set[str]:
    """Every module a file imports (anywhere in it, TYPE_CHECKING blocks and functions included),
    as absolute dotted names. ``from pkg import name`` yields both ``pkg`` and ``pkg.name``
    (name may be a submodule)."""
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: Set[str] = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "__future__":
                continue
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def greenserve_imports(path: Path) -> Set[str]:
    """The greenserve modules a file imports, reduced to real modules and packages (a name
    imported from a module, like ``greenserve.errors.ConfigError``, counts as its module)."""
    modules = all_modules()
    result = set()
    for target in imports_of(path):
        if target != "greenserve" and not target.startswith("greenserve."):
            continue
        while target not in modules and "." in target:
            target = target.rsplit(".", 1)[0]
        result.add(target)
    return result


def top_level(names: Set[str]) -> Set[str]:
    return {n.split(".")[0] for n in names}


def is_within(name: str, allowed: Tuple[str, ...]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


def h1_files() -> List[Path]:
    return sorted((PACKAGE / "h1").rglob("*.py"))


# -- the checker checks something ---------------------------------------------------------------


def test_the_package_is_found_and_imports_are_resolved():
    modules = all_modules()
    for expected in ("greenserve", "greenserve.hub", "greenserve.gsocket", "greenserve.wsgi",
                     "greenserve.errors", "greenserve.config", "greenserve.h1",
                     "greenserve.h1.connection"):
        assert expected in modules
    assert len(h1_files()) >= 3
    # relative imports are resolved to absolute names
    assert "greenserve.hub" in greenserve_imports(PACKAGE / "gsocket.py")
    assert "greenserve.errors" in greenserve_imports(PACKAGE / "hub.py")
    assert "greenlet" in top_level(imports_of(PACKAGE / "hub.py"))
    assert "greenserve.errors" in greenserve_imports(PACKAGE / "h1" / "__init__.py")
    assert "greenserve.h1" in greenserve_imports(PACKAGE / "wsgi.py")


def test_resolver_on_relative_forms(tmp_path):
    pkg = tmp_path / "greenserve" / "h1"
    pkg.mkdir(parents=True)
    source = pkg / "x.py"
    source.write_text(
        "from . import events\nfrom .. import errors\nfrom ..errors import Cancelled\n"
        "import socket.foo\nfrom time import monotonic\n"
    )
    found = imports_of(source, root=tmp_path)
    assert {"greenserve.h1", "greenserve.h1.events", "greenserve", "greenserve.errors",
            "greenserve.errors.Cancelled", "socket.foo", "time", "time.monotonic"} <= found


def test_greenlet_use_detector(tmp_path):
    pkg = tmp_path / "greenserve"
    pkg.mkdir()
    bad = pkg / "bad.py"
    bad.write_text("import greenlet\ndef f(g):\n    g.switch(1)\n    g.throw(ValueError)\n"
                   "    return greenlet.getcurrent()\n")
    uses = " ".join(_greenlet_uses(bad, root=tmp_path))
    for expected in ("imports greenlet", ".switch(", ".throw(", "getcurrent"):
        assert expected in uses
    clean = pkg / "clean.py"
    clean.write_text("import socket\ndef f(s):\n    return s.recv(1)\n")
    assert list(_greenlet_uses(clean, root=tmp_path)) == []


# -- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", h1_files(), ids=lambda p: p.name)
def test_h1_is_sans_io(path):
    forbidden = top_level(imports_of(path)) & IO_MODULES
    assert not forbidden, f"{path.name} imports {sorted(forbidden)}"


@pytest.mark.parametrize("path", h1_files(), ids=lambda p: p.name)
def test_h1_imports_only_errors_and_itself(path):
    bad = {m for m in greenserve_imports(path)
           if not is_within(m, ("greenserve.errors", "greenserve.h1"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def _greenlet_uses(path: Path, root: Path = ROOT) -> Iterator[str]:
    """What in a file touches greenlet: imports of it, .switch( / .throw( calls, getcurrent."""
    if "greenlet" in top_level(imports_of(path, root)):
        yield "imports greenlet"
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("switch", "throw"):
                yield f"calls .{node.func.attr}( on line {node.lineno}"
        if isinstance(node, ast.Name) and node.id == "getcurrent":
            yield f"uses getcurrent on line {node.lineno}"
        if isinstance(node, ast.Attribute) and node.attr == "getcurrent":
            yield f"uses getcurrent on line {node.lineno}"


@pytest.mark.parametrize("name", sorted(all_modules()))
def test_only_the_hub_touches_greenlet(name):
    path = all_modules()[name]
    uses = list(_greenlet_uses(path))
    if name == "greenserve.hub":
        assert uses, "the checker should see the hub's own greenlet use"
    else:
        assert not uses, f"{name}: {uses}"


def test_wsgi_knows_no_hub_sockets_or_greenlets():
    path = PACKAGE / "wsgi.py"
    bad = top_level(imports_of(path)) & {"socket", "greenlet", "selectors"}
    bad |= greenserve_imports(path) & {"greenserve.hub", "greenserve.gsocket",
                                       "greenserve.handler", "greenserve.server"}
    assert not bad, f"wsgi.py imports {sorted(bad)}"


def test_errors_imports_nothing_of_greenserve():
    assert greenserve_imports(PACKAGE / "errors.py") == set()


def test_config_imports_only_errors_and_addresses():
    bad = greenserve_imports(PACKAGE / "config.py") - {"greenserve.errors", "greenserve.addresses"}
    assert not bad, f"config.py imports {sorted(bad)}"


def test_addresses_is_a_leaf():
    path = PACKAGE / "addresses.py"
    if not path.exists():
        pytest.skip("no addresses.py")
    bad = greenserve_imports(path) - {"greenserve.errors"}
    assert not bad, f"addresses.py imports {sorted(bad)}"


def test_targetapp_imports_nothing_of_greenserve():
    path = PACKAGE / "targetapp.py"
    if not path.exists():
        pytest.skip("no targetapp.py yet")
    assert greenserve_imports(path) == set()


# The modules of TLS, proxies, logs and metrics, and the only greenserve modules each may import:
# the proxy parsers are pure (they share the strict reading of IP literals); metrics and their
# endpoint must work in a supervisor with no hub; TLS sits on the cooperative socket and knows
# nothing of connections or the server.
BOUNDED = {
    "greenserve.proxy": {"greenserve.addresses"},
    "greenserve.proxyproto": {"greenserve.addresses"},
    "greenserve.metrics": set(),
    "greenserve.metrics_endpoint": {"greenserve.errors", "greenserve.addresses"},
    "greenserve.logs": {"greenserve.errors", "greenserve.h1"},
    "greenserve.tls": {"greenserve.errors", "greenserve.gsocket", "greenserve.hub"},
    "greenserve.preamble": {"greenserve.errors", "greenserve.gsocket", "greenserve.handler",
                            "greenserve.tls", "greenserve.proxyproto", "greenserve.server"},
}


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_bounded_modules_import_only_what_they_may(name):
    bad = greenserve_imports(all_modules()[name]) - BOUNDED[name]
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", ["greenserve.proxy", "greenserve.proxyproto"])
def test_proxy_parsers_do_no_io(name):
    forbidden = top_level(imports_of(all_modules()[name])) & IO_MODULES
    assert not forbidden, f"{name} imports {sorted(forbidden)}"


# The process layer: what each module may import of greenserve. sockets and systemd sit below
# server (no hub); the supervisor forks before any hub exists, so it imports neither the hub nor
# the server (the worker builds the server, and with it the hub, after the fork); cli sits on
# top of everything.
PROCESS_LAYER = {
    "greenserve.systemd": {"greenserve.errors"},
    "greenserve.sockets": {"greenserve.errors", "greenserve.addresses", "greenserve.config",
                           "greenserve.systemd"},
    "greenserve.configfile": {"greenserve.errors", "greenserve.config"},
    "greenserve.signals": {"greenserve.server"},  # for type hints only
    "greenserve.worker": {"greenserve._version", "greenserve.config", "greenserve.errors",
                          "greenserve.logs", "greenserve.metrics",
                          "greenserve.metrics_endpoint", "greenserve.server",
                          "greenserve.signals",
                          "greenserve.sockets", "greenserve.systemd", "greenserve.tls"},
    "greenserve.pool": {"greenserve.worker"},  # WorkerInfo only
    "greenserve.supervisor": {"greenserve.addresses", "greenserve.config", "greenserve.errors",
                              "greenserve.metrics", "greenserve.metrics_endpoint",
                              "greenserve.pool", "greenserve.sockets",
                              "greenserve.systemd", "greenserve.worker"},
}


@pytest.mark.parametrize("name", sorted(PROCESS_LAYER))
def test_process_layer_imports(name):
    bad = greenserve_imports(all_modules()[name]) - PROCESS_LAYER[name]
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", ["greenserve.hub", "greenserve.gsocket", "greenserve.wsgi",
                                  "greenserve.handler", "greenserve.server"])
def test_the_serving_core_knows_no_processes(name):
    bad = greenserve_imports(all_modules()[name]) & {
        "greenserve.supervisor", "greenserve.worker", "greenserve.configfile", "greenserve.cli"}
    assert not bad, f"{name} imports {sorted(bad)}"


def test_only_cli_imports_cli():
    users = [n for n, p in all_modules().items() if "greenserve.cli" in greenserve_imports(p)]
    assert set(users) <= {"greenserve.__main__"}, users


# The cooperative runtime sits on the hub, and the patch on the runtime. Each module lists every
# greenserve module it may import ("greenserve" itself, from ``from . import x``, aside).
RUNTIME_LAYER = {
    "greenserve.threadpool": {"greenserve.hub"},
    "greenserve.runtime": {"greenserve.hub", "greenserve.errors"},
    "greenserve.guards": {"greenserve.hub", "greenserve.errors"},
    "greenserve.watchdog": {"greenserve.hub"},
    "greenserve.patch_socket": {"greenserve.hub", "greenserve.threadpool"},
    "greenserve.patch_ssl": {"greenserve.patch_socket"},
    "greenserve.patch_select": {"greenserve.hub"},
    "greenserve.patch_local": {"greenserve.hub"},
    "greenserve.patch": {"greenserve.patch_local", "greenserve.patch_select",
                         "greenserve.patch_socket", "greenserve.patch_ssl", "greenserve.runtime"},
}
# Only these may import the patch: it is applied by the command line (or a Server asked to),
# never by importing a module.
PATCH_IMPORTERS = {"greenserve", "greenserve.cli", "greenserve.server"}


@pytest.mark.parametrize("name", sorted(RUNTIME_LAYER))
def test_runtime_layer_imports_only_what_is_below_it(name):
    modules = all_modules()
    assert name in modules, f"{name} is in the table but not in the package"
    found = greenserve_imports(modules[name]) - {"greenserve"}
    assert found <= RUNTIME_LAYER[name], f"{name} imports {sorted(found - RUNTIME_LAYER[name])}"


def test_only_the_entry_points_import_the_patch():
    importers = set()
    for name, path in all_modules().items():
        if name.startswith("greenserve.patch"):
            continue
        if any(m.startswith("greenserve.patch") for m in greenserve_imports(path)):
            importers.add(name)
    assert importers <= PATCH_IMPORTERS, sorted(importers - PATCH_IMPORTERS)


def test_the_hub_imports_none_of_the_runtime():
    assert greenserve_imports(PACKAGE / "hub.py") == {"greenserve.errors"}


# -- typing -------------------------------------------------------------------------------------


def test_mypy_strict_passes():
    pytest.importorskip("mypy")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "greenserve"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def oldest_python() -> Tuple[int, int]:
    """The lower bound of requires-python in pyproject.toml (">=3.9" -> (3, 9))."""
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'^requires-python = ">=(\d+)\.(\d+)"$', text, re.M)
    assert m is not None, "requires-python is not a plain >=X.Y"
    return int(m.group(1)), int(m.group(2))


def test_mypy_strict_passes_for_the_oldest_supported_python():
    """pyproject has mypy check the package as Python 3.10, the oldest target mypy 2 knows;
    where the installed mypy knows the oldest version requires-python allows (the mypy that
    installs on Python 3.9, as in the 3.9 run of .ci/run), the package is checked as that
    version too, so no later standard-library API or syntax slips in."""
    defaults = pytest.importorskip("mypy.defaults")
    oldest = oldest_python()
    if tuple(defaults.PYTHON3_VERSION_MIN) > oldest:
        pytest.skip("this mypy checks no target older than %d.%d; the mypy installed on "
                    "Python %d.%d does (.ci/run)" % (*defaults.PYTHON3_VERSION_MIN, *oldest))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-version", "%d.%d" % oldest,
         "greenserve"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
