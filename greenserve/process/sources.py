"""--reload: which of the source files the workers imported have changed since last seen."""

from __future__ import annotations

import os
from typing import Dict, List


def changed_files(watched: Dict[str, int]) -> List[str]:
    """The paths whose mtime (ns; -1 once gone) differs from the one in ``watched``, which is
    updated to the new values. Costs one stat per path."""
    changed = []
    for path, seen in watched.items():
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            mtime = -1
        if mtime != seen:
            changed.append(path)
            watched[path] = mtime
    return changed
