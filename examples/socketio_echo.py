"""Flask-SocketIO (threading mode, websocket transport), unchanged, on greenserve: run it with
the patch (the one setting it needs).

    greenserve --patch examples.socketio_echo:app

An "echo" event is answered with an "echo" event carrying ``{"got": data}``. Flask-SocketIO's
websocket transport is simple-websocket on ``environ["gunicorn.socket"]``; its threads, queues
and events are what ``--patch`` makes cooperative (see README, WebSocket).
"""

from flask import Flask
from flask_socketio import SocketIO, emit

app = Flask(__name__)
socketio = SocketIO(app, async_mode="threading")


@socketio.on("echo")
def on_echo(data) -> None:
    emit("echo", {"got": data})
