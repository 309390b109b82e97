"""A real browser: headless Chromium (the Debian package) opens the chat page of examples/chat.py
served by greenserve; its script connects a WebSocket, sends a message, and when the broadcast
comes back reports it with a POST, which the test waits for (a poll with a deadline). Skips,
saying why, where chromium is not installed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import pytest

from conftest import wait_until
from examples import chat

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install "
                    "chromium; .ci/run does)")
def test_a_browser_exchanges_messages_over_a_websocket(serve):
    server = serve(chat.app, validate=False)
    del chat.reports[:]
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", server.url + "/?say=hello%20from%20chromium"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_until(lambda: bool(chat.reports), timeout=30), "the page never reported"
        finally:
            browser.terminate()
            try:
                browser.wait(10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait(10)
    assert chat.reports == [{"got": "hello from chromium"}]
    assert server.statistics()["websockets_total"] == 1
