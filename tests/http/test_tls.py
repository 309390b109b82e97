"""TLS: real certificates (trustme), real clients (requests, curl, ssl sockets), mutual TLS,
the handshake deadline, OpenSSL's buffered bytes, file_wrapper and the option checks."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest
import requests

import greenserve.http.connection
from greenserve import ConfigError, Server

from conftest import ROOT, Proc, Reader, connect, run_to_end, wait_until

TLS12_ECDSA_AES128 = "ECDHE-ECDSA-AES128-GCM-SHA256"
TLS12_ECDSA_AES256 = "ECDHE-ECDSA-AES256-GCM-SHA384"


def describe(environ, start_response):
    """Echo what the app learns about the connection, and the sha256 of the body."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    cert = environ.get("greenserve.peercert")
    names = [value for _, value in cert.get("subjectAltName", ())] if cert else []
    text = "%s %s %s %s" % (environ["wsgi.url_scheme"], environ["SERVER_PROTOCOL"],
                            hashlib.sha256(body).hexdigest()[:16], (names or ["-"])[0])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [text.encode()]


def tls_options(files, **more):
    return {"certfile": files.cert, "keyfile": files.key, **more}


def client_context(files, *, cert=None, version=None):
    context = ssl.create_default_context(cafile=files.ca)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    if cert is not None:
        context.load_cert_chain(cert)
    return context


def tls_connect(server, context, timeout=10.0):
    raw = socket.create_connection((server.host, server.port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname="localhost")


def test_requests_over_https_sees_url_scheme_https(serve, tls_files):
    server = serve(describe, **tls_options(tls_files))
    assert server.url.startswith("https://127.0.0.1:")
    resp = requests.get(server.url + "/", verify=tls_files.ca, timeout=10)
    assert resp.status_code == 200
    assert resp.text.startswith("https HTTP/1.1 ")
    with pytest.raises(requests.exceptions.SSLError):  # an unknown CA is refused by the client
        requests.get(server.url + "/", timeout=10)


def test_curl_with_cacert(serve, tls_files):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install curl)")
    server = serve(describe, **tls_options(tls_files))
    done = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", tls_files.ca,
                           "--data-binary", "abc", server.url + "/upload"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "https HTTP/1.1 %s -" % hashlib.sha256(b"abc").hexdigest()[:16]


def test_mutual_tls_refuses_a_client_without_a_good_certificate(serve, tls_files):
    server = serve(describe, **tls_options(tls_files, ca_certs=tls_files.ca,
                                           cert_reqs="required"))
    refused = (requests.exceptions.SSLError, requests.exceptions.ConnectionError)
    with pytest.raises(refused):
        requests.get(server.url + "/", verify=tls_files.ca, timeout=10)
    with pytest.raises(refused):
        requests.get(server.url + "/", verify=tls_files.ca, cert=tls_files.other_client,
                     timeout=10)
    resp = requests.get(server.url + "/", verify=tls_files.ca, cert=tls_files.client, timeout=10)
    assert resp.status_code == 200
    assert resp.text.endswith(" client@example.test")  # the verified subject, for the app
    if shutil.which("curl") is not None:
        done = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", tls_files.ca,
                               server.url + "/"], capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and done.stdout == ""


def test_optional_client_certificates(serve, tls_files):
    server = serve(describe, **tls_options(tls_files, ca_certs=tls_files.ca,
                                           cert_reqs="optional"))
    anonymous = requests.get(server.url + "/", verify=tls_files.ca, timeout=10)
    assert anonymous.status_code == 200 and anonymous.text.endswith(" -")
    known = requests.get(server.url + "/", verify=tls_files.ca, cert=tls_files.client,
                         timeout=10)
    assert known.text.endswith(" client@example.test")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_2_is_the_minimum(serve, tls_files):
    from support import scrape, value

    server = serve(describe, **tls_options(tls_files, metrics_bind="127.0.0.1:0"))
    failures = lambda: value(scrape(server.server.metrics_url),  # noqa: E731
                             "greenserve_tls_handshake_failures_total")
    old = client_context(tls_files)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer what it may
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_connect(server, old).close()
    # The server saw a TLS 1.1 hello and refused it: not a client that could not offer one.
    assert wait_until(lambda: failures() == 1)
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        with tls_connect(server, client_context(tls_files, version=version)) as sock:
            assert sock.version() == name
            assert sock.selected_alpn_protocol() is None  # the client offered none
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert Reader(sock).read_response().body.startswith(b"https HTTP/1.1")
    assert failures() == 1


def test_ciphers_option_limits_tls_1_2_suites(serve, tls_files):
    server = serve(describe, **tls_options(tls_files, ciphers=TLS12_ECDSA_AES128))
    other = client_context(tls_files, version=ssl.TLSVersion.TLSv1_2)
    other.set_ciphers(TLS12_ECDSA_AES256)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_connect(server, other).close()
    same = client_context(tls_files, version=ssl.TLSVersion.TLSv1_2)
    with tls_connect(server, same) as sock:
        assert sock.cipher()[0] == TLS12_ECDSA_AES128


def test_plain_http_on_the_tls_port_gets_400_and_close(serve, tls_files):
    server = serve(describe, **tls_options(tls_files))
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.status == 400 and resp.header("connection") == "close"
        assert reader.at_eof()
    assert server.statistics()["protocol_errors"] == 1
    assert requests.get(server.url, verify=tls_files.ca, timeout=10).status_code == 200


def test_tls_client_on_a_plain_port_gets_400_and_close(serve, tls_files):
    server = serve(describe)
    with connect(server) as sock:
        context = client_context(tls_files)
        hello = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(*hello, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        sock.sendall(hello[1].read())  # a real ClientHello
        reader = Reader(sock)
        assert reader.read_response().status == 400
        assert reader.at_eof()


def test_handshake_deadline_closes_a_stalled_client_and_others_proceed(serve, tls_files):
    server = serve(describe, **tls_options(tls_files, header_timeout=0.5))
    stalled = connect(server)
    started = time.monotonic()
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then nothing
    resp = requests.get(server.url, verify=tls_files.ca, timeout=10)
    assert resp.status_code == 200  # the stalled handshake holds up nobody
    assert Reader(stalled).at_eof(timeout=10)
    assert time.monotonic() - started < 8
    stalled.close()


def test_file_wrapper_over_tls_falls_back_to_read_and_send(serve, tls_files, tmp_path):
    payload = os.urandom(3 << 20)
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    server = serve(app, validate=False, **tls_options(tls_files))  # unwrapped: the fast path
    resp = requests.get(server.url, verify=tls_files.ca, timeout=30)
    assert resp.headers["Content-Length"] == str(len(payload))
    assert hashlib.sha256(resp.content).digest() == hashlib.sha256(payload).digest()


def test_big_upload_and_slow_download_keep_alive_over_tls(serve, tls_files):
    blob = os.urandom(4 << 20)

    def app(environ, start_response):
        if environ["REQUEST_METHOD"] == "POST":
            return describe(environ, start_response)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [blob[i:i + 65536] for i in range(0, len(blob), 65536)]

    server = serve(app, **tls_options(tls_files))
    with requests.Session() as session:
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override session.verify
        session.verify = tls_files.ca
        up = session.post(server.url, data=os.urandom(1) + blob, timeout=30)
        assert up.status_code == 200
        got = bytearray()
        with session.get(server.url, stream=True, timeout=30) as down:
            for piece in down.iter_content(16384):
                got += piece
                if len(got) < (1 << 20):
                    time.sleep(0.001)  # a slow reader: the server's writes must wait
        assert bytes(got) == blob
        assert session.get(server.url, timeout=30).status_code == 200
    assert server.statistics()["connections_total"] == 1  # every request on one connection


def test_requests_already_decrypted_by_openssl_are_served(serve, tls_files, monkeypatch):
    """Two requests in one TLS record: the server reads the first only, and OpenSSL keeps the
    second. The socket will never be readable for it, so going idle must look at pending()."""
    first = b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n"
    second = b"GET /two HTTP/1.1\r\nHost: localhost\r\n\r\n"
    monkeypatch.setattr(greenserve.http.connection, "RECV_SIZE", len(first))

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    server = serve(app, **tls_options(tls_files, keepalive_timeout=60))
    with tls_connect(server, client_context(tls_files), timeout=5) as sock:
        sock.sendall(first + second)
        reader = Reader(sock)
        assert reader.read_response().body == b"/one"
        assert reader.read_response().body == b"/two"


def test_bad_tls_options_name_the_option(tls_files, tmp_path):
    def start(**options):
        server = Server(describe, bind="127.0.0.1:0", **options)
        try:
            server.start()
        finally:
            for listener in server.listeners:
                listener.sock.close()

    cases = [
        ({"certfile": str(tmp_path / "missing.pem")}, "certfile"),
        ({"certfile": tls_files.ca}, "certfile"),  # a certificate without its key
        (tls_options(tls_files, ciphers="NO-SUCH-CIPHER"), "ciphers"),
        (tls_options(tls_files, cert_reqs="required"), "cert_reqs"),
        (tls_options(tls_files, ca_certs=str(tmp_path / "none.pem")), "ca_certs"),
        ({"keyfile": tls_files.key}, "keyfile"),
    ]
    for options, option in cases:
        with pytest.raises(ConfigError) as info:
            start(**options)
        assert info.value.option == option, options
    with pytest.raises(ConfigError) as info:
        Server(describe, cert_reqs="sometimes")
    assert info.value.option == "cert_reqs"


def test_cli_serves_https_and_refuses_a_bad_certificate_in_one_line(tls_files, tmp_path):
    proc = Proc("examples.hello:app", "--bind", "127.0.0.1:0", "--certfile", tls_files.cert,
                "--keyfile", tls_files.key)
    try:
        url = proc.wait_for(re.compile(r"listening on (https://\S+)")).group(1)
        assert requests.get(url, verify=tls_files.ca, timeout=10).text == "Hello, world!\n"
        assert proc.stop() == 0
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait(5)
    done = run_to_end("examples.hello:app", "--bind", "127.0.0.1:0",
                      "--certfile", str(tmp_path / "nope.pem"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "certfile" in lines[0] and "nope.pem" in lines[0], done.stderr


def test_a_client_closing_mid_handshake_leaves_the_server_well(serve, tls_files):
    server = serve(describe, **tls_options(tls_files))
    for _ in range(5):
        with connect(server) as sock:
            sock.sendall(b"\x16\x03\x01\x00\x05hello")  # a bogus record, then gone
    assert wait_until(lambda: server.statistics()["connections_open"] == 0)
    threads = [threading.Thread(target=requests.get, args=(server.url,),
                                kwargs={"verify": tls_files.ca, "timeout": 10})
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert requests.get(server.url, verify=tls_files.ca, timeout=10).status_code == 200
    assert server.statistics()["requests_total"] == 5


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # an error answer, then a lingering close
])
def test_the_server_ends_tls_with_close_notify(serve, tls_files, request_bytes):
    """RFC 8446 6.1: close_notify before closing, so a client can tell the end of a
    close-delimited body from a cut connection."""
    server = serve(describe, **tls_options(tls_files))
    raw = socket.create_connection((server.host, server.port), timeout=10)
    context = client_context(tls_files)
    with context.wrap_socket(raw, server_hostname="localhost",
                             suppress_ragged_eofs=False) as sock:
        sock.sendall(request_bytes)
        data = b""
        while True:
            piece = sock.recv(65536)  # an EOF without close_notify raises SSLEOFError here
            if not piece:
                break
            data += piece
    assert data.startswith(b"HTTP/1.1 ")


# -- an encrypted private key ---------------------------------------------------------------------


def encrypted_key(files, directory):
    """The server's key, written again protected by a passphrase (trustme cannot)."""
    from cryptography.hazmat.primitives import serialization

    with open(files.key, "rb") as plain:
        key = serialization.load_pem_private_key(plain.read(), password=None)
    path = directory / "encrypted.key"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"a passphrase")))
    return str(path)


def test_an_encrypted_key_is_a_config_error_naming_the_option(tls_files, tmp_path):
    key = encrypted_key(tls_files, tmp_path)
    with pytest.raises(ConfigError) as info:
        Server(describe, bind="127.0.0.1:0", certfile=tls_files.cert, keyfile=key).start()
    assert info.value.option == "keyfile" and "encrypted" in info.value.message
    combined = tmp_path / "combined.pem"  # the key in the certificate file: name that option
    combined.write_text(open(tls_files.cert).read() + open(key).read())
    with pytest.raises(ConfigError) as info:
        Server(describe, bind="127.0.0.1:0", certfile=str(combined)).start()
    assert info.value.option == "certfile" and "encrypted" in info.value.message


@pytest.mark.parametrize("extra", [(), ("--workers", "2")])
def test_cli_refuses_an_encrypted_key_without_asking_on_the_terminal(tls_files, tmp_path, extra):
    """Run with a terminal of its own, where OpenSSL would prompt for the passphrase and wait:
    the server must say what is wrong in one line and exit 2 instead."""
    import fcntl
    import pty
    import sys
    import termios

    key = encrypted_key(tls_files, tmp_path)
    master, slave = pty.openpty()

    def take_the_terminal():  # in the child: a new session whose controlling tty is the pty
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "greenserve", "examples.hello:app", "--bind", "127.0.0.1:0",
         "--certfile", tls_files.cert, "--keyfile", key, *extra],
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT,
        preexec_fn=take_the_terminal)
    os.close(slave)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("greenserve waited for a passphrase on the terminal")
    finally:
        os.close(master)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "keyfile" in lines[0] and "encrypted" in lines[0], err
