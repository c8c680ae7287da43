//! When each queued message is due: the runner's timetable (messages not being delivered right
//! now, by due time), and a message's due time from its state.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use nullq_spool::{DeliveryState, QueueId, Status};

/// Due times of the messages not being delivered right now.
#[derive(Debug, Default)]
pub struct Schedule {
    by_time: BTreeSet<(SystemTime, QueueId)>,
    by_id: HashMap<QueueId, SystemTime>,
}

impl Schedule {
    /// (Re)schedule `id` at `t` (the earlier of `t` and any time it already had).
    pub fn put(&mut self, id: QueueId, t: SystemTime) {
        if let Some(old) = self.by_id.get(&id).copied() {
            if old <= t {
                return;
            }
            self.by_time.remove(&(old, id));
        }
        self.by_id.insert(id, t);
        self.by_time.insert((t, id));
    }

    /// Replace the time of `id` (a rescan knows better than what was scheduled).
    pub fn set(&mut self, id: QueueId, t: SystemTime) {
        if let Some(old) = self.by_id.remove(&id) {
            self.by_time.remove(&(old, id));
        }
        self.put(id, t);
    }

    pub fn contains(&self, id: &QueueId) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn first(&self) -> Option<SystemTime> {
        self.by_time.first().map(|(t, _)| *t)
    }

    pub fn pop_due(&mut self, now: SystemTime) -> Option<QueueId> {
        let &(t, id) = self.by_time.first()?;
        if t > now {
            return None;
        }
        self.by_time.remove(&(t, id));
        self.by_id.remove(&id);
        Some(id)
    }
}

/// The earliest next attempt of a pending recipient (`None`: due now).
pub fn next_due(state: &DeliveryState) -> Option<SystemTime> {
    let mut earliest: Option<SystemTime> = None;
    for r in state
        .recipients
        .iter()
        .filter(|r| r.status == Status::Pending)
    {
        match r.next_attempt {
            None => return None,
            Some(t) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
        }
    }
    earliest
}
