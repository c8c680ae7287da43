#!/usr/bin/env python3
"""bench/perf_ops.py PERF_DATA: where a `nullq serve` spent its CPU, from a
`perf record --call-graph dwarf -p PID` of it (bench/delivery-cpu.sh PERF=FILE makes one).

Prints the share of the on-CPU samples of each thread name, then of each kind of work,
recognised by a function on the sample's stack (kernel entry points, and two of nullq's own):
a sample counts for every kind whose function is on its stack, so the kinds overlap where one
calls the other (the last lines: the attempt's own share, and the final close of a queue file
inside it). Shares, not times: perf's unwinding slows the server down, so multiply a share by
the CPU a message of a run without perf (bench/delivery-cpu.sh's cpu_us/msg) for its µs.
"""
import collections
import re
import subprocess
import sys

KINDS = [
    ("rename (ext4)", "do_renameat2"),
    ("create/open", "path_openat"),
    ("write to a file or socket", "ksys_write"),
    ("fsync/fdatasync", "do_fsync"),
    ("syncfs", "sync_filesystem"),
    ("unlink", "do_unlinkat"),
    ("inode freed at last close (evict)", "ext4_evict_inode"),
    ("futex (thread hand-offs)", "do_futex"),
    ("tcp send", "tcp_sendmsg"),
    ("tcp receive", "tcp_recvmsg"),
    ("accept", "do_accept"),
    ("epoll", "do_epoll_wait"),
    ("log lines (tracing)", "Event::dispatch"),
    ("a delivery attempt (runtime)", "Deliverer::attempt"),
    ("  of it: close() in the attempt", "attempt::{{closure}}\x00__GI___close"),
]


def main():
    data = sys.argv[1]
    header = subprocess.run(["perf", "report", "-i", data, "--header-only"],
                            capture_output=True, text=True).stdout
    freq = re.search(r"sample_freq\D*(\d+)", header)
    freq = int(freq.group(1)) if freq else 0
    script = subprocess.run(["perf", "script", "-i", data, "-F", "comm,ip,sym"],
                            capture_output=True, text=True).stdout
    total, threads, kinds = 0, collections.Counter(), collections.Counter()
    for sample in script.split("\n\n"):
        lines = [l.strip() for l in sample.strip().splitlines()]
        if len(lines) < 2:
            continue
        total += 1
        comm = lines[0].split()[0]
        # A thread perf saw start before its name was set is ":TID".
        threads["(named by tid only)" if re.fullmatch(r":\d+", comm) else comm] += 1
        stack = lines[1:]
        joined = " ".join(stack)
        for name, marker in KINDS:
            if "\x00" in marker:
                outer, inner = marker.split("\x00")
                # `inner` called directly by the innermost `outer` frame
                at = [i for i, f in enumerate(stack) if outer in f]
                if at and at[0] > 0 and inner in stack[at[0] - 1]:
                    kinds[name] += 1
            elif marker in joined:
                kinds[name] += 1
    if total == 0:
        print("perf_ops: no samples")
        return
    print(f"samples {total} at {freq} Hz")
    for name, n in threads.most_common():
        print(f"thread {name:24} {100 * n / total:5.1f} %")
    for name, _ in KINDS:
        print(f"{name:40} {100 * kinds[name] / total:5.1f} %")


if __name__ == "__main__":
    main()
