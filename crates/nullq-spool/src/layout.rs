//! The spool's layout on disk: the names of its directories and files under `ROOT`, and the
//! paths built from them. Shared by opening and the operations on messages (`spool.rs`) and by
//! recovery (`recover.rs`), so that neither has to reach into the other for a path.

use std::path::{Path, PathBuf};

use crate::id::QueueId;

/// `ROOT/tmp`: files being received and state updates being written.
const TMP: &str = "tmp";
/// `ROOT/queue`: committed messages.
const QUEUE: &str = "queue";
/// `ROOT/state`: per-recipient delivery state.
const STATE: &str = "state";
/// `ROOT/corrupt`: files set aside as bad.
const CORRUPT: &str = "corrupt";
/// `ROOT/lock`: flock'd by the process that opened the spool.
const LOCK: &str = "lock";

/// The spool's directories.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    pub root: PathBuf,
    pub tmp: PathBuf,
    pub queue: PathBuf,
    pub state: PathBuf,
    pub corrupt: PathBuf,
}

impl Dirs {
    pub(crate) fn new(root: &Path) -> Dirs {
        Dirs {
            root: root.to_owned(),
            tmp: root.join(TMP),
            queue: root.join(QUEUE),
            state: root.join(STATE),
            corrupt: root.join(CORRUPT),
        }
    }

    /// The directories under the root, in the order they are created.
    pub(crate) fn subdirs(&self) -> [&Path; 4] {
        [&self.tmp, &self.queue, &self.state, &self.corrupt]
    }

    /// `ROOT/lock`.
    pub(crate) fn lock(&self) -> PathBuf {
        self.root.join(LOCK)
    }

    /// `queue/ID`: a committed message.
    pub(crate) fn queue_file(&self, id: &QueueId) -> PathBuf {
        self.queue.join(id.to_string())
    }

    /// `state/ID`: a message's delivery state.
    pub(crate) fn state_file(&self, id: &QueueId) -> PathBuf {
        self.state.join(id.to_string())
    }
}
