//! The one interface every delivery target implements. A backend gets a [`Job`] (one message,
//! the recipients routed to it) and gives back exactly one [`Answer`] per recipient; it never
//! touches the queue or the state: the runner records what the answers mean.
//!
//! To add a target: a file beside [`crate::delivery::maildir`] with a type that implements
//! [`Backend`], a `Target` variant in the configuration, and its case in
//! [`crate::delivery::routes`], which builds backends from targets.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use nullq_config::server::OnBad;

use crate::delivery::job::{Answer, Job};

/// What [`Backend::deliver`] returns: the answers, once the delivery is done.
pub type Delivery<'a> = Pin<Box<dyn Future<Output = Vec<Answer>> + Send + 'a>>;

/// A configured delivery target, ready to deliver.
pub trait Backend: fmt::Debug + Send + Sync {
    /// Deliver `job`: exactly one answer per recipient, in order (the runner checks the count
    /// and retries everyone if a backend gets it wrong, see [`deliver`]).
    fn deliver<'a>(&'a self, job: &'a Job) -> Delivery<'a>;

    /// True for the `none` target: its recipients stay queued, untried, and are not counted
    /// as attempts.
    fn holds(&self) -> bool {
        false
    }

    /// Remove what a killed earlier process left in the target (blocking; once, before the
    /// first delivery). `spool_root` is the spool's directory.
    fn clean_leftovers(&self, _spool_root: &Path) {}

    /// A CommuniGate Pro folder, whose `.bad` files (messages it refused) the runner watches,
    /// and what becomes of them.
    fn bad_files(&self) -> Option<(PathBuf, OnBad)> {
        None
    }
}

/// `backend.deliver(job)`, with the answers checked: a backend bug must not lose a recipient,
/// so a wrong count of answers retries them all.
pub async fn deliver(backend: &dyn Backend, job: &Job) -> Vec<Answer> {
    let answers = backend.deliver(job).await;
    if answers.len() == job.recipients.len() {
        answers
    } else {
        let text = format!(
            "internal error: {} answers for {} recipients",
            answers.len(),
            job.recipients.len()
        );
        vec![Answer::retry(text); job.recipients.len()]
    }
}
