"""The command line: ``greenserve [options] module:app``.

Every option flag and ``GREENSERVE_*`` environment variable is generated from ``Config``;
precedence is flag > environment > default. Any bad flag, value or app prints one line naming
it and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence

from . import patch
from ._version import __version__
from .config import ENV_PREFIX, Config, env_name, flag_name
from .errors import AppImportError, ConfigError
from .server import Server
from .signals import install_stop_handlers

log = logging.getLogger("greenserve.error")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"greenserve: error: {message} (see greenserve --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="greenserve",
        description="Serve a WSGI application with greenserve.",
        epilog="Every option can also be set as an environment variable, e.g. "
        "GREENSERVE_MAX_BODY_SIZE=10M. Flags win over the environment.",
    )
    parser.add_argument("app", metavar="MODULE:APP",
                        help="the WSGI app, e.g. myproject.wsgi:application, or "
                        "module:create_app() for a factory")
    parser.add_argument("--version", action="version", version=f"greenserve {__version__}")
    for f in dataclasses.fields(Config):
        meta = f.metadata
        text = f"{meta['help']} (default: {_show_default(f.default)}; env {env_name(f.name)})"
        if f.type == "bool":
            parser.add_argument(flag_name(f.name), dest=f.name, action="store_const",
                                const="true", default=None, help=text)
            continue
        parser.add_argument(
            flag_name(f.name), dest=f.name, metavar=meta["metavar"], default=None,
            action="append" if meta["repeat"] else "store", help=text,
        )
    return parser


def _show_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return repr(value) if value == "" else str(value)


def config_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """Merge environment and flags into a Config. Raises ConfigError naming the source."""
    names = {f.name for f in dataclasses.fields(Config)}
    values: Dict[str, str] = {}
    origins: Dict[str, str] = {}
    for key, text in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in names:
            raise ConfigError(key, "unknown setting")
        values[name], origins[name] = text, key
    for name in names:
        given = getattr(args, name)
        if given is None:
            continue
        values[name] = ",".join(given) if isinstance(given, list) else given
        origins[name] = flag_name(name)
    return Config.from_strings(values, origins)


def load_app(spec: str) -> Callable[..., Any]:
    """Import ``module:attr`` or ``module:factory()``. Raises AppImportError."""
    module_name, _, attr = spec.partition(":")
    call = attr.endswith("()")
    attr = attr[:-2] if call else attr
    if not module_name or not all(part.isidentifier() for part in attr.split(".") if attr):
        raise AppImportError(f"{spec!r} is not MODULE:APP")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and module_name.startswith(exc.name) and module_name != "":
            raise AppImportError(f"cannot import {module_name!r}: {exc}") from exc
        raise AppImportError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise AppImportError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    names = attr.split(".") if attr else ["application", "app"]
    if not attr:
        found = [n for n in names if hasattr(obj, n)]
        if not found:
            raise AppImportError(f"module {module_name!r} has no 'application' or 'app'; use {module_name}:NAME")
        names = found[:1]
    for name in names:
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise AppImportError(f"{module_name!r} has no attribute {attr!r}") from None
    if call:
        try:
            obj = obj()
        except Exception as exc:
            raise AppImportError(f"the factory {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    if not callable(obj):
        raise AppImportError(f"{spec!r} is not callable (got {type(obj).__name__})")
    return obj  # type: ignore[no-any-return]


def setup_logging(level: str) -> None:
    root = logging.getLogger("greenserve")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S %z"))
        root.addHandler(handler)
    root.setLevel(level.upper())


def _fail(message: str) -> int:
    sys.stderr.write(f"greenserve: error: {message}\n")
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the server from the command line. Returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args, os.environ)
    except ConfigError as exc:
        return _fail(str(exc))
    setup_logging(config.log_level)
    if config.patch:
        patch.apply()  # before the app and the libraries it imports bind the blocking originals
    try:
        app = load_app(args.app)
    except AppImportError as exc:
        log.debug("app import failed", exc_info=True)
        return _fail(str(exc))
    server = Server(app, config)
    try:
        server.start()
    except ConfigError as exc:
        return _fail(str(exc))
    for url in server.urls:
        log.info("greenserve %s listening on %s (app %s)", __version__, url, args.app)
    with install_stop_handlers(server):
        server.serve_forever()
    log.info("greenserve stopped")
    return 0


