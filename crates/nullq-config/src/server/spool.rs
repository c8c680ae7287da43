//! `spool_flush`: how the spool makes a batch of received messages durable before their `K`.
//! The modes themselves are the spool's (`nullq_spool::Flush`); this is the setting's spelling.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `spool_flush` (and `--spool-flush`): `auto`, `files` or `filesystem`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolFlush {
    /// `filesystem` when the spool has a filesystem of its own (the data directory is the
    /// mount root of an ext4, xfs or btrfs, on Linux 5.17 or later), else `files`.
    #[default]
    Auto,
    /// `fsync` of every file of a batch, issued together, then one `fsync` of `queue/`.
    Files,
    /// One `syncfs(2)` of the spool's filesystem per batch.
    Filesystem,
}

impl FromStr for SpoolFlush {
    type Err = String;

    /// `auto`, `files` or `filesystem`, as `--spool-flush` takes them.
    fn from_str(s: &str) -> Result<SpoolFlush, String> {
        match s {
            "auto" => Ok(SpoolFlush::Auto),
            "files" => Ok(SpoolFlush::Files),
            "filesystem" => Ok(SpoolFlush::Filesystem),
            other => Err(format!(
                "unknown spool flush {other:?} (auto, files, filesystem)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_spellings_and_nothing_else() {
        assert_eq!("auto".parse(), Ok(SpoolFlush::Auto));
        assert_eq!("files".parse(), Ok(SpoolFlush::Files));
        assert_eq!("filesystem".parse(), Ok(SpoolFlush::Filesystem));
        let e = "syncfs".parse::<SpoolFlush>().unwrap_err();
        assert!(e.contains("auto, files, filesystem"), "{e}");
    }
}
