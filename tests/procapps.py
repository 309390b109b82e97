"""Apps for the process tests, imported by the server's worker processes as tests.procapps.

``app`` answers by path: ``/`` who served (pid, worker index, generation, wsgi.multiprocess,
REMOTE_ADDR, SCRIPT_NAME, and the pid of the process that imported this module) as JSON; ``/slow?S`` the same after S seconds of cooperative sleep; ``/stuck?S`` blocks the whole
event loop for S seconds (a plain time.sleep); ``/die`` ends the worker process on the spot.
"""

import json
import os
import time

from greenserve.loop.hub import get_hub
from greenserve.process.worker import current_worker

IMPORTED_IN = os.getpid()  # the supervisor's with --preload, else the worker's own


def app(environ, start_response):
    path = environ["PATH_INFO"]
    seconds = float(environ.get("QUERY_STRING") or "0")
    if path == "/slow":
        say(f"slow request started in {os.getpid()}")
        get_hub().sleep(seconds)
    elif path == "/stuck":
        stuck_in_c(seconds)
    elif path == "/die":
        os._exit(13)
    worker = current_worker()
    body = json.dumps({
        "pid": os.getpid(),
        "index": worker.index if worker else None,
        "generation": worker.generation if worker else None,
        "multiprocess": environ["wsgi.multiprocess"],
        "remote": environ.get("REMOTE_ADDR"),
        "script_name": environ["SCRIPT_NAME"],
        "imported_in": IMPORTED_IN,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def say(line):
    """One line to stderr in one write, so that lines of several workers do not interleave."""
    os.write(2, (line + "\n").encode())


def stuck_in_c(seconds):
    say(f"blocking the loop in {os.getpid()}")
    time.sleep(seconds)
