//! The one interface every delivery target implements. A backend gets a [`Job`] (one message,
//! the recipients routed to it) and gives back exactly one [`Answer`] per recipient; it never
//! touches the queue or the state: the runner records what the answers mean.
//!
//! To add a target: a file beside [`crate::delivery::maildir`] with a type that implements
//! [`Backend`], a `Target` variant in the configuration, and its case in
//! [`crate::delivery::routes`], which builds backends from targets.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use nullq_config::server::OnBad;
use tokio_rustls::rustls;

use crate::delivery::job::{Answer, Job};
use crate::process::privilege::PrivilegeError;

/// Why a backend could not be built from its target and settings (at start-up).
#[derive(Debug)]
#[non_exhaustive]
pub enum BackendError {
    /// `[delivery.cgp] group` could not be looked up.
    Group(PrivilegeError),
    /// `[delivery.smtp] ca_file` could not be read.
    CaFile {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// The CA file (given, or the system's) holds a PEM section that cannot be decoded.
    Certificate {
        /// The file.
        path: PathBuf,
        /// The PEM parser's error.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the TLS configuration.
    Tls(rustls::Error),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Group(e) => write!(f, "{e}"),
            BackendError::CaFile { path, source } => {
                write!(f, "cannot read ca_file {}: {source}", path.display())
            }
            BackendError::Certificate { path, source } => {
                write!(f, "{}: {source}", path.display())
            }
            BackendError::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Its text is the look-up's own: what lies under it is the look-up's source.
            BackendError::Group(e) => std::error::Error::source(e),
            BackendError::CaFile { source, .. } => Some(source),
            BackendError::Certificate { source, .. } => Some(source),
            BackendError::Tls(e) => Some(e),
        }
    }
}

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
