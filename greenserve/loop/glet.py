"""The greenlets the hub runs tasks in. Kept out of the hub's module because that one is
compiled, and a compiled class cannot extend greenlet's C type; nothing here switches."""

from __future__ import annotations

from typing import Any, Callable

from greenlet import greenlet


class Task(greenlet):
    """A greenlet made by ``Hub.spawn`` or pooled by ``Hub.start_now``: runs ``fn`` under the
    hub, which is its parent (``fn`` also names it in the watchdog's reports)."""

    def __init__(self, fn: Callable[..., Any], run: Callable[..., Any], parent: greenlet) -> None:
        super().__init__(run, parent)
        self.fn = fn
