//! What `qmail-showctl` writes its report through: lines and counted warnings
//! ([`Report`], [`Summary`]), and qmail's `safeput` for bytes from control files.

use std::io::{self, Write};

/// What a report found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Warnings printed.
    pub warnings: usize,
    /// Servers `--check` could not connect to.
    pub unreachable: usize,
}

pub(crate) struct Report<'a, W: Write> {
    pub(crate) out: &'a mut W,
    pub(crate) summary: Summary,
}

impl<W: Write> Report<'_, W> {
    pub(crate) fn line(&mut self, s: &str) -> io::Result<()> {
        writeln!(self.out, "{s}")
    }

    pub(crate) fn warn(&mut self, s: &str) -> io::Result<()> {
        self.summary.warnings += 1;
        writeln!(self.out, "  WARNING: {s}")
    }
}

/// qmail-showctl's `safeput`: non-printable bytes shown as `?`.
pub(crate) fn safe(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if (32..=126).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}
