"""Writes the raw-request corpus under tests/http/h1/corpus/ (run: python tests/http/h1/make_corpus.py).

Every case is spelled out below with explicit b"\\r\\n", and every expectation of a valid case is
written by hand next to its bytes, never computed by the parser under test. ``test_corpus``
checks that the files on disk are exactly what this script writes, so a tool that rewrites line
ends (see /.gitattributes) is caught.

Naming: ``valid/<name>.http`` + ``valid/<name>.json`` (the expected requests);
``invalid/<status>-<name>.http``. A name may end in ``@key=value[,key=value]`` to run the case
with non-default parser limits: ``line`` = max_request_line, ``head`` = max_header_bytes,
``count`` = max_header_count, ``body`` = max_body_size. Example: ``431-too-many@count=4.http``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Dict, List, Sequence, Tuple

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
CRLF = b"\r\n"
HOST = b"Host: example.com"
Pairs = Sequence[Tuple[bytes, bytes]]


def msg(*lines: bytes, body: bytes = b"") -> bytes:
    """Each line followed by CRLF, then the empty line that ends the head, then ``body``."""
    return b"".join(line + CRLF for line in lines) + CRLF + body


def req(
    method: bytes, target: bytes, headers: Pairs, body: bytes = b"", version: bytes = b"1.1",
    trailers: Pairs = (),
) -> Dict[str, object]:
    """One expected request, in the sidecar JSON shape (bytes shown as latin-1 strings)."""
    def pairs(items: Pairs) -> List[List[str]]:
        return [[n.decode("latin-1"), v.decode("latin-1")] for n, v in items]
    return {
        "method": method.decode("latin-1"), "target": target.decode("latin-1"),
        "http_version": version.decode("latin-1"), "headers": pairs(headers),
        "body": body.decode("latin-1"), "trailers": pairs(trailers),
    }


H = (b"host", b"example.com")
CHUNKED = b"Transfer-Encoding: chunked"
TE = (b"transfer-encoding", b"chunked")
GET = msg(b"GET / HTTP/1.1", HOST)
ALL_TCHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

VALID: List[Tuple[str, bytes, List[Dict[str, object]]]] = [
    ("get-minimal", GET, [req(b"GET", b"/", [H])]),
    ("get-query-percent", msg(b"GET /a%20b/c;p?x=1&y=%2F HTTP/1.1", HOST),
     [req(b"GET", b"/a%20b/c;p?x=1&y=%2F", [H])]),
    ("repeated-list-header-kept-in-order",
     msg(b"GET / HTTP/1.1", HOST, b"Accept: text/html", b"X-Y: 1", b"accept: */*"),
     [req(b"GET", b"/", [H, (b"accept", b"text/html"), (b"x-y", b"1"), (b"accept", b"*/*")])]),
    ("post-content-length", msg(b"POST /f HTTP/1.1", HOST, b"Content-Length: 5", body=b"hello"),
     [req(b"POST", b"/f", [H, (b"content-length", b"5")], b"hello")]),
    ("content-length-ows", msg(b"POST / HTTP/1.1", HOST, b"Content-Length:  5 ", body=b"hello"),
     [req(b"POST", b"/", [H, (b"content-length", b"5")], b"hello")]),
    ("content-length-htab-ows", msg(b"PUT / HTTP/1.1", HOST, b"Content-Length:\t3\t", body=b"abc"),
     [req(b"PUT", b"/", [H, (b"content-length", b"3")], b"abc")]),
    ("content-length-leading-zeros", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 003", body=b"abc"),
     [req(b"POST", b"/", [H, (b"content-length", b"003")], b"abc")]),
    ("content-length-zero-then-get", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 0") + GET,
     [req(b"POST", b"/", [H, (b"content-length", b"0")]), req(b"GET", b"/", [H])]),
    ("body-binary-with-crlf", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 8", body=b"\r\n\x00\r\n\r\n\xff"),
     [req(b"POST", b"/", [H, (b"content-length", b"8")], b"\r\n\x00\r\n\r\n\xff")]),
    ("body-at-limit@body=16", msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 16", body=b"0123456789abcdef"),
     [req(b"POST", b"/", [H, (b"content-length", b"16")], b"0123456789abcdef")]),
    ("get-with-content-length-body", msg(b"GET / HTTP/1.1", HOST, b"Content-Length: 2", body=b"hi"),
     [req(b"GET", b"/", [H, (b"content-length", b"2")], b"hi")]),
    ("chunked-simple", msg(b"POST / HTTP/1.1", HOST, CHUNKED, body=b"5\r\nhello\r\n0\r\n\r\n"),
     [req(b"POST", b"/", [H, TE], b"hello")]),
    ("chunked-hex-sizes", msg(b"POST / HTTP/1.1", HOST, CHUNKED, body=(
        b"A\r\n0123456789\r\nb\r\nabcdefghijk\r\n00003\r\nxyz\r\n000\r\n\r\n")),
     [req(b"POST", b"/", [H, TE], b"0123456789abcdefghijkxyz")]),
    ("chunked-data-with-crlf-inside", msg(b"POST / HTTP/1.1", HOST, CHUNKED, body=(
        b"7\r\n\r\n0\r\n\r\n\r\n0\r\n\r\n")),
     [req(b"POST", b"/", [H, TE], b"\r\n0\r\n\r\n")]),
    ("chunked-extensions", msg(b"POST / HTTP/1.1", HOST, CHUNKED, body=(
        b"3;a\r\nabc\r\n3;a=b\r\ndef\r\n3;a=\"x y\";c=d\r\nghi\r\n"
        b"3;q=\"\\\"\\\\\"\r\njkl\r\n3;n=\"caf\xe9\"\r\nmno\r\n0;last=1\r\n\r\n")),
     [req(b"POST", b"/", [H, TE], b"abcdefghijklmno")]),
    ("chunked-extension-bws", msg(b"POST / HTTP/1.1", HOST, CHUNKED, body=(
        b"3 ; a = b\r\nabc\r\n3\t;\tn\r\ndef\r\n0\r\n\r\n")),
     [req(b"POST", b"/", [H, TE], b"abcdef")]),
    ("chunked-trailers", msg(b"POST / HTTP/1.1", HOST, CHUNKED, b"Trailer: X-Sum", body=(
        b"2\r\nhi\r\n0\r\nX-Sum: abc\r\nX-Other:  v w \t\r\n\r\n")),
     [req(b"POST", b"/", [H, TE, (b"trailer", b"X-Sum")], b"hi",
          trailers=[(b"x-sum", b"abc"), (b"x-other", b"v w")])]),
    ("chunked-at-limit@body=16", msg(b"POST / HTTP/1.1", HOST, CHUNKED, body=(
        b"a\r\n0123456789\r\n6\r\nabcdef\r\n0\r\n\r\n")),
     [req(b"POST", b"/", [H, TE], b"0123456789abcdef")]),
    ("te-chunked-upper-case", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: CHUNKED",
                                  body=b"1\r\nx\r\n0\r\n\r\n"),
     [req(b"POST", b"/", [H, (b"transfer-encoding", b"CHUNKED")], b"x")]),
    ("te-chunked-leading-ows", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding:  \tchunked ",
                                   body=b"1\r\nx\r\n0\r\n\r\n"),
     [req(b"POST", b"/", [H, TE], b"x")]),
    # Found by the hardening tests: a chunk line exactly at its 4 KiB limit was refused when
    # the bytes arrived cut just after its CR (a pending CR was counted as past the limit).
    ("chunk-line-at-limit", msg(b"POST / HTTP/1.1", HOST, CHUNKED,
                                body=b"1;a=" + b"b" * 4092 + b"\r\nx\r\n0\r\n\r\n"),
     [req(b"POST", b"/", [H, TE], b"x")]),
    ("te-chunked-trailing-htab", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: chunked\t",
                                     body=b"1\r\nx\r\n0\r\n\r\n"),
     [req(b"POST", b"/", [H, TE], b"x")]),
    ("te-chunked-empty-list-elements", msg(b"POST / HTTP/1.1", HOST, b"Transfer-Encoding: , chunked,",
                                           body=b"1\r\nx\r\n0\r\n\r\n"),
     [req(b"POST", b"/", [H, (b"transfer-encoding", b", chunked,")], b"x")]),
    ("http10-no-host", msg(b"GET / HTTP/1.0"), [req(b"GET", b"/", [], version=b"1.0")]),
    ("http10-body-then-close-ignores-rest",
     msg(b"POST / HTTP/1.0", b"Content-Length: 3", body=b"abc") + b"NOT PARSED\r\n\r\n",
     [req(b"POST", b"/", [(b"content-length", b"3")], b"abc", version=b"1.0")]),
    ("http10-keep-alive-pipelined",
     msg(b"GET /1 HTTP/1.0", b"Connection: keep-alive") + msg(b"GET /2 HTTP/1.0", HOST),
     [req(b"GET", b"/1", [(b"connection", b"keep-alive")], version=b"1.0"),
      req(b"GET", b"/2", [H], version=b"1.0")]),
    ("http12-treated-as-11", msg(b"GET / HTTP/1.2", HOST), [req(b"GET", b"/", [H])]),
    ("options-asterisk", msg(b"OPTIONS * HTTP/1.1", HOST), [req(b"OPTIONS", b"*", [H])]),
    ("absolute-form-http", msg(b"GET http://example.com/p?q=1 HTTP/1.1", HOST),
     [req(b"GET", b"http://example.com/p?q=1", [H])]),
    ("absolute-form-https-port-no-path", msg(b"GET https://example.com:8443 HTTP/1.1", HOST),
     [req(b"GET", b"https://example.com:8443", [H])]),
    ("absolute-form-ipv6-port-query", msg(b"GET http://[::1]:8080/x?y HTTP/1.1", HOST),
     [req(b"GET", b"http://[::1]:8080/x?y", [H])]),
    ("connect-authority-form", msg(b"CONNECT example.com:443 HTTP/1.1", b"Host: example.com:443"),
     [req(b"CONNECT", b"example.com:443", [(b"host", b"example.com:443")])]),
    ("leading-crlf", CRLF + GET, [req(b"GET", b"/", [H])]),
    ("leading-two-crlf", CRLF + CRLF + GET, [req(b"GET", b"/", [H])]),
    ("crlf-after-body-between-pipelined",
     msg(b"POST / HTTP/1.1", HOST, b"Content-Length: 1", body=b"x") + CRLF + GET,
     [req(b"POST", b"/", [H, (b"content-length", b"1")], b"x"), req(b"GET", b"/", [H])]),
    ("expect-100-continue", msg(b"POST / HTTP/1.1", HOST, b"Expect: 100-continue", b"Content-Length: 2",
                                body=b"ok"),
     [req(b"POST", b"/", [H, (b"expect", b"100-continue"), (b"content-length", b"2")], b"ok")]),
    ("expect-100-continue-mixed-case-chunked",
     msg(b"PUT / HTTP/1.1", HOST, b"Expect: 100-Continue", CHUNKED, body=b"2\r\nok\r\n0\r\n\r\n"),
     [req(b"PUT", b"/", [H, (b"expect", b"100-Continue"), TE], b"ok")]),
    ("header-value-htab", msg(b"GET / HTTP/1.1", HOST, b"X-A: a\tb", b"X-B:\t\tc \t"),
     [req(b"GET", b"/", [H, (b"x-a", b"a\tb"), (b"x-b", b"c")])]),
    ("header-value-obs-text", msg(b"GET / HTTP/1.1", HOST, b"X-Name: caf\xe9 \x80\xff"),
     [req(b"GET", b"/", [H, (b"x-name", b"caf\xe9 \x80\xff")])]),
    ("header-value-empty", msg(b"GET / HTTP/1.1", HOST, b"X-Empty:", b"X-Blank:  \t "),
     [req(b"GET", b"/", [H, (b"x-empty", b""), (b"x-blank", b"")])]),
    ("header-value-inner-spaces", msg(b"GET / HTTP/1.1", HOST, b"X-A: a  b   c"),
     [req(b"GET", b"/", [H, (b"x-a", b"a  b   c")])]),
    ("header-name-all-tchars", msg(b"GET / HTTP/1.1", HOST, ALL_TCHARS + b": v"),
     [req(b"GET", b"/", [H, (ALL_TCHARS.lower(), b"v")])]),
    ("header-name-mixed-case", msg(b"GET / HTTP/1.1", b"hOsT: example.com", b"X-CamelCase: V"),
     [req(b"GET", b"/", [H, (b"x-camelcase", b"V")])]),
    ("lowercase-method", msg(b"get /x HTTP/1.1", HOST), [req(b"get", b"/x", [H])]),
    ("extension-method", msg(b"PROPFIND /dav/ HTTP/1.1", HOST), [req(b"PROPFIND", b"/dav/", [H])]),
    ("head-and-delete", msg(b"HEAD /h HTTP/1.1", HOST) + msg(b"DELETE /d HTTP/1.1", HOST),
     [req(b"HEAD", b"/h", [H]), req(b"DELETE", b"/d", [H])]),
    ("host-ipv6-port", msg(b"GET / HTTP/1.1", b"Host: [::1]:8080"), [req(b"GET", b"/", [(b"host", b"[::1]:8080")])]),
    ("host-ipv4-empty-port", msg(b"GET / HTTP/1.1", b"Host: 10.0.0.1:"), [req(b"GET", b"/", [(b"host", b"10.0.0.1:")])]),
    ("host-empty-value", msg(b"GET / HTTP/1.1", b"Host:"), [req(b"GET", b"/", [(b"host", b"")])]),
    ("connection-close-ignores-rest", msg(b"GET / HTTP/1.1", HOST, b"Connection: close") + b"garbage\n\n",
     [req(b"GET", b"/", [H, (b"connection", b"close")])]),
    ("pipelined-mixed",
     GET + msg(b"POST /a HTTP/1.1", HOST, b"Content-Length: 3", body=b"abc")
     + msg(b"POST /b HTTP/1.1", HOST, CHUNKED, body=b"2\r\nde\r\n0\r\nX-T: 1\r\n\r\n")
     + msg(b"GET /c HTTP/1.1", HOST, b"Connection: keep-alive"),
     [req(b"GET", b"/", [H]), req(b"POST", b"/a", [H, (b"content-length", b"3")], b"abc"),
      req(b"POST", b"/b", [H, TE], b"de", trailers=[(b"x-t", b"1")]),
      req(b"GET", b"/c", [H, (b"connection", b"keep-alive")])]),
    ("headers-at-count-limit@count=4", msg(b"GET / HTTP/1.1", HOST, b"A: 1", b"B: 2", b"C: 3"),
     [req(b"GET", b"/", [H, (b"a", b"1"), (b"b", b"2"), (b"c", b"3")])]),
    ("request-line-at-limit@line=32", msg(b"GET /" + b"x" * 18 + b" HTTP/1.1", HOST),
     [req(b"GET", b"/" + b"x" * 18, [H])]),
]


def _many_headers(n: int) -> List[bytes]:
    return [b"X-%d: %d" % (i, i) for i in range(n)]


POST = b"POST / HTTP/1.1"
INVALID: List[Tuple[str, bytes]] = [
    # -- request smuggling: Content-Length / Transfer-Encoding (RFC 9112 6.1, 6.3; RFC 9110 8.6)
    ("400-cl-and-te", msg(POST, HOST, b"Content-Length: 5", CHUNKED, body=b"0\r\n\r\n")),
    ("400-te-and-cl", msg(POST, HOST, CHUNKED, b"Content-Length: 13", body=b"0\r\n\r\nGET / HTTP/1.1\r\n")),
    ("400-te-chunked-chunked", msg(POST, HOST, b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n")),
    ("400-te-chunked-on-two-lines", msg(POST, HOST, CHUNKED, CHUNKED, body=b"0\r\n\r\n")),
    ("501-te-gzip-chunked", msg(POST, HOST, b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n")),
    ("501-te-gzip-then-chunked-lines", msg(POST, HOST, b"Transfer-Encoding: gzip", CHUNKED, body=b"0\r\n\r\n")),
    ("400-te-chunked-gzip", msg(POST, HOST, b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n")),
    ("400-te-gzip-only", msg(POST, HOST, b"Transfer-Encoding: gzip", body=b"x")),
    ("400-te-xchunked", msg(POST, HOST, b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n")),
    ("400-te-in-http10", msg(b"POST / HTTP/1.0", CHUNKED, body=b"0\r\n\r\n")),
    ("400-te-empty", msg(POST, HOST, b"Transfer-Encoding:", body=b"0\r\n\r\n")),
    ("400-te-quoted", msg(POST, HOST, b'Transfer-Encoding: "chunked"', body=b"0\r\n\r\n")),
    ("400-te-space-before-colon", msg(POST, HOST, b"Transfer-Encoding : chunked", body=b"0\r\n\r\n")),
    ("400-te-obs-fold", msg(POST, HOST, b"Transfer-Encoding:", b" chunked", body=b"0\r\n\r\n")),
    ("400-te-vertical-tab", msg(POST, HOST, b"Transfer-Encoding: chunked\x0b", body=b"0\r\n\r\n")),
    ("400-cl-plus-sign", msg(POST, HOST, b"Content-Length: +5", body=b"hello")),
    ("400-cl-minus-sign", msg(POST, HOST, b"Content-Length: -1", body=b"x")),
    ("400-cl-hex", msg(POST, HOST, b"Content-Length: 0x5", body=b"hello")),
    ("400-cl-space-inside", msg(POST, HOST, b"Content-Length: 5 5", body=b"hello")),
    ("400-cl-comma-list", msg(POST, HOST, b"Content-Length: 5,5", body=b"hello")),
    ("400-cl-comma-list-spaced", msg(POST, HOST, b"Content-Length: 5, 5", body=b"hello")),
    ("400-cl-repeated-identical", msg(POST, HOST, b"Content-Length: 5", b"content-length: 5", body=b"hello")),
    ("400-cl-repeated-differing", msg(POST, HOST, b"Content-Length: 5", b"Content-Length: 6", body=b"hello!")),
    ("400-cl-empty", msg(POST, HOST, b"Content-Length:", body=b"")),
    ("400-cl-decimal-point", msg(POST, HOST, b"Content-Length: 5.0", body=b"hello")),
    ("400-cl-space-before-colon", msg(POST, HOST, b"Content-Length : 5", body=b"hello")),
    ("413-cl-huge-digits", msg(POST, HOST, b"Content-Length: " + b"9" * 40, body=b"x")),
    ("413-content-length-over-limit@body=16", msg(POST, HOST, b"Content-Length: 17", body=b"x" * 17)),
    ("413-chunked-over-limit@body=16", msg(POST, HOST, CHUNKED, body=b"a\r\n0123456789\r\n7\r\n0123456\r\n0\r\n\r\n")),
    ("413-chunk-size-over-default-limit", msg(POST, HOST, CHUNKED, body=b"40000001\r\n")),
    # -- chunk sizes and extensions (RFC 9112 7.1, 7.1.1)
    ("400-chunk-size-0x", msg(POST, HOST, CHUNKED, body=b"0x1\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-size-plus", msg(POST, HOST, CHUNKED, body=b"+1\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-size-minus", msg(POST, HOST, CHUNKED, body=b"-1\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-size-underscore", msg(POST, HOST, CHUNKED, body=b"1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n")),
    ("400-chunk-size-leading-space", msg(POST, HOST, CHUNKED, body=b" 1\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-size-trailing-space", msg(POST, HOST, CHUNKED, body=b"1 \r\nx\r\n0\r\n\r\n")),
    ("400-chunk-size-17-hex-digits", msg(POST, HOST, CHUNKED, body=b"00000000000000001\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-size-empty-line", msg(POST, HOST, CHUNKED, body=b"\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-size-not-hex", msg(POST, HOST, CHUNKED, body=b"g\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-size-bare-lf", msg(POST, HOST, CHUNKED, body=b"1\nx\r\n0\r\n\r\n")),
    ("400-chunk-size-bare-cr", msg(POST, HOST, CHUNKED, body=b"1\rx\r\n0\r\n\r\n")),
    ("400-chunk-ext-empty-name", msg(POST, HOST, CHUNKED, body=b"1;\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-ext-empty-value", msg(POST, HOST, CHUNKED, body=b"1;a=\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-ext-unterminated-quote", msg(POST, HOST, CHUNKED, body=b'1;a="b\r\nx\r\n0\r\n\r\n')),
    ("400-chunk-ext-space-in-value", msg(POST, HOST, CHUNKED, body=b"1;a=b c\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-ext-no-semicolon", msg(POST, HOST, CHUNKED, body=b"1 a\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-ext-control-char", msg(POST, HOST, CHUNKED, body=b"1;a=\x01\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-ext-nul-in-quoted", msg(POST, HOST, CHUNKED, body=b'1;a="\x00"\r\nx\r\n0\r\n\r\n')),
    ("400-chunk-ext-too-long", msg(POST, HOST, CHUNKED, body=b"1;a=" + b"b" * 5000 + b"\r\nx\r\n0\r\n\r\n")),
    ("400-chunk-data-longer-than-size", msg(POST, HOST, CHUNKED, body=b"3\r\nabcd\r\n0\r\n\r\n")),
    ("400-chunk-data-missing-crlf", msg(POST, HOST, CHUNKED, body=b"3\r\nabc0\r\n\r\n")),
    ("400-chunk-data-bare-lf-after", msg(POST, HOST, CHUNKED, body=b"3\r\nabc\n0\r\n\r\n")),
    ("400-last-chunk-bare-lf-end", msg(POST, HOST, CHUNKED, body=b"0\r\n\n")),
    ("400-trailer-obs-fold", msg(POST, HOST, CHUNKED, body=b"0\r\nX-T: a\r\n b\r\n\r\n")),
    ("400-trailer-no-colon", msg(POST, HOST, CHUNKED, body=b"0\r\nX-T a\r\n\r\n")),
    ("400-trailer-space-before-colon", msg(POST, HOST, CHUNKED, body=b"0\r\nX-T : a\r\n\r\n")),
    ("400-trailer-nul", msg(POST, HOST, CHUNKED, body=b"0\r\nX-T: a\x00b\r\n\r\n")),
    ("400-trailer-bare-lf", msg(POST, HOST, CHUNKED, body=b"0\r\nX-T: a\nX-U: b\r\n\r\n")),
    ("400-trailer-bare-cr", msg(POST, HOST, CHUNKED, body=b"0\r\nX-T: a\rb\r\n\r\n")),
    ("431-trailer-section-too-large@head=56", msg(POST, HOST, CHUNKED, body=(
        b"0\r\nX-A: " + b"a" * 30 + b"\r\nX-B: " + b"b" * 30 + b"\r\n\r\n"))),
    # -- line ends, folding, field syntax (RFC 9112 2.2, 5, 5.1, 5.2; RFC 9110 5.5)
    ("400-bare-lf-in-request-line", b"GET / HTTP/1.1\nHost: example.com\r\n\r\n"),
    ("400-bare-lf-in-header", b"GET / HTTP/1.1\r\nHost: example.com\nX: y\r\n\r\n"),
    ("400-bare-lf-ends-head", b"GET / HTTP/1.1\r\nHost: example.com\r\n\n"),
    ("400-bare-lf-only-line-ends", b"GET / HTTP/1.1\nHost: example.com\n\n"),
    ("400-bare-cr-in-request-line", b"GET / HTTP/1.1\rHost: example.com\r\n\r\n"),
    ("400-bare-cr-in-header-value", msg(b"GET / HTTP/1.1", HOST, b"X: a\rb")),
    ("400-bare-cr-ends-head", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\r\n"),
    ("400-leading-bare-lf", b"\n" + GET),
    ("400-nine-leading-empty-lines", CRLF * 9 + GET),
    ("400-obs-fold", msg(b"GET / HTTP/1.1", HOST, b"X-A: a", b" b")),
    ("400-obs-fold-tab", msg(b"GET / HTTP/1.1", HOST, b"X-A: a", b"\tb")),
    ("400-whitespace-before-first-header", msg(b"GET / HTTP/1.1", b" Host: example.com")),
    ("400-space-before-colon", msg(b"GET / HTTP/1.1", b"Host : example.com")),
    ("400-tab-before-colon", msg(b"GET / HTTP/1.1", HOST, b"X-A\t: b")),
    ("400-space-in-header-name", msg(b"GET / HTTP/1.1", HOST, b"X A: b")),
    ("400-empty-header-name", msg(b"GET / HTTP/1.1", HOST, b": b")),
    ("400-header-without-colon", msg(b"GET / HTTP/1.1", HOST, b"X-A b")),
    ("400-nul-in-header-value", msg(b"GET / HTTP/1.1", HOST, b"X-A: a\x00b")),
    ("400-ctl-01-in-header-value", msg(b"GET / HTTP/1.1", HOST, b"X-A: a\x01b")),
    ("400-vt-in-header-value", msg(b"GET / HTTP/1.1", HOST, b"X-A: a\x0bb")),
    ("400-ff-in-header-value", msg(b"GET / HTTP/1.1", HOST, b"X-A: \x0c")),
    ("400-esc-in-header-value", msg(b"GET / HTTP/1.1", HOST, b"X-A: \x1b[0m")),
    ("400-del-in-header-value", msg(b"GET / HTTP/1.1", HOST, b"X-A: a\x7fb")),
    ("400-nul-in-header-name", msg(b"GET / HTTP/1.1", HOST, b"X\x00A: b")),
    ("400-del-in-header-name", msg(b"GET / HTTP/1.1", HOST, b"X\x7fA: b")),
    ("400-non-ascii-header-name", msg(b"GET / HTTP/1.1", HOST, b"X-\xe9: b")),
    ("400-separator-in-header-name", msg(b"GET / HTTP/1.1", HOST, b"X(A): b")),
    # -- request line (RFC 9112 3, 3.2; RFC 9110 2.5, 9.1)
    ("400-invalid-method-paren", msg(b"GE(T / HTTP/1.1", HOST)),
    ("400-invalid-method-slash", msg(b"G/T / HTTP/1.1", HOST)),
    ("400-empty-method", msg(b" / HTTP/1.1", HOST)),
    ("400-nul-in-method", msg(b"G\x00T / HTTP/1.1", HOST)),
    ("400-non-ascii-in-target", msg(b"GET /caf\xc3\xa9 HTTP/1.1", HOST)),
    ("400-nul-in-target", msg(b"GET /a\x00b HTTP/1.1", HOST)),
    ("400-del-in-target", msg(b"GET /a\x7fb HTTP/1.1", HOST)),
    ("400-space-in-target", msg(b"GET /a b HTTP/1.1", HOST)),
    ("400-lowercase-http-version", msg(b"GET / http/1.1", HOST)),
    ("400-version-two-digit-minor", msg(b"GET / HTTP/1.10", HOST)),
    ("400-version-missing", msg(b"GET /", HOST)),
    ("400-version-missing-minor", msg(b"GET / HTTP/1", HOST)),
    ("505-http2-version", msg(b"GET / HTTP/2.0", HOST)),
    ("505-http09-version", msg(b"GET / HTTP/0.9", HOST)),
    ("505-http3-version", msg(b"GET / HTTP/3.0", HOST)),
    ("505-h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ("400-double-space-request-line", msg(b"GET  / HTTP/1.1", HOST)),
    ("400-double-space-before-version", msg(b"GET /  HTTP/1.1", HOST)),
    ("400-tab-separator-request-line", msg(b"GET\t/\tHTTP/1.1", HOST)),
    ("400-trailing-space-request-line", msg(b"GET / HTTP/1.1 ", HOST)),
    ("400-leading-space-request-line", msg(b" GET / HTTP/1.1", HOST)),
    ("400-fragment-in-target", msg(b"GET /a#frag HTTP/1.1", HOST)),
    ("400-fragment-in-absolute-form", msg(b"GET http://example.com/a#frag HTTP/1.1", HOST)),
    ("400-absolute-form-empty-host", msg(b"GET http:///a HTTP/1.1", HOST)),
    ("400-asterisk-with-get", msg(b"GET * HTTP/1.1", HOST)),
    ("400-authority-form-with-get", msg(b"GET example.com:80 HTTP/1.1", HOST)),
    ("400-connect-origin-form", msg(b"CONNECT / HTTP/1.1", HOST)),
    ("400-connect-without-port", msg(b"CONNECT example.com HTTP/1.1", HOST)),
    ("400-target-not-a-path", msg(b"GET index.html HTTP/1.1", HOST)),
    # -- Host (RFC 9112 3.2, RFC 9110 7.2)
    ("400-missing-host-http11", msg(b"GET / HTTP/1.1", b"X-A: b")),
    ("400-missing-host-absolute-form", msg(b"GET http://example.com/ HTTP/1.1")),
    ("400-repeated-host", msg(b"GET / HTTP/1.1", HOST, HOST)),
    ("400-repeated-host-http10", msg(b"GET / HTTP/1.0", b"Host: a", b"Host: b")),
    ("400-host-with-space", msg(b"GET / HTTP/1.1", b"Host: exa mple.com")),
    ("400-host-with-slash", msg(b"GET / HTTP/1.1", b"Host: example.com/evil")),
    ("400-host-with-userinfo", msg(b"GET / HTTP/1.1", b"Host: user@example.com")),
    ("400-host-non-numeric-port", msg(b"GET / HTTP/1.1", b"Host: example.com:http")),
    ("400-host-unclosed-ipv6", msg(b"GET / HTTP/1.1", b"Host: [::1:80")),
    ("400-connection-invalid-token", msg(b"GET / HTTP/1.1", HOST, b"Connection: close, @bad")),
    # -- Expect (RFC 9110 10.1.1)
    ("417-expect-unknown", msg(POST, HOST, b"Expect: foo", b"Content-Length: 1", body=b"x")),
    ("417-expect-continue-and-unknown", msg(POST, HOST, b"Expect: 100-continue, foo", b"Content-Length: 1",
                                            body=b"x")),
    # -- limits (RFC 6585 5 for 431; RFC 9110 15.5.15 for 414, 15.5.14 for 413)
    ("431-too-many-headers@count=4", msg(b"GET / HTTP/1.1", HOST, b"A: 1", b"B: 2", b"C: 3", b"D: 4")),
    ("431-too-many-headers-default-limit", msg(b"GET / HTTP/1.1", HOST, *_many_headers(100))),
    ("431-header-section-too-large@head=64", msg(b"GET / HTTP/1.1", HOST, b"X-A: " + b"a" * 40, b"X-B: " + b"b" * 40)),
    ("431-header-line-too-large-default-limit", msg(b"GET / HTTP/1.1", HOST, b"X-A: " + b"a" * 70000)),
    ("414-long-target@line=32", msg(b"GET /" + b"a" * 60 + b" HTTP/1.1", HOST)),
    ("414-long-target-unterminated@line=32", b"GET /" + b"a" * 60),
    ("414-long-target-default-limit", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n"),
    # -- truncated input: the client closes mid-message
    ("400-eof-in-head", b"GET / HTTP/1.1\r\nHost: example.com\r\n"),
    ("400-eof-in-body", msg(POST, HOST, b"Content-Length: 10", body=b"abc")),
    ("400-eof-in-chunk-data", msg(POST, HOST, CHUNKED, body=b"5\r\nab")),
    ("400-eof-before-last-chunk", msg(POST, HOST, CHUNKED, body=b"2\r\nab\r\n")),
    ("400-eof-in-trailers", msg(POST, HOST, CHUNKED, body=b"0\r\nX-T: 1\r\n")),
    ("400-eof-after-lone-cr", b"\r"),
    # -- an error in a later pipelined request
    ("400-second-request-invalid", GET + msg(b"GET / HTTP/1.1", b"Host example.com")),
    ("400-smuggled-after-chunked", msg(POST, HOST, CHUNKED, body=b"0\r\n\r\n")
     + msg(b"GET /admin HTTP/1.1", HOST, b"Content-Length: 5", b"Transfer-Encoding: chunked")),
    # -- found by the hardening tests (property, differential and hostile-client tests)
    # The absolute-form authority becomes HTTP_HOST, so it must obey Host's grammar
    # (RFC 9112 3.2.2; RFC 9110 4.2.4 makes userinfo an error). These were accepted.
    ("400-absolute-form-userinfo", msg(b"GET http://user:pw@example.com/ HTTP/1.1", HOST)),
    ("400-absolute-form-quote-in-host", msg(b'GET http://exa"mple.com/ HTTP/1.1', HOST)),
    ("400-absolute-form-empty-host-with-port", msg(b"GET http://:80/ HTTP/1.1", HOST)),
    ("400-absolute-form-non-numeric-port", msg(b"GET http://example.com:http/ HTTP/1.1", HOST)),
    # The absolute-form pattern backtracked quadratically on a long authority and a '#'
    # (0.2 s of CPU for this 8 KiB line, minutes with a raised --max-request-line).
    ("400-absolute-form-long-authority-then-fragment",
     msg(b"GET http://" + b"a" * 8000 + b"# HTTP/1.1", HOST)),
    # Clients of other protocols on a plain port: refused as the first bytes arrive (they
    # waited for the header timeout before).
    ("400-tls-client-hello", b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + bytes(range(32))
     + b"\x00\x00\x02\x13\x01\x01\x00"),
    ("400-ssh-banner", b"SSH-2.0-OpenSSH_9.6\r\n"),
    # Two faults in one head: the status depended on how the bytes were cut (the fuzz harness
    # found the first). The fault first in byte order now decides, however they arrive.
    ("505-http01-then-bare-lf-in-header",
     b"POST / HTTP/0.1\r\nHost: example.c2m\r\nContent-Length: 003\xf0\n\r\nabc"),
    ("400-bare-lf-in-long-request-line@line=32", msg(b"GET /" + b"a" * 10 + b"\n" + b"b" * 40 + b" HTTP/1.1", HOST)),
    ("414-long-request-line-then-bare-lf@line=32", b"GET /" + b"a" * 40 + b"\nb HTTP/1.1\r\n\r\n"),
    ("400-bare-cr-in-head-past-the-head-limit@head=64",
     msg(b"GET / HTTP/1.1", HOST, b"X-A: a\rb", b"X-B: " + b"b" * 80)),
    ("400-bare-lf-in-trailer-before-too-many-trailers@count=2", msg(POST, HOST, CHUNKED, body=(
        b"0\r\nA: 1\r\nB: 2\nb\r\nC: 3\r\n\r\n"))),
    ("400-bare-lf-in-long-trailer@head=40", msg(POST, b"Host: a", CHUNKED, body=b"0\r\nX: a\nb" + b"c" * 60 + b"\r\n\r\n")),
]


# -- where the oracle parsers (tests/http/h1/oracles.py: h11, httptools) decide otherwise ------------
# Case name -> {oracle: the RFC rule that decides for greenserve}. test_differential checks that
# every other case agrees with each oracle (same requests, or both refuse) and that every entry
# here still differs, so the table is always exact.
LIMIT = ("RFC 9110 15.5.14 / 15.5.15, RFC 6585 5: size limits are the server's to set (413, "
         "414, 431); the oracle has none at this size")
HOST_RULE = "RFC 9112 3.2 / RFC 9110 7.2: an invalid, missing or repeated Host is a 400"
AUTHORITY_RULE = ("RFC 9112 3.2.2, RFC 9110 4.2.1 / 4.2.4: the absolute-form authority replaces "
                  "Host, so it obeys Host's grammar; an empty host or userinfo is an error")
TARGET_FORM = ("RFC 9112 3.2: each request-target form goes with its methods (asterisk-form "
               "for OPTIONS, authority-form for CONNECT), and a fragment is not part of it")
BARE_LF = ("RFC 9112 2.2: a bare LF MAY be accepted as a line end; greenserve refuses it (a "
           "parser that accepts it disagrees with one that does not: smuggling)")
CHUNK_EXT = "RFC 9112 7.1.1: chunk-ext = *( BWS \";\" BWS name [ BWS \"=\" BWS ( token / quoted-string ) ] )"
CONTROL = "RFC 9110 5.5: a field value holds no control character but HTAB"
OBS_FOLD = "RFC 9112 5.2: a server MUST reject obs-fold in a request with 400 (or unfold it)"
CL_RULE = ("RFC 9112 6.3 (5), RFC 9110 8.6: Content-Length is a single decimal number; a list or "
           "repeat is refused rather than merged (DESIGN.md: refuse ambiguity)")
REQUEST_LINE = "RFC 9112 3: request-line = method SP request-target SP HTTP-version, single SP"
VERSION = "RFC 9110 2.5 / 15.6.6: a major version other than 1 gets 505"
EXPECT = "RFC 9110 10.1.1: an expectation other than 100-continue gets 417"
H11, HT = "h11", "httptools"
DIFFERS: Dict[str, Dict[str, str]] = {
    # valid cases
    "leading-crlf": {H11: "RFC 9112 2.2: a server SHOULD ignore at least one empty line "
                     "before the request-line; h11 reports 'no request line received'"},
    "leading-two-crlf": {H11: "RFC 9112 2.2 (as leading-crlf)"},
    "crlf-after-body-between-pipelined": {H11: "RFC 9112 2.2 (as leading-crlf), between requests"},
    "http12-treated-as-11": {
        H11: "RFC 9110 2.5: a higher minor version is processed as the highest minor version "
        "we implement (1.1); h11 reports b'1.2'",
        HT: "RFC 9110 2.5: HTTP/1.2 is HTTP/1.1 to a 1.1 server; llhttp refuses it"},
    "http10-keep-alive-pipelined": {H11: "RFC 9112 9.3 / Appendix C.2.2: HTTP/1.0 persistence "
                                    "with 'Connection: keep-alive'; h11 always closes after 1.0"},
    "te-chunked-empty-list-elements": {
        H11: "RFC 9110 5.6.1: a recipient MUST accept and ignore empty list elements; h11 "
        "requires the Transfer-Encoding value to be exactly 'chunked'",
        HT: "RFC 9110 5.6.1 (as for h11); llhttp refuses the empty elements"},
    "te-chunked-upper-case": {H11: "RFC 9112 7: transfer-coding names are case-insensitive; h11 "
                              "reports the value lower-cased, greenserve as received"},
    "chunked-extension-bws": {H11: CHUNK_EXT + "; h11 refuses BWS before ';'",
                              HT: CHUNK_EXT + "; llhttp refuses BWS before ';'"},
    "te-chunked-trailing-htab": {HT: "RFC 9112 5: OWS (SP / HTAB) after a field value is not "
                                 "part of it; llhttp refuses a HTAB after 'chunked'"},
    "lowercase-method": {HT: "RFC 9110 9.1: a method is any token, case-sensitive; llhttp "
                         "knows only registered upper-case methods"},
    # invalid cases the oracles accept
    "400-absolute-form-empty-host": {H11: AUTHORITY_RULE, HT: AUTHORITY_RULE},
    "400-absolute-form-empty-host-with-port": {H11: AUTHORITY_RULE, HT: AUTHORITY_RULE},
    "400-absolute-form-non-numeric-port": {H11: AUTHORITY_RULE, HT: AUTHORITY_RULE},
    "400-absolute-form-userinfo": {H11: AUTHORITY_RULE, HT: AUTHORITY_RULE},
    "400-absolute-form-quote-in-host": {H11: AUTHORITY_RULE},
    "400-absolute-form-long-authority-then-fragment": {H11: TARGET_FORM},
    "400-fragment-in-absolute-form": {H11: TARGET_FORM, HT: TARGET_FORM},
    "400-fragment-in-target": {H11: TARGET_FORM, HT: TARGET_FORM},
    "400-asterisk-with-get": {H11: TARGET_FORM, HT: TARGET_FORM},
    "400-authority-form-with-get": {H11: TARGET_FORM},
    "400-connect-origin-form": {H11: TARGET_FORM, HT: TARGET_FORM},
    "400-connect-without-port": {H11: TARGET_FORM, HT: TARGET_FORM},
    "400-target-not-a-path": {H11: TARGET_FORM},
    "400-bare-lf-ends-head": {H11: BARE_LF},
    "400-bare-lf-in-header": {H11: BARE_LF},
    "400-bare-lf-in-request-line": {H11: BARE_LF},
    "400-bare-lf-only-line-ends": {H11: BARE_LF},
    "400-last-chunk-bare-lf-end": {H11: BARE_LF},
    "400-trailer-bare-lf": {H11: BARE_LF},
    "400-leading-bare-lf": {HT: BARE_LF},
    "400-chunk-ext-control-char": {H11: CHUNK_EXT},
    "400-chunk-ext-empty-name": {H11: CHUNK_EXT},
    "400-chunk-ext-empty-value": {H11: CHUNK_EXT, HT: CHUNK_EXT},
    "400-chunk-ext-nul-in-quoted": {H11: CHUNK_EXT},
    "400-chunk-ext-space-in-value": {H11: CHUNK_EXT},
    "400-chunk-ext-unterminated-quote": {H11: CHUNK_EXT},
    "400-chunk-ext-too-long": {H11: "RFC 9112 7.1.1: a server ought to limit chunk extensions "
                               "(greenserve: 4 KiB per chunk line)", HT: "RFC 9112 7.1.1 (as h11)"},
    "400-chunk-size-17-hex-digits": {
        H11: "RFC 9112 7.1: a recipient MUST anticipate large hex numbers and prevent integer "
        "overflow; greenserve caps a chunk size at 16 hex digits",
        HT: "RFC 9112 7.1 (as h11)"},
    "400-chunk-size-trailing-space": {H11: CHUNK_EXT + ": BWS only before ';'"},
    "400-cl-and-te": {H11: "RFC 9112 6.1: a server MAY reject a request with both "
                      "Content-Length and Transfer-Encoding; h11 lets chunked win (the classic "
                      "CL.TE smuggling disagreement)"},
    "400-cl-comma-list": {H11: CL_RULE},
    "400-cl-comma-list-spaced": {H11: CL_RULE},
    "400-cl-repeated-identical": {H11: CL_RULE},
    "400-connection-invalid-token": {H11: "RFC 9110 7.6.1: Connection = #connection-option, "
                                     "each a token", HT: "RFC 9110 7.6.1 (as h11)"},
    "400-ctl-01-in-header-value": {H11: CONTROL},
    "400-del-in-header-value": {H11: CONTROL},
    "400-esc-in-header-value": {H11: CONTROL},
    "400-double-space-before-version": {HT: REQUEST_LINE},
    "400-double-space-request-line": {HT: REQUEST_LINE},
    "400-version-missing": {HT: REQUEST_LINE + " (HTTP/0.9 requests are not supported)"},
    "400-eof-after-lone-cr": {HT: "RFC 9112 9.6 / 2.2: the client closed in the middle of a line; "
                              "httptools has no end-of-input to notice it"},
    "400-host-non-numeric-port": {H11: HOST_RULE, HT: HOST_RULE},
    "400-host-unclosed-ipv6": {H11: HOST_RULE, HT: HOST_RULE},
    "400-host-with-slash": {H11: HOST_RULE, HT: HOST_RULE},
    "400-host-with-space": {H11: HOST_RULE, HT: HOST_RULE},
    "400-host-with-userinfo": {H11: HOST_RULE, HT: HOST_RULE},
    "400-missing-host-absolute-form": {HT: HOST_RULE},
    "400-missing-host-http11": {HT: HOST_RULE},
    "400-repeated-host": {HT: HOST_RULE},
    "400-repeated-host-http10": {HT: HOST_RULE},
    "400-nine-leading-empty-lines": {HT: "RFC 9112 2.2: a few empty lines before a request-line "
                                     "are ignored, more are not a request (greenserve: 8)"},
    "400-obs-fold": {H11: OBS_FOLD},
    "400-obs-fold-tab": {H11: OBS_FOLD},
    "400-te-obs-fold": {H11: OBS_FOLD},
    "400-trailer-obs-fold": {H11: OBS_FOLD},
    "400-te-in-http10": {H11: "RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means "
                         "faulty framing: 400 and close", HT: "RFC 9112 6.1 (as h11)"},
    "413-chunked-over-limit@body=16": {H11: LIMIT, HT: LIMIT},
    "413-content-length-over-limit@body=16": {H11: LIMIT, HT: LIMIT},
    "414-long-target@line=32": {H11: LIMIT, HT: LIMIT},
    "431-header-line-too-large-default-limit": {H11: LIMIT, HT: LIMIT},
    "431-header-section-too-large@head=64": {H11: LIMIT, HT: LIMIT},
    "431-too-many-headers-default-limit": {H11: LIMIT, HT: LIMIT},
    "431-too-many-headers@count=4": {H11: LIMIT, HT: LIMIT},
    "431-trailer-section-too-large@head=56": {H11: LIMIT, HT: LIMIT},
    "417-expect-continue-and-unknown": {H11: EXPECT, HT: EXPECT},
    "417-expect-unknown": {H11: EXPECT, HT: EXPECT},
    "501-te-gzip-chunked": {HT: "RFC 9112 6.1: a transfer coding the server does not "
                            "implement gets 501 (greenserve implements chunked only)"},
    "501-te-gzip-then-chunked-lines": {HT: "RFC 9112 6.1 (as 501-te-gzip-chunked)"},
    "505-http09-version": {H11: VERSION, HT: VERSION},
    "505-http2-version": {H11: VERSION, HT: VERSION},
    "505-http3-version": {H11: VERSION},
}


def render() -> Dict[str, bytes]:
    """Return {path relative to the corpus directory: file content} for every case."""
    files: Dict[str, bytes] = {}
    for name, raw, expected in VALID:
        files[f"valid/{name}.http"] = raw
        files[f"valid/{name}.json"] = (json.dumps(expected, indent=1) + "\n").encode("ascii")
    for name, raw in INVALID:
        files[f"invalid/{name}.http"] = raw
    if len(files) != 2 * len(VALID) + len(INVALID):
        raise SystemExit("duplicate case name")
    return files


def main() -> None:
    for sub in ("valid", "invalid"):
        for old in (CORPUS / sub).glob("*"):
            old.unlink()
    for rel, content in render().items():
        (CORPUS / rel).write_bytes(content)
    print(f"wrote {len(VALID)} valid and {len(INVALID)} invalid cases to {CORPUS}")


if __name__ == "__main__":
    main()
