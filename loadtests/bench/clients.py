"""Small clients the harness runs (pinned to the client core) where wrk does not fit.

    python clients.py idle PORT --n 10000 [--open-timeout 60] [--hold-timeout 300]
    python clients.py upload PORT --mib 100 [--duration 10] [--max-uploads 50]

idle    opens N connections to 127.0.0.1:PORT, at most --parallel at a time, sends one
        keep-alive GET on each and reads its response, and keeps every connection whose
        response did not say ``Connection: close``. It then prints one JSON line (counts of
        held, refused, failed, ...), and answers stdin commands: ``check`` prints how many
        held connections are still open (the server has not closed them), ``quit`` or EOF
        (or --hold-timeout) closes them all and exits.
upload  POSTs MIB MiB with ``Transfer-Encoding: chunked`` in 64 KiB chunks, again and again on
        a keep-alive connection (a new one when the server closes), until --duration seconds
        or --max-uploads uploads, checks that each answer is 200 with the byte count, and
        prints one JSON line: uploads, bytes, seconds, MiB/s, errors.

Both only talk to 127.0.0.1, raise RLIMIT_NOFILE to the hard limit, and bound every loop.
"""

import argparse
import errno
import json
import resource
import selectors
import socket
import sys
import time

HOST = "127.0.0.1"


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ----------------------------------------------------------------------------- idle

IDLE_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench-idle\r\n\r\n"


class Pending:
    __slots__ = ("sock", "sent", "data")

    def __init__(self, sock):
        self.sock, self.sent, self.data = sock, False, b""


def response_done(data):
    """(complete, server_closes) for the bytes of one response read so far."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False, False
    length, closes = 0, False
    for line in data[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and b"close" in value.lower():
            closes = True
    return len(data) >= end + 4 + length, closes


def idle_open(port, n, parallel, timeout):
    counts = {"held": 0, "refused": 0, "reset": 0, "closed_early": 0, "server_said_close": 0,
              "timed_out": 0, "other_error": 0}
    held, errnames = [], {}
    sel = selectors.DefaultSelector()
    started = inflight = 0
    t0 = time.monotonic()

    def drop(p, why):
        nonlocal inflight
        sel.unregister(p.sock)
        p.sock.close()
        inflight -= 1
        counts[why] += 1

    while started < n or inflight:
        while started < n and inflight < parallel:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            started += 1
            rc = s.connect_ex((HOST, port))
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                counts["refused" if rc == errno.ECONNREFUSED else "other_error"] += 1
                errnames[errno.errorcode.get(rc, str(rc))] = errnames.get(errno.errorcode.get(rc, str(rc)), 0) + 1
                continue
            sel.register(s, selectors.EVENT_WRITE, Pending(s))
            inflight += 1
        if time.monotonic() - t0 > timeout:
            for key in list(sel.get_map().values()):
                drop(key.data, "timed_out")
            break
        for key, _ in sel.select(0.2):
            p = key.data
            try:
                if not p.sent:
                    err = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, "connect")
                    p.sock.send(IDLE_REQUEST)
                    p.sent = True
                    sel.modify(p.sock, selectors.EVENT_READ, p)
                    continue
                got = p.sock.recv(65536)
                if not got:
                    drop(p, "closed_early")
                    continue
                p.data += got
                done, closes = response_done(p.data)
                if done:
                    if closes:
                        drop(p, "server_said_close")
                    else:
                        sel.unregister(p.sock)
                        inflight -= 1
                        held.append(p.sock)
                        counts["held"] += 1
            except OSError as e:
                name = errno.errorcode.get(e.errno, str(e.errno))
                errnames[name] = errnames.get(name, 0) + 1
                drop(p, {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset"}.get(e.errno, "other_error"))
    sel.close()
    counts.update(requested=n, open_seconds=round(time.monotonic() - t0, 2), errnos=errnames)
    return held, counts


def still_open(socks):
    """Held sockets the server has not closed (not readable, or readable without EOF)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    gone = 0
    for key, _ in sel.select(0):
        try:
            if key.fileobj.recv(1, socket.MSG_PEEK) == b"":
                gone += 1
        except OSError:
            gone += 1
    sel.close()
    return len(socks) - gone


def cmd_idle(a):
    raise_nofile()
    held, counts = idle_open(a.port, a.n, a.parallel, a.open_timeout)
    print(json.dumps(counts), flush=True)
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ)
    end = time.monotonic() + a.hold_timeout
    while time.monotonic() < end:
        if not sel.select(min(1.0, max(0.0, end - time.monotonic()))):
            continue
        line = sys.stdin.readline()
        if line.strip() == "check":
            print(json.dumps({"still_open": still_open(held)}), flush=True)
        else:  # quit or EOF
            break
    for s in held:
        s.close()


# ----------------------------------------------------------------------------- upload

CHUNK = 64 * 1024


def read_response(sock, deadline):
    data = b""
    while time.monotonic() < deadline:
        done, closes = response_done(data)
        if done:
            head, _, body = data.partition(b"\r\n\r\n")
            return int(head.split(b" ", 2)[1]), body, closes
        got = sock.recv(65536)
        if not got:
            raise ConnectionError("server closed before a whole response")
        data += got
    raise TimeoutError("no response in time")


def cmd_upload(a):
    raise_nofile()
    total = a.mib * 1024 * 1024
    nchunks = total // CHUNK
    frame = b"%x\r\n" % CHUNK + b"\x61" * CHUNK + b"\r\n"
    head = (b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench-upload\r\n"
            b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    result = {"uploads": 0, "bytes": 0, "seconds": 0.0, "errors": [], "connections": 0}
    sock = None
    t_start = time.monotonic()
    busy = 0.0
    while result["uploads"] < a.max_uploads and time.monotonic() - t_start < a.duration:
        try:
            if sock is None:
                sock = socket.create_connection((HOST, a.port), timeout=a.io_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                result["connections"] += 1
            t0 = time.monotonic()
            sock.sendall(head)
            for _ in range(nchunks):
                sock.sendall(frame)
            sock.sendall(b"0\r\n\r\n")
            status, body, closes = read_response(sock, time.monotonic() + a.io_timeout)
            busy += time.monotonic() - t0
            if status != 200 or body.strip() != str(total).encode():
                result["errors"].append(f"status {status} body {body[:60]!r}")
                closes = True
            else:
                result["uploads"] += 1
                result["bytes"] += total
            if closes:
                sock.close()
                sock = None
        except OSError as e:  # includes timeouts and resets
            result["errors"].append(f"{type(e).__name__}: {e}")
            if sock is not None:
                sock.close()
                sock = None
        if len(result["errors"]) >= 5:
            break
    if sock is not None:
        sock.close()
    result["seconds"] = round(busy, 3)
    result["mib_per_s"] = round(result["bytes"] / 1048576 / busy, 1) if busy and result["bytes"] else None
    print(json.dumps(result), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("idle")
    i.add_argument("port", type=int)
    i.add_argument("--n", type=int, default=10000)
    i.add_argument("--parallel", type=int, default=256)
    i.add_argument("--open-timeout", type=float, default=60)
    i.add_argument("--hold-timeout", type=float, default=300)
    u = sub.add_parser("upload")
    u.add_argument("port", type=int)
    u.add_argument("--mib", type=int, default=100)
    u.add_argument("--duration", type=float, default=10)
    u.add_argument("--max-uploads", type=int, default=50)
    u.add_argument("--io-timeout", type=float, default=30)
    a = p.parse_args()
    (cmd_idle if a.cmd == "idle" else cmd_upload)(a)


if __name__ == "__main__":
    main()
