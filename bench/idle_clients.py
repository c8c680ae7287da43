#!/usr/bin/env python3
"""bench/idle_clients.py: hold N idle QMQP connections open to 127.0.0.1:PORT (used by bench/rss.sh).

Each connection sends 3 bytes of a request ("100", the start of a netstring length) and then
nothing, so the server holds a session that is mid-request and waiting for the client. Prints
"connected N" once every connect() has returned, holds them for HOLD seconds, then prints how many
the server closed or answered in the meantime ("closed K", which should be 0) and exits.

Usage: python3 bench/idle_clients.py PORT N HOLD
"""
import resource
import select
import socket
import sys
import time


def main() -> int:
    port, count, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    if not (1 <= count <= 20000 and 0 < hold <= 600):
        print("idle_clients: N must be 1..20000 and HOLD 0..600", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"100")
        socks.append(s)
    print(f"connected {len(socks)}", flush=True)
    time.sleep(hold)
    # A socket that is readable now was answered (Z, too many sessions) or closed by the server.
    # (poll, not select: the descriptors go past FD_SETSIZE.)
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN)
    closed = len(poller.poll(0))
    print(f"closed {closed}", flush=True)
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
