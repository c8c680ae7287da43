//! `[delivery.cgp]`: how the `cgp:` target writes CommuniGate Pro's Submitted folder (the
//! files' mode and group) and what becomes of a submission it could not process. The mode is
//! a number from the moment the file is read.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::keyed;

/// `[delivery.cgp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgpConfig {
    /// Mode of the `.sub` files, written in octal as a string. Default `"0640"` (CommuniGate
    /// Pro's group reads).
    #[serde(deserialize_with = "octal_mode", serialize_with = "write_mode")]
    pub mode: u32,
    /// Group of the `.sub` files (name or number), so CommuniGate Pro's user can read and
    /// remove them. Default: unset (the process's group).
    pub group: Option<String>,
    /// What to do with an `ID.bad` file (a submission CommuniGate Pro could not process).
    /// Default `"bounce"`.
    pub on_bad: OnBad,
}

/// `[delivery.cgp] on_bad`: what becomes of a submission CommuniGate Pro renamed to `.bad`
/// (by then it has left nullq's queue). Each is logged at ERROR and counted either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBad {
    /// Bounce it to its sender (from the file's `Return-Path:` and `Envelope-To:` fields;
    /// the null sender gets none), then rename the file to `ID.bad.done`.
    #[default]
    Bounce,
    /// Leave the file for the operator (it is logged and listed by `nullq queue stats`).
    Keep,
}

impl Default for CgpConfig {
    fn default() -> CgpConfig {
        CgpConfig {
            mode: 0o640,
            group: None,
            on_bad: OnBad::Bounce,
        }
    }
}

/// `mode`: an octal string, `"0640"` (a leading `0o` is allowed), at most `"7777"`. A TOML
/// integer is refused, as a decimal `640` would be a different mode than it looks.
fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let text = String::deserialize(d)?;
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            keyed(
                "delivery.cgp.mode",
                format_args!("{text:?} is not an octal file mode such as \"0640\""),
            )
        })
}

/// `mode` as the file writes it: four octal digits.
fn write_mode<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{mode:04o}"))
}
