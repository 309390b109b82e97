"""Trusted proxies: Forwarded and X-Forwarded-* (parsing, trust, proxy_count) and their effect on
a real server reached from several loopback addresses; the PROXY protocol v1/v2 parser and a
listener that requires it (raw sockets, curl --haproxy-protocol, PROXY then TLS)."""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import socket
import ssl
import struct
import subprocess

import pytest

from greenserve import ConfigError, Server
from greenserve.http.proxy import ProxyHeaders, parse_forwarded, split_node
from greenserve.http.proxyproto import ProxyProtocolError, header_length, parse

from cliapps import echo_environ
from conftest import Reader, wait_until

GET = b"GET / HTTP/1.1\r\nHost: app.test\r\n%s\r\n"


# -- Forwarded parsing (RFC 7239) --------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ('for="_gazonk"', [{"for": "_gazonk"}]),
    ('For="[2001:db8:cafe::17]:4711"', [{"for": "[2001:db8:cafe::17]:4711"}]),
    ("for=192.0.2.60;proto=http;by=203.0.113.43",
     [{"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}]),
    ("for=192.0.2.43, for=198.51.100.17", [{"for": "192.0.2.43"}, {"for": "198.51.100.17"}]),
    ('for="a\\"b,c";host="x;y"', [{"for": 'a"b,c', "host": "x;y"}]),
    ("for=1.2.3.4,,  ,for=5.6.7.8 ;proto=https", [{"for": "1.2.3.4"},
                                                  {"for": "5.6.7.8", "proto": "https"}]),
    ("for=1.2.3.4;;proto=https", [{"for": "1.2.3.4", "proto": "https"}]),
])
def test_parse_forwarded(value, expected):
    assert parse_forwarded(value) == expected


@pytest.mark.parametrize("value", [
    "for=", "for=1.2.3.4 junk", "for=1.2.3.4;for=5.6.7.8", 'for="unterminated', "for",
    "for=a b", 'for="bad\x01"', "=1.2.3.4",
])
def test_malformed_forwarded_is_refused_whole(value):
    assert parse_forwarded(value) is None


@pytest.mark.parametrize("node, expected", [
    ("192.0.2.1", ("192.0.2.1", None)),
    ("192.0.2.1:8080", ("192.0.2.1", "8080")),
    ("[2001:db8::1]:4711", ("2001:db8::1", "4711")),
    ("[2001:DB8::1]", ("2001:db8::1", None)),
    ("2001:db8::1", ("2001:db8::1", None)),
    ("unknown", (None, None)),
    ("_hidden:_port", (None, None)),
    ("192.0.2.1:99999", ("192.0.2.1", None)),
    # Only plain IP literals: no zone index, no names, no octal-looking IPv4, no padding.
    ("fe80::1%eth0", (None, None)),
    ("[fe80::1%25eth0]:80", (None, "80")),
    ("[fe80::1%eth0]", (None, None)),
    ("192.0.2.1%1", (None, None)),
    ("localhost:80", (None, "80")),
    ("010.0.0.1", (None, None)),
    (" 192.0.2.1", (None, None)),
    # An IPv4-mapped address: its IPv4 address (see the test below for why).
    ("::ffff:192.0.2.1", ("192.0.2.1", None)),
    ("[::FFFF:C000:201]:8080", ("192.0.2.1", "8080")),
    # Not mapped (IPv4-compatible, IPv4-translated, NAT64): IPv6, written as every Python does.
    ("::192.0.2.1", ("::c000:201", None)),
    ("::ffff:0:192.0.2.1", ("::ffff:0:c000:201", None)),
    ("[64:ff9b::192.0.2.1]:1", ("64:ff9b::c000:201", "1")),
])
def test_split_node(node, expected):
    assert split_node(node) == expected


# Why an IPv4-mapped client (::ffff:a.b.c.d, RFC 4291 2.5.5.2) is reported as a.b.c.d: it is
# what a dual-stack socket makes of an IPv4 client, so nginx on [::] (ipv6only=off) writes
# $remote_addr "::ffff:192.0.2.1" into X-Forwarded-For or Forwarded (RFC 7239 6 has no other
# form for it), and HAProxy may send it as TCP6 in a PROXY header. The client is the IPv4 host
# 192.0.2.1, and that is what apps compare REMOTE_ADDR with: IPv4 allow-lists
# (ip_address(REMOTE_ADDR) in ip_network("192.0.2.0/24") is False for the IPv6 form), rate
# limits and logs keyed by address. greenserve already reports its own dual-stack peers so
# (serving/server.py, and tests/serving/test_sockets.py: "127.0.0.1", not "::ffff:127.0.0.1"); a client keeps
# one REMOTE_ADDR whether or not a proxy stands in front. Had it stayed IPv6, the mixed notation
# of RFC 4291 2.2 and RFC 5952 5 (::ffff:192.0.2.1) would be the spelling; but str() gives
# ::ffff:c000:201 up to Python 3.12 and ::ffff:192.0.2.1 from 3.13, so greenserve never writes
# these addresses with str(): addresses.client_address does, the same on every version.
@pytest.mark.parametrize("family, header", [
    ("x-forwarded", {"x_forwarded_for": "203.0.113.9, ::ffff:192.0.2.1"}),
    ("x-forwarded", {"x_forwarded_for": "::ffff:c000:201"}),
    ("forwarded", {"forwarded": 'for="[::ffff:192.0.2.1]:4711"'}),
])
def test_an_ipv4_mapped_client_is_reported_as_its_ipv4_address(family, header):
    environ = env(**header)
    ProxyHeaders(("10.0.0.0/8",), 1, family).apply(environ, ("::ffff:10.0.0.1", "5000"))
    assert environ["REMOTE_ADDR"] == "192.0.2.1"
    assert environ.get("REMOTE_PORT") == ("4711" if family == "forwarded" else None)
    assert ipaddress.ip_address(environ["REMOTE_ADDR"]) in ipaddress.ip_network("192.0.2.0/24")


# -- trust and selection -----------------------------------------------------------------------


def env(**headers):
    base = {"REMOTE_ADDR": "10.0.0.1", "REMOTE_PORT": "5000", "wsgi.url_scheme": "http",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "HTTP_HOST": "internal:8000"}
    base.update(("HTTP_" + k.upper(), v) for k, v in headers.items())
    return base


def test_trusted_peer_x_forwarded_headers_apply():
    proxies = ProxyHeaders(("10.0.0.0/8",), 1)
    environ = env(x_forwarded_for="203.0.113.9, 198.51.100.2", x_forwarded_proto="https",
                  x_forwarded_host="shop.example:8443")
    proxies.apply(environ, ("10.0.0.1", "5000"))
    assert environ["REMOTE_ADDR"] == "198.51.100.2"  # the entry our one proxy added
    assert "REMOTE_PORT" not in environ
    assert environ["wsgi.url_scheme"] == "https"
    assert (environ["HTTP_HOST"], environ["SERVER_NAME"], environ["SERVER_PORT"]) == (
        "shop.example:8443", "shop.example", "8443")
    assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.9, 198.51.100.2"  # kept for the app


def test_proxy_count_picks_the_nth_from_the_right_and_clamps():
    two = ProxyHeaders(("10.0.0.0/8",), 2)
    environ = env(x_forwarded_for="6.6.6.6, 203.0.113.9, 10.1.1.1")
    two.apply(environ, ("10.0.0.1", "5000"))
    assert environ["REMOTE_ADDR"] == "203.0.113.9"  # not the client-written 6.6.6.6
    short = env(x_forwarded_for="203.0.113.9")
    two.apply(short, ("10.0.0.1", "5000"))
    assert short["REMOTE_ADDR"] == "203.0.113.9"


def test_untrusted_peer_loses_every_proxy_header():
    proxies = ProxyHeaders(("10.0.0.0/8",), 1)
    environ = env(forwarded="for=1.1.1.1;proto=https", x_forwarded_for="1.1.1.1",
                  x_forwarded_proto="https", x_forwarded_host="evil", x_forwarded_port="1")
    before = dict(environ)
    proxies.apply(environ, ("192.168.1.1", "5000"))
    for key in ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
                "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT"):
        assert key not in environ
    assert {k: v for k, v in before.items() if not k.startswith("HTTP_X") and
            k != "HTTP_FORWARDED"} == environ


def test_forwarded_family_uses_one_element_and_drops_x_forwarded():
    proxies = ProxyHeaders(("10.0.0.0/8",), 1, "forwarded")
    environ = env(forwarded='for=6.6.6.6;proto=http, for="[2001:db8::7]:4711";proto=https;'
                            'host=api.example', x_forwarded_for="9.9.9.9",
                  x_forwarded_proto="http")
    proxies.apply(environ, ("10.0.0.1", "5000"))
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("2001:db8::7", "4711")
    assert environ["wsgi.url_scheme"] == "https"
    assert (environ["HTTP_HOST"], environ["SERVER_NAME"], environ["SERVER_PORT"]) == (
        "api.example", "api.example", "443")
    assert "HTTP_X_FORWARDED_FOR" not in environ and "HTTP_X_FORWARDED_PROTO" not in environ


def test_x_forwarded_family_is_the_default_and_drops_forwarded():
    proxies = ProxyHeaders(("10.0.0.0/8",), 1)
    environ = env(forwarded="for=6.6.6.6;proto=https", x_forwarded_for="9.9.9.9")
    proxies.apply(environ, ("10.0.0.1", "5000"))
    assert environ["REMOTE_ADDR"] == "9.9.9.9" and environ["wsgi.url_scheme"] == "http"
    assert "HTTP_FORWARDED" not in environ
    with pytest.raises(ValueError):
        ProxyHeaders(("10.0.0.0/8",), 1, "both")


@pytest.mark.parametrize("family, headers", [
    ("forwarded", {"forwarded": "for=unknown;proto=gopher;host=bad host"}),
    ("forwarded", {"forwarded": "for=1.2.3.4 junk"}),
    ("forwarded", {"forwarded": "for=1.2.3.4;proto=https;for=5.6.7.8"}),
    ("forwarded", {"forwarded": 'for="[fe80::1%25eth0]";proto=ftp'}),
    ("x-forwarded", {"x_forwarded_for": "not-an-ip", "x_forwarded_proto": "ftp",
                     "x_forwarded_port": "99999", "x_forwarded_host": "a/b"}),
    ("x-forwarded", {"x_forwarded_for": "fe80::1%eth0", "x_forwarded_port": "\u0663"}),
])
def test_values_that_are_not_well_formed_are_ignored(family, headers):
    environ = env(**headers)
    before = dict(environ)
    ProxyHeaders(("*",), 1, family).apply(environ, ("10.0.0.1", "5000"))
    assert environ == before  # REMOTE_ADDR, REMOTE_PORT, scheme and host: still the peer's


def test_x_forwarded_port_and_trust_forms():
    environ = env(x_forwarded_port="8443")
    ProxyHeaders(("*",), 1).apply(environ, ("192.0.2.1", "1"))
    assert environ["SERVER_PORT"] == "8443"
    proxies = ProxyHeaders(("127.0.0.1", "::1", "fd00::/8"), 1)
    assert proxies.trusts(("127.0.0.1", "1")) and proxies.trusts(("::1", "1"))
    assert proxies.trusts(("::ffff:127.0.0.1", "1"))  # a dual-stack socket's IPv4 peer
    assert proxies.trusts(("fd12::3", "1")) and not proxies.trusts(("fe80::1", "1"))
    assert not proxies.trusts(("127.0.0.2", "1")) and not proxies.trusts(("bogus", "1"))
    assert proxies.trusts(None)  # a unix socket: only who may open the file connects


def test_forwarded_allow_ips_option_is_checked():
    with pytest.raises(ConfigError) as info:
        Server(echo_environ, forwarded_allow_ips=("10.0.0.0/8", "ten"))
    assert info.value.option == "forwarded_allow_ips" and "'ten'" in info.value.message
    with pytest.raises(ConfigError) as info:
        Server(echo_environ, proxy_count=0)
    assert info.value.option == "proxy_count"


# -- on a real server, from several loopback addresses -----------------------------------------


def ask(address, extra=b"", source="127.0.0.1", preamble=b""):
    with socket.create_connection(address, timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(preamble + GET % extra)
        resp = Reader(sock).read_response()
    assert resp.status == 200, resp.body
    return json.loads(resp.body)


FORGED = (b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"
          b"X-Forwarded-Host: www.example:8443\r\nForwarded: for=198.51.100.1\r\n")


def test_server_applies_headers_from_the_default_trusted_loopback(serve):
    server = serve(echo_environ)
    seen = ask((server.host, server.port), b"X-Forwarded-For: 6.6.6.6, 203.0.113.9\r\n"
               b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: www.example:8443\r\n")
    assert seen["REMOTE_ADDR"] == "203.0.113.9"
    assert seen["wsgi.url_scheme"] == "https"
    assert (seen["HTTP_HOST"], seen["SERVER_NAME"], seen["SERVER_PORT"]) == (
        "www.example:8443", "www.example", "8443")
    plain = ask((server.host, server.port))
    assert plain["REMOTE_ADDR"] == "127.0.0.1" and plain["wsgi.url_scheme"] == "http"


def test_server_strips_headers_from_an_untrusted_peer(serve):
    server = serve(echo_environ)  # trusts 127.0.0.1 and ::1 only
    seen = ask((server.host, server.port), FORGED, source="127.0.0.2")
    assert seen["REMOTE_ADDR"] == "127.0.0.2"
    assert seen["wsgi.url_scheme"] == "http" and seen["HTTP_HOST"] == "app.test"
    assert not [key for key in seen if "FORWARDED" in key]


def test_every_proxy_key_is_found_by_its_field_name():
    """The server looks for proxy headers among a request's field names (PROXY_FIELDS), not
    its environ keys: each key must be the environ key of one of those names."""
    from greenserve.http.proxy import PROXY_FIELDS, PROXY_KEYS
    from greenserve.http.wsgi import _environ_key

    assert {_environ_key(name) for name in PROXY_FIELDS} == set(PROXY_KEYS)


@pytest.mark.parametrize("field", [b"X-Real-IP: 6.6.6.6", b"x-forwarded-prefix: /evil",
                                   b"Front-End-Https: on", b"X-FORWARDED-SSL: on"])
def test_a_lone_proxy_header_from_an_untrusted_peer_is_removed(serve, field):
    server = serve(echo_environ)
    seen = ask((server.host, server.port), field + b"\r\n", source="127.0.0.2")
    assert not [key for key in seen if key in ("HTTP_X_REAL_IP", "HTTP_X_FORWARDED_PREFIX",
                                               "HTTP_FRONT_END_HTTPS", "HTTP_X_FORWARDED_SSL")]


def test_server_with_a_cidr_allow_list(serve):
    server = serve(echo_environ, forwarded_allow_ips=("127.0.0.8/29",))
    trusted = ask((server.host, server.port), FORGED, source="127.0.0.9")
    assert "HTTP_FORWARDED" not in trusted  # not the family believed: it may be the client's
    assert trusted["REMOTE_ADDR"] == "203.0.113.9"
    untrusted = ask((server.host, server.port), FORGED, source="127.0.0.1")
    assert untrusted["REMOTE_ADDR"] == "127.0.0.1" and "HTTP_FORWARDED" not in untrusted


# -- PROXY protocol: the parser ----------------------------------------------------------------


def v2(command=1, family=0x11, body=None, version=2):
    if body is None:
        body = socket.inet_aton("203.0.113.7") + socket.inet_aton("10.0.0.1") + struct.pack(
            "!HH", 51234, 443)
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([version << 4 | command, family])
            + struct.pack("!H", len(body)) + body)


def v2_tcp6(source="2001:db8::5"):
    body = (socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(
        socket.AF_INET6, "2001:db8::1") + struct.pack("!HH", 4000, 443) + b"\x04\x00\x01x")
    return v2(family=0x21, body=body)


@pytest.mark.parametrize("header, source", [
    (b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n", ("203.0.113.7", "51234")),
    (b"PROXY TCP6 2001:db8::5 2001:db8::1 4000 443\r\n", ("2001:db8::5", "4000")),
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
    (v2(), ("203.0.113.7", "51234")),
    (v2_tcp6(), ("2001:db8::5", "4000")),
    # An IPv4 client of a dual-stack proxy: its IPv4 address, as for proxy headers (see above).
    (b"PROXY TCP6 ::ffff:203.0.113.7 2001:db8::1 4000 443\r\n", ("203.0.113.7", "4000")),
    (v2_tcp6("::ffff:203.0.113.7"), ("203.0.113.7", "4000")),
    (v2(command=0, family=0, body=b""), None),  # LOCAL
    (v2(family=0x31, body=b"\0" * 216), None),  # AF_UNIX: keep the real peer
])
def test_proxy_protocol_headers(header, source):
    known_at = 16 if header.startswith(b"\r\n") else len(header)  # v2: its length field
    for cut in range(len(header)):
        assert header_length(header[:cut]) == (None if cut < known_at else len(header))
    assert header_length(header + b"GET / HTTP/1.1\r\n") == len(header)
    assert parse(header) == source


@pytest.mark.parametrize("header", [
    b"PROXY TCP6 fe80::1%eth0 2001:db8::1 4000 443\r\n",  # a zone index: not a plain literal
    b"PROXY TCP6 2001:db8::5 fe80::1%1 4000 443\r\n", b"PROXY TCP4 010.0.0.1 10.0.0.2 1 2\r\n",
    b"PROXY TCP4 localhost 10.0.0.1 1 2\r\n", b"PROXY TCP6 [2001:db8::5] 2001:db8::1 1 2\r\n",
    b"PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n", b"PROXY TCP4 2001:db8::5 10.0.0.1 1 2\r\n",
    b"PROXY TCP4 203.0.113.7 10.0.0.1 051234 443\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    v2(version=1), v2(command=2), v2(body=b"\0" * 5), v2(family=0x51),
])
def test_malformed_proxy_protocol_headers(header):
    length = header_length(header)
    assert length == len(header)
    with pytest.raises(ProxyProtocolError):
        parse(header)


@pytest.mark.parametrize("prefix", [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01", b"PROXY" + b"x" * 200,
                                    b"PROXY TCP4 " + b"1" * 120])
def test_what_cannot_begin_a_proxy_header(prefix):
    with pytest.raises(ProxyProtocolError):
        header_length(prefix)


# -- PROXY protocol: a listener that requires it -----------------------------------------------


@pytest.fixture
def proxied(serve):
    """A server with a plain listener and a PROXY-protocol listener; returns both addresses."""
    def start(**options):
        server = serve(echo_environ, proxy_protocol_bind=("127.0.0.1:0",), **options)
        plain, proxy = server.server.addresses
        assert server.server.listeners[1].proxy_protocol
        return server, plain, proxy
    return start


def test_proxy_protocol_v1_and_v2_set_the_client(proxied):
    server, plain, proxy = proxied()
    seen = ask(proxy, preamble=b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n")
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("203.0.113.7", "51234")
    assert ask(proxy, preamble=v2_tcp6())["REMOTE_ADDR"] == "2001:db8::5"
    assert ask(proxy, preamble=v2(command=0, family=0, body=b""))["REMOTE_ADDR"] == "127.0.0.1"
    # The client named by the header is not a trusted proxy: its X-Forwarded-For is dropped.
    seen = ask(proxy, FORGED, preamble=v2())
    assert seen["REMOTE_ADDR"] == "203.0.113.7" and "HTTP_X_FORWARDED_FOR" not in seen
    # The plain listener does not read a PROXY header: there it is a bad request line.
    with socket.create_connection(plain, timeout=10) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n" + GET % b"")
        assert Reader(sock).read_response().status == 400


def test_a_real_server_reports_an_ipv4_mapped_client_as_ipv4(proxied):
    server, plain, proxy = proxied()  # the plain listener trusts its loopback peer's headers
    assert ask(plain, b"X-Forwarded-For: ::ffff:203.0.113.9\r\n")["REMOTE_ADDR"] == "203.0.113.9"
    seen = ask(proxy, preamble=b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:10.0.0.1 51234 443\r\n")
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("203.0.113.7", "51234")


def test_proxy_protocol_header_in_pieces(proxied):
    server, plain, proxy = proxied()
    with socket.create_connection(proxy, timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in v2():
            sock.send(bytes([byte]))
        sock.sendall(GET % b"")
        assert json.loads(Reader(sock).read_response().body)["REMOTE_ADDR"] == "203.0.113.7"


@pytest.mark.parametrize("opening", [
    GET % b"",  # no header at all
    b"PROXY TCP4 203.0.113.7 nowhere 1 2\r\n" + GET % b"",
    v2(version=1) + GET % b"",
])
def test_a_connection_without_a_valid_header_is_dropped_unanswered(proxied, opening):
    server, plain, proxy = proxied()
    with socket.create_connection(proxy, timeout=10) as sock:
        sock.sendall(opening)
        reader = Reader(sock)
        assert reader.at_eof()
        assert reader.buf == b""


def test_a_silent_proxy_is_cut_off_at_the_header_timeout(proxied):
    server, plain, proxy = proxied(header_timeout=0.5)
    with socket.create_connection(proxy, timeout=10) as sock:
        sock.sendall(b"PROXY TCP4 203.0.")
        assert Reader(sock).at_eof(timeout=10)


def test_proxy_protocol_then_tls(serve, tls_files):
    server = serve(echo_environ, proxy_protocol_bind=("127.0.0.1:0",), certfile=tls_files.cert,
                   keyfile=tls_files.key)
    proxy = server.server.addresses[1]
    context = ssl.create_default_context(cafile=tls_files.ca)
    with socket.create_connection(proxy, timeout=10) as raw:
        raw.sendall(b"PROXY TCP6 2001:db8::5 2001:db8::1 4000 443\r\n")
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(GET % b"")
            seen = json.loads(Reader(sock).read_response().body)
    assert seen["REMOTE_ADDR"] == "2001:db8::5" and seen["wsgi.url_scheme"] == "https"


def test_curl_haproxy_protocol(proxied):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install curl)")
    server, plain, proxy = proxied(forwarded_allow_ips=("127.0.0.0/29",))
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--haproxy-protocol", "--interface", "127.0.0.3",
         f"http://127.0.0.1:{proxy[1]}/"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["REMOTE_ADDR"] == "127.0.0.3"


@pytest.mark.parametrize("header", [
    b"Forwarded: for=198.51.100.1", b"X-Forwarded-For: 203.0.113.9", b"X-Forwarded-Proto: https",
    b"X-Forwarded-Host: evil.example", b"X-Forwarded-Port: 8443",
])
def test_each_proxy_header_alone_is_handled(serve, header):
    """The handler looks for proxy headers cheaply; each one alone must still be found: removed
    from an untrusted peer, applied from a trusted one (when of the family believed)."""
    family = "forwarded" if header.startswith(b"Forwarded") else "x-forwarded"
    server = serve(echo_environ, forwarded_headers=family)
    untrusted = ask((server.host, server.port), header + b"\r\n", source="127.0.0.2")
    assert not [key for key in untrusted if "FORWARDED" in key]
    trusted = ask((server.host, server.port), header + b"\r\n")
    assert [key for key in trusted if "FORWARDED" in key]


def test_inherited_sockets_keep_their_roles():
    """A supervisor binds in its parent and hands each worker its sockets: the PROXY listener
    is given as such, and the worker binds nothing itself."""
    import threading

    plain, proxy = socket.socket(), socket.socket()
    for sock in (plain, proxy):
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
    server = Server(echo_environ, bind="127.0.0.1:1", proxy_protocol_bind="127.0.0.1:1")
    server.start(sockets=[plain], proxy_sockets=[proxy])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert server.wait_serving(10)
        assert [listener.proxy_protocol for listener in server.listeners] == [False, True]
        assert ask(plain.getsockname())["REMOTE_ADDR"] == "127.0.0.1"
        assert ask(proxy.getsockname(), preamble=v2())["REMOTE_ADDR"] == "203.0.113.7"
    finally:
        server.stop(1)
        thread.join(10)


# -- values that only look like numbers; failures inside the proxy step --------------------------


@pytest.mark.parametrize("header, expected", [
    # '\xb2' is '²' in latin-1: str.isdigit() says yes, int() says no.
    (b"X-Forwarded-Port: \xb2", {"REMOTE_ADDR": "127.0.0.1", "SERVER_PORT": None}),
    (b"X-Forwarded-Port: 8\xb2", {"REMOTE_ADDR": "127.0.0.1", "SERVER_PORT": None}),
    (b"X-Forwarded-For: 192.0.2.4:\xb2", {"REMOTE_ADDR": "192.0.2.4", "REMOTE_PORT": None}),
    (b"X-Forwarded-For: [2001:db8::4]:\xb2", {"REMOTE_ADDR": "2001:db8::4", "REMOTE_PORT": None}),
    (b"X-Forwarded-For: 192.0.2.4:0080", {"REMOTE_ADDR": "192.0.2.4", "REMOTE_PORT": "80"}),
    (b"X-Forwarded-Host: shop.example:\xb2", {"HTTP_HOST": "app.test"}),
])
def test_digits_beyond_ascii_from_a_trusted_proxy_are_ignored(serve, header, expected):
    server = serve(echo_environ)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(GET % (header + b"\r\n"))
        resp = Reader(sock).read_response()
    assert resp.status == 200, resp.body  # not a dropped connection
    seen = json.loads(resp.body)
    for key, value in expected.items():
        if value is None:
            assert key not in seen or seen[key] == str(server.port), (key, seen)
        else:
            assert seen[key] == value, (key, seen)


def test_a_failure_while_applying_proxy_headers_is_a_500_with_a_traceback(serve, caplog):
    """No value can make ProxyHeaders.apply raise any more (see above), so a stand-in that
    raises plays the unexpected bug: the client gets a 500, the log the traceback, and the
    server goes on."""
    class Broken:
        def apply(self, environ, peer):
            raise ValueError("a bug in the proxy step")

    server = serve(echo_environ)
    real = server.server.proxies
    server.server.proxies = Broken()
    try:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(GET % b"X-Forwarded-For: 192.0.2.4\r\n")
            assert Reader(sock).read_response().status == 500
    finally:
        server.server.proxies = real
    logged = [r for r in caplog.records if r.exc_info and "proxy step" in str(r.exc_info[1])]
    assert logged and logged[0].levelname == "ERROR"
    assert ask((server.host, server.port))["REMOTE_ADDR"] == "127.0.0.1"


# -- which family is believed (--forwarded-headers) ---------------------------------------------

BOTH = (b"Forwarded: for=198.51.100.1;proto=https;host=fwd.example\r\n"
        b"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: xfwd.example\r\n")


def test_by_default_x_forwarded_is_believed_and_forwarded_removed(serve):
    """A proxy that writes X-Forwarded-For passes a client's Forwarded header on untouched:
    believing it would let the client choose its address."""
    server = serve(echo_environ)
    seen = ask((server.host, server.port), BOTH)
    assert (seen["REMOTE_ADDR"], seen["HTTP_HOST"], seen["wsgi.url_scheme"]) == (
        "203.0.113.9", "xfwd.example", "http")
    assert "HTTP_FORWARDED" not in seen and seen["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"


def test_forwarded_family_believes_forwarded_and_removes_x_forwarded(serve):
    server = serve(echo_environ, forwarded_headers="forwarded")
    seen = ask((server.host, server.port), BOTH)
    assert (seen["REMOTE_ADDR"], seen["HTTP_HOST"], seen["wsgi.url_scheme"]) == (
        "198.51.100.1", "fwd.example", "https")
    assert not [key for key in seen if key.startswith("HTTP_X_FORWARDED")]


@pytest.mark.parametrize("forwarded", [
    b"for=198.51.100.1;proto=https junk", b'for="198.51.100.1:\xb2";for=6.6.6.6',
    b"for=198.51.100.1;;proto=https;proto=http",
])
def test_a_malformed_header_of_the_believed_family_applies_nothing(serve, forwarded):
    server = serve(echo_environ, forwarded_headers="forwarded")
    seen = ask((server.host, server.port), b"Forwarded: %s\r\nX-Forwarded-For: 203.0.113.9\r\n"
               % forwarded)
    assert (seen["REMOTE_ADDR"], seen["wsgi.url_scheme"]) == ("127.0.0.1", "http")
    assert seen["HTTP_HOST"] == "app.test" and "HTTP_X_FORWARDED_FOR" not in seen


def test_a_port_beyond_ascii_in_forwarded_is_ignored(serve):
    server = serve(echo_environ, forwarded_headers="forwarded")
    seen = ask((server.host, server.port), b'Forwarded: for="192.0.2.4:\xb2"\r\n')
    assert seen["REMOTE_ADDR"] == "192.0.2.4" and "REMOTE_PORT" not in seen


def test_forwarded_headers_option_is_checked():
    with pytest.raises(ConfigError) as info:
        Server(echo_environ, forwarded_headers="both")
    assert info.value.option == "forwarded_headers"


# -- headers that frameworks read: removed from untrusted peers --------------------------------

FRAMEWORK_HEADERS = (b"X-Real-IP: 6.6.6.6\r\nX-Forwarded-Prefix: /evil\r\nX-Forwarded-Ssl: on\r\n"
                     b"X-Forwarded-Scheme: https\r\nFront-End-Https: on\r\n")
FRAMEWORK_KEYS = {"HTTP_X_REAL_IP": "6.6.6.6", "HTTP_X_FORWARDED_PREFIX": "/evil",
                  "HTTP_X_FORWARDED_SSL": "on", "HTTP_X_FORWARDED_SCHEME": "https",
                  "HTTP_FRONT_END_HTTPS": "on"}


def test_headers_frameworks_trust_are_removed_from_untrusted_peers_only(serve):
    server = serve(echo_environ)
    untrusted = ask((server.host, server.port), FRAMEWORK_HEADERS, source="127.0.0.2")
    assert not set(FRAMEWORK_KEYS) & set(untrusted)
    assert untrusted["wsgi.url_scheme"] == "http" and untrusted["REMOTE_ADDR"] == "127.0.0.2"
    trusted = ask((server.host, server.port), FRAMEWORK_HEADERS)
    assert {key: trusted.get(key) for key in FRAMEWORK_KEYS} == FRAMEWORK_KEYS
    assert trusted["wsgi.url_scheme"] == "http" and trusted["REMOTE_ADDR"] == "127.0.0.1"
    alone = ask((server.host, server.port), b"X-Real-IP: 6.6.6.6\r\n", source="127.0.0.2")
    assert "HTTP_X_REAL_IP" not in alone  # found by the handler's quick check on its own


# -- who may speak the PROXY protocol ---------------------------------------------------------


def test_a_proxy_protocol_connection_from_an_untrusted_peer_is_dropped_unread(proxied, caplog):
    """Whoever reaches the listener could otherwise name any client address, and that
    address decides whether X-Forwarded-* are believed."""
    caplog.set_level(logging.INFO, logger="greenserve.error")
    server, plain, proxy = proxied()  # trusts 127.0.0.1 and ::1 only
    with socket.create_connection(proxy, timeout=10, source_address=("127.0.0.2", 0)) as sock:
        sock.sendall(b"PROXY TCP4 127.0.0.1 10.0.0.1 51234 443\r\n"
                     + GET % b"X-Forwarded-For: 203.0.113.9\r\n")
        reader = Reader(sock)
        assert reader.at_eof()
        assert reader.buf == b""
    dropped = [r for r in caplog.records if "127.0.0.2" in r.getMessage()
               and "forwarded-allow-ips" in r.getMessage()]
    assert dropped and dropped[0].levelno == logging.INFO
    assert server.statistics()["requests_total"] == 0
    # From a trusted proxy the same header is read, and the client it names is applied.
    assert ask(proxy, preamble=b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n")[
        "REMOTE_ADDR"] == "203.0.113.7"


def test_a_silent_untrusted_peer_is_dropped_at_once(proxied):
    server, plain, proxy = proxied(header_timeout=30)
    with socket.create_connection(proxy, timeout=10, source_address=("127.0.0.2", 0)) as sock:
        assert Reader(sock).at_eof(timeout=5)  # long before the header timeout
    assert wait_until(lambda: server.statistics()["connections_open"] == 0)
