//! Receiving one message as it arrives: the [`Incoming`] that ends as a [`Renamed`], which
//! `commit.rs` takes from there. Its file is written by `writer.rs`'s [`MessageWriter`].

use crate::commit::{Committer, Renamed};
use crate::error::Result;
use crate::format::Envelope;
use crate::id::QueueId;
use crate::writer::{Intake, MessageWriter};

/// A message being received into `tmp/ID` (state *receiving*), written as it arrives.
///
/// Dropping it without [`Incoming::finish`], or a failed `finish`, unlinks the file: a
/// half-received message never stays, and the client, not having had `K`, sends it again.
#[derive(Debug)]
pub struct Incoming {
    writer: MessageWriter,
    committer: Committer,
}

impl Incoming {
    /// Creates `tmp/ID` and writes the header. Called by [`crate::Spool::receive`].
    pub(crate) fn create(intake: &Intake, committer: Committer) -> Result<Incoming> {
        Ok(Incoming {
            writer: MessageWriter::create(intake)?,
            committer,
        })
    }

    /// The id the message will have in the queue.
    pub fn id(&self) -> &QueueId {
        self.writer.id()
    }

    /// Appends message bytes (the server's `Received` header first, then the message as it
    /// arrives). After an error the message is abandoned: later writes and `finish` fail too.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write(bytes)
    }

    /// Message bytes written so far (not counting the header).
    pub fn bytes_written(&self) -> u64 {
        self.writer.written()
    }

    /// Appends the envelope and trailer and renames `tmp/ID` to `queue/ID` without replacing
    /// anything. The message is not durable until [`Renamed::commit`]: the committer
    /// `fdatasync`s the file and fsyncs the directory (or flushes the whole filesystem) for a
    /// whole batch at once.
    ///
    /// On error the file is deleted (from `tmp/`). Once the committer is poisoned
    /// ([`SpoolError::is_poisoned`]) nothing is renamed: the commit could only be refused.
    pub fn finish(self, envelope: &Envelope) -> Result<Renamed> {
        let Incoming { writer, committer } = self;
        let (id, file) = writer.finish(envelope, committer.ledger())?;
        Ok(Renamed::new(id, committer, Some(file)))
    }
}
