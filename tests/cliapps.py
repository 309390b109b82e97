"""Apps for the command-line tests (imported by the server subprocess as tests.cliapps)."""

import sys

from greenserve.loop.hub import get_hub


def create_app():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"from factory"]

    return app


def slow(environ, start_response):
    """Answers after the number of seconds in the query string, without blocking the hub."""
    print("slow request started", file=sys.stderr, flush=True)
    get_hub().sleep(float(environ.get("QUERY_STRING") or "0"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slow done"]


not_callable = 42


def broken_factory():
    raise RuntimeError("factory exploded")


ECHOED = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME",
          "SERVER_PORT", "HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
          "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT", "HTTP_X_REAL_IP",
          "HTTP_X_FORWARDED_PREFIX", "HTTP_X_FORWARDED_SSL", "HTTP_X_FORWARDED_SCHEME",
          "HTTP_FRONT_END_HTTPS", "greenserve.peercert")


def echo_environ(environ, start_response):
    """Answers with a JSON object of the environ keys that proxies and TLS decide, and the
    pid of the process that answered."""
    import json
    import os

    seen = {key: environ[key] for key in ECHOED if key in environ}
    seen["pid"] = os.getpid()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def busy_or_small(environ, start_response):
    """/busy spins for a millisecond of CPU before answering (work that never yields); any
    other path answers at once with "small:<path>"."""
    import time

    path = environ["PATH_INFO"]
    if path == "/busy":
        until = time.perf_counter() + 0.001
        while time.perf_counter() < until:
            pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"small:" + path.encode("latin-1")]
