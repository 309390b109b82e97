"""The command line: ``greenserve [options] module:app``.

Every option flag, ``GREENSERVE_*`` environment variable and config file key is generated from
``Config``; precedence is flag > environment > config file (``--config``) > default. Any bad
flag, value, key or app prints one line naming it and exits with status 2. ``--print-config``
shows the merged result as TOML; ``--check-config`` checks it (and imports the app, if named).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
from typing import Any, Callable, Dict, Mapping, NoReturn, Optional, Sequence, Tuple

from .patch import apply as apply_patch
from . import _build
from ._version import __version__
from .config.options import ENV_NOT_SETTINGS, ENV_PREFIX, Config, Setting, env_name, flag_name
from .config.file import read_config_file, render_toml
from .errors import AppImportError, ConfigError
from .observe.logs import configure_logging
from .process.run import run

log = logging.getLogger("greenserve.error")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"greenserve: error: {message} (see greenserve --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="greenserve",
        description="Serve a WSGI application with greenserve.",
        epilog="Every option can also be set as an environment variable, e.g. "
        "GREENSERVE_MAX_BODY_SIZE=10M, or as a key of the --config file, e.g. "
        "max_body_size = \"10M\". Flags win over the environment, which wins over the file.",
    )
    parser.add_argument("app", metavar="MODULE:APP", nargs="?",
                        help="the WSGI app, e.g. myproject.wsgi:application, or "
                        "module:create_app() for a factory")
    parser.add_argument("--version", action="version",
                        version=f"greenserve {__version__}, {_build.describe()}")
    parser.add_argument("--config", metavar="FILE", dest="config_file",
                        help="a TOML file of options (keys as in --print-config)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the merged configuration as TOML, each value with its "
                        "origin, and exit")
    parser.add_argument("--check-config", action="store_true",
                        help="check the configuration (and import the app, if given) and exit")
    for f in dataclasses.fields(Config):
        meta = f.metadata
        shown = _show_default(meta["show"](f.default) if f.type != "bool" else f.default)
        text = f"{meta['help']} (default: {shown}; env {env_name(f.name)})"
        if f.type == "bool":
            parser.add_argument(flag_name(f.name), dest=f.name,
                                action=argparse.BooleanOptionalAction, default=None, help=text)
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


def config_and_origins(args: argparse.Namespace, environ: Mapping[str, str]
                       ) -> Tuple[Config, Dict[str, str]]:
    """The Config, and where each value that is not a default came from."""
    names = {f.name for f in dataclasses.fields(Config)}
    from_file = read_config_file(args.config_file) if args.config_file else {}
    from_env: Dict[str, Setting] = {}
    for key, text in environ.items():
        if not key.startswith(ENV_PREFIX) or key in ENV_NOT_SETTINGS:
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in names:
            raise ConfigError(key, "unknown setting")
        from_env[name] = (text, key)
    from_flags: Dict[str, Setting] = {}
    for name in names:
        given = getattr(args, name)
        if given is not None:
            flag = flag_name(name) if given is not False else "--no-" + flag_name(name)[2:]
            from_flags[name] = (",".join(given) if isinstance(given, list) else given, flag)
    config = Config.from_layers(from_file, from_env, from_flags)
    origins = {name: origin for layer in (from_file, from_env, from_flags)
               for name, (_, origin) in layer.items()}
    return config, origins


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


def _fail(message: str) -> int:
    sys.stderr.write(f"greenserve: error: {message}\n")
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the server from the command line. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config, origins = config_and_origins(args, os.environ)
    except ConfigError as exc:
        return _fail(str(exc))
    if args.print_config:
        sys.stdout.write(render_toml(config, origins))
        return 0
    if args.app is None and not args.check_config:
        parser.error("the WSGI app is missing: greenserve [options] MODULE:APP")
    try:
        configure_logging(config.log_level, config.log_config)
    except ConfigError as exc:
        return _fail(str(exc))
    if config.patch:
        apply_patch()  # before the app and the libraries it imports bind the blocking originals
    spec: str = args.app or ""
    try:
        if args.check_config:
            if spec:
                load_app(spec)
            sys.stdout.write("greenserve: the configuration is valid\n")
            return 0
        return run(config, lambda: load_app(spec), spec,
                   reread=lambda: config_and_origins(args, os.environ)[0])
    except (ConfigError, AppImportError) as exc:
        log.debug("startup failed", exc_info=True)
        return _fail(str(exc))
