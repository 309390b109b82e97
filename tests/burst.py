"""A burst of concurrent GET requests from a process of its own, so that the clients' threads
do not fight an in-process server's thread for the GIL (with 200 client threads in the test
process, a server callback can wait long enough for the GIL to look like a blocked loop).

    from burst import burst
    elapsed, answers = burst(url, 200)     # [(status, body text), ...] in request order
    elapsed, answers = burst(url + "?{i}", 200)    # {i}: each client's number

As a script: ``python burst.py URL COUNT [TIMEOUT]`` prints one JSON object. The clients are
threads released together by a barrier once all have started; each makes one request on a new
connection with ``http.client``; ``elapsed`` runs from the release to the last answer.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from typing import List, Tuple
from urllib.parse import urlsplit

Answer = Tuple[int, str]


def _get(url: str, timeout: float) -> Answer:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", (parts.path or "/") + ("?" + parts.query if parts.query else ""))
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    except OSError as exc:
        return 0, repr(exc)
    finally:
        conn.close()


def _run(url: str, count: int, timeout: float) -> dict:
    answers: List[Answer] = [(0, "not run")] * count
    ready = threading.Barrier(count + 1)

    def client(i: int) -> None:
        ready.wait(60)
        answers[i] = _get(url.replace("{i}", str(i)), timeout)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    ready.wait(60)
    started = time.monotonic()
    for thread in threads:
        thread.join(timeout + 5)
    return {"elapsed": time.monotonic() - started, "answers": answers}


def burst(url: str, count: int, timeout: float = 30.0) -> Tuple[float, List[Answer]]:
    """Run the burst in a new process; returns (seconds, answers)."""
    done = subprocess.run([sys.executable, __file__, url, str(count), str(timeout)],
                          capture_output=True, text=True, timeout=timeout + 60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    return result["elapsed"], [tuple(answer) for answer in result["answers"]]  # type: ignore


if __name__ == "__main__":
    print(json.dumps(_run(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))))
