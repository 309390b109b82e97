"""The supervisor's bookkeeping of its workers: which index each serves, which are ready or
retiring, deaths in a row and the back-off they earn. No processes, signals or I/O here: the
supervisor acts, this module remembers and decides.

Invariants: the wanted indices are a set of small integers (0..N-1 after start; SIGTTIN adds
the lowest free one, SIGTTOU removes the highest). An index is covered while it has a live
worker that is not retiring; a retiring worker drains and is never replaced.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Optional, Set

from .worker import WorkerInfo

MIN_CAPACITY = 64  # the most workers SIGTTIN may reach: 64, or 4 x --workers if more
STABLE_AFTER = 10.0  # a worker ready this long resets its index's run of deaths
RESPAWN_BASE, RESPAWN_MAX = 0.5, 30.0


def respawn_delay(deaths_in_a_row: int) -> float:
    """Seconds before replacing a worker that died unasked: none the first time, then 0.5, 1,
    2, 4 ... up to 30 while its replacements keep dying before they have served for a while."""
    if deaths_in_a_row <= 1:
        return 0.0
    return min(RESPAWN_MAX, RESPAWN_BASE * float(2 ** (deaths_in_a_row - 2)))


def lowest_free(used: Set[int]) -> int:
    """The lowest index not in ``used``."""
    index = 0
    while index in used:
        index += 1
    return index


class WorkerProc:
    """The supervisor's view of one worker process."""

    def __init__(self, info: WorkerInfo, pid: int, fd: int, now: float) -> None:
        self.info = info
        self.pid = pid
        self.fd: Optional[int] = fd  # read end of its pipe; None after EOF
        self.buffer = b""
        self.started = self.last_beat = now
        self.ready_at: Optional[float] = None
        self.retiring = False  # asked to go (or going by itself): not to be replaced
        self.kill_at: Optional[float] = None  # SIGKILL then, if still alive
        self.aborted = False
        self.app_error: Optional[str] = None

    def __repr__(self) -> str:
        return f"worker {self.info.index} (pid {self.pid})"


class Pool:
    """The workers by pid, the wanted indices and the back-off of each index."""

    def __init__(self, count: int) -> None:
        self.workers: Dict[int, WorkerProc] = {}
        self.wanted: Set[int] = set(range(count))
        self.capacity = max(MIN_CAPACITY, 4 * count)  # indices are below it (metrics slots)
        self.deaths: Dict[int, int] = {}  # index -> deaths in a row
        self.respawn_at: Dict[int, float] = {}  # index -> not before this time

    def live(self, index: int) -> Iterator[WorkerProc]:
        """The workers at ``index`` that are not retiring."""
        return (w for w in list(self.workers.values())
                if w.info.index == index and not w.retiring)

    def serving(self) -> bool:
        """Whether some worker that is not retiring is ready."""
        return any(w.ready_at is not None and not w.retiring for w in self.workers.values())

    def all_ready(self, generation: Optional[int] = None) -> bool:
        """Whether every wanted index has a ready worker (of ``generation``, if given)."""
        return all(
            any(w.ready_at is not None and generation in (None, w.info.generation)
                for w in self.live(index))
            for index in self.wanted
        )

    def due(self, now: float) -> List[int]:
        """The wanted indices without a live worker whose back-off is over."""
        due = []
        for index in sorted(self.wanted):
            if self.respawn_at.get(index, 0.0) > now or any(True for _ in self.live(index)):
                continue
            self.respawn_at.pop(index, None)
            due.append(index)
        return due

    def next_due(self) -> Optional[float]:
        return min(self.respawn_at.values()) if self.respawn_at else None

    def died(self, worker: WorkerProc, now: float) -> float:
        """Count an unasked death at the worker's index. Returns the back-off before its
        replacement (and remembers it)."""
        index = worker.info.index
        stable = worker.ready_at is not None and now - worker.ready_at >= STABLE_AFTER
        deaths = 1 if stable else self.deaths.get(index, 0) + 1
        self.deaths[index] = deaths
        delay = respawn_delay(deaths)
        if delay > 0:
            self.respawn_at[index] = now + delay
        return delay

    def grow(self) -> Optional[int]:
        """Want one more worker, at the lowest free index. Returns the index, or None at
        ``capacity``."""
        index = lowest_free(self.wanted)
        if index >= self.capacity:
            return None
        self.wanted.add(index)
        return index

    def shrink(self) -> Optional[int]:
        """Want one worker fewer: the highest index (never the last one). Returns it or None."""
        if len(self.wanted) <= 1:
            return None
        index = max(self.wanted)
        self.wanted.discard(index)
        self.respawn_at.pop(index, None)
        return index


def read_nowait(fd: int) -> bytes:
    """What a pipe holds now (at most 4 KiB), b"" when it holds nothing. Never blocks."""
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""
