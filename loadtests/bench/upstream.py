"""The slow upstream of scenario (e): every line received is answered with ``pong\\n`` after
``--delay`` seconds (50 ms by default); a connection stays open until the client closes it.

    python upstream.py --port 18901 --delay 0.05

asyncio streams would cost a task per connection; a Protocol with call_later is enough.
Listens on 127.0.0.1 only. On SIGTERM/SIGINT prints its counters and exits.
"""

import argparse
import asyncio
import json
import resource
import signal


class Counters:
    accepted = 0
    answered = 0
    open_now = 0
    open_peak = 0


class Delayed(asyncio.Protocol):
    def __init__(self, delay):
        self.delay = delay
        self.transport = None
        self.pending = b""

    def connection_made(self, transport):
        self.transport = transport
        Counters.accepted += 1
        Counters.open_now += 1
        Counters.open_peak = max(Counters.open_peak, Counters.open_now)

    def connection_lost(self, exc):
        Counters.open_now -= 1
        self.transport = None

    def data_received(self, data):
        data = self.pending + data
        lines = data.count(b"\n")
        self.pending = data[data.rfind(b"\n") + 1:] if lines else data
        if len(self.pending) > 65536:  # no newline in sight: not our client
            self.transport.close()
            return
        loop = asyncio.get_running_loop()
        for _ in range(lines):
            loop.call_later(self.delay, self.answer)

    def answer(self):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"pong\n")
            Counters.answered += 1


async def serve(host, port, delay, backlog):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Delayed(delay), host, port,
                                      backlog=backlog, reuse_address=True)
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    print(f"upstream ready on {host}:{port}, delay {delay}s", flush=True)
    await done.wait()
    server.close()
    print(json.dumps({k: getattr(Counters, k) for k in ("accepted", "answered", "open_peak")}),
          flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=18901)
    p.add_argument("--delay", type=float, default=0.05)
    p.add_argument("--backlog", type=int, default=4096)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve("127.0.0.1", a.port, a.delay, a.backlog))


if __name__ == "__main__":
    main()
