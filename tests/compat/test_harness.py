"""The matrix's own harness: a trivial app in every mode (so a broken harness shows itself
before any real app does)."""

from __future__ import annotations

import urllib.request


def test_served_answers_in_every_mode(served) -> None:
    server = served("greenserve.targetapp:app")
    with urllib.request.urlopen(server.url + "/", timeout=10) as reply:
        assert reply.status == 200
