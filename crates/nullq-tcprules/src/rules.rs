//! A set of rules and the decision for one client: [`Rules`] from rules text or a `tcprules`
//! cdb (whose values are decoded here, as tcpserver decodes them), looked up in tcpserver's
//! order.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use crate::cdb::{Cdb, CdbError};
use crate::error::{LineProblem, RulesError};
use crate::lookup::lookup_keys;
use crate::parse::{expand_address, parse_line};

/// What a rule does for a connection: the outcome of [`Rules::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the connection may go on.
    pub allow: bool,
    /// The variables an `allow` rule sets, in rule order (a variable set twice: the last one
    /// counts, as in the environment tcpserver builds). Always empty when denied.
    pub env: Vec<(String, String)>,
    /// The rule's address (the cdb key) that matched, for logs; `None` when no rule matched.
    /// The catch-all rule's key is the empty string.
    pub matched: Option<String>,
}

/// One rule's effect, decoded from its cdb value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Action {
    pub(crate) allow: bool,
    pub(crate) env: Vec<(String, String)>,
}

/// A set of access rules, from text or from a `tcprules` cdb.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Key (address form) to action; for a key given twice, the first.
    pub(crate) map: HashMap<Vec<u8>, Action>,
}

/// Decodes a rule's cdb value as tcpserver's `found()` does: NUL-terminated items; `D` denies,
/// `+VAR=value` sets a variable; anything else, and bytes after the last NUL, are ignored.
/// A denied rule keeps no variables. `None` when a variable is not UTF-8.
pub(crate) fn decode(data: &[u8]) -> Option<Action> {
    let mut action = Action {
        allow: true,
        env: Vec::new(),
    };
    let mut rest = data;
    while let Some(nul) = rest.iter().position(|&b| b == 0) {
        let item = &rest[..nul];
        match item.first() {
            Some(b'D') => action.allow = false,
            Some(b'+') => {
                let setting = &item[1..];
                if let Some(eq) = setting.iter().position(|&b| b == b'=') {
                    let name = std::str::from_utf8(&setting[..eq]).ok()?;
                    let value = std::str::from_utf8(&setting[eq + 1..]).ok()?;
                    action.env.push((name.to_owned(), value.to_owned()));
                }
            }
            _ => {}
        }
        rest = &rest[nul + 1..];
    }
    if !action.allow {
        // tcpserver sets them and then drops the connection: they never reach a program.
        action.env.clear();
    }
    Some(action)
}

impl Rules {
    /// No rules: every client is allowed, with no variables. (tcpserver without `-x`.)
    pub fn allow_all() -> Rules {
        Rules::default()
    }

    /// The server's built-in default when no rules file is configured: allow `127.` (all of
    /// 127.0.0.0/8) and `::1`, deny everyone else. As text:
    ///
    /// ```text
    /// 127.:allow
    /// ::1:allow
    /// :deny
    /// ```
    pub fn loopback_only() -> Rules {
        let mut map = HashMap::new();
        let allow = Action {
            allow: true,
            env: Vec::new(),
        };
        map.insert(b"127.".to_vec(), allow.clone());
        map.insert(b"::1".to_vec(), allow);
        map.insert(
            Vec::new(),
            Action {
                allow: false,
                env: Vec::new(),
            },
        );
        Rules { map }
    }

    /// Parses rules text (the input of `tcprules`). The first rule for an address wins, as
    /// in the cdb `tcprules` would write. Errors name the line (from 1) and what is wrong.
    pub fn from_text(text: &str) -> Result<Rules, RulesError> {
        let mut map = HashMap::new();
        for (idx, raw) in text.split('\n').enumerate() {
            let line = raw.trim_end_matches([' ', '\t']);
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let err = |problem| RulesError::Line {
                path: None,
                line: idx + 1,
                text: line.to_owned(),
                problem,
            };
            let (address, data) = parse_line(line.as_bytes()).map_err(err)?;
            let keys = expand_address(address).map_err(err)?;
            let action = decode(&data).ok_or_else(|| err(LineProblem::NotUtf8))?;
            for key in keys {
                map.entry(key).or_insert_with(|| action.clone());
            }
        }
        Ok(Rules { map })
    }

    /// Reads a cdb compiled by `tcprules`. The whole cdb is checked here — every record must
    /// be found through the hash tables, every value must decode — so [`Rules::check`]
    /// cannot meet a corrupt file later.
    pub fn from_cdb(bytes: Vec<u8>) -> Result<Rules, RulesError> {
        let cdb_err = |source| RulesError::Cdb { path: None, source };
        let cdb = Cdb::new(bytes).map_err(cdb_err)?;
        let mut map = HashMap::new();
        for (key, _) in cdb.records().map_err(cdb_err)? {
            if map.contains_key(key) {
                continue;
            }
            // Look the key up as tcpserver would, which also proves the hash tables sound.
            let data = cdb.get(key).map_err(cdb_err)?.ok_or_else(|| {
                cdb_err(CdbError::Unindexed {
                    key: String::from_utf8_lossy(key).into_owned(),
                })
            })?;
            let action = decode(data).ok_or_else(|| RulesError::CdbValue {
                path: None,
                key: String::from_utf8_lossy(key).into_owned(),
            })?;
            map.insert(key.to_vec(), action);
        }
        Ok(Rules { map })
    }

    /// Reads rules from a file, text or cdb. A file is read as a cdb when its name ends in
    /// `.cdb` or when it holds a NUL byte (text rules never do; a cdb's header always does);
    /// otherwise as rules text. Errors name the file.
    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        let bytes = std::fs::read(path).map_err(|source| RulesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let is_cdb = path.extension().is_some_and(|e| e == "cdb") || bytes.contains(&0);
        let rules = if is_cdb {
            Rules::from_cdb(bytes)
        } else {
            match String::from_utf8(bytes) {
                Ok(text) => Rules::from_text(&text),
                Err(e) => {
                    let bad = e.utf8_error().valid_up_to();
                    let line = 1 + e.as_bytes()[..bad].iter().filter(|&&b| b == b'\n').count();
                    Err(RulesError::NotUtf8 { path: None, line })
                }
            }
        };
        rules.map_err(|e| e.with_path(path))
    }

    /// The number of distinct addresses (cdb keys) with a rule.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no rules at all (every client allowed).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Decides for a client at `ip` whose name (from reverse DNS, as TCPREMOTEHOST) is
    /// `remote_host`: the first rule found in tcpserver's order (see the crate docs and
    /// [`lookup_keys`]); no rule: allow with no variables.
    pub fn check(&self, ip: IpAddr, remote_host: Option<&str>) -> Decision {
        for key in lookup_keys(ip, remote_host) {
            if let Some(action) = self.map.get(key.as_bytes()) {
                return Decision {
                    allow: action.allow,
                    env: action.env.clone(),
                    matched: Some(key),
                };
            }
        }
        Decision {
            allow: true,
            env: Vec::new(),
            matched: None,
        }
    }
}
