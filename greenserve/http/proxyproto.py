"""The PROXY protocol (HAProxy's, versions 1 and 2), receiver side, sans I/O.

A load balancer that passes TCP through (HAProxy, nginx's stream module, cloud balancers) can
start each connection with one header saying who the real client is. On a listener configured
for it (``--proxy-protocol-bind``) every connection must begin with such a header, and a
connection whose header is malformed is dropped without an answer (the specification, 2.1 and
2.2: never guess, never fall back to reading it as the protocol that follows).

``header_length(prefix)`` says how long the header is once enough of it has arrived, so the
caller can read exactly the header and leave what follows (TLS or HTTP) in the socket;
``parse(header)`` gives the client's address. This module does no I/O.
"""

from __future__ import annotations

import ipaddress
from typing import Optional, Tuple

from ..config.addresses import IPAddress, client_address, ip_literal

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (spec 2.1)
V2_MAX_EXTRA = 4096  # largest address block + TLVs accepted (the spec allows up to 65535)
Source = Optional[Tuple[str, str]]  # (address, port) of the client; None: keep the real peer


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header."""


def header_length(prefix: bytes) -> Optional[int]:
    """The total length of the header that ``prefix`` begins, or None while more bytes are
    needed to know. Raises ProxyProtocolError when ``prefix`` cannot begin a header."""
    if prefix[:12] == V2_SIGNATURE[:len(prefix)]:
        if len(prefix) < 16:
            return None
        extra = int.from_bytes(prefix[14:16], "big")
        if extra > V2_MAX_EXTRA:
            raise ProxyProtocolError(f"PROXY v2 header of {extra} bytes is too long")
        return 16 + extra
    if prefix[:6] == V1_PREFIX[:len(prefix)]:
        end = prefix.find(b"\r\n", 0, V1_MAX)
        if end >= 0:
            return end + 2
        if len(prefix) >= V1_MAX:
            raise ProxyProtocolError("PROXY v1 line longer than 107 bytes")
        return None
    raise ProxyProtocolError("the connection does not start with a PROXY protocol header")


def parse(header: bytes) -> Source:
    """The client address of a complete header (as delimited by ``header_length``); None
    when the header says to keep the connection's own addresses (v1 UNKNOWN, v2 LOCAL, or a
    family other than TCP over IPv4/IPv6). Raises ProxyProtocolError."""
    if header.startswith(V2_SIGNATURE):
        return _parse_v2(header)
    return _parse_v1(header)


def _parse_v1(header: bytes) -> Source:
    """The client of a v1 line (spec 2.1: "PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n" or
    "PROXY UNKNOWN ..."). Raises ProxyProtocolError. Never switches (no I/O here)."""
    try:
        line = header[:-2].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    if not header.endswith(b"\r\n"):
        raise ProxyProtocolError("PROXY v1 line does not end with CRLF")
    fields = line.split(" ")
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return None  # spec 2.1: the receiver ignores the rest and uses the real addresses
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 line {line[:60]!r}")
    _, family, source, destination, source_port, destination_port = fields
    client = _v1_address(source, family)
    _v1_address(destination, family)
    for port in (source_port, destination_port):
        # spec 2.1: a decimal 0..65535 with no leading zeros (ASCII: the line was decoded so)
        if not port.isdigit() or (len(port) > 1 and port[0] == "0") or int(port) > 65535:
            raise ProxyProtocolError(f"bad port {port!r} in PROXY v1 line")
    return client_address(client), source_port


def _v1_address(address: str, family: str) -> IPAddress:
    """An address of a v1 line: a plain literal (no zone index ('%'), no name) of ``family``
    ("TCP4" or "TCP6"). Raises ProxyProtocolError."""
    ip = ip_literal(address)
    if ip is None:
        raise ProxyProtocolError(f"bad address {address!r} in PROXY v1 line")
    if ip.version != (4 if family == "TCP4" else 6):
        raise ProxyProtocolError(f"{address!r} is not an {family} address")
    return ip


def _parse_v2(header: bytes) -> Source:
    """The client of a v2 header (spec 2.2: signature, version and command, family and
    transport, length, address block, TLVs, which are skipped). Raises ProxyProtocolError.
    Never switches (no I/O here)."""
    version, command = header[12] >> 4, header[12] & 0x0F
    if version != 2:
        raise ProxyProtocolError(f"PROXY v2 header with version {version}")
    if command == 0:  # LOCAL: the proxy's own connection (health checks)
        return None
    if command != 1:
        raise ProxyProtocolError(f"PROXY v2 header with command {command}")
    family, transport = header[13] >> 4, header[13] & 0x0F
    body = header[16:]
    if transport != 1 or family not in (1, 2):  # not TCP over IPv4 / IPv6: keep the peer
        if family > 3 or transport > 2:
            raise ProxyProtocolError("PROXY v2 header with an unknown address family")
        return None
    size = 4 if family == 1 else 16
    if len(body) < 2 * size + 4:
        raise ProxyProtocolError("PROXY v2 address block too short")
    source = ipaddress.ip_address(body[:size])  # 4 bytes: IPv4, 16: IPv6
    port = int.from_bytes(body[2 * size:2 * size + 2], "big")
    return client_address(source), str(port)
