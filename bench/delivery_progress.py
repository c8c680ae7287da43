#!/usr/bin/env python3
"""bench/delivery_progress.py: samples a delivering `nullq serve` while qmqp-source fills it.

Usage: delivery_progress.py QUEUE_DIR MAILDIR_NEW EXPECTED TIMEOUT_S OUT_TSV SERVER_PID
Every 0.1 s it counts the files in QUEUE_DIR (queued: committed, not yet removed) and in
MAILDIR_NEW (delivered), reads the server's thread count (/proc/PID/status), and appends
"epoch_seconds queued delivered threads" to OUT_TSV. It stops once
EXPECTED messages are delivered and the queue is empty, or after TIMEOUT_S seconds (bounded,
whatever happens).
"""
import os, sys, time

queue, new, expected, timeout, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
pid = sys.argv[6]


def count(d):
    try:
        with os.scandir(d) as it:
            return sum(1 for _ in it)
    except FileNotFoundError:
        return 0


def threads():
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(l.split()[1]) for l in f if l.startswith("Threads:")), 0)
    except (FileNotFoundError, ProcessLookupError):
        return 0


end = time.time() + timeout
with open(out, "w") as f:
    while True:
        t = time.time()
        q, d = count(queue), count(new)
        f.write(f"{t:.3f}\t{q}\t{d}\t{threads()}\n")
        f.flush()
        if (d >= expected and q == 0) or t > end:
            break
        time.sleep(0.1)
