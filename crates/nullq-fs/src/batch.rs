//! The durable write for many files at once ([`publish_batch`]): each file gets the steps of
//! [`crate::publish_to`], in the same order, but the batch shares the waits. Under load a
//! Maildir or a CommuniGate Pro folder receives many messages in the same moment; written one
//! by one, each pays its own journal commit for its data and another for its rename, and the
//! rate falls as the arrivals rise. Written as a batch, the first file's `fsync` commits the
//! journal with every file's data (their writeback was started together), the later `fsync`s
//! find it done, and one `fsync` of the final directory makes every rename durable: about two
//! journal commits per batch, whatever its size.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::AtFlags;

use crate::dir::open_dir;
use crate::error::{Error, Step};
use crate::publish::{close, create_in, rename_between, Options};

/// What writes one file's content in a [`publish_batch`] (as [`crate::publish`]'s `fill`).
pub type Fill<'a> = Box<dyn FnOnce(&mut File) -> io::Result<()> + Send + 'a>;

/// One file of a [`publish_batch`]: its name in the temporary directory, its final name, and
/// what writes its content.
pub struct BatchItem<'a> {
    /// The temporary's name in the temporary directory (plain, no `/`).
    pub tmp_name: String,
    /// The final name in the final directory (plain, no `/`).
    pub final_name: String,
    /// Writes the file's content (as [`crate::publish`]'s `fill`).
    pub fill: Fill<'a>,
}

impl std::fmt::Debug for BatchItem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchItem")
            .field("tmp_name", &self.tmp_name)
            .field("final_name", &self.final_name)
            .finish_non_exhaustive()
    }
}

/// How [`publish_batch_with`] makes a batch durable: its files before their renames, then the
/// final directory after them. [`OwnSyncs`] does it itself; a server can hand both to a
/// flusher that shares them with its other writes (the spool's committer), so that they cost
/// no journal commit of their own.
pub trait BatchSync {
    /// Syncs and closes each of `files` (a file and its path, for the error), their waits
    /// together; one result per file, in order. `Ok` only once the file's data and inode
    /// would survive a power cut.
    fn files(&self, files: Vec<(File, std::path::PathBuf)>) -> Vec<io::Result<()>>;
    /// Syncs the directory `dir` (a descriptor of its own, to close), at `path`.
    fn dir(&self, dir: File, path: &Path) -> io::Result<()>;
}

/// The batch's own syncs: every file's writeback started, then an `fsync` and checked close of
/// each (the first commits the journal with all their data, the later ones find it done); the
/// directory's `fsync`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnSyncs;

impl BatchSync for OwnSyncs {
    fn files(&self, files: Vec<(File, std::path::PathBuf)>) -> Vec<io::Result<()>> {
        // All the writeback started before the first fsync waits: its journal commit then
        // carries the data of the whole batch.
        for (file, _) in &files {
            start_writeback(file);
        }
        files
            .into_iter()
            .map(|(file, _)| {
                rustix::fs::fsync(&file)?;
                close(file)
            })
            .collect()
    }

    fn dir(&self, dir: File, _path: &Path) -> io::Result<()> {
        Ok(rustix::fs::fsync(&dir)?)
    }
}

/// A file of the batch between its steps.
struct Open {
    file: File,
    /// A second descriptor that keeps the `flock` (with [`Options::lock`]) after the checked
    /// close, until the rename has taken the file out of the temporary directory.
    held: Option<File>,
}

/// [`crate::publish_to`] for every item of `items`, with one `fsync` of `final_dir` for them
/// all (when [`Options::sync_dir`]). Each file is created (never through a planted name) and
/// filled; the writeback of all of them is started; each is fsynced and closed, checked; each
/// is renamed (without replacing unless asked); then `final_dir` is fsynced once. A file whose
/// result is `Ok` is at its final name, durably. One result per item, in order. An item that
/// fails before its rename leaves nothing behind; with [`Step::SyncDir`] every renamed file is
/// at its final name, not known to be durable (the caller decides; a duplicate is acceptable
/// where a loss is not).
pub fn publish_batch(
    tmp_dir: &Path,
    final_dir: &Path,
    items: Vec<BatchItem<'_>>,
    options: &Options,
) -> Vec<Result<(), Error>> {
    publish_batch_with(tmp_dir, final_dir, items, options, &OwnSyncs)
}

/// [`publish_batch`] with its files and its final directory synced by `sync`, in the same order:
/// every file synced before any is renamed, the directory after the renames.
pub fn publish_batch_with(
    tmp_dir: &Path,
    final_dir: &Path,
    items: Vec<BatchItem<'_>>,
    options: &Options,
    sync: &dyn BatchSync,
) -> Vec<Result<(), Error>> {
    let dirs = open_dir(tmp_dir).and_then(|tmp| {
        let fin = if final_dir == tmp_dir {
            None
        } else {
            Some(open_dir(final_dir)?)
        };
        Ok((tmp, fin))
    });
    let (tmp_fd, final_fd) = match dirs {
        Ok(d) => d,
        Err(e) => return items.iter().map(|_| Err(same(&e))).collect(),
    };
    let final_ref: &OwnedFd = final_fd.as_ref().unwrap_or(&tmp_fd);
    let mut names = Vec::with_capacity(items.len());
    let mut open: Vec<Result<Open, Error>> = Vec::with_capacity(items.len());
    for item in items {
        let BatchItem {
            tmp_name,
            final_name,
            fill,
        } = item;
        open.push(create_and_fill(&tmp_fd, tmp_dir, &tmp_name, fill, options));
        names.push((tmp_name, final_name));
    }
    // Every file synced (and closed) before the first rename. `helds`: `Some` for each file
    // created (ours to unlink if it fails later), holding its lock where there is one.
    let mut helds = Vec::with_capacity(open.len());
    let mut to_sync = Vec::with_capacity(open.len());
    let mut synced: Vec<Result<(), Error>> = Vec::with_capacity(open.len());
    for (o, (tmp_name, _)) in open.into_iter().zip(&names) {
        match o {
            Ok(Open { file, held }) => {
                to_sync.push((file, tmp_dir.join(tmp_name)));
                helds.push(Some(held));
                synced.push(Ok(()));
            }
            Err(e) => {
                helds.push(None);
                synced.push(Err(e));
            }
        }
    }
    let paths: Vec<std::path::PathBuf> = to_sync.iter().map(|(_, p)| p.clone()).collect();
    let mut answers = sync.files(to_sync).into_iter();
    let mut paths = paths.into_iter();
    for r in synced.iter_mut().filter(|r| r.is_ok()) {
        let path = paths.next().unwrap_or_default();
        *r = match answers.next() {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(Error::new(Step::Sync, &path, e)),
            None => Err(Error::new(
                Step::Sync,
                &path,
                io::Error::other("no answer from the batch's sync"),
            )),
        };
    }
    let mut renamed_any = false;
    let mut results: Vec<Result<(), Error>> = synced
        .into_iter()
        .zip(helds)
        .zip(&names)
        .map(|((s, held), (tmp_name, final_name))| {
            let done = s.and_then(|()| {
                rename_between(
                    (&tmp_fd, tmp_dir, tmp_name.as_str()),
                    (final_ref, final_dir, final_name.as_str()),
                    options.replace,
                )
            });
            let ours = held.is_some();
            drop(held);
            if done.is_err() {
                // Never a name we did not create (a planted one stays as it was).
                if ours {
                    let _ = rustix::fs::unlinkat(&tmp_fd, tmp_name.as_str(), AtFlags::empty());
                }
            } else {
                renamed_any = true;
            }
            done
        })
        .collect();
    if renamed_any && options.sync_dir {
        let dir = final_ref
            .try_clone()
            .and_then(|fd| sync.dir(File::from(fd), final_dir));
        if let Err(e) = dir {
            let e = Error::new(Step::SyncDir, final_dir, e);
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(same(&e));
            }
        }
    }
    results
}

/// Create the temporary `name` in `tmp_fd` and `fill` it (its descriptor still open, not
/// synced); on an error the temporary is gone.
fn create_and_fill(
    tmp_fd: &OwnedFd,
    tmp_dir: &Path,
    name: &str,
    fill: Fill<'_>,
    options: &Options,
) -> Result<Open, Error> {
    let tmp = tmp_dir.join(name);
    let mut file = create_in(tmp_fd, tmp_dir, name, options)?;
    let unlink = || {
        let _ = rustix::fs::unlinkat(tmp_fd, name, AtFlags::empty());
    };
    let held = if options.lock {
        match file.try_clone() {
            Ok(held) => Some(held),
            Err(e) => {
                drop(file);
                unlink();
                return Err(Error::new(Step::Lock, &tmp, e));
            }
        }
    } else {
        None
    };
    if let Err(e) = fill(&mut file) {
        drop(file);
        drop(held);
        unlink();
        return Err(Error::new(Step::Write, &tmp, e));
    }
    Ok(Open { file, held })
}

/// Start writing `file`'s dirty pages back without waiting (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`). A hint only: the `fsync` that follows reports any error.
fn start_writeback(file: &File) {
    // SAFETY: sync_file_range only acts on the descriptor, which `file` keeps open for the
    // call; offset 0 and length 0 mean the whole file.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// The error `e` again, for another file of the batch (`Error` is not `Clone`).
fn same(e: &Error) -> Error {
    let source = match e.source.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.source.kind(), e.source.to_string()),
    };
    Error::new(e.step, &e.path, source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn item<'a>(name: &str, content: &'a [u8]) -> BatchItem<'a> {
        BatchItem {
            tmp_name: format!("{name}.tmp"),
            final_name: name.to_owned(),
            fill: Box::new(move |f: &mut File| f.write_all(content)),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn each_file_is_published_or_fails_alone_leaving_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tmp, new) = (dir.path().join("tmp"), dir.path().join("new"));
        std::fs::create_dir(&tmp).expect("tmp");
        std::fs::create_dir(&new).expect("new");
        // In the way: a final name that exists, and a planted symlink as a temporary's name.
        std::fs::write(new.join("taken"), b"old").expect("write");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("write");
        std::os::unix::fs::symlink(&victim, tmp.join("planted.tmp")).expect("symlink");
        let failing = BatchItem {
            tmp_name: "failing.tmp".into(),
            final_name: "failing".into(),
            fill: Box::new(|_: &mut File| Err(io::Error::other("fill failed"))),
        };
        let options = Options {
            lock: true,
            ..Options::default()
        };
        let results = publish_batch(
            &tmp,
            &new,
            vec![
                item("a", b"first"),
                failing,
                item("taken", b"new"),
                item("planted", b"x"),
                item("b", b"second"),
            ],
            &options,
        );
        let steps: Vec<Option<Step>> = results
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.step))
            .collect();
        assert_eq!(
            steps,
            [
                None,
                Some(Step::Write),
                Some(Step::Rename),
                Some(Step::Planted),
                None
            ]
        );
        assert_eq!(std::fs::read(new.join("a")).expect("a"), b"first");
        assert_eq!(std::fs::read(new.join("b")).expect("b"), b"second");
        assert_eq!(std::fs::read(new.join("taken")).expect("taken"), b"old");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
        assert_eq!(names(&new), ["a", "b", "taken"]);
        // Only the planted symlink, never ours, is left in tmp/.
        assert_eq!(names(&tmp), ["planted.tmp"]);
    }

    #[test]
    fn a_missing_directory_fails_every_item() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("gone");
        let results = publish_batch(
            &gone,
            &gone,
            vec![item("a", b"1"), item("b", b"2")],
            &Options::default(),
        );
        assert_eq!(results.len(), 2);
        assert!(results
            .iter()
            .all(|r| matches!(r, Err(e) if e.step == Step::OpenDir)));
    }

    /// A [`BatchSync`] that checks the order: no file renamed before the files are synced,
    /// every one renamed before the directory is; the second file's sync fails.
    struct Watching {
        new: std::path::PathBuf,
        seen: std::sync::Mutex<Vec<String>>,
    }

    impl BatchSync for Watching {
        fn files(&self, files: Vec<(File, std::path::PathBuf)>) -> Vec<io::Result<()>> {
            let renamed = names(&self.new);
            self.seen
                .lock()
                .expect("lock")
                .push(format!("files {} (new/ had {renamed:?})", files.len()));
            files
                .into_iter()
                .enumerate()
                .map(|(i, (file, _))| match i {
                    1 => Err(io::Error::from_raw_os_error(libc::EIO)),
                    _ => OwnSyncs.files(vec![(file, Default::default())]).remove(0),
                })
                .collect()
        }

        fn dir(&self, dir: File, path: &Path) -> io::Result<()> {
            let renamed = names(&self.new);
            self.seen
                .lock()
                .expect("lock")
                .push(format!("dir {} (new/ had {renamed:?})", path.display()));
            OwnSyncs.dir(dir, path)
        }
    }

    #[test]
    fn a_batch_s_syncs_can_be_done_by_someone_else_in_the_same_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tmp, new) = (dir.path().join("tmp"), dir.path().join("new"));
        std::fs::create_dir(&tmp).expect("tmp");
        std::fs::create_dir(&new).expect("new");
        let sync = Watching {
            new: new.clone(),
            seen: std::sync::Mutex::new(Vec::new()),
        };
        let results = publish_batch_with(
            &tmp,
            &new,
            vec![item("a", b"1"), item("b", b"2"), item("c", b"3")],
            &Options::default(),
            &sync,
        );
        let steps: Vec<Option<Step>> = results
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.step))
            .collect();
        assert_eq!(steps, vec![None, Some(Step::Sync), None]);
        assert_eq!(
            sync.seen.lock().expect("lock").clone(),
            vec![
                "files 3 (new/ had [])".to_string(),
                format!("dir {} (new/ had [\"a\", \"c\"])", new.display()),
            ]
        );
        assert_eq!(names(&new), vec!["a", "c"]);
        assert!(names(&tmp).is_empty(), "the failed one's temporary is gone");
    }
}
