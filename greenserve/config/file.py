"""The configuration file: reading a TOML file into settings, and writing a Config back as TOML.

Strategy: the file is flat, one top-level key per option, spelled as the ``Config`` field
(``max_body_size = "10M"``). Values may be TOML-typed (``workers = 4``, ``bind = ["a", "b"]``)
or text, which is parsed exactly like the flag or the environment variable. Checking is left to
``Config.from_layers``; this module only reads and renders. ``tomllib`` is in the standard
library from Python 3.11; older Pythons use ``tomli``, the same parser.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, Dict, List, Mapping

from .options import Config, Setting
from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib


def read_config_file(path: str) -> Dict[str, Setting]:
    """Read ``path`` into settings whose origins read 'PATH: key'. Raises ConfigError naming
    ``--config`` when the file cannot be read or is not TOML."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    return {key: (value, f"{path}: {key}") for key, value in data.items()}


def render_toml(config: Config, origins: Mapping[str, str]) -> str:
    """The effective configuration as a TOML file that ``--config`` reads back, each line
    commented with where its value came from (default, file, environment, flag)."""
    lines: List[str] = []
    for f in dataclasses.fields(config):
        value = _toml_value(getattr(config, f.name), f.metadata["show"])
        lines.append(f"{f.name} = {value}  # {origins.get(f.name, 'default')}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any, show: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(show(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_string(item) for item in value) + "]"
    return _toml_string(value)


def _toml_string(text: str) -> str:
    # A TOML basic string: JSON's escapes are valid TOML escapes; TOML also wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
