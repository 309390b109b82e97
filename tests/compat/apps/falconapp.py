"""A small Falcon API, written as Falcon's own documentation writes one: resource classes
with responders, URI templates with typed fields, req.get_media() / resp.media for JSON,
falcon.HTTPError subclasses for client errors, and resp.stream for a streamed body.

Everything it answers is computed from the request or from the fixed CATALOG, so that any
worker of a multi-process server gives the same answer.
"""

import falcon

CATALOG = {
    1: {"id": 1, "name": "kettle", "price": 25},
    2: {"id": 2, "name": "teapot", "price": 18},
}


class ItemResource:
    def on_get(self, req, resp, item_id):
        item = CATALOG.get(item_id)
        if item is None:
            raise falcon.HTTPNotFound(title="No such item", description=f"item {item_id}")
        resp.media = item


class OrdersResource:
    def on_post(self, req, resp):
        order = req.get_media()  # malformed JSON: Falcon answers 400 itself
        lines = order.get("lines") if isinstance(order, dict) else None
        if not lines:
            raise falcon.HTTPUnprocessableEntity(
                title="Empty order", description="an order needs at least one line")
        total = 0
        for line in lines:
            item = CATALOG.get(line.get("id"))
            if item is None:
                raise falcon.HTTPUnprocessableEntity(
                    title="Unknown item", description=f"no item {line.get('id')!r}")
            total += item["price"] * int(line.get("qty", 1))
        resp.status = falcon.HTTP_201
        resp.location = "/orders/1"
        resp.media = {"customer": order.get("customer"), "lines": len(lines), "total": total}


class GreetingResource:
    def on_get(self, req, resp, name):
        resp.media = {"greeting": f"Hello, {name}!", "path": req.path}


class CountdownResource:
    """A streamed body: an iterable with no length, so the server frames it itself."""

    def on_get(self, req, resp, count):
        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = (f"line {n}\n".encode() for n in range(count, 0, -1))


class BoomResource:
    def on_get(self, req, resp):
        raise RuntimeError("falconapp deliberate failure")


app = falcon.App()
app.add_route("/items/{item_id:int}", ItemResource())
app.add_route("/orders", OrdersResource())
app.add_route("/greet/{name}", GreetingResource())
app.add_route("/countdown/{count:int(min=1, max=10000)}", CountdownResource())
app.add_route("/boom", BoomResource())
