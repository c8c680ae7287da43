//! Fault injection for tests, compiled into debug builds only.
//!
//! `NULLQ_FAULT_DIR_FSYNC=N` (a positive number) in the environment of a process makes the `N`-th
//! directory fsync of each [`crate::Committer`] it opens fail with `EIO` (after the real fsync
//! ran: the batch's renames may or may not be durable, as with a real failure). The server's
//! end-to-end test sets it on its `nullq serve` child, which cargo builds in the debug profile.
//!
//! In a release build (`debug_assertions` off) none of this exists: the variable is never read
//! and [`armed`] is always `None`, so no environment can make a production build fail an fsync.

#[cfg(debug_assertions)]
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable: fail the N-th directory fsync of a committer.
pub const DIR_FSYNC: &str = "NULLQ_FAULT_DIR_FSYNC";

/// The N-th call fails; counted per committer.
pub(crate) struct DirFsyncFault {
    #[cfg(debug_assertions)]
    nth: u64,
    #[cfg(debug_assertions)]
    calls: AtomicU64,
}

impl DirFsyncFault {
    /// The fault set in the environment, if any (never in a release build).
    pub(crate) fn from_env() -> Option<DirFsyncFault> {
        #[cfg(debug_assertions)]
        {
            let nth = armed()?;
            Some(DirFsyncFault {
                nth,
                calls: AtomicU64::new(0),
            })
        }
        #[cfg(not(debug_assertions))]
        None
    }

    /// Counts one fsync; true if this is the one to fail.
    pub(crate) fn hit(&self) -> bool {
        #[cfg(debug_assertions)]
        {
            self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.nth
        }
        #[cfg(not(debug_assertions))]
        false
    }
}

/// `Some(N)` if this build honours [`DIR_FSYNC`] and it is set to a positive number: the
/// server logs a warning at start-up, so an armed fault never goes unnoticed.
pub fn armed() -> Option<u64> {
    #[cfg(debug_assertions)]
    {
        std::env::var(DIR_FSYNC)
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
    }
    #[cfg(not(debug_assertions))]
    None
}
