"""bench/flush_cost.py DIR: what one flush of a batch of N fresh 1,200-byte files costs in DIR,
for each way the spool's committer could flush a batch (issue 14). Medians of 15 batches.

  syncfs           one syncfs(2) of DIR's filesystem          (--spool-flush filesystem)
  fdatasync x1     sync_file_range(WRITE) on all, then one fdatasync after another, fsync(DIR)
  fdatasync x8     the same fdatasyncs issued together from 8 threads, fsync(DIR)
                                                               (--spool-flush files)
Run by bench/flush-cost.sh, which makes the loop-mounted ext4."""
import ctypes
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

libc = ctypes.CDLL("libc.so.6", use_errno=True)
SYNC_FILE_RANGE_WRITE = 2
top = os.path.join(sys.argv[1], "flush-cost")
os.makedirs(top, exist_ok=True)
dfd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
pool = ThreadPoolExecutor(8)
serial = 0


def batch(n):
    global serial
    fds = []
    for _ in range(n):
        serial += 1
        fd = os.open(f"{top}/m{serial}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"x" * 1200)
        fds.append(fd)
    return fds


def syncfs(fds):
    if libc.syncfs(dfd) != 0:
        raise OSError(ctypes.get_errno(), "syncfs")


def fdatasyncs(threads):
    def flush(fds):
        for fd in fds:
            libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0),
                                 SYNC_FILE_RANGE_WRITE)
        if threads == 1:
            for fd in fds:
                os.fdatasync(fd)
        else:
            list(pool.map(os.fdatasync, fds))
        os.fsync(dfd)
    return flush


ways = [("syncfs", syncfs), ("fdatasync x1", fdatasyncs(1)), ("fdatasync x8", fdatasyncs(8))]
print("| files in the batch | " + " | ".join(f"{w}, ms" for w, _ in ways) + " |")
print("|---:|" + "---:|" * len(ways))
for n in [1, 10, 50, 200]:
    cells = []
    for _, flush in ways:
        took = []
        for _ in range(15):
            fds = batch(n)
            t0 = time.perf_counter()
            flush(fds)
            took.append(time.perf_counter() - t0)
            for fd in fds:
                os.close(fd)
        cells.append(f"{statistics.median(took) * 1000:.2f}")
    print(f"| {n} | " + " | ".join(cells) + " |")
