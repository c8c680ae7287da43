//! Issue 14's io_uring candidate, measured beside the committer's own ways in one process: what
//! one flush of a batch of N fresh 1,200-byte files costs, as the time of the flush and as the
//! process's CPU time and context switches per file (io_uring's kernel workers are threads of
//! the process, so both count them). Medians of 15 batches. `bench/flush-cost.sh` runs it.
//!
//! - `threads x8`: the `--spool-flush files` committer: `sync_file_range(WRITE)` on every file,
//!   their `fdatasync`s from 8 threads, then `fsync` of the directory;
//! - `uring fdatasync`: the same, the 8 threads replaced by one ring: every `fdatasync` submitted
//!   at once (`IORING_OP_FSYNC`, `IORING_FSYNC_DATASYNC`) and waited for together;
//! - `uring linked`: each file's write linked to its `fdatasync` (`IOSQE_IO_LINK`), the whole
//!   batch in one submission, then `fsync` of the directory;
//! - `syncfs`: the `--spool-flush filesystem` committer.
//!
//! ```sh
//! cargo run --release -p nullq-spool --example flush_uring -- DIR
//! ```

use std::error::Error;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};

const SIZE: usize = 1200;
const ROUNDS: usize = 15;
const THREADS: usize = 8;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The process's CPU time (µs) and context switches so far, its threads' and its io_uring
/// workers' included.
fn usage() -> (f64, f64) {
    // SAFETY: getrusage only writes the struct it is given, which is zeroed and ours.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is valid for every process.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    (
        us(ru.ru_utime) + us(ru.ru_stime),
        (ru.ru_nvcsw + ru.ru_nivcsw) as f64,
    )
}

struct Dir {
    path: PathBuf,
    handle: File,
    serial: u64,
}

impl Dir {
    fn create(&mut self, n: usize, write: bool) -> Result<Vec<File>> {
        let mut files = Vec::with_capacity(n);
        for _ in 0..n {
            self.serial += 1;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(self.path.join(format!("m{}", self.serial)))?;
            if write {
                f.write_all(&[b'x'; SIZE])?;
            }
            files.push(f);
        }
        Ok(files)
    }
}

fn start_writeback(files: &[File]) -> Result<()> {
    for f in files {
        // SAFETY: a plain system call on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

/// Waits for `n` completions and fails on the first error among them.
fn reap(ring: &mut IoUring, n: usize) -> Result<()> {
    let mut seen = 0;
    while seen < n {
        ring.submit_and_wait(1)?;
        for cqe in ring.completion() {
            seen += 1;
            if cqe.result() < 0 {
                return Err(std::io::Error::from_raw_os_error(-cqe.result()).into());
            }
        }
    }
    Ok(())
}

fn uring_fdatasync(ring: &mut IoUring, files: &[File]) -> Result<()> {
    start_writeback(files)?;
    for chunk in files.chunks(ring.params().sq_entries() as usize) {
        for f in chunk {
            let sqe = opcode::Fsync::new(types::Fd(f.as_raw_fd()))
                .flags(types::FsyncFlags::DATASYNC)
                .build();
            // SAFETY: the descriptor stays open until reap() has seen every completion.
            unsafe { ring.submission().push(&sqe)? };
        }
        reap(ring, chunk.len())?;
    }
    Ok(())
}

fn uring_linked(ring: &mut IoUring, files: &[File], data: &[u8]) -> Result<()> {
    let pairs = (ring.params().sq_entries() / 2) as usize;
    for chunk in files.chunks(pairs) {
        for f in chunk {
            let fd = types::Fd(f.as_raw_fd());
            let write = opcode::Write::new(fd, data.as_ptr(), data.len() as u32)
                .build()
                .flags(squeue::Flags::IO_LINK);
            let sync = opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build();
            // SAFETY: the descriptors stay open and `data` borrowed until reap() has seen every
            // completion of the chunk.
            unsafe {
                let mut sq = ring.submission();
                sq.push(&write)?;
                sq.push(&sync)?;
            }
        }
        reap(ring, 2 * chunk.len())?;
    }
    Ok(())
}

/// The committer's `files` flush: 8 threads that each fdatasync the files handed to them.
struct Pool {
    jobs: mpsc::Sender<(File, mpsc::Sender<std::io::Result<()>>)>,
}

impl Pool {
    fn start() -> Pool {
        let (jobs, queue) = mpsc::channel::<(File, mpsc::Sender<std::io::Result<()>>)>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for _ in 0..THREADS {
            let queue = std::sync::Arc::clone(&queue);
            std::thread::spawn(move || loop {
                let job = match queue.lock() {
                    Ok(q) => q.recv(),
                    Err(_) => return,
                };
                let Ok((file, done)) = job else { return };
                let _ = done.send(file.sync_data());
            });
        }
        Pool { jobs }
    }

    fn fdatasync(&self, files: Vec<File>) -> Result<()> {
        start_writeback(&files)?;
        let (done, results) = mpsc::channel();
        let n = files.len();
        for f in files {
            self.jobs.send((f, done.clone()))?;
        }
        for _ in 0..n {
            results.recv()??;
        }
        Ok(())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let top = std::env::args()
        .nth(1)
        .ok_or("usage: flush_uring DIR (on the filesystem to measure)")?;
    let path = Path::new(&top).join("flush-uring");
    std::fs::create_dir_all(&path)?;
    let handle = File::open(&path)?;
    let mut dir = Dir {
        path,
        handle,
        serial: 0,
    };
    let mut ring = IoUring::new(256)?;
    let pool = Pool::start();
    let data = [b'x'; SIZE];
    let ways = ["threads x8", "uring fdatasync", "uring linked", "syncfs"];
    println!(
        "| files in the batch | {} |",
        ways.map(|w| format!("{w}: ms, CPU µs/file, switches/file"))
            .join(" | ")
    );
    println!("|---:|{}", "---:|".repeat(ways.len()));
    for n in [1usize, 10, 50, 200] {
        let mut cells = Vec::new();
        for way in ways {
            let (mut ms, mut cpu, mut cs) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let files = dir.create(n, way != "uring linked")?;
                let (c0, s0) = usage();
                let t0 = Instant::now();
                match way {
                    "threads x8" => pool.fdatasync(files)?,
                    "uring fdatasync" => uring_fdatasync(&mut ring, &files)?,
                    "uring linked" => uring_linked(&mut ring, &files, &data)?,
                    _ => {
                        // SAFETY: a plain system call on a descriptor we own.
                        if unsafe { libc::syncfs(dir.handle.as_raw_fd()) } != 0 {
                            return Err(std::io::Error::last_os_error().into());
                        }
                    }
                }
                if way != "syncfs" {
                    dir.handle.sync_all()?;
                }
                ms.push(t0.elapsed().as_secs_f64() * 1e3);
                let (c1, s1) = usage();
                cpu.push((c1 - c0) / n as f64);
                cs.push((s1 - s0) / n as f64);
            }
            cells.push(format!(
                "{:.2}, {:.0}, {:.1}",
                median(ms),
                median(cpu),
                median(cs)
            ));
        }
        println!("| {n} | {} |", cells.join(" | "));
    }
    Ok(())
}
