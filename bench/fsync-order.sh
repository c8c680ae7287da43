#!/usr/bin/env bash
# bench/fsync-order.sh: what one durable queue entry costs in file-system flushes, by the order of
# the steps (no server, no network: just the system calls, one file at a time).
#
#   A  write tmp/F, fdatasync(F), rename tmp/F -> queue/F, fsync(queue/)   nullq-spool today
#   B  write tmp/F, rename tmp/F -> queue/F, fdatasync(F), fsync(queue/)   rename first
#   C  write tmp/F, fsync(F), rename tmp/F -> queue/F                      Postfix (no dir fsync)
#
# Each is timed over N 1 KB files, one at a time (like one QMQP session), 3 rounds interleaved,
# on a new loop-mounted ext4 with a journal (a sparse file under $BENCH_TMP, default /var/tmp) and
# in a directory under $BENCH_TMP itself. Prints files/s and ms per file for each.
#
# Run (as root: mount): bench/fsync-order.sh [N]      (N: 1..10000, default 500)
set -euo pipefail

n=${1:-500}
((n >= 1 && n <= 10000)) || { echo "fsync-order: N must be 1..10000" >&2; exit 100; }
top=$(mktemp -d "${BENCH_TMP:-/var/tmp}/nullq-bench-fsync.XXXXXX")
cleanup() {
    if mountpoint -q "$top/fs"; then umount "$top/fs"; fi
    rm -rf "$top"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

truncate -s 1G "$top/fs.img"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$top/fs.img"
mkdir "$top/fs" "$top/plain"
mount -o loop "$top/fs.img" "$top/fs"

for dir in "$top/fs" "$top/plain"; do
    echo "== $dir: $(findmnt -n -o SOURCE,FSTYPE,OPTIONS -T "$dir")"
    timeout 300 python3 - "$dir" "$n" <<'PY'
import os, sys, time
root, n = sys.argv[1], int(sys.argv[2])
tmp, queue = os.path.join(root, "tmp"), os.path.join(root, "queue")
os.makedirs(tmp), os.makedirs(queue)
qfd = os.open(queue, os.O_RDONLY | os.O_DIRECTORY)
data = b"x" * 1024
def one(order, name):
    t, q = os.path.join(tmp, name), os.path.join(queue, name)
    fd = os.open(t, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data)
    if order == "A":
        os.fdatasync(fd); os.close(fd); os.rename(t, q); os.fsync(qfd)
    elif order == "B":
        os.rename(t, q); os.fdatasync(fd); os.close(fd); os.fsync(qfd)
    else:
        os.fsync(fd); os.close(fd); os.rename(t, q)
for rnd in range(3):
    for order in "ABC":
        t0 = time.perf_counter()
        for i in range(n):
            one(order, f"{order}{rnd}-{i}")
        dt = time.perf_counter() - t0
        print(f"round {rnd + 1} {order}: {n / dt:6.0f} files/s {dt / n * 1000:6.2f} ms/file", flush=True)
PY
done
