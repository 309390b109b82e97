"""Signal handling for a server run in the main thread: SIGTERM and SIGINT stop it gracefully,
a second SIGINT stops it at once. Handlers only hand work to the hub (a wake-up byte)."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from .server import Server


@contextlib.contextmanager
def install_stop_handlers(server: "Server") -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        grace = 0.0 if received and signum == signal.SIGINT else None
        received.append(signum)
        if grace == 0.0:
            server.hub.call_soon_threadsafe(server.hub.stop)
        else:
            server.stop(grace)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
