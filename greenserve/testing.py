"""Helpers for testing WSGI apps against a real greenserve.

    from greenserve.testing import running_server

    with running_server(app) as server:
        requests.get(server.url + "/")

The server listens on 127.0.0.1 on a free port, in a background thread, and is stopped (with
in-flight requests finished) when the block ends.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator

from .serving.server import Server


class RunningServer:
    """A started server: ``url``, ``host``, ``port``, and the ``Server`` itself as ``server``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        address = server.addresses[0]
        self.host: str = address[0] if isinstance(address, tuple) else address
        self.port: int = address[1] if isinstance(address, tuple) else 0
        self.url = server.urls[0]

    def statistics(self) -> Any:
        return self.server.statistics()


@contextlib.contextmanager
def running_server(
    app: Callable[..., Any], *, startup_timeout: float = 10.0, grace: float = 5.0, **options: Any
) -> Iterator[RunningServer]:
    """Run ``app`` on a real server for the duration of the block. ``options`` are Config
    fields; ``bind`` defaults to 127.0.0.1 on a free port."""
    options.setdefault("bind", ("127.0.0.1:0",))
    server = Server(app, **options)
    server.start()
    thread = threading.Thread(target=server.serve_forever, name="greenserve-test", daemon=True)
    thread.start()
    if not server.wait_serving(startup_timeout):
        raise RuntimeError("greenserve did not start in time")
    try:
        yield RunningServer(server)
    finally:
        server.stop(grace)
        thread.join(startup_timeout)
