"""The hub's timers: a heap of scheduled calls, cancelled in O(1) and swept out lazily.
``TimerHeap`` is a part of ``Hub`` (see hub.py); nothing here switches greenlets."""

from __future__ import annotations

import heapq
from typing import Any, Callable, List, Tuple

from .._traits import trait


class Timer:
    """A scheduled call; ``cancel()`` is O(1) (the heap drops cancelled entries lazily)."""

    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when: float, fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: "Timer") -> bool:
        return self.when < other.when


@trait
class TimerHeap:
    """The timer half of the hub."""

    time: Callable[[], float]
    _timers: List[Timer]
    _compact_at: int

    def _call(self, fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        raise NotImplementedError  # the hub's

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Run ``fn(*args)`` in the hub at monotonic time ``when``. Returns the timer;
        ``timer.cancel()`` or ``hub.cancel_timer(timer)`` stops it."""
        timer = Timer(when, fn, args)
        timers = self._timers
        heapq.heappush(timers, timer)
        if len(timers) >= self._compact_at:
            # Cancelled timers stay in the heap until due; sweep them out when the heap has
            # doubled since the last sweep (amortised O(1) per timer).
            live = [t for t in timers if not t.cancelled]
            heapq.heapify(live)
            self._timers = live
            self._compact_at = max(256, 2 * len(live))
        return timer

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        return self.call_at(self.time() + delay, fn, *args)

    def cancel_timer(self, timer: Timer) -> None:
        timer.cancelled = True

    def _run_timers(self) -> None:
        now = self.time()
        timers = self._timers
        while timers and timers[0].when <= now:
            timer = heapq.heappop(timers)
            if not timer.cancelled:
                timer.cancelled = True
                self._call(timer.fn, timer.args)
