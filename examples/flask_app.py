"""A Flask app served by greenserve:

    pip install flask
    greenserve examples.flask_app:app
"""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask on greenserve!\n"


@app.post("/echo")
def echo():
    return jsonify(received=request.get_json(silent=True), length=request.content_length)
