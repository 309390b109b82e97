"""A small Pyramid API, written as Pyramid's own documentation writes one: a Configurator with
URL dispatch routes (a pattern with a regex), @view_config views found by config.scan() and
rendered by the json renderer, request.json_body, pyramid.httpexceptions for client errors
(rendered as JSON for a client that accepts JSON), and a Response whose app_iter is a
generator.

Pyramid leaves an exception that no exception view handles to what runs it: greenserve then
answers the 500 and logs the traceback.

Everything it answers is computed from the request or from the fixed CATALOG, so that any
worker of a multi-process server gives the same answer.
"""

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPBadRequest, HTTPNotFound, HTTPUnprocessableEntity
from pyramid.response import Response
from pyramid.view import view_config

CATALOG = {
    1: {"id": 1, "name": "kettle", "price": 25},
    2: {"id": 2, "name": "teapot", "price": 18},
}


@view_config(route_name="item", request_method="GET", renderer="json")
def show_item(request):
    item_id = int(request.matchdict["item_id"])
    if item_id not in CATALOG:
        raise HTTPNotFound(f"No item {item_id}")
    return CATALOG[item_id]


@view_config(route_name="orders", request_method="POST", renderer="json")
def create_order(request):
    try:
        order = request.json_body
    except ValueError:
        raise HTTPBadRequest("the body is not JSON") from None
    lines = order.get("lines") if isinstance(order, dict) else None
    if not lines:
        raise HTTPUnprocessableEntity("an order needs at least one line")
    total = 0
    for line in lines:
        item = CATALOG.get(line.get("id"))
        if item is None:
            raise HTTPUnprocessableEntity(f"no item {line.get('id')!r}")
        total += item["price"] * int(line.get("qty", 1))
    request.response.status_code = 201
    request.response.location = "/orders/1"
    return {"customer": order.get("customer"), "lines": len(lines), "total": total}


@view_config(route_name="greet", renderer="json")
def greet(request):
    return {"greeting": f"Hello, {request.matchdict['name']}!", "path": request.path_info}


@view_config(route_name="countdown")
def countdown(request):
    """A streamed body: an app_iter with no length, so the server frames it itself."""
    count = int(request.matchdict["count"])
    lines = (f"line {n}\n".encode() for n in range(count, 0, -1))
    return Response(app_iter=lines, content_type="text/plain", charset="utf-8")


@view_config(route_name="boom")
def boom(request):
    raise RuntimeError("pyramidapp deliberate failure")


def make_app():
    with Configurator() as config:
        config.add_route("item", r"/items/{item_id:\d+}")
        config.add_route("orders", "/orders")
        config.add_route("greet", "/greet/{name}")
        config.add_route("countdown", r"/countdown/{count:\d+}")
        config.add_route("boom", "/boom")
        config.scan()
    return config.make_wsgi_app()


app = make_app()
