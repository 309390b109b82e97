"""flask-sock, unchanged, on greenserve: run it with the patch (the one setting it needs).

    greenserve --patch examples.flask_sock_echo:app      # then connect to ws://127.0.0.1:8000/echo

flask-sock is built on simple-websocket, which takes the raw socket greenserve offers under
``environ["gunicorn.socket"]`` and reads it in a thread of its own while the route waits on a
``threading.Event``: ``--patch`` makes that wait cooperative (see README, WebSocket).
"""

from flask import Flask
from flask_sock import Sock

app = Flask(__name__)
sock = Sock(app)


@sock.route("/echo")
def echo(ws) -> None:
    """Echo every message; "bye" ends the session."""
    while True:
        message = ws.receive()
        if message == "bye":
            break
        ws.send(message)


@app.route("/")
def index() -> str:
    return "flask-sock echo: connect to /echo"
