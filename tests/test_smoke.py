"""A first end-to-end check: a real server, a raw socket, one response each way of framing."""

from conftest import Reader, connect, request


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi"]


def test_hello_over_raw_socket(serve):
    server = serve(hello)
    resp = request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.status == 200
    assert resp.body == b"hi"
    assert resp.header("server") == "greenserve"
    assert resp.header("date") is not None


def test_one_element_list_gets_content_length(serve):
    server = serve(hello, validate=False)  # the validator hides the list behind an iterator
    resp = request(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.header("content-length") == "2"
    assert resp.header("transfer-encoding") is None


def test_pipelined_three_in_one_packet(serve):
    server = serve(hello)
    with connect(server) as sock:
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        reader = Reader(sock)
        assert [reader.read_response().body for _ in range(3)] == [b"hi"] * 3
