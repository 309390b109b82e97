"""WebSocket benchmark: greenserve against gevent + gevent-websocket and uvicorn + websockets,
side by side in one run, traffic to 127.0.0.1 only, every step bounded in time.

    python loadtests/websocket/bench.py --scenarios idle,echo,broadcast --reps 2

Each server runs alone on core 0 (``taskset -c 0``), a fresh process per sample (servers.py);
the client is this process, on core 1: asyncio protocols that send pre-built masked frames and
count the replies by length, so that the client costs as little per message as can be.

Scenarios:
- idle: 10,000 WebSockets opened and held; server RSS growth per connection (KiB), from
  /proc/PID/status, measured against the server before the first connection.
- echo: 1,000 WebSockets, each sending a 32-byte text message and waiting for its echo, for
  ``--duration`` seconds; round trips per second.
- broadcast: 10,000 WebSockets in a room; one more sends "broadcast"; seconds until the last
  of the 10,000 has its "tick".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = ("greenserve", "gevent", "uvicorn")
KEY = base64.b64encode(b"0123456789abcdef").decode()


def masked_text(payload: bytes) -> bytes:
    assert len(payload) < 126
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def handshake(path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


class Client(asyncio.Protocol):
    """One WebSocket: the handshake, then counting server frames of a known length."""

    def __init__(self, loop: asyncio.AbstractEventLoop, path: str, reply: bytes) -> None:
        self.opened: asyncio.Future[None] = loop.create_future()
        self.path = path
        self.reply = reply  # the frame awaited (echo or tick)
        self.buf = b""
        self.head_done = False
        self.transport: Any = None
        self.on_reply: Any = None  # called for each whole reply frame

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(handshake(self.path))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            self.head_done = True
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self.opened.set_exception(RuntimeError(head[:80].decode("latin-1")))
                return
            self.opened.set_result(None)
        n = len(self.reply)
        while n and len(self.buf) >= n:
            self.buf = self.buf[n:]
            if self.on_reply is not None:
                self.on_reply(self)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before 101"))


async def open_many(port: int, count: int, path: str, reply: bytes,
                    batch: int = 250) -> List[Client]:
    loop = asyncio.get_running_loop()
    clients: List[Client] = []
    for start in range(0, count, batch):
        group = [Client(loop, path, reply) for _ in range(min(batch, count - start))]
        await asyncio.wait_for(asyncio.gather(*(
            loop.create_connection(lambda c=c: c, "127.0.0.1", port) for c in group)), 60)
        await asyncio.wait_for(asyncio.gather(*(c.opened for c in group)), 60)
        clients += group
    return clients


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def idle(port: int, pid: int, args: Any) -> Dict[str, Any]:
    before = rss_kib(pid)
    clients = await open_many(port, args.idle, "/echo", b"")
    await asyncio.sleep(1.0)  # let the server settle (no traffic: nothing else to wait for)
    after = rss_kib(pid)
    for c in clients:
        c.transport.close()
    return {"value": (after - before) / args.idle, "unit": "KiB/conn", "rss_before": before,
            "rss_after": after}


async def echo(port: int, pid: int, args: Any) -> Dict[str, Any]:
    message = masked_text(b"x" * 32)
    reply = bytes([0x81, 32]) + b"x" * 32
    clients = await open_many(port, args.echo, "/echo", reply)
    counted = [0]
    running = [True]

    def again(client: Client) -> None:
        counted[0] += 1
        if running[0]:
            client.transport.write(message)

    for c in clients:
        c.on_reply = again
        c.transport.write(message)
    await asyncio.sleep(1.0)  # warm-up
    start_count, started, cpu = counted[0], time.monotonic(), cpu_seconds(pid)
    await asyncio.sleep(args.duration)
    done, elapsed = counted[0] - start_count, time.monotonic() - started
    busy = (cpu_seconds(pid) - cpu) / elapsed
    running[0] = False
    for c in clients:
        c.transport.close()
    return {"value": done / elapsed, "unit": "round trips/s", "server_cpu": round(busy, 2)}


async def broadcast(port: int, pid: int, args: Any) -> Dict[str, Any]:
    tick = bytes([0x81, 4]) + b"tick"
    clients = await open_many(port, args.room, "/room", tick)
    loop = asyncio.get_running_loop()
    everyone: asyncio.Future[float] = loop.create_future()
    got = [0]

    def arrived(client: Client) -> None:
        got[0] += 1
        if got[0] == len(clients) and not everyone.done():
            everyone.set_result(time.monotonic())

    for c in clients:
        c.on_reply = arrived
    await asyncio.sleep(1.0)
    (trigger,) = await open_many(port, 1, "/echo", b"")
    started = time.monotonic()
    trigger.transport.write(masked_text(b"broadcast"))
    ended = await asyncio.wait_for(everyone, 60)
    for c in clients + [trigger]:
        c.transport.close()
    return {"value": ended - started, "unit": "s until the last has it"}


SCENARIOS = {"idle": idle, "echo": echo, "broadcast": broadcast}


def start_server(name: str, python: str) -> subprocess.Popen:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(["taskset", "-c", "0", python, os.path.join(HERE, "servers.py"),
                             name, str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    proc.port = port  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                if b" 200 " in s.recv(100):
                    return proc
        except OSError:
            time.sleep(0.1)  # (a poll with a deadline: the server is starting)
    proc.kill()
    raise RuntimeError(f"{name} did not start")


def one_sample(name: str, scenario: str, args: Any) -> Dict[str, Any]:
    proc = start_server(name, args.python)
    try:
        result = asyncio.run(SCENARIOS[scenario](proc.port, proc.pid, args))  # type: ignore
    except Exception as exc:  # a failed sample is recorded, not hidden
        result = {"value": None, "error": repr(exc)}
    finally:
        proc.kill()
        proc.wait(10)
    return {"server": name, "scenario": scenario, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--scenarios", default="idle,echo,broadcast")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--echo", type=int, default=1000)
    parser.add_argument("--room", type=int, default=10000)
    parser.add_argument("--python", default=sys.executable, help="the servers' interpreter")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    samples = []
    for scenario in args.scenarios.split(","):
        for _ in range(args.reps):
            for name in args.servers.split(","):  # interleaved: A B C A B C
                sample = one_sample(name, scenario, args)
                print(json.dumps(sample), flush=True)
                samples.append(sample)
    if args.out:
        with open(args.out, "w") as out:
            out.write("\n".join(json.dumps(s) for s in samples) + "\n")
    print("\n| scenario | server | median | samples |\n|---|---|---:|---|")
    for scenario in args.scenarios.split(","):
        for name in args.servers.split(","):
            values = [s["value"] for s in samples
                      if s["scenario"] == scenario and s["server"] == name and s["value"]]
            unit = next((s["unit"] for s in samples if s.get("unit")
                         and s["scenario"] == scenario), "")
            median = f"{statistics.median(values):,.2f} {unit}" if values else "failed"
            print(f"| {scenario} | {name} | {median} | "
                  f"{', '.join(f'{v:,.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
