"""The WebSocket servers the benchmark compares, each serving the same three things:
/echo echoes every message; /room joins the room, where the message "broadcast" makes the
server send "tick" to every member; any other path answers 200 "ok" (the readiness check).

    python loadtests/websocket/servers.py greenserve|gevent|uvicorn PORT

greenserve: greenserve.websocket.accept, one process, no pings (the peers send none either).
gevent: gevent.pywsgi with gevent-websocket's WebSocketHandler (environ["wsgi.websocket"]).
uvicorn: an ASGI app over the websockets library (uvicorn's --ws websockets), pings off.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Set


def wsgi_app(accept: Callable[[Dict[str, Any]], Any]) -> Callable[..., Any]:
    room: Set[Any] = set()

    def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        path = environ["PATH_INFO"]
        if path not in ("/echo", "/room"):
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        ws = accept(environ)
        if path == "/room":
            room.add(ws)
        try:
            while True:
                message = ws.receive()
                if message is None:
                    break
                if message == "broadcast":
                    for member in list(room):
                        member.send("tick")
                else:
                    ws.send(message)
        finally:
            room.discard(ws)
        return []

    return app


def run_greenserve(port: int) -> None:
    import greenserve
    import greenserve.websocket

    greenserve.serve(wsgi_app(greenserve.websocket.accept), port=port, max_connections=30000,
                     websocket_ping_interval=0, backlog=4096)


def run_gevent(port: int) -> None:
    from gevent import monkey

    monkey.patch_all()
    from gevent.pywsgi import WSGIServer
    from geventwebsocket.handler import WebSocketHandler

    server = WSGIServer(("127.0.0.1", port), wsgi_app(lambda env: env["wsgi.websocket"]),
                        handler_class=WebSocketHandler, log=None, backlog=4096)
    server.serve_forever()


def run_uvicorn(port: int) -> None:
    import uvicorn

    room: Set[Any] = set()

    async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        if scope["path"] == "/room":
            room.add(send)
        try:
            while True:
                event = await receive()
                if event["type"] != "websocket.receive":
                    break
                if event.get("text") == "broadcast":
                    for member in list(room):
                        await member({"type": "websocket.send", "text": "tick"})
                else:
                    await send({"type": "websocket.send", "text": event.get("text"),
                                "bytes": event.get("bytes")})
        finally:
            room.discard(send)

    uvicorn.run(app, host="127.0.0.1", port=port, ws="websockets", log_level="warning",
                ws_ping_interval=None, backlog=4096, access_log=False)


if __name__ == "__main__":
    {"greenserve": run_greenserve, "gevent": run_gevent, "uvicorn": run_uvicorn}[sys.argv[1]](
        int(sys.argv[2]))
