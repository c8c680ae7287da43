//! Which backend each recipient goes to: the default target and `[delivery.routes]` by
//! recipient domain (an exact domain, or `.example.net` for every domain below it), each
//! distinct target built once, with its own limit of deliveries at once
//! (`[delivery.per_target]`, by the target's kind).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nullq_config::server::{OnBad, ServerConfig, Target};
use nullq_spool::Spool;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::delivery::backend::{Backend, BackendError};
use crate::delivery::cgp::Cgp;
use crate::delivery::durable::Syncs;
use crate::delivery::hold::Hold;
use crate::delivery::maildir::Maildir;
use crate::delivery::pipe::Pipe;
use crate::delivery::qmail_queue::QmailQueue;
use crate::delivery::smtp::Smtp;

/// A target whose backend could not be built: the target as written, and why.
#[derive(Debug)]
pub struct RoutesError {
    /// The target's text (`smtp://mx.example.net:25`).
    pub target: String,
    /// Why its backend could not be built.
    pub source: BackendError,
}

impl fmt::Display for RoutesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.target, self.source)
    }
}

impl std::error::Error for RoutesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Which backend each recipient domain goes to.
#[derive(Debug)]
pub struct Routes {
    /// Every distinct target once: its text (for logs and statistics) and backend.
    backends: Vec<(String, Arc<dyn Backend>)>,
    /// Each backend's limit of deliveries at once (`[delivery.per_target]`), by index.
    limits: Vec<Semaphore>,
    default: usize,
    exact: HashMap<String, usize>,
    /// `.example.net` keys, without the dot.
    below: HashMap<String, usize>,
}

impl Routes {
    /// The routes of `config` (default target, then `[delivery.routes]`); the Maildir and CGP
    /// targets sync their files with `spool`'s commits.
    pub fn new(config: &ServerConfig, spool: &Spool) -> Result<Routes, RoutesError> {
        let d = &config.delivery;
        let mut routes = Routes {
            backends: Vec::new(),
            limits: Vec::new(),
            default: 0,
            exact: HashMap::new(),
            below: HashMap::new(),
        };
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut add = |t: &Target, routes: &mut Routes| -> Result<usize, RoutesError> {
            let label = t.to_string();
            if let Some(&i) = index.get(&label) {
                return Ok(i);
            }
            let backend = match backend_for(t, config, spool) {
                Ok(b) => b,
                Err(source) => {
                    return Err(RoutesError {
                        target: label,
                        source,
                    })
                }
            };
            routes.backends.push((label.clone(), backend));
            let limit = d.per_target.limit(t).min(Semaphore::MAX_PERMITS);
            routes.limits.push(Semaphore::new(limit));
            index.insert(label, routes.backends.len() - 1);
            Ok(routes.backends.len() - 1)
        };
        routes.default = add(&d.effective_target(&config.data_dir), &mut routes)?;
        for (domain, target) in &d.routes {
            let i = add(target, &mut routes)?;
            match domain.strip_prefix('.') {
                Some(below) => routes.below.insert(below.to_ascii_lowercase(), i),
                None => routes.exact.insert(domain.to_ascii_lowercase(), i),
            };
        }
        Ok(routes)
    }

    /// The backend index for `recipient` (by the domain after its last `@`).
    pub fn route(&self, recipient: &[u8]) -> usize {
        let domain = match recipient.iter().rposition(|&b| b == b'@') {
            Some(at) => String::from_utf8_lossy(&recipient[at + 1..]).to_ascii_lowercase(),
            None => return self.default,
        };
        if let Some(&i) = self.exact.get(&domain) {
            return i;
        }
        // The longest `.parent` key that the domain is below.
        let mut rest = domain.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(&i) = self.below.get(parent) {
                return i;
            }
            rest = parent;
        }
        self.default
    }

    /// The target's text (for logs and statistics) and backend at `index` (from
    /// [`Routes::route`]).
    pub fn backend(&self, index: usize) -> (&str, &dyn Backend) {
        let (label, backend) = &self.backends[index];
        (label, backend.as_ref())
    }

    /// Wait until the backend at `index` may take one more delivery (its `[delivery.per_target]`
    /// limit); the delivery holds the returned permit until it is done. `None` only if the
    /// index is not a backend's.
    pub async fn permit(&self, index: usize) -> Option<SemaphorePermit<'_>> {
        self.limits.get(index)?.acquire().await.ok()
    }

    /// Every distinct target's text, in the order of the configuration.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.backends.iter().map(|(l, _)| l.as_str())
    }

    /// True when nothing would ever be delivered (every target is `none`).
    pub fn all_hold(&self) -> bool {
        self.backends.iter().all(|(_, b)| b.holds())
    }

    /// Remove what a killed earlier process left in every target (blocking).
    pub fn clean_leftovers(&self, spool_root: &Path) {
        for (_, b) in &self.backends {
            b.clean_leftovers(spool_root);
        }
    }

    /// The CommuniGate Pro folders among the targets and what becomes of their `.bad` files
    /// (for the `.bad` file scan).
    pub fn cgp_dirs(&self) -> Vec<(PathBuf, OnBad)> {
        self.backends
            .iter()
            .filter_map(|(_, b)| b.bad_files())
            .collect()
    }
}

/// The backend for `target`, with the settings of `config`.
fn backend_for(
    target: &Target,
    config: &ServerConfig,
    spool: &Spool,
) -> Result<Arc<dyn Backend>, BackendError> {
    let d = &config.delivery;
    let timeout = Duration::from_secs(d.program.timeout_secs);
    Ok(match target {
        Target::Maildir(dir) => Arc::new(Maildir::new(dir.clone(), Syncs::with(spool))),
        Target::Cgp(dir) => Arc::new(Cgp::new(dir.clone(), &d.cgp, Syncs::with(spool))?),
        Target::Smtp {
            implicit_tls,
            host,
            port,
        } => Arc::new(Smtp::new(
            host.clone(),
            *port,
            *implicit_tls,
            &d.smtp,
            config.local_name(),
        )?),
        Target::Pipe(argv) => Arc::new(Pipe::new(argv.clone(), timeout)),
        Target::QmailQueue(path) => Arc::new(QmailQueue::new(path.clone(), timeout)),
        Target::Hold => Arc::new(Hold),
    })
}
