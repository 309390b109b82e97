"""A chat room in plain WSGI: every message a WebSocket client sends goes to every client.

    greenserve examples.chat:app        # then open http://127.0.0.1:8000/ in two tabs

Each client is served by its own greenlet, which waits in ``receive``; a message is sent to the
others from that greenlet (a WebSocket's sends are safe from any greenlet of the server). No
threads, no locks: the room is a plain set, since greenlets switch only where they wait.

``/?say=TEXT`` makes the page send TEXT once connected and then report, with a POST to
``/report``, the first message it got back: the browser test uses it (``reports`` keeps them).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterable, List, Set
from urllib.parse import parse_qs

import greenserve.websocket

Environ = Dict[str, Any]
StartResponse = Callable[..., Any]

room: Set[greenserve.websocket.WebSocket] = set()
reports: List[Dict[str, Any]] = []

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>greenserve chat</title></head>
<body>
<ul id="messages"></ul>
<form id="form"><input id="text" autocomplete="off"><button>Send</button></form>
<script>
const say = %s;
const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/chat");
const list = document.getElementById("messages");
ws.onopen = () => { if (say) ws.send(say); };
ws.onmessage = (event) => {
  const item = document.createElement("li");
  item.textContent = event.data;
  list.appendChild(item);
  if (say && event.data === say) {
    fetch("/report", {method: "POST", body: JSON.stringify({got: event.data})});
  }
};
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  ws.send(input.value);
  input.value = "";
};
</script>
</body></html>
"""


def broadcast(message: Any) -> None:
    """Send ``message`` to everyone in the room (a client that has gone is skipped)."""
    for ws in list(room):
        try:
            ws.send(message)
        except greenserve.websocket.WebSocketClosed:
            room.discard(ws)


def chat(environ: Environ) -> None:
    ws = greenserve.websocket.accept(environ)
    room.add(ws)
    try:
        for message in ws:
            broadcast(message)
    finally:
        room.discard(ws)


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/chat":
        chat(environ)
        return []
    if path == "/report" and environ["REQUEST_METHOD"] == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        reports.append(json.loads(environ["wsgi.input"].read(length) or b"{}"))
        start_response("204 No Content", [])
        return []
    if path == "/":
        say = parse_qs(environ.get("QUERY_STRING", "")).get("say", [""])[0]
        script_safe = json.dumps(say).replace("<", "\\u003c")  # no </script> from the URL
        body = (PAGE % script_safe).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]
