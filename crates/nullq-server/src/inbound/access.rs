//! Who may connect: the site's tcprules file (text or cdb), swapped atomically on SIGHUP.
//!
//! Sessions that are running keep the rules they were admitted under; a reload only affects new
//! connections, and a reload that fails keeps the old rules (and says why), so a typo in
//! `/etc/qmqp.tcp` never locks every host out.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use nullq_tcprules::{Decision, Rules, RulesError};

/// The current access rules and where they come from.
#[derive(Debug)]
pub struct Access {
    rules: RwLock<Arc<Rules>>,
    source: Option<PathBuf>,
}

impl Access {
    /// Load the rules from `source`, or use the embedded default (loopback clients only).
    pub fn load(source: Option<PathBuf>) -> Result<Access, RulesError> {
        let rules = match &source {
            Some(path) => Rules::load(path)?,
            None => Rules::loopback_only(),
        };
        Ok(Access {
            rules: RwLock::new(Arc::new(rules)),
            source,
        })
    }

    /// Rules that let everyone in (under tcpserver, which has checked already).
    pub fn allow_all() -> Access {
        Access {
            rules: RwLock::new(Arc::new(Rules::allow_all())),
            source: None,
        }
    }

    /// Where the rules come from, for the log.
    pub fn describe(&self) -> String {
        match &self.source {
            Some(path) => path.display().to_string(),
            None => "embedded default (loopback only)".to_owned(),
        }
    }

    /// Decide on a client.
    pub fn check(&self, ip: IpAddr, remote_host: Option<&str>) -> Decision {
        self.current().check(ip, remote_host)
    }

    fn current(&self) -> Arc<Rules> {
        match self.rules.read() {
            Ok(guard) => Arc::clone(&guard),
            // A panic while holding the lock cannot leave the Arc half-written: use it.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-read the rules from their file. On error the old rules stay.
    pub fn reload(&self) -> Result<(), RulesError> {
        let Some(path) = &self.source else {
            return Ok(());
        };
        let fresh = Arc::new(Rules::load(path)?);
        match self.rules.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }
}
