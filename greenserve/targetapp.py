"""A load-test target: a pure WSGI app with endpoints that stress one thing each.

Run it with ``greenserve greenserve.targetapp:app``. It imports nothing of greenserve (stdlib
only), so it runs under any WSGI server; it uses two optional environ keys when present:

- ``greenserve.sleep(seconds)``: a cooperative sleep. Without it (another server) the waits of
  /delay and /stream fall back to ``time.sleep``, which blocks a single-threaded server whole.
- ``greenserve.statistics()``: the server's counters, shown by /stats.
- ``wsgi.websocket`` (gevent-websocket's convention, which greenserve follows): /ws.

Endpoints (any method; numbers are plain decimal digits):

``/``                 200 ``Hello, world!``, text/plain.
``/health``           200 ``ok``.
``/delay/<ms>``       answers after ``ms`` milliseconds (0..60000). The ``X-Sleep`` response
                      header says which sleep ran: ``greenserve.sleep`` or ``time.sleep``.
``/bytes/<n>``        ``n`` bytes (0..64 MiB) in one body with Content-Length; byte ``i`` of the
                      payload is ``i % 256``, so a client can check it.
``/bytes/<n>?stream=1``  the same payload (n up to 1 GiB) streamed in 64 KiB pieces without
                      Content-Length (chunked on HTTP/1.1). ``stream=0`` is the default.
``/stream/<n>``       ``n`` chunks (0..100000), chunk ``i`` being the line ``chunk i\\n``;
                      ``?delay_ms=D`` (0..60000) waits D ms before each chunk after the first.
``/status/<code>``    that status (200..599) with the body ``<code> <reason>\\n``; 204 and 304
                      have no body.
``/echo``             the request as JSON: method, path, query, headers (lower-case names),
                      body (UTF-8, invalid bytes replaced) and body_length.
``/upload``           reads the body in 64 KiB pieces and answers JSON
                      ``{"bytes": n, "sha256": "<hex>"}``.
``/cpu/<ms>``         burns CPU in a busy loop for ``ms`` milliseconds (0..10000); on a
                      single-threaded server this holds up every other request meanwhile.
``/ws``               a WebSocket that echoes every message (400 without a valid handshake,
                      or on a server that offers no ``wsgi.websocket``).
``/stats``            JSON of ``greenserve.statistics()`` plus ``"available": true``, or
                      ``{"available": false}`` when the server offers no statistics.

A bad parameter (not an integer, negative, out of range, unknown query value, missing) is a 400
and an unknown path a 404, each with a one-line text/plain body saying what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from http import HTTPStatus
from typing import Any, Callable, Dict, Iterable, Iterator, List, Tuple
from urllib.parse import parse_qs

Environ = Dict[str, Any]
Headers = List[Tuple[str, str]]
Response = Tuple[int, Headers, Iterable[bytes]]
Handler = Callable[[Environ, List[str]], Response]

PIECE = 64 * 1024
PATTERN = bytes(range(256)) * (PIECE // 256)  # byte i of every payload is i % 256
MAX_DELAY_MS = 60_000
MAX_CPU_MS = 10_000
MAX_BYTES = 64 * 1024 * 1024
MAX_STREAM_BYTES = 1024 * 1024 * 1024
MAX_CHUNKS = 100_000
_INTEGER = re.compile(r"-?[0-9]+")


class BadRequest(Exception):
    """A parameter is wrong: answered 400 with the message."""


class NotFound(Exception):
    """No such endpoint: answered 404 with the message."""


def reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def parse_int(name: str, text: str, low: int, high: int) -> int:
    """Return ``text`` as an integer in [low, high]. Raises BadRequest saying what is wrong."""
    if not _INTEGER.fullmatch(text):
        raise BadRequest(f"{name} must be an integer, got {text!r}")
    if text.startswith("-"):
        raise BadRequest(f"{name} must not be negative, got {text}")
    if len(text) > 12 or not low <= int(text) <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {text}")
    return int(text)


def query(environ: Environ) -> Dict[str, str]:
    """The query string as a dict (last value wins)."""
    pairs = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {key: values[-1] for key, values in pairs.items()}


def sleeper(environ: Environ) -> Callable[[float], None]:
    """The server's cooperative sleep when it gives one, else time.sleep (blocking)."""
    sleep: Callable[[float], None] = environ.get("greenserve.sleep", time.sleep)
    return sleep


def body_pieces(environ: Environ) -> Iterator[bytes]:
    """The request body in reads of at most 64 KiB; never reads past CONTENT_LENGTH unless the
    server says the input is terminated (PEP 3333 / wsgi.input_terminated)."""
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        left = -1
    else:
        length = environ.get("CONTENT_LENGTH", "")
        left = int(length) if length.isdigit() else 0
    while left:
        piece = stream.read(PIECE if left < 0 else min(PIECE, left))
        if not piece:
            return
        left = left - len(piece) if left > 0 else left
        yield piece


def payload(n: int) -> Iterator[bytes]:
    """``n`` bytes of the deterministic pattern, in pieces of at most 64 KiB."""
    for start in range(0, n, PIECE):
        yield PATTERN[: min(PIECE, n - start)]


def text(code: int, body: str, content_type: str = "text/plain; charset=utf-8") -> Response:
    data = body.encode("utf-8")
    return code, [("Content-Type", content_type), ("Content-Length", str(len(data)))], [data]


def as_json(obj: Any, code: int = 200) -> Response:
    return text(code, json.dumps(obj, sort_keys=True) + "\n", "application/json")


# -- endpoints ----------------------------------------------------------------------------------


def hello(environ: Environ, args: List[str]) -> Response:
    return text(200, "Hello, world!\n")


def health(environ: Environ, args: List[str]) -> Response:
    return text(200, "ok")


def delay(environ: Environ, args: List[str]) -> Response:
    ms = parse_int("ms", args[0], 0, MAX_DELAY_MS)
    sleep = sleeper(environ)
    sleep(ms / 1000)
    code, headers, body = text(200, f"slept {ms} ms\n")
    kind = "time.sleep" if sleep is time.sleep else "greenserve.sleep"
    return code, headers + [("X-Sleep", kind)], body


def bytes_(environ: Environ, args: List[str]) -> Response:
    stream = query(environ).get("stream", "0")
    if stream not in ("0", "1"):
        raise BadRequest(f"stream must be 0 or 1, got {stream!r}")
    headers = [("Content-Type", "application/octet-stream")]
    if stream == "1":
        return 200, headers, payload(parse_int("n", args[0], 0, MAX_STREAM_BYTES))
    n = parse_int("n", args[0], 0, MAX_BYTES)
    return 200, headers + [("Content-Length", str(n))], [b"".join(payload(n))]


def stream(environ: Environ, args: List[str]) -> Response:
    n = parse_int("n", args[0], 0, MAX_CHUNKS)
    delay_ms = parse_int("delay_ms", query(environ).get("delay_ms", "0"), 0, MAX_DELAY_MS)
    sleep = sleeper(environ)

    def chunks() -> Iterator[bytes]:
        for i in range(n):
            if i and delay_ms:
                sleep(delay_ms / 1000)
            yield f"chunk {i}\n".encode()

    return 200, [("Content-Type", "text/plain; charset=utf-8")], chunks()


def status(environ: Environ, args: List[str]) -> Response:
    code = parse_int("code", args[0], 200, 599)
    if code in (204, 304):
        return code, [], []
    return text(code, f"{code} {reason(code)}\n")


def echo(environ: Environ, args: List[str]) -> Response:
    body = b"".join(body_pieces(environ))
    headers = {key[5:].replace("_", "-").lower(): value
               for key, value in environ.items() if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return as_json({
        "method": environ["REQUEST_METHOD"], "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""), "headers": headers,
        "body": body.decode("utf-8", "replace"), "body_length": len(body),
    })


def upload(environ: Environ, args: List[str]) -> Response:
    digest, size = hashlib.sha256(), 0
    for piece in body_pieces(environ):
        digest.update(piece)
        size += len(piece)
    return as_json({"bytes": size, "sha256": digest.hexdigest()})


def cpu(environ: Environ, args: List[str]) -> Response:
    ms = parse_int("ms", args[0], 0, MAX_CPU_MS)
    deadline = time.perf_counter() + ms / 1000
    rounds = 0
    while time.perf_counter() < deadline:
        sum(i * i for i in range(100))
        rounds += 1
    return as_json({"ms": ms, "rounds": rounds})


def stats(environ: Environ, args: List[str]) -> Response:
    statistics = environ.get("greenserve.statistics")
    if statistics is None:
        return as_json({"available": False})
    return as_json({"available": True, **statistics()})


def no_websocket(environ: Environ, args: List[str]) -> Response:
    raise BadRequest("/ws needs a WebSocket handshake (and a server with wsgi.websocket)")


def websocket_echo(ws: Any) -> Iterable[bytes]:
    """Echo every message until the client closes."""
    while True:
        message = ws.receive()
        if message is None:
            return []
        ws.send(message)


# first path segment -> (handler, the names of the segments it takes after it)
ROUTES: Dict[str, Tuple[Handler, Tuple[str, ...]]] = {
    "": (hello, ()),
    "health": (health, ()),
    "delay": (delay, ("ms",)),
    "bytes": (bytes_, ("n",)),
    "stream": (stream, ("n",)),
    "status": (status, ("code",)),
    "echo": (echo, ()),
    "upload": (upload, ()),
    "cpu": (cpu, ("ms",)),
    "stats": (stats, ()),
    "ws": (no_websocket, ()),
}


def route(environ: Environ) -> Response:
    """Find and run the handler for PATH_INFO. Raises NotFound / BadRequest."""
    path = environ.get("PATH_INFO", "") or "/"
    first, *args = path.strip("/").split("/")
    if first not in ROUTES:
        raise NotFound(f"no endpoint {path!r}; see the docstring of greenserve.targetapp")
    handler, names = ROUTES[first]
    if len(args) != len(names):
        usage = "/".join([""] + ([first] if first else []) + [f"<{n}>" for n in names]) or "/"
        raise BadRequest(f"usage: {usage}")
    return handler(environ, args)


def app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The WSGI entry point."""
    if environ.get("wsgi.websocket") is not None and environ.get("PATH_INFO") == "/ws":
        return websocket_echo(environ["wsgi.websocket"])
    try:
        code, headers, body = route(environ)
    except NotFound as exc:
        code, headers, body = text(404, f"{exc}\n")
    except BadRequest as exc:
        code, headers, body = text(400, f"{exc}\n")
    start_response(f"{code} {reason(code)}", headers)
    return body
