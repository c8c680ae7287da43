"""bench/create_cost.py DIR: the CPU time and wall time of making 5,000 message files of 1,300
bytes in DIR, three ways, three times: created in tmp/ and renamed into queue/ (what the spool
does), O_TMPFILE in queue/ then linkat (needs /proc), created straight in queue/. Python's own
cost is in every number alike. Run by bench/flush-cost.sh."""
import os, sys, time, resource
top = sys.argv[1]
for d in ("tmp", "queue"):
    os.makedirs(f"{top}/{d}", exist_ok=True)
tmpfd = os.open(f"{top}/tmp", os.O_RDONLY | os.O_DIRECTORY)
qfd = os.open(f"{top}/queue", os.O_RDONLY | os.O_DIRECTORY)
data = b"x" * 1300
N = 5000
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
def rename_way(i):
    fd = os.open(f"m{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=tmpfd)
    os.write(fd, data)
    os.rename(f"m{i}", f"r{i}", src_dir_fd=tmpfd, dst_dir_fd=qfd)
    os.close(fd)
def tmpfile_way(i):
    fd = os.open(".", os.O_WRONLY | os.O_TMPFILE, 0o600, dir_fd=qfd)
    os.write(fd, data)
    os.link(f"/proc/self/fd/{fd}", f"t{i}", dst_dir_fd=qfd, follow_symlinks=True)
    os.close(fd)
def direct_way(i):
    fd = os.open(f"d{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=qfd)
    os.write(fd, data)
    os.close(fd)
for rep in range(3):
    for name, way in (("tmp+rename", rename_way), ("O_TMPFILE+linkat", tmpfile_way), ("create in place", direct_way)):
        c0 = cpu(); t0 = time.perf_counter()
        for i in range(N):
            way(rep * N + i)
        os.sync()
        print(f"{name:18} {1e6 * (cpu() - c0) / N:6.1f} us CPU/file  {1e6 * (time.perf_counter() - t0) / N:6.1f} us wall/file")
