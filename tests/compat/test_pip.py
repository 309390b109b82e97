"""pip against a package index: pypiserver's WSGI app (apps/pypiapp.py) serving a wheel that
the test builds, driven by ``python -m pip``: install from the index (and import what was
installed), and download from it (and compare the file byte for byte with the one built).

pip runs with no configuration of the machine's (PIP_CONFIG_FILE set to the null device, and
no PIP_* variables), so nothing but the served index can answer it. The wheel carries 256 KiB
of random bytes: pypiserver hands the open file to wsgi.file_wrapper, which greenserve sends
with sendfile, and a file of several socket buffers checks that every byte of it arrives.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

pytest.importorskip("pypiserver")

TIMEOUT = 120  # seconds for any one pip command: a hang fails the test
PROJECT = "Compat_Demo"  # pip asks for the normalized name, compat-demo (PEP 503)
PAYLOAD = os.urandom(256 * 1024)


def pip_env() -> Dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # loads no configuration file at all
    return env


def pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-cache-dir",
         "--no-input", "--timeout", "15", "--retries", "0"],
        cwd=cwd, env=pip_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert done.returncode == 0, f"pip {' '.join(args)}: exit {done.returncode}\n" \
                                 f"{done.stdout}{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built here from a small pyproject-based package, offline, by pip and the
    setuptools of this environment."""
    pytest.importorskip("setuptools")
    src = tmp_path_factory.mktemp("src")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{PROJECT}"\nversion = "1.0"\n\n'
        '[tool.setuptools]\npackages = ["compat_demo"]\n\n'
        '[tool.setuptools.package-data]\ncompat_demo = ["payload.bin"]\n'
    )
    package = src / "compat_demo"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import hashlib, pathlib\n"
        "PAYLOAD_SHA256 = hashlib.sha256("
        "(pathlib.Path(__file__).parent / 'payload.bin').read_bytes()).hexdigest()\n"
    )
    (package / "payload.bin").write_bytes(PAYLOAD)
    dist = tmp_path_factory.mktemp("dist")
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(dist),
        str(src), cwd=src)
    # Its name is compat_demo-1.0-py3-none-any.whl, or Compat_Demo-... from a setuptools
    # older than 69.3 (which did not normalize it yet); an index serves either.
    built = list(dist.glob("*.whl"))
    assert len(built) == 1, sorted(os.listdir(dist))
    return built[0]


@pytest.fixture
def index(served, wheel: Path, tmp_path: Path) -> str:
    """The simple API's URL of a pypiserver whose folder holds the wheel."""
    root = tmp_path / "packages"
    root.mkdir()
    shutil.copy(wheel, root / wheel.name)
    server = served("pypiapp:app", env={"PYPIAPP_ROOT": str(root)})
    return server.url + "/simple/"


def test_pip_install_from_the_index(index: str, tmp_path: Path) -> None:
    target = tmp_path / "site"
    pip("install", "--index-url", index, "--no-deps", "--target", str(target),
        "compat-demo==1.0", cwd=tmp_path)
    assert [p.name.lower() for p in target.glob("*.dist-info")] == ["compat_demo-1.0.dist-info"]
    # The installed package imports, and its data file is the one that was packed.
    done = subprocess.run(
        [sys.executable, "-c", "import compat_demo; print(compat_demo.PAYLOAD_SHA256)"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True,
        text=True, timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == hashlib.sha256(PAYLOAD).hexdigest()


def test_pip_download_is_byte_identical(index: str, wheel: Path, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    pip("download", "--index-url", index, "--no-deps", "--dest", str(downloads),
        "compat-demo", cwd=tmp_path)
    assert sorted(os.listdir(downloads)) == [wheel.name]
    assert (downloads / wheel.name).read_bytes() == wheel.read_bytes()
