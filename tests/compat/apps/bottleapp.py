"""A small Bottle API, written as Bottle's own documentation writes one: decorated routes with
wildcard filters, dicts returned as JSON, request.json, abort() for client errors with an
error handler that answers JSON, and a generator for a streamed body.

``catchall`` is off, the documented setting for an app that leaves unexpected exceptions to
what runs it: greenserve then answers the 500 and logs the traceback.

Everything it answers is computed from the request or from the fixed CATALOG, so that any
worker of a multi-process server gives the same answer.
"""

import json

from bottle import Bottle, abort, request, response

CATALOG = {
    1: {"id": 1, "name": "kettle", "price": 25},
    2: {"id": 2, "name": "teapot", "price": 18},
}

app = Bottle()
app.config["catchall"] = False


@app.get("/items/<item_id:int>")
def show_item(item_id):
    if item_id not in CATALOG:
        abort(404, f"No item {item_id}")
    return CATALOG[item_id]


@app.post("/orders")
def create_order():
    order = request.json  # malformed JSON: Bottle answers 400 itself
    lines = order.get("lines") if isinstance(order, dict) else None
    if not lines:
        abort(422, "an order needs at least one line")
    total = 0
    for line in lines:
        item = CATALOG.get(line.get("id"))
        if item is None:
            abort(422, f"no item {line.get('id')!r}")
        total += item["price"] * int(line.get("qty", 1))
    response.status = 201
    response.set_header("Location", "/orders/1")
    return {"customer": order.get("customer"), "lines": len(lines), "total": total}


@app.error(422)
def unprocessable(error):
    response.content_type = "application/json"
    return json.dumps({"error": error.body})


@app.get("/greet/<name>")
def greet(name):
    return {"greeting": f"Hello, {name}!", "path": request.path}


@app.get("/countdown/<count:int>")
def countdown(count):
    """A streamed body: a generator with no length, so the server frames it itself."""
    response.content_type = "text/plain; charset=utf-8"
    return (f"line {n}\n".encode() for n in range(count, 0, -1))


@app.get("/boom")
def boom():
    raise RuntimeError("bottleapp deliberate failure")
