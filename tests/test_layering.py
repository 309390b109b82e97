"""The layout of DESIGN.md, checked with ``ast`` over every module of greenserve.

Each package is a floor, and imports point down the floors only (errors, options -> loop ->
patch -> http -> observe -> serving -> process -> the command line); there is no import circle,
and no module is a big room. Within the floors: the parser (http/h1) imports only the errors and
never socket, selectors, greenlet, time, logging or threading; only loop/hub.py touches greenlet
(switch, throw, getcurrent); wsgi.py knows no hub, sockets or greenlets; the cooperative runtime
builds on the hub only, and the patch on the runtime; nothing but the entry points imports the
patch; a connection knows its server only through http/port.py.
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
    return sorted((PACKAGE / "http" / "h1").rglob("*.py"))


# -- the checker checks something ---------------------------------------------------------------


def test_the_package_is_found_and_imports_are_resolved():
    modules = all_modules()
    for expected in ("greenserve", "greenserve.loop.hub", "greenserve.loop.gsocket",
                     "greenserve.http.wsgi", "greenserve.errors", "greenserve.config.options",
                     "greenserve.http.h1", "greenserve.http.h1.connection"):
        assert expected in modules
    assert len(h1_files()) >= 3
    # relative imports are resolved to absolute names
    assert "greenserve.loop.hub" in greenserve_imports(PACKAGE / "loop" / "gsocket.py")
    assert "greenserve.errors" in greenserve_imports(PACKAGE / "loop" / "hub.py")
    assert "greenlet" in top_level(imports_of(PACKAGE / "loop" / "hub.py"))
    assert "greenserve.errors" in greenserve_imports(PACKAGE / "http" / "h1" / "__init__.py")
    assert "greenserve.http.h1" in greenserve_imports(PACKAGE / "http" / "wsgi.py")


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


def test_floor_and_circle_detectors():
    assert floor("greenserve.http.h1._readers") == floor("greenserve.http")
    assert floor("greenserve.config.options") < floor("greenserve.loop.hub") < floor(
        "greenserve.patch.cosocket") < floor("greenserve.http.wsgi") < floor(
        "greenserve.observe.logs") < floor("greenserve.serving.server") < floor(
        "greenserve.process.worker")
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


# -- the floors ---------------------------------------------------------------------------------
# DESIGN.md: each folder is one subsystem, and imports point down this list only. The option
# declarations (config/: options, addresses, the TOML file), errors, the version, the build and
# the compiled classes' declarations (_traits) are importable from anywhere; the faces (the package itself, __main__, the command line, testing,
# targetapp, worker) may import anything, and nothing below imports them.

FLOORS = [
    ("greenserve.errors", 0), ("greenserve._version", 0), ("greenserve._build", 0),
    ("greenserve._traits", 0),
    ("greenserve.config.options", 0),
    ("greenserve.config.addresses", 0), ("greenserve.loop", 1), ("greenserve.patch", 2),
    ("greenserve.http", 3), ("greenserve.observe", 4), ("greenserve.serving", 5),
    ("greenserve.config", 0), ("greenserve.process", 6),
]
FACES = {"greenserve", "greenserve.__main__", "greenserve.cli", "greenserve.testing",
         "greenserve.targetapp", "greenserve.worker", "greenserve.websocket"}


def floor(name: str) -> int:
    """The floor of a module: that of the longest prefix in FLOORS."""
    best = max((p for p, _ in FLOORS if is_within(name, (p,))), key=len)
    return dict(FLOORS)[best]


def package_graph() -> Dict[str, Set[str]]:
    """module -> the greenserve modules it imports, leaving out its own enclosing packages (a
    ``from . import sibling`` names the package only to reach the sibling)."""
    graph = {}
    for name, path in all_modules().items():
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = greenserve_imports(path) - ancestors - {name}
    return graph


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected groups of more than one node (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    assert circles(package_graph()) == []


@pytest.mark.parametrize("name", sorted(set(all_modules()) - FACES))
def test_imports_point_down_the_floors(name):
    up = sorted(target for target in package_graph()[name]
                if target in FACES or floor(target) > floor(name))
    assert not up, f"{name} (floor {floor(name)}) imports {up}"


@pytest.mark.parametrize("name", sorted(all_modules()))
def test_no_module_is_a_big_room(name):
    """DESIGN.md style rule 1: small modules, about 400 lines or fewer."""
    lines = all_modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= 450, f"{name} has {lines} lines"


# -- the rules within the floors ----------------------------------------------------------------


@pytest.mark.parametrize("path", h1_files(), ids=lambda p: p.name)
def test_h1_is_sans_io(path):
    forbidden = top_level(imports_of(path)) & IO_MODULES
    assert not forbidden, f"{path.name} imports {sorted(forbidden)}"


@pytest.mark.parametrize("path", h1_files(), ids=lambda p: p.name)
def test_h1_imports_only_errors_and_itself(path):
    bad = {m for m in greenserve_imports(path)
           if not is_within(m, ("greenserve.errors", "greenserve.http.h1"))}
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
    if name == "greenserve.loop.hub":
        assert uses, "the checker should see the hub's own greenlet use"
    elif name == "greenserve.loop.glet":
        # The hub's greenlet type, kept out of the compiled hub (a compiled class cannot
        # extend greenlet's C type): it imports greenlet to subclass it, and switches nothing.
        assert uses == ["imports greenlet"], f"{name}: {uses}"
    else:
        assert not uses, f"{name}: {uses}"


def test_wsgi_knows_no_hub_sockets_or_greenlets():
    path = PACKAGE / "http" / "wsgi.py"
    bad = top_level(imports_of(path)) & {"socket", "greenlet", "selectors"}
    bad |= {m for m in greenserve_imports(path) if is_within(m, ("greenserve.loop",))}
    bad |= greenserve_imports(path) & {"greenserve.http.connection", "greenserve.serving.server"}
    assert not bad, f"wsgi.py imports {sorted(bad)}"


def test_errors_imports_nothing_of_greenserve():
    assert greenserve_imports(PACKAGE / "errors.py") == set()


def test_config_options_import_only_errors_and_addresses():
    bad = greenserve_imports(PACKAGE / "config" / "options.py") - {
        "greenserve.errors", "greenserve.config.addresses"}
    assert not bad, f"config/options.py imports {sorted(bad)}"


def test_addresses_is_a_leaf():
    bad = greenserve_imports(PACKAGE / "config" / "addresses.py") - {"greenserve.errors"}
    assert not bad, f"config/addresses.py imports {sorted(bad)}"


def test_targetapp_imports_nothing_of_greenserve():
    assert greenserve_imports(PACKAGE / "targetapp.py") == set()


# The modules of TLS, proxies, logs and metrics, and the only greenserve modules each may import:
# the proxy parsers are pure (they share the strict reading of IP literals); metrics and their
# endpoint must work in a supervisor with no hub; TLS sits on the cooperative socket and knows
# nothing of connections or the server; a connection reaches its server only through the
# small interface it declares (http.port), never the server module.
BOUNDED = {
    "greenserve.http.proxy": {"greenserve.config.addresses"},
    "greenserve.http.proxyproto": {"greenserve.config.addresses"},
    "greenserve.observe.metrics": set(),
    "greenserve.observe.endpoint": {"greenserve.errors", "greenserve.config.addresses"},
    "greenserve.observe.logs": {"greenserve.errors", "greenserve.http.h1"},
    "greenserve.http.tls": {"greenserve.errors", "greenserve.loop.gsocket",
                            "greenserve.loop.hub"},
    "greenserve.http.preamble": {"greenserve.errors", "greenserve.loop.gsocket",
                                 "greenserve.http.connection", "greenserve.http.port",
                                 "greenserve.http.tls", "greenserve.http.proxyproto"},
}


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_bounded_modules_import_only_what_they_may(name):
    bad = greenserve_imports(all_modules()[name]) - BOUNDED[name]
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("name", ["greenserve.http.proxy", "greenserve.http.proxyproto"])
def test_proxy_parsers_do_no_io(name):
    forbidden = top_level(imports_of(all_modules()[name])) & IO_MODULES
    assert not forbidden, f"{name} imports {sorted(forbidden)}"


# The process floor: the supervisor forks before any hub exists, so it imports neither the hub
# nor the server (the worker builds the server, and with it the hub, after the fork).
def test_the_supervisor_imports_no_hub_and_no_server():
    found = greenserve_imports(PACKAGE / "process" / "supervisor.py")
    bad = {m for m in found if is_within(m, ("greenserve.loop", "greenserve.http",
                                             "greenserve.serving.server"))}
    assert not bad, f"supervisor imports {sorted(bad)}"


def test_only_the_entry_point_imports_cli():
    users = [n for n, p in all_modules().items()
             if "greenserve.cli" in greenserve_imports(p)]
    assert set(users) <= {"greenserve.__main__"}, users


# The cooperative runtime sits on the hub, and the patch on the runtime. Each module lists every
# greenserve module it may import.
RUNTIME_LAYER = {
    "greenserve.loop.threadpool": {"greenserve.loop.hub"},
    "greenserve.loop.tasks": {"greenserve.loop.hub", "greenserve.loop.timers",
                              "greenserve.errors"},
    "greenserve.loop.guards": {"greenserve.loop.hub", "greenserve.loop.timers",
                               "greenserve.errors"},
    "greenserve.loop.watchdog": {"greenserve.loop.hub"},
    "greenserve.patch.cosocket": {"greenserve.loop.hub", "greenserve.loop.threadpool"},
    "greenserve.patch.cossl": {"greenserve.patch.cosocket"},
    "greenserve.patch.coselect": {"greenserve.loop.hub"},
    "greenserve.patch.colocal": {"greenserve.loop.hub"},
    "greenserve.patch.colock": {"greenserve.loop.hub"},
    "greenserve.patch.copsycopg": {"greenserve.loop.hub"},
    "greenserve.patch": {"greenserve.patch.colocal", "greenserve.patch.colock",
                         "greenserve.patch.copsycopg", "greenserve.patch.coselect",
                         "greenserve.patch.cosocket", "greenserve.patch.cossl",
                         "greenserve.loop", "greenserve.loop.tasks"},
}
# Only these may import the patch: it is applied by the command line (or a Server asked to),
# never by importing a module.
PATCH_IMPORTERS = {"greenserve", "greenserve.cli", "greenserve.serving.server"}


@pytest.mark.parametrize("name", sorted(RUNTIME_LAYER))
def test_runtime_layer_imports_only_what_is_below_it(name):
    modules = all_modules()
    assert name in modules, f"{name} is in the table but not in the package"
    found = package_graph()[name]
    assert found <= RUNTIME_LAYER[name], f"{name} imports {sorted(found - RUNTIME_LAYER[name])}"


def test_only_the_entry_points_import_the_patch():
    importers = set()
    for name, path in all_modules().items():
        if name.startswith("greenserve.patch"):
            continue
        if any(m.startswith("greenserve.patch") for m in greenserve_imports(path)):
            importers.add(name)
    assert importers <= PATCH_IMPORTERS, sorted(importers - PATCH_IMPORTERS)


def test_the_hub_builds_only_on_its_parts_and_the_errors():
    assert greenserve_imports(PACKAGE / "loop" / "hub.py") == {
        "greenserve.errors", "greenserve.loop.fds", "greenserve.loop.timers",
        "greenserve.loop.glet"}


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


def test_no_module_hides_a_public_name():
    """``greenserve.serve`` is a function: a subpackage of that name would replace it as an
    attribute of the package the moment something imports it by its dotted path."""
    import greenserve

    children = {name.split(".")[1] for name in all_modules() if name.count(".") >= 1}
    assert not children & set(greenserve.__all__)
