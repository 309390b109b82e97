"""A streamed response: lines sent as they are produced, with cooperative pauses.

    greenserve examples.streaming:app
    curl -N http://127.0.0.1:8000/?count=5&delay=0.2

Each pause is ``greenserve.sleep``: it goes through the hub, so other requests keep being
served meanwhile.
"""

from urllib.parse import parse_qs

import greenserve


def app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        count = min(int(query.get("count", ["5"])[0]), 1000)
        delay = min(float(query.get("delay", ["0.1"])[0]), 5.0)
    except ValueError:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"count and delay must be numbers\n"]
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return _lines(count, delay)


def _lines(count, delay):
    for i in range(1, count + 1):
        yield f"line {i} of {count}\n".encode()
        if i < count:
            greenserve.sleep(delay)
