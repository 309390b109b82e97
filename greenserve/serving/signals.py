"""Signal handling for a process that runs one Server in its main thread: the whole server
(in-process mode) or one worker under the supervisor.

In-process: SIGTERM and SIGINT drain gracefully; a second SIGINT, or SIGQUIT, stops at once.
SIGHUP, SIGTTIN and SIGTTOU need the supervisor (``--workers 2`` or more): they are logged and
otherwise ignored, instead of ending (SIGHUP) or stopping (SIGTTIN/SIGTTOU) the process.

A worker: SIGTERM drains, SIGQUIT stops at once. SIGINT is ignored, because Ctrl-C in a
terminal reaches the whole process group and the supervisor decides what it means; SIGHUP,
SIGTTIN and SIGTTOU are the supervisor's business too.

Handlers only hand work to the hub (``call_soon_threadsafe``: a queue entry and a wake-up byte);
the hub's loop acts.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Callable, Dict, Iterator, Optional, Protocol

from ..loop.hub import Hub

log = logging.getLogger("greenserve.error")


class Stoppable(Protocol):
    """What the handlers need of a server (``Server`` is one): its hub and a graceful stop."""

    hub: Hub

    def stop(self, grace: Optional[float] = None) -> None: ...

SUPERVISOR_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


@contextlib.contextmanager
def install_stop_handlers(
    server: Stoppable, *, worker: bool = False, on_stop: Optional[Callable[[], Any]] = None
) -> Iterator[None]:
    """Handle the stop signals while the block runs (main thread only; elsewhere a no-op).
    ``on_stop`` runs in the hub once, when the first stop signal arrives."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    stopping: list[bool] = []
    hub = server.hub

    def stop(grace: Optional[float]) -> None:  # in the hub
        if on_stop is not None and not stopping:
            stopping.append(True)
            on_stop()
        if grace == 0.0:
            hub.stop()
        else:
            server.stop(grace)

    def on_signal(signum: int, frame: Any) -> None:
        if signum in SUPERVISOR_SIGNALS:
            hub.call_soon_threadsafe(log.warning, "%s ignored: it needs the supervisor "
                                     "(--workers 2 or more)", signal.Signals(signum).name)
            return
        immediate = signum == signal.SIGQUIT or (signum == signal.SIGINT and bool(received))
        received.append(signum)
        hub.call_soon_threadsafe(stop, 0.0 if immediate else None)

    handlers: Dict[int, Any] = {signal.SIGTERM: on_signal, signal.SIGQUIT: on_signal}
    for other in (signal.SIGINT,) + SUPERVISOR_SIGNALS:
        handlers[other] = signal.SIG_IGN if worker else on_signal
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
