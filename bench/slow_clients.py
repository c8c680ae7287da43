#!/usr/bin/env python3
"""bench/slow_clients.py: a slow-connection flood against a QMQP server, and a normal client's
time to K while it lasts (used by bench/slow-flood.sh).

The flood: N connections to 127.0.0.1:PORT from ADDRS loopback source addresses (127.0.1.1,
127.0.1.2, ...; N/ADDRS each), each sending one byte of a request every INTERVAL seconds and
reconnecting at once when the server closes or answers it, for the whole run. A probe: from
127.0.2.1, one 1 KB request sent at once, timed from connect() to the K (or Z, or nothing within
PROBE_TIMEOUT). PROBES probes run one after another, one second apart, after all N connections
are open (the first time) and WARMUP seconds more.

Prints one line per probe ("probe 3 K 0.004 s"), then the flood's counts (connections made,
closed or answered by the server) and a RESULT line: probes answered K, median and max time to
K. Bounded: every wait has a timeout, and the run stops after the last probe.

Usage: python3 bench/slow_clients.py PORT N ADDRS INTERVAL WARMUP PROBES PROBE_TIMEOUT
"""
import asyncio
import resource
import statistics
import sys
import time


def request(size: int) -> bytes:
    body = b"Subject: probe\n\n" + b"x" * size + b"\n"
    parts = [b"%d:%s," % (len(body), body)]
    for addr in (b"a@example.net", b"b@example.net"):
        parts.append(b"%d:%s," % (len(addr), addr))
    inner = b"".join(parts)
    return b"%d:%s," % (len(inner), inner)


class Flood:
    def __init__(self, port: int, count: int, addrs: int, interval: float):
        self.port, self.count, self.addrs, self.interval = port, count, addrs, interval
        self.open = 0
        self.made = 0
        self.ended_by_server = 0
        self.all_open = asyncio.Event()
        self.stop = asyncio.Event()

    async def one(self, source: str) -> None:
        slow = request(100)
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0)), 10
                )
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(self.interval)
                continue
            self.made += 1
            self.open += 1
            if self.open >= self.count:
                self.all_open.set()
            try:
                for byte in slow:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    try:
                        # Anything from the server (an answer, or EOF) ends this connection.
                        got = await asyncio.wait_for(reader.read(1024), self.interval)
                        self.ended_by_server += 1
                        del got
                        break
                    except asyncio.TimeoutError:
                        if self.stop.is_set():
                            break
            except OSError:
                self.ended_by_server += 1
            finally:
                self.open -= 1
                writer.close()


async def probe(port: int, timeout: float) -> tuple:
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.2.1", 0)), timeout
        )
        writer.write(request(1000))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout - (time.monotonic() - started))
        writer.close()
    except (OSError, asyncio.TimeoutError) as e:
        return ("none", time.monotonic() - started, type(e).__name__)
    kind = "K" if b":K" in answer else ("Z" if b":Z" in answer else "other")
    return (kind, time.monotonic() - started, answer[:80])


async def main() -> int:
    port, count, addrs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    interval, warmup = float(sys.argv[4]), float(sys.argv[5])
    probes, probe_timeout = int(sys.argv[6]), float(sys.argv[7])
    if not (1 <= count <= 10000 and 1 <= addrs <= 250 and 1 <= probes <= 100):
        print("slow_clients: N 1..10000, ADDRS 1..250, PROBES 1..100", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(count + 256, hard), hard))
    flood = Flood(port, count, addrs, interval)
    tasks = [
        asyncio.create_task(flood.one("127.0.1.%d" % (1 + i % addrs))) for i in range(count)
    ]
    try:
        await asyncio.wait_for(flood.all_open.wait(), 60)
    except asyncio.TimeoutError:
        print("slow_clients: only %d of %d connections open after 60 s" % (flood.open, count))
    print("flood: %d connections open from %d addresses" % (flood.open, addrs), flush=True)
    await asyncio.sleep(warmup)
    times = []
    for i in range(probes):
        kind, took, detail = await probe(port, probe_timeout)
        print("probe %d %s %.3f s open=%d %s" % (i + 1, kind, took, flood.open,
                                                  "" if kind == "K" else detail), flush=True)
        if kind == "K":
            times.append(took)
        await asyncio.sleep(1)
    flood.stop.set()
    await asyncio.wait(tasks, timeout=interval + 15)
    for t in tasks:
        t.cancel()
    print("flood: %d connections made, %d ended by the server" % (flood.made, flood.ended_by_server))
    if times:
        print("RESULT %d/%d probes K; time to K median %.3f s, max %.3f s"
              % (len(times), probes, statistics.median(times), max(times)))
    else:
        print("RESULT 0/%d probes K" % probes)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
