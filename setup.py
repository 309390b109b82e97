"""The compiled build: the modules every request runs through (the parser, the WSGI environ,
the connection, the hub) are compiled to C extensions with mypyc, from the same Python source
(it is checked with ``mypy --strict``). Where that cannot be done (no mypy at build time, no C compiler, or
GREENSERVE_PURE=1 in the environment) the package installs as pure Python and says so in
one line. At run time GREENSERVE_PURE=1 makes an installed compiled build import the
Python source instead (greenserve/_build.py).
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED = [
    "greenserve/http/h1/_abnf.py",
    "greenserve/http/h1/_readers.py",
    "greenserve/http/h1/_writers.py",
    "greenserve/http/h1/connection.py",
    "greenserve/http/h1/events.py",
    "greenserve/http/h1/headers.py",
    "greenserve/http/wsgi.py",
    "greenserve/http/dates.py",
    "greenserve/http/body.py",
    "greenserve/http/respond.py",
    "greenserve/http/connection.py",
    "greenserve/http/preamble.py",
    "greenserve/http/port.py",
    "greenserve/loop/hub.py",
    "greenserve/loop/fds.py",
    "greenserve/loop/timers.py",
    "greenserve/loop/gsocket.py",
    "greenserve/serving/accepting.py",
]


def _say(line):
    print(f"greenserve: {line}", file=sys.stderr)


class _OptionalBuildExt(build_ext):
    """Build the compiled modules if the C compiler can; otherwise keep the pure build."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # CCompilerError, DistutilsExecError, PlatformError...
            _say(f"no compiled build ({type(exc).__name__}: {exc}); installing pure Python")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            _say(f"no compiled build ({type(exc).__name__}: {exc}); installing pure Python")


def _extensions():
    if os.environ.get("GREENSERVE_PURE"):
        _say("GREENSERVE_PURE is set: installing pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not available: installing pure Python")
        return []
    try:
        return mypycify(COMPILED, opt_level="3")
    except (Exception, SystemExit) as exc:  # mypyc exits on a construct it cannot compile
        _say(f"mypyc could not compile ({type(exc).__name__}: {exc}); installing pure Python")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": _OptionalBuildExt})
