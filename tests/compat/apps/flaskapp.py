"""A small Flask app as its users write one: a file download (send_file, with Range and
conditional requests), a streamed response, an upload read from ``request.stream``, and a
streamed greeting that reads the request inside its generator (``stream_with_context``).

Configuration comes from the environment through Flask's own ``from_prefixed_env``:
FLASK_DATA_DIR is the folder of the files it serves.
"""

import hashlib
from pathlib import Path

from flask import Flask, Response, jsonify, request, send_file, stream_with_context

app = Flask(__name__)
app.config.from_prefixed_env()


@app.get("/report")
def report():
    """The report file; werkzeug answers Range and If-* requests itself (conditional=True)."""
    return send_file(Path(app.config["DATA_DIR"]) / "report.bin",
                     mimetype="application/octet-stream", conditional=True)


@app.get("/numbers")
def numbers():
    """``count`` lines made one at a time while the response is sent."""
    count = request.args.get("count", 1000, type=int)

    def generate():
        for number in range(count):
            yield f"{number}\n"

    return Response(generate(), mimetype="text/plain")


@app.post("/upload")
def upload():
    """Read the body as it arrives, piece by piece, and answer its length and SHA-256."""
    digest = hashlib.sha256()
    length = 0
    while True:
        chunk = request.stream.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        length += len(chunk)
    return jsonify(length=length, sha256=digest.hexdigest())


@app.get("/greet")
def greet():
    """A streamed greeting that needs the request while it is being sent."""

    @stream_with_context
    def generate():
        yield "Hello, "
        yield request.args["name"]
        yield "!\n"
        for number in range(request.args.get("times", 3, type=int)):
            yield f"{number}: {request.args['name']} ({request.path})\n"

    return Response(generate(), mimetype="text/plain")
