"""The blocked-loop watchdog: a thread that notices when the hub stops turning.

Strategy: every quarter of ``block_threshold`` a daemon thread reads the hub's counters of
turns and of greenlet switches (``Hub.turns``, ``Hub.switches``). When neither has moved for
longer than the threshold and the hub is not idle in its poller (``Hub.polling``), one piece
of code, a greenlet or a hub callback, has run all that time without waiting, and every other
request is stuck behind it. (The hub says so itself: compiled, it has no Python frames to read.)
The watchdog then logs, once per incident, the stack of that thread (``sys._current_frames``:
with greenlets it is the stack of the greenlet that runs) and names it from the hub's record
(``Hub.running``), and counts the incident. A long turn spent running many greenlets that each
yield in time is load, not a block: it is not reported.

Invariants: the watchdog only reads; it never raises into the app and costs the hub nothing
(no per-turn timestamp). Its clock is sampled, so a block is measured to within a quarter of the
threshold. It starts from the hub's first turn, so start-up never counts as a block. When the
watchdog's own thread wakes up late, the whole process was held (an overloaded host, a CPU
quota, a C call that keeps the GIL): that sample proves nothing and the clock starts again, so
a stall of the machine is not blamed on whatever code happened to run.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any, Callable, Optional

from .hub import Hub

log = logging.getLogger("greenserve.error")
MAX_FRAMES = 40  # of the stack logged, innermost last


class Watchdog:
    """Watches one hub from a thread of its own. ``start()`` from the hub's thread."""

    def __init__(self, hub: Hub, threshold: float,
                 on_incident: Optional[Callable[[], None]] = None) -> None:
        self.hub = hub
        self.threshold = threshold
        self.incidents = 0
        self.on_incident = on_incident  # called in the watchdog's thread, once per incident
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._hub_thread = 0

    def start(self) -> None:
        """Start watching the hub of the calling thread."""
        self._hub_thread = threading.get_ident()
        self._thread = threading.Thread(target=self._watch, name="greenserve-watchdog",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (waits for it a little)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def _watch(self) -> None:
        interval = max(0.005, self.threshold / 4)
        tolerance = max(interval, 0.02)  # how late a wake-up of this thread may be
        moves = self._moves()
        since = woke = time.monotonic()  # since: when the counters last moved (or idle)
        reported = False
        while not self._stop.wait(interval):
            now, previous = time.monotonic(), woke
            woke = now
            if now - previous > interval + tolerance and not reported:
                # This thread was not scheduled in time either: the whole process was held
                # (an overloaded host, a CPU quota, a C call keeping the GIL). Its clock says
                # nothing about the loop; start measuring again.
                since = now
                continue
            if self._moves() != moves:
                if reported:
                    log.debug("the event loop turns again after %.3f s", now - since)
                moves, since, reported = self._moves(), now, False
                continue
            if reported or now - since <= self.threshold:
                continue
            frame = sys._current_frames().get(self._hub_thread)
            if frame is None or self.hub.polling:
                since = now  # waiting for events is not being blocked
                continue
            reported = True
            self.incidents += 1
            if self.on_incident is not None:
                self.on_incident()
            self._report(frame, now - since)
            del frame

    def _moves(self) -> int:
        return self.hub.turns + self.hub.switches

    def _report(self, frame: FrameType, blocked: float) -> None:
        stack = "".join(traceback.format_stack(frame, limit=MAX_FRAMES))
        log.warning(
            "the event loop has not turned for %.3f s (block_threshold %s s): %s runs without "
            "waiting, so every other request waits. Make its blocking calls cooperative "
            "(greenserve.patch, greenserve.run_in_thread) or shorter. Its stack, innermost "
            "last:\n%s", blocked, self.threshold, self._who(), stack.rstrip("\n"),
        )

    def _who(self) -> str:
        """Name what runs: the hub's own loop, or the greenlet the hub last switched to."""
        running: Any = self.hub.running
        if running is None:
            return "the hub's loop (a callback)"
        fn = getattr(running, "fn", None)
        name = getattr(fn, "__qualname__", None) or repr(fn if fn is not None else running)
        return f"the greenlet running {name}"
