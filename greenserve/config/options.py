"""Config: every server option, declared once.

Strategy: ``Config`` is one frozen dataclass; each field's metadata carries its help text, how to
parse it from a string and how to check it. From that single declaration come the keyword
arguments of ``Server``/``serve``, the command-line flags (``--max-body-size``), the environment
variables (``GREENSERVE_MAX_BODY_SIZE``) and the README table. This module does no I/O and reads
no environment at import time.

Where a value comes from (config file, environment, flag) is the caller's business: it hands
``Config.from_layers`` one mapping per source, lowest precedence first, each value paired with
its origin so that an error names the key as the user spelled it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ..errors import ConfigError

ENV_PREFIX = "GREENSERVE_"
# Variables of ours that are not server settings: which build to import (greenserve/_build.py)
ENV_NOT_SETTINGS = frozenset({"GREENSERVE_PURE"})
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


def parse_octal(text: str) -> int:
    """'022', '0o022', '7' -> a file mode mask; the digits are always octal."""
    digits = text.strip().lower()
    digits = digits[2:] if digits.startswith("0o") else digits
    if not digits or not all(c in "01234567" for c in digits):
        raise ValueError(f"not an octal mask: {text!r} (use e.g. 022 or 0o007)")
    return int(digits, 8)


def show_octal(value: int) -> str:
    return "0o%03o" % value


def _positive(value: Any) -> Optional[str]:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: Any) -> Optional[str]:
    return None if value >= 0 else "must not be negative"


def _log_level(value: str) -> Optional[str]:
    return None if value.lower() in LOG_LEVELS else "must be one of " + ", ".join(LOG_LEVELS)


def _mask(value: int) -> Optional[str]:
    return None if 0 <= value <= 0o777 else "must be an octal mask from 000 to 777"


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


def _one_of(*choices: str) -> Callable[[str], Optional[str]]:
    def check(value: str) -> Optional[str]:
        return None if value in choices else "must be one of " + ", ".join(choices)
    return check


def _metrics_bind(value: str) -> Optional[str]:
    if not value:
        return None
    from .addresses import parse_bind

    try:
        address = parse_bind(value)
    except ValueError as exc:
        return str(exc)
    return None if address.kind == "tcp" else "must be HOST:PORT or [IPV6]:PORT"


def _proxy_binds(value: Tuple[str, ...]) -> Optional[str]:
    return _binds(value) if value else None


def _networks(value: Tuple[str, ...]) -> Optional[str]:
    """Each item an IP address, a CIDR network or '*'."""
    import ipaddress

    for item in value:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not an IP address, a CIDR network (10.0.0.0/8) or '*'"
    return None


_TYPES: Dict[str, Any] = {
    "int": int, "float": (int, float), "str": str, "bool": bool, "Tuple[str, ...]": tuple,
}


def option(
    default: Any, help: str, *, parse: Callable[[str], Any] = str,
    check: Optional[Callable[[Any], Optional[str]]] = None, metavar: str = "VALUE",
    repeat: bool = False, show: Callable[[Any], str] = str, process: bool = False,
) -> Any:
    """Declare one option: its default, help, string parser, checker, CLI shape and how its
    value is shown (``show`` must give a TOML literal for ints, as ``--print-config`` uses it).
    ``process``: only the supervisor of worker processes acts on it; a ``Server`` (one process)
    refuses it unless it is left at its default."""
    meta = {"help": help, "parse": parse, "check": check, "metavar": metavar, "repeat": repeat,
            "show": show, "process": process}
    return dataclasses.field(default=default, metadata=meta)

# A value from one source, and where it came from ('--workers', 'GREENSERVE_WORKERS',
# 'greenserve.toml: workers'): values given as text are parsed, others are checked as they are.
Setting = Tuple[Any, str]


@dataclasses.dataclass(frozen=True)
class Config:
    """All server options. Build with keywords; bad values raise ConfigError naming the option."""

    bind: Tuple[str, ...] = option(
        ("127.0.0.1:8000",), "address to listen on: HOST:PORT, [IPV6]:PORT ([::] is "
        "dual-stack), unix:PATH or fd://N (repeat for several; systemd socket activation "
        "replaces them)", parse=parse_list, check=_binds, metavar="ADDRESS", repeat=True)
    root_path: str = option(
        "", "URL prefix the app is mounted under; becomes SCRIPT_NAME", metavar="PATH")
    url_scheme: str = option("http", "wsgi.url_scheme to report", check=_scheme,
                             metavar="SCHEME")
    backlog: int = option(2048, "listen() backlog", parse=int, check=_positive, metavar="N")
    max_connections: int = option(
        10000, "stop accepting at this many open connections", parse=int, check=_positive,
        metavar="N")
    workers: int = option(
        1, "worker processes; 1 serves in this process, more run under a supervisor that "
        "forks them (SIGHUP reloads, SIGTTIN/SIGTTOU add/remove one)", parse=int,
        check=_positive, metavar="N", process=True)
    worker_timeout: float = option(
        30.0, "seconds a worker may go without its event loop turning (or take to start) "
        "before it is aborted with SIGABRT, its stack logged, and replaced; 0 turns it off",
        parse=parse_seconds, check=_not_negative, metavar="SECONDS", process=True)
    max_requests: int = option(
        0, "recycle a worker gracefully after about this many requests (runs the supervisor "
        "even with one worker); 0 means never", parse=int, check=_not_negative, metavar="N",
        process=True)
    max_requests_jitter: int = option(
        0, "add a random 0..N to each worker's --max-requests, so workers do not recycle "
        "together", parse=int, check=_not_negative, metavar="N", process=True)
    reuse_port: bool = option(
        False, "give each worker its own TCP listener with SO_REUSEPORT, so the kernel "
        "spreads connections over the workers", parse=parse_bool, metavar="")
    umask: int = option(
        0o022, "umask (octal) for creating unix: sockets; 007 lets the group connect",
        parse=parse_octal, check=_mask, metavar="MASK", show=show_octal)
    reload: bool = option(
        False, "development: restart the workers when a source file of the app changes "
        "(polled once a second)", parse=parse_bool, metavar="", process=True)
    preload: bool = option(
        False, "import the app once in the supervisor, before forking the workers: they share "
        "its memory copy-on-write, and an app that cannot be imported stops the server before "
        "any worker starts; SIGHUP then forks new workers of that same app (new app code needs "
        "a restart)", parse=parse_bool, metavar="", process=True)
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
    buffer_chunked_body: bool = option(
        True, "read a chunked request body whole before calling the app (in memory up to 1 "
        "MiB, then in a temporary file) and give it a CONTENT_LENGTH, as Django and most "
        "frameworks need; --no-buffer-chunked-body streams it to apps that read wsgi.input to "
        "its end (wsgi.input_terminated)", parse=parse_bool, metavar="")
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
    min_send_rate: int = option(
        500, "lowest average rate, in bytes per second, at which a client must take a "
        "response once a send has had to wait for it and --send-timeout seconds have passed "
        "(slower: the connection is closed); 0 turns it off", parse=parse_size,
        check=_not_negative, metavar="BYTES")
    linger_timeout: float = option(
        2.0, "seconds to keep reading (and discarding) after an error response, so the client "
        "sees it (with TLS, the wait to send close_notify included)", parse=parse_seconds, check=_not_negative, metavar="SECONDS")
    graceful_timeout: float = option(
        30.0, "seconds in-flight requests get to finish on stop (SIGTERM, Ctrl-C)",
        parse=parse_seconds, check=_not_negative, metavar="SECONDS")
    request_timeout: float = option(
        0.0, "seconds an app may take for one request before it is cancelled (504 if no "
        "response was started, else the connection is closed); 0 means no limit",
        parse=parse_seconds, check=_not_negative, metavar="SECONDS")
    block_threshold: float = option(
        0.1, "log the stack of code that keeps the event loop from turning for longer than "
        "this many seconds; 0 turns the watchdog off", parse=parse_seconds,
        check=_not_negative, metavar="SECONDS")
    patch: bool = option(
        False, "make the standard library's blocking calls (socket, ssl, time.sleep, select, "
        "threading.local, locks and queues) and the PostgreSQL drivers cooperative, before the "
        "app is imported",
        parse=parse_bool, metavar="")
    log_level: str = option("info", "error log level: " + ", ".join(LOG_LEVELS),
                            check=_log_level, metavar="LEVEL")
    access_log: str = option(
        "", "access log: '-' for stdout, a file path, or empty/'off'", metavar="TARGET")
    access_log_format: str = option(
        "combined", "access log format: combined (Apache) or json (one object per line)",
        check=_one_of("combined", "json"), metavar="FORMAT")
    log_config: str = option(
        "", "logging configuration file (.json: logging.config.dictConfig, else an ini file for "
        "fileConfig); it decides the error and access logs' handlers and levels",
        metavar="PATH")
    metrics_bind: str = option(
        "", "HOST:PORT to serve Prometheus metrics on (GET /metrics); empty: no metrics",
        check=_metrics_bind, metavar="ADDRESS")
    certfile: str = option(
        "", "PEM certificate (chain) file: serve HTTPS (TLS 1.2 or later) on every listener",
        metavar="PATH")
    keyfile: str = option(
        "", "PEM private key file of --certfile (default: the key is in --certfile)",
        metavar="PATH")
    ca_certs: str = option(
        "", "PEM file of CA certificates that client certificates are verified against",
        metavar="PATH")
    cert_reqs: str = option(
        "none", "client certificates (mutual TLS): none, optional (verified if sent) or "
        "required", check=_one_of("none", "optional", "required"), metavar="MODE")
    ciphers: str = option(
        "", "OpenSSL cipher list for TLS 1.2 (default: OpenSSL's secure defaults)",
        metavar="CIPHERS")
    forwarded_allow_ips: Tuple[str, ...] = option(
        ("127.0.0.1", "::1"), "peers (IPs, CIDR networks, or '*') whose proxy headers are "
        "applied (see --forwarded-headers), and that may connect to --proxy-protocol-bind; "
        "from other peers those headers are removed",
        parse=parse_list, check=_networks, metavar="NETWORKS", repeat=True)
    proxy_count: int = option(
        1, "how many trusted proxies append to Forwarded / X-Forwarded-For: the client is the "
        "Nth address from the right", parse=int, check=_positive, metavar="N")
    forwarded_headers: str = option(
        "x-forwarded", "which proxy headers are believed from --forwarded-allow-ips peers: "
        "x-forwarded (X-Forwarded-For, -Proto, -Host, -Port) or forwarded (RFC 7239); the "
        "other family is removed", check=_one_of("x-forwarded", "forwarded"),
        metavar="FAMILY")
    proxy_protocol_bind: Tuple[str, ...] = option(
        (), "extra address to listen on whose connections begin with a PROXY protocol v1 or v2 "
        "header (repeat for several)", parse=parse_list, check=_proxy_binds, metavar="ADDRESS",
        repeat=True)

    websocket_max_message: int = option(
        1 << 20, "largest WebSocket message a client may send, in bytes (larger: close 1009)",
        parse=parse_size, check=_positive, metavar="BYTES")
    websocket_ping_interval: float = option(
        20.0, "seconds a WebSocket may be silent before the server pings it; silent for as "
        "long again, it is closed (1011); 0 turns pings off", parse=parse_seconds,
        check=_not_negative, metavar="SECONDS")
    websocket_close_timeout: float = option(
        5.0, "seconds to wait for the client's answer to a WebSocket close before dropping "
        "the connection", parse=parse_seconds, check=_not_negative, metavar="SECONDS")
    websocket_origins: Tuple[str, ...] = option(
        (), "Origin values a WebSocket handshake may carry (scheme://host[:port]; others get "
        "403); empty: any", parse=parse_list, metavar="ORIGINS", repeat=True)
    websocket_deflate: bool = option(
        False, "accept the permessage-deflate extension (RFC 7692) when a client offers it",
        parse=parse_bool, metavar="")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["repeat"] and isinstance(value, str):
                object.__setattr__(self, f.name, (value,))
            elif f.metadata["repeat"] and isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
                if not all(isinstance(item, str) for item in value):
                    raise ConfigError(f.name, "must be a list of strings")
            expected = _TYPES[str(f.type)]
            if not isinstance(getattr(self, f.name), expected) or isinstance(value, bool) != (
                expected is bool
            ):
                raise ConfigError(f.name, f"must be of type {f.type}, not {type(value).__name__}")
            check = f.metadata.get("check")
            problem = check(getattr(self, f.name)) if check else None
            if problem:
                raise ConfigError(f.name, problem)
        if self.preload and self.reload:
            raise ConfigError("preload", "cannot be combined with reload, whose workers each "
                              "import the app anew")
        if self.access_log == "off":
            object.__setattr__(self, "access_log", "")
        object.__setattr__(self, "log_level", self.log_level.lower())

    @property
    def prefork(self) -> bool:
        """Whether the server runs under the supervisor (worker processes) or in-process."""
        return self.workers > 1 or self.max_requests > 0 or self.reload

    def process_options(self) -> Tuple[str, ...]:
        """The options only a supervisor acts on (declared ``process``) that are not at their
        default, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(self)
                     if f.metadata["process"] and getattr(self, f.name) != f.default)

    def one_process(self) -> "Config":
        """This configuration as one process serves it: the process options at their defaults
        (a supervisor hands this to each worker's Server)."""
        defaults: Dict[str, Any] = {f.name: f.default for f in dataclasses.fields(self)
                                    if f.metadata["process"]}
        return dataclasses.replace(self, **defaults)

    @classmethod
    def from_layers(cls, *layers: Mapping[str, Setting]) -> "Config":
        """Build from sources, lowest precedence first (file, environment, flags): each maps
        an option name to a ``Setting``. Every value is parsed, even one a later layer
        overrides. Raises ConfigError naming the origin of the bad or unknown value."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: Dict[str, Any] = {}
        origins: Dict[str, str] = {}
        for layer in layers:
            for name, (value, origin) in layer.items():
                f = fields.get(name)
                if f is None:
                    close = difflib.get_close_matches(name, list(fields), n=1)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    raise ConfigError(origin, "unknown option" + hint)
                if isinstance(value, str):
                    try:
                        value = f.metadata["parse"](value)
                    except ValueError as exc:
                        raise ConfigError(origin, str(exc)) from None
                kwargs[name], origins[name] = value, origin
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
            f"`{f.metadata['show'](default)}` | {f.metadata['help']} |"
        )
    return "\n".join(rows)
