"""Config: every server option, declared once.

Strategy: ``Config`` is one frozen dataclass; each field's metadata carries its help text, how to
parse it from a string and how to check it. From that single declaration come the keyword
arguments of ``Server``/``serve``, the command-line flags (``--max-body-size``), the environment
variables (``GREENSERVE_MAX_BODY_SIZE``) and the README table. This module does no I/O and reads
no environment at import time.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .errors import ConfigError

ENV_PREFIX = "GREENSERVE_"
_SIZE = re.compile(r"\s*([0-9]+)\s*([kmg]i?b?|b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def parse_size(text: str) -> int:
    """'65536', '64k', '64KiB', '1M', '1g' -> bytes (binary multiples)."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 65536, 64k, 1M)")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "")[:1].lower()]


def parse_seconds(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"not a number of seconds: {text!r}")
    return value


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def parse_list(text: str) -> Tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _positive(value: Any) -> Optional[str]:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: Any) -> Optional[str]:
    return None if value >= 0 else "must not be negative"


def _log_level(value: str) -> Optional[str]:
    return None if value.lower() in LOG_LEVELS else "must be one of " + ", ".join(LOG_LEVELS)


def _binds(value: Tuple[str, ...]) -> Optional[str]:
    from .addresses import parse_bind  # no I/O; kept local so config stays a leaf

    if not value:
        return "needs at least one address"
    for item in value:
        try:
            parse_bind(item)
        except ValueError as exc:
            return str(exc)
    return None


def _scheme(value: str) -> Optional[str]:
    return None if value in ("http", "https") else "must be http or https"


_TYPES: Dict[str, Any] = {
    "int": int, "float": (int, float), "str": str, "bool": bool, "Tuple[str, ...]": tuple,
}


def option(
    default: Any, help: str, *, parse: Callable[[str], Any] = str,
    check: Optional[Callable[[Any], Optional[str]]] = None, metavar: str = "VALUE",
    repeat: bool = False,
) -> Any:
    """Declare one option: its default, help, string parser, checker and CLI shape."""
    meta = {"help": help, "parse": parse, "check": check, "metavar": metavar, "repeat": repeat}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Config:
    """All server options. Build with keywords; bad values raise ConfigError naming the option."""

    bind: Tuple[str, ...] = option(
        ("127.0.0.1:8000",), "address to listen on: HOST:PORT, [IPV6]:PORT or unix:PATH "
        "(repeat for several)", parse=parse_list, check=_binds, metavar="ADDRESS", repeat=True)
    root_path: str = option(
        "", "URL prefix the app is mounted under; becomes SCRIPT_NAME", metavar="PATH")
    url_scheme: str = option("http", "wsgi.url_scheme to report", check=_scheme,
                             metavar="SCHEME")
    backlog: int = option(2048, "listen() backlog", parse=int, check=_positive, metavar="N")
    max_connections: int = option(
        10000, "stop accepting at this many open connections", parse=int, check=_positive,
        metavar="N")
    max_request_line: int = option(
        8190, "longest request line in bytes (longer: 414)", parse=parse_size, check=_positive,
        metavar="BYTES")
    max_header_bytes: int = option(
        65536, "largest header section in bytes (larger: 431)", parse=parse_size,
        check=_positive, metavar="BYTES")
    max_header_count: int = option(
        100, "most header fields in a request (more: 431)", parse=int, check=_positive,
        metavar="N")
    max_body_size: int = option(
        1 << 30, "largest request body in bytes (larger: 413)", parse=parse_size,
        check=_not_negative, metavar="BYTES")
    max_drain_bytes: int = option(
        1 << 20, "unread request body the server reads and discards to keep a connection; "
        "more and the connection is closed", parse=parse_size, check=_not_negative,
        metavar="BYTES")
    header_timeout: float = option(
        10.0, "seconds to receive a whole request head (slow clients are cut off: 408)",
        parse=parse_seconds, check=_positive, metavar="SECONDS")
    body_timeout: float = option(
        30.0, "seconds the request body may stall between reads", parse=parse_seconds,
        check=_positive, metavar="SECONDS")
    min_body_rate: int = option(
        500, "lowest average rate, in bytes per second, at which a request body must keep "
        "arriving once it has had --body-timeout seconds (slower: 408); 0 turns it off",
        parse=parse_size, check=_not_negative, metavar="BYTES")
    keepalive_timeout: float = option(
        15.0, "seconds an idle keep-alive connection is kept open", parse=parse_seconds,
        check=_positive, metavar="SECONDS")
    send_timeout: float = option(
        30.0, "seconds a response may stall because the client does not read",
        parse=parse_seconds, check=_positive, metavar="SECONDS")
    linger_timeout: float = option(
        2.0, "seconds to keep reading (and discarding) after an error response, so the client "
        "sees it", parse=parse_seconds, check=_not_negative, metavar="SECONDS")
    graceful_timeout: float = option(
        30.0, "seconds in-flight requests get to finish on stop (SIGTERM, Ctrl-C)",
        parse=parse_seconds, check=_not_negative, metavar="SECONDS")
    request_timeout: float = option(
        0.0, "seconds an app may take for one request before it is cancelled (503/504 if no "
        "response was started, else the connection is closed); 0 means no limit",
        parse=parse_seconds, check=_not_negative, metavar="SECONDS")
    block_threshold: float = option(
        0.1, "log the stack of code that keeps the event loop from turning for longer than "
        "this many seconds; 0 turns the watchdog off", parse=parse_seconds,
        check=_not_negative, metavar="SECONDS")
    patch: bool = option(
        False, "make the standard library's blocking calls (socket, ssl, time.sleep, select, "
        "threading.local) cooperative, before the app is imported", parse=parse_bool,
        metavar="")
    log_level: str = option("info", "error log level: " + ", ".join(LOG_LEVELS),
                            check=_log_level, metavar="LEVEL")
    access_log: str = option(
        "", "access log (Apache combined format): '-' for stdout, a file path, or empty/'off'",
        metavar="TARGET")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["repeat"] and isinstance(value, str):
                object.__setattr__(self, f.name, (value,))
            elif f.metadata["repeat"] and isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
            expected = _TYPES[str(f.type)]
            if not isinstance(getattr(self, f.name), expected) or isinstance(value, bool) != (
                expected is bool
            ):
                raise ConfigError(f.name, f"must be of type {f.type}, not {type(value).__name__}")
            check = f.metadata.get("check")
            problem = check(getattr(self, f.name)) if check else None
            if problem:
                raise ConfigError(f.name, problem)
        if self.access_log == "off":
            object.__setattr__(self, "access_log", "")
        object.__setattr__(self, "log_level", self.log_level.lower())

    @classmethod
    def from_strings(cls, values: Mapping[str, str], origins: Mapping[str, str]) -> "Config":
        """Build from text values (CLI, environment). ``origins`` names where each value came
        from ('--max-body-size', 'GREENSERVE_MAX_BODY_SIZE') for the error message."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: Dict[str, Any] = {}
        for name, text in values.items():
            f = fields.get(name)
            if f is None:
                raise ConfigError(origins.get(name, name), "unknown option")
            try:
                kwargs[name] = f.metadata["parse"](text)
            except ValueError as exc:
                raise ConfigError(origins.get(name, name), str(exc)) from None
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(origins.get(exc.option, exc.option), exc.message) from None

    @classmethod
    def with_options(cls, options: Mapping[str, Any]) -> "Config":
        """Build from Python keywords; an unknown keyword raises ConfigError naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        for key in options:
            if key not in names:
                raise ConfigError(key, "unknown option")
        return cls(**options)


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def option_table() -> str:
    """The README table of options, generated from the declaration."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Config):
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        flag = f"{flag_name(f.name)} {f.metadata['metavar']}".strip()
        rows.append(
            f"| `{flag}` | `{env_name(f.name)}` | "
            f"`{default!s}` | {f.metadata['help']} |"
        )
    return "\n".join(rows)
