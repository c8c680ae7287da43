//! Delivery state: save_state/load round trips, and remove.

use std::time::{Duration, UNIX_EPOCH};

use nullq_spool::{DeliveryState, RecipientState, Status};

use crate::support::{envelope, names, queue, spool};

fn odd_state() -> DeliveryState {
    DeliveryState {
        recipients: vec![
            RecipientState {
                status: Status::Delivered,
                attempts: 1,
                next_attempt: None,
                last_result: "250 ok\r\nend 0\n%%41 \0\u{1b}[31m 🦀".into(),
                warned: false,
            },
            RecipientState {
                status: Status::Pending,
                attempts: 7,
                next_attempt: Some(UNIX_EPOCH + Duration::new(1_800_000_000, 999_999_999)),
                last_result: "421 4.7.0 try again later".into(),
                warned: true,
            },
            RecipientState {
                status: Status::Failed,
                attempts: 2,
                next_attempt: None,
                last_result: String::new(),
                warned: false,
            },
        ],
    }
}

#[test]
fn save_state_and_load_round_trip_odd_results() {
    let (_dir, spool) = spool();
    let id = queue(&spool, b"m", &envelope(3));
    spool.save_state(&id, &odd_state()).unwrap();
    assert_eq!(spool.load(&id).unwrap().state, odd_state());
    assert!(
        names(&spool.root().join("tmp")).is_empty(),
        "the state's temporary file is gone"
    );

    // Replaced, not appended to.
    let mut next = odd_state();
    next.recipients[1].status = Status::Delivered;
    next.recipients[1].last_result = "250 finally".into();
    spool.save_state(&id, &next).unwrap();
    let loaded = spool.load(&id).unwrap();
    assert_eq!(loaded.state, next);
    assert!(!loaded.state.any_pending());
    assert_eq!(names(&spool.root().join("state")), vec![id.to_string()]);
}

#[test]
fn remove_deletes_message_and_state_and_may_be_repeated() {
    let (_dir, spool) = spool();
    let id = queue(&spool, b"m", &envelope(3));
    let other = queue(&spool, b"other", &envelope(1));
    spool.save_state(&id, &odd_state()).unwrap();
    spool.remove(&id).unwrap();
    assert_eq!(spool.list().unwrap(), vec![other]);
    assert!(names(&spool.root().join("state")).is_empty());
    assert!(spool.load(&id).unwrap_err().is_not_found());
    spool.remove(&id).unwrap();
    // A message never given a state file is removed as well.
    spool.remove(&other).unwrap();
    assert!(spool.list().unwrap().is_empty());
    assert!(names(&spool.root().join("queue")).is_empty());
}
