"""Logging: the error log's setup (``--log-level``, ``--log-config``) and the access log.

Strategy:
- Both logs go through :mod:`logging`: errors to the ``greenserve.error`` logger, one line per
  answered request to ``greenserve.access``. ``--log-config`` hands both to a standard logging
  configuration file; without it, errors go to stderr at ``--log-level``.
- The access log writes Apache's combined format or one JSON object per line. Every value that
  comes from the client is escaped, so a quote, backslash or control byte in a header can never
  end a field early and forge the ones after it: combined format writes them as ``\\xNN``; JSON
  is written by :mod:`json` (request bytes are decoded as latin-1, which maps every byte).
- Formatting is done only when the access log is on; the timestamp is formatted once a second.
"""

from __future__ import annotations

import configparser
import json
import logging
import logging.config
import sys
import time
from typing import Any, Callable, Dict, Optional, Tuple

from .errors import ConfigError
from .h1 import Request

error_log = logging.getLogger("greenserve.error")
access_logger = logging.getLogger("greenserve.access")

# What a broken logging configuration file can raise while it is loaded.
_CONFIG_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError,
                  RuntimeError, configparser.Error)


def configure_logging(level: str, log_config: str = "") -> None:
    """Set up the error log: ``log_config`` (a dictConfig JSON file or a fileConfig ini file)
    when given, else a stderr handler at ``level``. Raises ConfigError naming log_config."""
    if log_config:
        _load_config(log_config)
        return
    root = logging.getLogger("greenserve")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S %z"))
        root.addHandler(handler)
    root.setLevel(level.upper())


def _load_config(path: str) -> None:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
        if path.endswith(".json"):
            logging.config.dictConfig(json.loads(text))
        else:
            parser = configparser.ConfigParser()
            parser.read_string(text, source=path)
            logging.config.fileConfig(parser, disable_existing_loggers=False)
    except _CONFIG_ERRORS as exc:
        raise ConfigError("log_config", f"cannot use {path}: {type(exc).__name__}: {exc}") from None


class _Clock:
    """A strftime result, formatted at most once a second."""

    __slots__ = ("_pattern", "_second", "_text")

    def __init__(self, pattern: str) -> None:
        self._pattern = pattern
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = time.strftime(self._pattern, time.localtime(second))
        return self._text


Formatter = Callable[["AccessLog", Dict[str, Any], Request, int, int, float], str]


class AccessLog:
    """One line per answered request to the ``greenserve.access`` logger.

    ``target`` '-' (stdout) or a file path adds a handler for this log, removed by ``close()``.
    With ``from_config`` (a --log-config was loaded), the log is also on when that configuration
    gave ``greenserve.access`` handlers of its own."""

    def __init__(self, target: str, fmt: str = "combined", *, from_config: bool = False) -> None:
        self._handler: Optional[logging.Handler] = None
        self._propagate = access_logger.propagate
        self.enabled = bool(target) or (from_config and bool(access_logger.handlers))
        self._format: Formatter = _json_line if fmt == "json" else _combined_line
        self._clock = _Clock("%Y-%m-%dT%H:%M:%S%z" if fmt == "json" else "%d/%b/%Y:%H:%M:%S %z")
        if target:
            handler: logging.Handler = (
                logging.StreamHandler(sys.stdout) if target == "-" else logging.FileHandler(target)
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._handler = handler
            access_logger.addHandler(handler)
            access_logger.setLevel(logging.INFO)
            access_logger.propagate = False  # access lines do not belong in the error log

    def write(self, environ: Dict[str, Any], request: Request, status: int, sent: int,
              seconds: float) -> None:
        """Log one request: its environ (after proxy headers were applied), the parsed request,
        the status sent (0: none), the body bytes sent and how long it took."""
        access_logger.info(self._format(self, environ, request, status, sent, seconds))

    def close(self) -> None:
        if self._handler is not None:
            access_logger.removeHandler(self._handler)
            access_logger.propagate = self._propagate
            self._handler.close()
            self._handler = None


def _headers(request: Request) -> Tuple[Optional[bytes], Optional[bytes]]:
    referer = user_agent = None
    for name, value in request.headers:
        if name == b"referer":
            referer = value
        elif name == b"user-agent":
            user_agent = value
    return referer, user_agent


def _combined_line(log: AccessLog, environ: Dict[str, Any], request: Request, status: int,
                   sent: int, seconds: float) -> str:
    """Apache combined: %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-Agent}i"."""
    referer, user_agent = _headers(request)
    return '%s - - [%s] "%s %s HTTP/%s" %s %s "%s" "%s"' % (
        escape(str(environ.get("REMOTE_ADDR", "-"))), log._clock.now(),
        escape(request.method.decode("latin-1")), escape(request.target.decode("latin-1")),
        escape(request.http_version.decode("latin-1")), status or "-", sent or "-",
        escape(referer.decode("latin-1")) if referer is not None else "-",
        escape(user_agent.decode("latin-1")) if user_agent is not None else "-",
    )


def _json_line(log: AccessLog, environ: Dict[str, Any], request: Request, status: int,
               sent: int, seconds: float) -> str:
    referer, user_agent = _headers(request)
    return json.dumps({
        "time": log._clock.now(),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "method": request.method.decode("latin-1"),
        "target": request.target.decode("latin-1"),
        "protocol": "HTTP/" + request.http_version.decode("latin-1"),
        "status": status or None,
        "bytes": sent,
        "duration": round(seconds, 6),
        "scheme": environ.get("wsgi.url_scheme"),
        "host": environ.get("HTTP_HOST"),
        "referer": referer.decode("latin-1") if referer is not None else None,
        "user_agent": user_agent.decode("latin-1") if user_agent is not None else None,
    })


def escape(text: str) -> str:
    """Escape a value for a combined-format line: quotes, backslashes, control characters and
    anything outside printable ASCII become \\xNN (\\uNNNN above latin-1)."""
    if text.isprintable() and text.isascii() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if " " <= c < "\x7f" and c not in '"\\' else _hex(c) for c in text)


def _hex(c: str) -> str:
    code = ord(c)
    return "\\x%02x" % code if code < 256 else "\\u%04x" % code
