"""bench/flush_cost.py DIR: what one flush of a batch of N fresh 1,200-byte files costs in DIR,
for each way the spool's committer could flush a batch (issue 14). Medians of 15 batches.

  syncfs           one syncfs(2) of DIR's filesystem          (--spool-flush filesystem)
  fdatasync x1     sync_file_range(WRITE) on all, then one fdatasync after another, fsync(DIR)
  fdatasync x8     the same fdatasyncs issued together from 8 threads, fsync(DIR)
                                                               (--spool-flush files)
  segment append   no files: the batch's messages appended to one shared file, one fdatasync
                   (issue 14's "journal segment" candidate; the file grows: a journal commit)
  segment reuse    the same into a segment written with zeros and fsynced beforehand, so the
                   fdatasync has no metadata to commit: data and a device flush only
(the segment ways leave each message to be made a file of its own later: not counted here)
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


SEGMENT = 64 << 20
seg_append = os.open(f"{top}/segment-append", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
seg_reuse = os.open(f"{top}/segment-reuse", os.O_WRONLY | os.O_CREAT, 0o600)
for at in range(0, SEGMENT, 1 << 20):
    os.pwrite(seg_reuse, bytes(1 << 20), at)
os.fsync(seg_reuse)
reuse_at = 0


def segment_append(n):
    os.write(seg_append, b"x" * (1200 * n))
    os.fdatasync(seg_append)


def segment_reuse(n):
    global reuse_at
    if reuse_at + 1200 * n > SEGMENT:
        reuse_at = 0
    os.pwrite(seg_reuse, b"x" * (1200 * n), reuse_at)
    reuse_at += 1200 * n
    os.fdatasync(seg_reuse)


files_ways = [("syncfs", syncfs), ("fdatasync x1", fdatasyncs(1)), ("fdatasync x8", fdatasyncs(8))]
segment_ways = [("segment append", segment_append), ("segment reuse", segment_reuse)]
ways = files_ways + segment_ways
print("| files in the batch | " + " | ".join(f"{w}, ms" for w, _ in ways) + " |")
print("|---:|" + "---:|" * len(ways))
for n in [1, 10, 50, 200]:
    cells = []
    for _, flush in files_ways:
        took = []
        for _ in range(15):
            fds = batch(n)
            t0 = time.perf_counter()
            flush(fds)
            took.append(time.perf_counter() - t0)
            for fd in fds:
                os.close(fd)
        cells.append(f"{statistics.median(took) * 1000:.2f}")
    for _, write_and_flush in segment_ways:
        took = []
        for _ in range(15):
            t0 = time.perf_counter()
            write_and_flush(n)
            took.append(time.perf_counter() - t0)
        cells.append(f"{statistics.median(took) * 1000:.2f}")
    print(f"| {n} | " + " | ".join(cells) + " |")
