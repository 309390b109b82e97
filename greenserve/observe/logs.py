"""Logging: the error log's setup (``--log-level``, ``--log-config``) and the access log.

Strategy:
- Errors go to the ``greenserve.error`` logger: ``--log-config`` hands it to a standard logging
  configuration file; without it, errors go to stderr at ``--log-level``.
- Each ``AccessLog`` (one per server) has its own sink: the handler of its ``--access-log``
  target, which no other server in the process shares, or else, when ``--log-config`` gave the
  ``greenserve.access`` logger handlers, that logger (configured, so shared on purpose).
- Access lines never wait for their sink on the hub's thread: the hub only puts the formatted
  line in a bounded queue, and a thread of the log's own writes it. When the sink stalls (a
  stdout pipe nobody reads, a full disk), the queue fills and further lines are dropped and
  counted (``dropped``), with a warning at the start of each such incident: losing log lines
  beats a server that stops answering.
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
import queue
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import ConfigError
from ..http.h1 import Request

error_log = logging.getLogger("greenserve.error")
access_logger = logging.getLogger("greenserve.access")

QUEUE_LINES = 8192  # access lines waiting for the writer thread; past this they are dropped
CLOSE_TIMEOUT = 5.0  # seconds close() waits for the writer to finish the lines queued
_STOP = object()  # tells the writer thread to end

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
            config = json.loads(text)
            if isinstance(config, dict):
                # As fileConfig below: a configuration that names only the root logger must not
                # disable greenserve's own loggers, which exist from import time.
                config.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(config)
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


Formatter = Callable[["AccessLog", Dict[str, Any], Optional[Request], int, int, float], str]


class AccessLog:
    """One line per answered request, written by a thread of its own (see the module
    docstring). ``target`` '-' (stdout) or a file path gives this log its own handler, closed
    by ``close()``. With ``from_config`` (a --log-config was loaded), the log is also on when
    that configuration gave ``greenserve.access`` handlers: the lines then go to that logger.
    Raises ConfigError naming access_log if ``target`` cannot be opened."""

    def __init__(self, target: str, fmt: str = "combined", *, from_config: bool = False) -> None:
        self._handler: Optional[logging.Handler] = None
        sink: Optional[logging.Handler] = None
        if target:
            sink = self._handler = open_target(target)
        elif from_config and access_logger.handlers:
            sink = _ToLogger(access_logger)
        self.enabled = sink is not None
        self.dropped = 0  # lines lost because the writer could not keep up
        self._dropping = False
        self._format: Formatter = _json_line if fmt == "json" else _combined_line
        self._clock = _Clock("%Y-%m-%dT%H:%M:%S%z" if fmt == "json" else "%d/%b/%Y:%H:%M:%S %z")
        self._queue: "queue.Queue[Any]" = queue.Queue(QUEUE_LINES)
        self._thread: Optional[threading.Thread] = None
        if sink is not None:
            self._thread = threading.Thread(target=_write_lines, args=(self._queue, sink),
                                            name="greenserve-access-log", daemon=True)
            self._thread.start()

    def write(self, environ: Dict[str, Any], request: Request, status: int, sent: int,
              seconds: float) -> None:
        """Log one request: its environ (after proxy headers were applied), the parsed request,
        the status sent (0: none), the body bytes sent and how long it took. Never waits."""
        self._put(self._format(self, environ, request, status, sent, seconds))

    def write_rejected(self, remote_addr: str, scheme: str, status: int, sent: int,
                       seconds: float) -> None:
        """Log a request refused before it was parsed whole (400, 408, 413, 414, 431...): no
        method, target or headers are known. Never waits."""
        environ = {"REMOTE_ADDR": remote_addr, "wsgi.url_scheme": scheme}
        self._put(self._format(self, environ, None, status, sent, seconds))

    def _put(self, line: str) -> None:
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                error_log.warning("access log: %d lines wait to be written; dropping lines "
                                  "until they are (%d dropped so far)", self._queue.maxsize,
                                  self.dropped)
            return
        # One incident lasts until the writer has caught up to half the queue: a writer that
        # frees a slot now and then, just behind the server, would otherwise warn per slot.
        if self._dropping and self._queue.qsize() <= self._queue.maxsize // 2:
            self._dropping = False

    def close(self) -> None:
        """Write what is queued (for up to CLOSE_TIMEOUT seconds), end the writer thread and
        close this log's own handler. May block that long; call it once the server stopped."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        deadline = time.monotonic() + CLOSE_TIMEOUT
        try:
            self._queue.put(_STOP, timeout=CLOSE_TIMEOUT)
        except queue.Full:
            pass
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():  # the sink is stuck: leave the daemon thread and its handler be
            error_log.warning("access log: its output is stuck; %d lines were not written",
                              self._queue.qsize())
        elif self._handler is not None:
            self._handler.close()
        self._handler = None


def open_target(target: str) -> logging.Handler:
    """The handler of an --access-log target: '-' is stdout, anything else a file opened for
    appending. Raises ConfigError naming access_log."""
    if target == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
    else:
        try:
            handler = logging.FileHandler(target, encoding="utf-8")
        except OSError as exc:
            raise ConfigError("access_log", f"cannot open {target}: "
                              f"{exc.strerror or exc}") from None
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def check_access_log(target: str) -> None:
    """Open (creating it, as the server would) and close a file target of --access-log, so that
    a supervisor finds a bad path once, before forking workers that would each fail on it.
    Raises ConfigError naming access_log."""
    if target and target != "-":
        open_target(target).close()


def _write_lines(lines: "queue.Queue[Any]", sink: logging.Handler) -> None:
    """The writer thread: hand each queued line to ``sink`` until _STOP."""
    while True:
        line = lines.get()
        if line is _STOP:
            return
        sink.handle(logging.LogRecord(access_logger.name, logging.INFO, "", 0, line, None, None))


class _ToLogger(logging.Handler):
    """A sink that hands lines to a logger, so a logging configuration routes them."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        if self.logger.isEnabledFor(record.levelno):
            self.logger.handle(record)


def _headers(request: Request) -> Tuple[Optional[bytes], Optional[bytes]]:
    referer = user_agent = None
    for name, value in request.headers:
        if name == b"referer":
            referer = value
        elif name == b"user-agent":
            user_agent = value
    return referer, user_agent


def _combined_line(log: AccessLog, environ: Dict[str, Any], request: Optional[Request],
                   status: int, sent: int, seconds: float) -> str:
    """Apache combined: %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-Agent}i" ("-" for a
    request line or a header that is not known, and for %b when no body byte was sent)."""
    remote = escape(str(environ.get("REMOTE_ADDR", "-")))
    if request is None:
        return '%s - - [%s] "-" %s %s "-" "-"' % (remote, log._clock.now(), status or "-",
                                                  sent or "-")
    referer, user_agent = _headers(request)
    return '%s - - [%s] "%s %s HTTP/%s" %s %s "%s" "%s"' % (
        remote, log._clock.now(),
        escape(request.method.decode("latin-1")), escape(request.target.decode("latin-1")),
        escape(request.http_version.decode("latin-1")), status or "-", sent or "-",
        escape(referer.decode("latin-1")) if referer is not None else "-",
        escape(user_agent.decode("latin-1")) if user_agent is not None else "-",
    )


def _json_line(log: AccessLog, environ: Dict[str, Any], request: Optional[Request],
               status: int, sent: int, seconds: float) -> str:
    """One JSON object; what is not known (a request refused before it was parsed) is null."""
    referer, user_agent = _headers(request) if request is not None else (None, None)
    return json.dumps({
        "time": log._clock.now(),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "method": request.method.decode("latin-1") if request is not None else None,
        "target": request.target.decode("latin-1") if request is not None else None,
        "protocol": ("HTTP/" + request.http_version.decode("latin-1")
                     if request is not None else None),
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
