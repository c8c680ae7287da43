//! `control/smtpauth`: the credentials of the `smtp://` lines (RFC 4954 AUTH PLAIN and LOGIN).
//!
//! One credential a line, `HOST USER PASSWORD` (the password is the rest of the line, blanks
//! inside it kept); HOST is the host of an `smtp://` line as written there (`mail.example.net`,
//! `192.0.2.25`, `::1`), or that with `:PORT`, or `*` for every `smtp://` line. `#` lines and
//! empty lines are comments. The first matching line wins.
//!
//! The file holds passwords, and the client runs as every local user: a file that group or
//! others may read ([`AuthFile::Unsafe`]) is never used, and said so. A root-only file (the
//! recommended `root:root 0600`) is readable by root's clients only (cron's, `nullq flush` run
//! by root); an ordinary user's client cannot open it ([`AuthFile::Unreadable`]) and sends
//! without AUTH, its 5xx answers then counting as temporary (the refusal may be the missing
//! AUTH), so its message waits in the fallback queue for root's `nullq flush`.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The control file's name.
pub const AUTH_FILE: &str = "smtpauth";

/// The longest credentials file read (a few lines are expected).
const MAX_AUTH_FILE: u64 = 64 * 1024;

/// A user name and password for AUTH. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The AUTH identity.
    pub user: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"(hidden)")
            .finish()
    }
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The host it is for (`*`: every host).
    pub host: String,
    /// What to send.
    pub credentials: Credentials,
}

/// What `control/smtpauth` is, as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFile {
    /// No such file: no AUTH.
    Absent,
    /// Read, and only its owner may read it: these lines are used.
    Usable {
        /// The file.
        path: PathBuf,
        /// Its credential lines, in order.
        entries: Vec<Entry>,
        /// Lines that are not `HOST USER PASSWORD` (their numbers), skipped.
        bad_lines: Vec<usize>,
    },
    /// Group or others may read it (or it is not a regular file): never used.
    Unsafe {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It exists and this user cannot read it (a root-only file, for an ordinary user).
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// What an `smtp://` line's conversation does about AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthChoice {
    /// No credentials for this host: no AUTH, answers as they come.
    None,
    /// AUTH with these.
    Use(Credentials),
    /// Credentials may exist but cannot be used (the reason): no AUTH, and a 5xx answer counts
    /// as temporary, since it may be the missing AUTH that caused it.
    Unusable(String),
}

impl AuthFile {
    /// Look at the file at `path` (opened once; mode checked on the open file).
    pub fn load(path: &Path) -> AuthFile {
        let unreadable = |e: io::Error| AuthFile::Unreadable {
            path: path.to_path_buf(),
            why: e.to_string(),
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return AuthFile::Absent,
            Err(e) => return unreadable(e),
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => return unreadable(e),
        };
        let mode = meta.mode() & 0o7777;
        if !meta.is_file() || mode & 0o077 != 0 {
            return AuthFile::Unsafe {
                path: path.to_path_buf(),
                mode,
            };
        }
        let mut text = String::new();
        if let Err(e) = file.take(MAX_AUTH_FILE).read_to_string(&mut text) {
            return unreadable(e);
        }
        let (entries, bad_lines) = parse(&text);
        AuthFile::Usable {
            path: path.to_path_buf(),
            entries,
            bad_lines,
        }
    }

    /// The choice for an `smtp://` line to `host` (as written in the line) and `port`.
    pub fn choose(&self, host: &str, port: u16) -> AuthChoice {
        match self {
            AuthFile::Absent => AuthChoice::None,
            AuthFile::Usable { entries, .. } => {
                let with_port = format!("{host}:{port}");
                entries
                    .iter()
                    .find(|e| {
                        e.host == "*"
                            || e.host.eq_ignore_ascii_case(host)
                            || e.host.eq_ignore_ascii_case(&with_port)
                    })
                    .map_or(AuthChoice::None, |e| AuthChoice::Use(e.credentials.clone()))
            }
            AuthFile::Unsafe { .. } | AuthFile::Unreadable { .. } => {
                AuthChoice::Unusable(self.to_string())
            }
        }
    }
}

impl fmt::Display for AuthFile {
    /// One line for qmail-showctl and warnings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthFile::Absent => write!(f, "no {AUTH_FILE} file: no AUTH"),
            AuthFile::Usable {
                path,
                entries,
                bad_lines,
            } => {
                write!(f, "{}: usable, {} credential line(s)", path.display(), entries.len())?;
                if !bad_lines.is_empty() {
                    let lines: Vec<String> = bad_lines.iter().map(usize::to_string).collect();
                    write!(f, "; lines {} skipped (not HOST USER PASSWORD)", lines.join(", "))?;
                }
                Ok(())
            }
            AuthFile::Unsafe { path, mode } => write!(
                f,
                "{} is readable by group or others (mode {mode:04o}) or not a regular file: not used, AUTH is off (chmod 0600 it)",
                path.display()
            ),
            AuthFile::Unreadable { path, why } => write!(
                f,
                "{} cannot be read by this user ({why}): AUTH is off for this user",
                path.display()
            ),
        }
    }
}

/// The credential lines of the file's text, and the numbers (from 1) of the lines skipped.
fn parse(text: &str) -> (Vec<Entry>, Vec<usize>) {
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r').trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.splitn(3, [' ', '\t']);
        let host = words.next().unwrap_or_default();
        let rest = words.next().unwrap_or_default();
        let password = words
            .next()
            .map(|p| p.trim_start_matches([' ', '\t']))
            .unwrap_or_default();
        // `HOST  USER PASSWORD` with several blanks: skip the empty words.
        let (user, password) = if rest.is_empty() {
            let mut more = password.splitn(2, [' ', '\t']);
            (
                more.next().unwrap_or_default(),
                more.next().unwrap_or_default(),
            )
        } else {
            (rest, password)
        };
        if host.is_empty() || user.is_empty() || password.is_empty() {
            bad.push(i + 1);
            continue;
        }
        entries.push(Entry {
            host: host.to_owned(),
            credentials: Credentials {
                user: user.to_owned(),
                password: password.to_owned(),
            },
        });
    }
    (entries, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn lines_and_choice() {
        let (entries, bad) =
            parse("# c\nmail.example.net bob s3cret with blanks\n\n* any pw\nbroken\nhost user\n");
        assert_eq!(bad, vec![5, 6]);
        assert_eq!(entries.len(), 2);
        let file = AuthFile::Usable {
            path: "x".into(),
            entries,
            bad_lines: bad,
        };
        assert_eq!(
            file.choose("MAIL.example.net", 25),
            AuthChoice::Use(Credentials {
                user: "bob".into(),
                password: "s3cret with blanks".into()
            })
        );
        assert!(matches!(file.choose("other", 587), AuthChoice::Use(c) if c.user == "any"));
        assert!(!format!("{:?}", file.choose("other", 587)).contains("pw"));
        assert_eq!(AuthFile::Absent.choose("h", 25), AuthChoice::None);
    }

    #[test]
    fn modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUTH_FILE);
        assert_eq!(AuthFile::load(&path), AuthFile::Absent);
        std::fs::write(&path, "127.0.0.1 u p\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let file = AuthFile::load(&path);
        assert_eq!(
            file,
            AuthFile::Unsafe {
                path: path.clone(),
                mode: 0o640
            }
        );
        assert!(
            matches!(file.choose("127.0.0.1", 25), AuthChoice::Unusable(why) if why.contains("0640"))
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            AuthFile::load(&path).choose("127.0.0.1", 25),
            AuthChoice::Use(_)
        ));
    }
}
