//! When each queued message is due: the runner's timetable (messages not being delivered right
//! now, by due time), and a message's due time from its state.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use nullq_spool::{DeliveryState, QueueId, Status};

/// At most this many messages are scheduled in memory (about 100 bytes each). When delivery
/// falls behind receiving, the rest wait on disk only, in `queue/`, and the runner reads them
/// back with a rescan once the schedule has room again: the backlog grows on disk, not in
/// memory, and a message's `K` never waits for room here.
pub const SCHEDULE_MAX: usize = 100_000;

/// Due times of the messages not being delivered right now.
#[derive(Debug)]
pub struct Schedule {
    by_time: BTreeSet<(SystemTime, QueueId)>,
    by_id: HashMap<QueueId, SystemTime>,
    /// [`SCHEDULE_MAX`] (smaller in tests).
    max: usize,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule::with_max(SCHEDULE_MAX)
    }
}

impl Schedule {
    /// An empty schedule of at most `max` messages.
    pub fn with_max(max: usize) -> Schedule {
        Schedule {
            by_time: BTreeSet::new(),
            by_id: HashMap::new(),
            max,
        }
    }

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

    /// How many messages are scheduled.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether one more message would go past the limit ([`SCHEDULE_MAX`]; `id` itself may be
    /// scheduled already: then it takes no room).
    pub fn full_for(&self, id: &QueueId) -> bool {
        self.by_id.len() >= self.max && !self.by_id.contains_key(id)
    }

    /// Whether the schedule is below half its limit: room enough to read messages left on disk
    /// back in (half, so that a full schedule does not rescan after every attempt).
    pub fn has_room(&self) -> bool {
        self.by_id.len() < self.max / 2
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_schedule_takes_no_new_message_until_it_has_room() {
        let ids: Vec<QueueId> = (1..=3)
            .map(|i| {
                format!("{i:016x}.00000001.00000001")
                    .parse()
                    .expect("an id")
            })
            .collect();
        let now = SystemTime::now();
        let mut s = Schedule::with_max(2);
        s.put(ids[0], now);
        assert!(!s.full_for(&ids[1]));
        s.put(ids[1], now);
        assert!(s.full_for(&ids[2]), "two of two");
        assert!(!s.full_for(&ids[0]), "already scheduled: takes no room");
        assert!(!s.has_room());
        assert_eq!(s.pop_due(now), Some(ids[0]));
        assert_eq!(s.len(), 1);
        assert!(!s.full_for(&ids[2]));
        assert_eq!(s.pop_due(now), Some(ids[1]));
        assert!(s.has_room());
    }
}
