"""An app that binds blocking names when it is imported, as real apps and their libraries do:
``greenserve --patch`` must patch before importing it (tests.patchapp:app)."""

import threading
from time import sleep

_state = threading.local()  # per request only if the patch came first


def app(environ, start_response):
    _state.value = environ["QUERY_STRING"]
    sleep(0.2)  # the name bound at import time
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [_state.value.encode()]
