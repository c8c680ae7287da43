//! The decision an attempt ends with, as data: what the backends' answers mean for every
//! recipient's state, who is bounced and to whom, who is warned of a delay.
//!
//! [`decide`] is a pure function of `(state, answers, now, rules)`: no I/O, no clock, no
//! randomness (the retry spread comes in as a number), so that every case is a unit test that
//! runs in microseconds. The runner plans the attempt, calls the backends, decides, queues the
//! bounce and the warning the [`Decision`] asks for, tells the decision how that went
//! ([`Decision::bounce_queued`], [`Decision::bounce_not_queued`], [`Decision::warning_queued`])
//! and saves [`Decision::state`].

use std::time::{Duration, SystemTime};

use nullq_spool::{DeliveryState, Envelope, Status};

use crate::delivery::job::{Answer, Verdict, DOUBLE_BOUNCE_SENDER};
use crate::delivery::retry;
use crate::metrics::DeliveryResult;

/// The site's rules for retrying, giving up and warning (`[delivery]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// How long a message may stay queued before a temporary failure becomes a bounce.
    pub lifetime: Duration,
    /// The first retry delay, doubled per attempt ...
    pub retry_min: Duration,
    /// ... up to this; also how long a held recipient (target `none`) waits.
    pub retry_max: Duration,
    /// When a delay warning goes to the sender (once), if at all.
    pub warn_after: Option<Duration>,
    /// Where a double bounce goes (`None`: a double bounce is logged and dropped).
    pub postmaster: Option<Vec<u8>>,
}

/// What became of one due recipient in this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its backend answered.
    Answered(Answer),
    /// Its target is `none`: not tried, not counted as an attempt.
    Held,
}

/// A recipient that failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Its index in the envelope.
    pub index: usize,
    /// The address as the sender wrote it.
    pub recipient: Vec<u8>,
    /// Why: the remote answer or exit status.
    pub text: String,
    /// Failed because the queue lifetime ran out.
    pub expired: bool,
}

/// Who a bounce goes to, decided by the failed message's sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BounceTo {
    /// A bounce, from the null sender to the message's sender.
    Sender(Vec<u8>),
    /// The failed message was itself a bounce: a double bounce, from `#@[]` to the postmaster.
    Postmaster(Vec<u8>),
    /// A double bounce with no postmaster configured, or the failure of a double bounce:
    /// logged and dropped (so that bounces can never loop).
    Nobody,
}

/// Who is told that `sender`'s message failed.
pub fn bounce_to(sender: &[u8], postmaster: Option<&[u8]>) -> BounceTo {
    if sender == DOUBLE_BOUNCE_SENDER {
        BounceTo::Nobody
    } else if sender.is_empty() {
        postmaster.map_or(BounceTo::Nobody, |pm| BounceTo::Postmaster(pm.to_vec()))
    } else {
        BounceTo::Sender(sender.to_vec())
    }
}

/// What the runner does after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The message's new state. Recipients in [`Decision::bounce`] are still pending in it
    /// until [`Decision::bounce_queued`] marks them failed; recipients in [`Decision::warn`]
    /// are marked warned by [`Decision::warning_queued`].
    pub state: DeliveryState,
    /// What each answered recipient counts as (for the statistics), in answer order.
    pub results: Vec<(usize, DeliveryResult)>,
    /// The recipients that failed for good in this attempt, for one bounce.
    pub bounce: Vec<Failure>,
    /// Who the bounce goes to.
    pub bounce_to: BounceTo,
    /// The pending recipients a delay warning is due for (once per recipient).
    pub warn: Vec<usize>,
    /// When failed recipients are tried again if their bounce cannot be queued.
    retry_bounce_at: SystemTime,
}

/// The decision for `envelope` in `state` after `outcomes` (one per due recipient, by index
/// into the envelope's recipients) at `now`. `jitter` in [0, 1) spreads the retry times (see
/// [`retry::backoff_at`]).
pub fn decide(
    envelope: &Envelope,
    state: &DeliveryState,
    outcomes: &[(usize, Outcome)],
    now: SystemTime,
    rules: &Rules,
    jitter: f64,
) -> Decision {
    let age = now
        .duration_since(envelope.arrival)
        .unwrap_or(Duration::ZERO);
    let mut state = state.clone();
    let mut results = Vec::new();
    let mut bounce = Vec::new();
    for (i, outcome) in outcomes {
        let (i, answer) = match outcome {
            Outcome::Held => {
                if let Some(r) = state.recipients.get_mut(*i) {
                    r.next_attempt = Some(now + rules.retry_max);
                }
                continue;
            }
            Outcome::Answered(answer) => (*i, answer),
        };
        let (Some(r), Some(address)) = (state.recipients.get_mut(i), envelope.recipients.get(i))
        else {
            continue;
        };
        r.attempts = r.attempts.saturating_add(1);
        r.last_result.clone_from(&answer.text);
        let result = match answer.verdict {
            Verdict::Delivered => {
                r.status = Status::Delivered;
                r.next_attempt = None;
                DeliveryResult::Delivered
            }
            Verdict::Retry if age < rules.lifetime => {
                let delay = retry::backoff_at(r.attempts, rules.retry_min, rules.retry_max, jitter);
                r.next_attempt = Some(now + delay);
                DeliveryResult::Deferred
            }
            Verdict::Retry => {
                let days = rules.lifetime.as_secs_f64() / 86400.0;
                bounce.push(Failure {
                    index: i,
                    recipient: address.clone(),
                    text: format!(
                        "{} (gave up: in the queue longer than {days:.1} days)",
                        answer.text
                    ),
                    expired: true,
                });
                DeliveryResult::Failed
            }
            Verdict::Bounce => {
                bounce.push(Failure {
                    index: i,
                    recipient: address.clone(),
                    text: answer.text.clone(),
                    expired: false,
                });
                DeliveryResult::Failed
            }
        };
        results.push((i, result));
    }

    // A delay warning: once, at the first attempt after the warning time, for what is still
    // pending; never for a bounce (a null or double-bounce sender).
    let mut warn = Vec::new();
    let sender = envelope.sender.as_slice();
    let warn_due = rules.warn_after.is_some_and(|after| age >= after);
    if warn_due && !sender.is_empty() && sender != DOUBLE_BOUNCE_SENDER {
        for (i, r) in state.recipients.iter().enumerate() {
            if r.status == Status::Pending && !r.warned && !bounce.iter().any(|f| f.index == i) {
                warn.push(i);
            }
        }
    }
    Decision {
        state,
        results,
        bounce,
        bounce_to: bounce_to(sender, rules.postmaster.as_deref()),
        warn,
        retry_bounce_at: now + rules.retry_min,
    }
}

impl Decision {
    /// The bounce was queued (or, for [`BounceTo::Nobody`], logged and dropped): its
    /// recipients have failed for good, with the reason the bounce gave.
    pub fn bounce_queued(&mut self) {
        for f in &self.bounce {
            if let Some(r) = self.state.recipients.get_mut(f.index) {
                r.status = Status::Failed;
                r.next_attempt = None;
                r.last_result.clone_from(&f.text);
            }
        }
    }

    /// The bounce could not be queued: its recipients stay pending and fail again at the next
    /// attempt, a `retry_min` from now (so nobody fails without being told).
    pub fn bounce_not_queued(&mut self) {
        for f in &self.bounce {
            if let Some(r) = self.state.recipients.get_mut(f.index) {
                r.next_attempt = Some(self.retry_bounce_at);
            }
        }
    }

    /// The delay warning was queued: it is not sent again for these recipients.
    pub fn warning_queued(&mut self) {
        for &i in &self.warn {
            if let Some(r) = self.state.recipients.get_mut(i) {
                r.warned = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86400);

    fn rules() -> Rules {
        Rules {
            lifetime: 5 * DAY,
            retry_min: Duration::from_secs(60),
            retry_max: HOUR,
            warn_after: Some(4 * HOUR),
            postmaster: Some(b"postmaster@example.net".to_vec()),
        }
    }

    fn envelope(sender: &[u8], n: usize) -> Envelope {
        Envelope {
            arrival: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            client_addr: "127.0.0.1:1".into(),
            client_host: String::new(),
            sender: sender.to_vec(),
            recipients: (0..n)
                .map(|i| format!("r{i}@example.com").into_bytes())
                .collect(),
        }
    }

    /// `age` after the envelope's arrival.
    fn at(env: &Envelope, age: Duration) -> SystemTime {
        env.arrival + age
    }

    fn answered(i: usize, answer: Answer) -> (usize, Outcome) {
        (i, Outcome::Answered(answer))
    }

    #[test]
    fn delivered_recipients_are_done() {
        let env = envelope(b"a@example.net", 2);
        let state = DeliveryState::all_pending(2);
        let outcomes = [
            answered(0, Answer::delivered("250 ok")),
            answered(1, Answer::delivered("250 ok too")),
        ];
        let d = decide(&env, &state, &outcomes, at(&env, HOUR), &rules(), 0.5);
        assert!(!d.state.any_pending());
        for r in &d.state.recipients {
            assert_eq!(
                (r.status, r.attempts, r.next_attempt),
                (Status::Delivered, 1, None)
            );
        }
        assert_eq!(d.state.recipients[1].last_result, "250 ok too");
        assert_eq!(
            d.results,
            [
                (0, DeliveryResult::Delivered),
                (1, DeliveryResult::Delivered)
            ]
        );
        assert!(d.bounce.is_empty() && d.warn.is_empty());
    }

    #[test]
    fn a_temporary_failure_is_retried_with_backoff() {
        let env = envelope(b"a@example.net", 1);
        let mut state = DeliveryState::all_pending(1);
        state.recipients[0].attempts = 2;
        let now = at(&env, HOUR);
        let d = decide(
            &env,
            &state,
            &[answered(0, Answer::retry("451 later"))],
            now,
            &rules(),
            0.5,
        );
        let r = &d.state.recipients[0];
        assert_eq!((r.status, r.attempts), (Status::Pending, 3));
        // The third failure: 60 s doubled twice, the spread at its middle.
        assert_eq!(r.next_attempt, Some(now + Duration::from_secs(240)));
        assert_eq!(r.last_result, "451 later");
        assert_eq!(d.results, [(0, DeliveryResult::Deferred)]);
        assert!(d.bounce.is_empty());
        // The spread moves the time, within ±20%.
        let early = decide(
            &env,
            &state,
            &[answered(0, Answer::retry("x"))],
            now,
            &rules(),
            0.0,
        );
        assert_eq!(
            early.state.recipients[0].next_attempt,
            Some(now + Duration::from_secs(192))
        );
    }

    #[test]
    fn a_permanent_failure_is_bounced_to_the_sender() {
        let env = envelope(b"a@example.net", 1);
        let state = DeliveryState::all_pending(1);
        let mut d = decide(
            &env,
            &state,
            &[answered(0, Answer::bounce("550 no such user"))],
            at(&env, HOUR),
            &rules(),
            0.5,
        );
        assert_eq!(d.results, [(0, DeliveryResult::Failed)]);
        assert_eq!(d.bounce_to, BounceTo::Sender(b"a@example.net".to_vec()));
        assert_eq!(d.bounce.len(), 1);
        let f = &d.bounce[0];
        assert_eq!(
            (f.index, f.recipient.as_slice(), f.text.as_str(), f.expired),
            (0, &b"r0@example.com"[..], "550 no such user", false)
        );
        // Pending until the bounce is queued, then failed for good.
        assert!(d.state.any_pending());
        d.bounce_queued();
        let r = &d.state.recipients[0];
        assert_eq!((r.status, r.next_attempt), (Status::Failed, None));
        assert_eq!(r.last_result, "550 no such user");
        assert!(!d.state.any_pending());
    }

    #[test]
    fn a_bounce_that_cannot_be_queued_keeps_its_recipient_pending() {
        let env = envelope(b"a@example.net", 1);
        let now = at(&env, HOUR);
        let mut d = decide(
            &env,
            &DeliveryState::all_pending(1),
            &[answered(0, Answer::bounce("550 no"))],
            now,
            &rules(),
            0.5,
        );
        d.bounce_not_queued();
        let r = &d.state.recipients[0];
        assert_eq!(r.status, Status::Pending);
        assert_eq!(r.next_attempt, Some(now + Duration::from_secs(60)));
        assert_eq!(r.attempts, 1);
    }

    #[test]
    fn mixed_answers_each_get_their_own_fate() {
        let env = envelope(b"a@example.net", 4);
        let mut state = DeliveryState::all_pending(4);
        state.recipients[3].status = Status::Delivered;
        let outcomes = [
            answered(0, Answer::delivered("250 ok")),
            answered(1, Answer::retry("451 greylisted")),
            answered(2, Answer::bounce("550 unknown")),
        ];
        let now = at(&env, HOUR);
        let mut d = decide(&env, &state, &outcomes, now, &rules(), 0.5);
        assert_eq!(
            d.results,
            [
                (0, DeliveryResult::Delivered),
                (1, DeliveryResult::Deferred),
                (2, DeliveryResult::Failed)
            ]
        );
        assert_eq!(d.bounce.iter().map(|f| f.index).collect::<Vec<_>>(), [2]);
        d.bounce_queued();
        let statuses: Vec<Status> = d.state.recipients.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [
                Status::Delivered,
                Status::Pending,
                Status::Failed,
                Status::Delivered
            ]
        );
        // The one not in this attempt is untouched.
        assert_eq!(d.state.recipients[3], state.recipients[3]);
        assert!(d.state.any_pending());
    }

    #[test]
    fn past_the_lifetime_a_temporary_failure_is_a_bounce() {
        let env = envelope(b"a@example.net", 2);
        let state = DeliveryState::all_pending(2);
        let outcomes = [
            answered(0, Answer::retry("451 still down")),
            answered(1, Answer::delivered("250 ok")),
        ];
        let d = decide(&env, &state, &outcomes, at(&env, 5 * DAY), &rules(), 0.5);
        assert_eq!(d.results[0], (0, DeliveryResult::Failed));
        let f = &d.bounce[0];
        assert!(f.expired);
        assert_eq!(
            f.text,
            "451 still down (gave up: in the queue longer than 5.0 days)"
        );
        // Just before the lifetime ends it is still retried.
        let young = decide(
            &env,
            &state,
            &outcomes,
            at(&env, 5 * DAY - Duration::from_secs(1)),
            &rules(),
            0.5,
        );
        assert!(young.bounce.is_empty());
        assert_eq!(young.results[0], (0, DeliveryResult::Deferred));
    }

    #[test]
    fn a_delay_warning_is_due_once_for_what_is_still_pending() {
        let env = envelope(b"a@example.net", 3);
        let state = DeliveryState::all_pending(3);
        let outcomes = [
            answered(0, Answer::retry("451 later")),
            answered(1, Answer::delivered("250 ok")),
            answered(2, Answer::bounce("550 no")),
        ];
        // Not yet: younger than the warning time.
        let early = decide(&env, &state, &outcomes, at(&env, 3 * HOUR), &rules(), 0.5);
        assert!(early.warn.is_empty());
        // Due: only the recipient still pending (not the delivered, not the bounced one).
        let mut d = decide(&env, &state, &outcomes, at(&env, 4 * HOUR), &rules(), 0.5);
        assert_eq!(d.warn, [0]);
        d.warning_queued();
        d.bounce_queued();
        assert!(d.state.recipients[0].warned);
        assert!(!d.state.recipients[1].warned);
        // The next attempt finds it warned: no second warning, and the flag stays.
        let again = decide(
            &env,
            &d.state,
            &[answered(0, Answer::retry("451 still"))],
            at(&env, 6 * HOUR),
            &rules(),
            0.5,
        );
        assert!(again.warn.is_empty());
        assert!(again.state.recipients[0].warned);
        assert_eq!(again.state.recipients[0].last_result, "451 still");
        // No warnings configured: none.
        let off = Rules {
            warn_after: None,
            ..rules()
        };
        assert!(decide(&env, &state, &outcomes, at(&env, DAY), &off, 0.5)
            .warn
            .is_empty());
    }

    #[test]
    fn a_bounce_from_the_null_sender_is_a_double_bounce_and_never_warned() {
        let env = envelope(b"", 1);
        let outcomes = [answered(0, Answer::retry("451 later"))];
        let d = decide(
            &env,
            &DeliveryState::all_pending(1),
            &outcomes,
            at(&env, DAY),
            &rules(),
            0.5,
        );
        assert!(d.warn.is_empty(), "a bounce gets no delay warning");
        let failed = [answered(0, Answer::bounce("550 no"))];
        let d = decide(
            &env,
            &DeliveryState::all_pending(1),
            &failed,
            at(&env, HOUR),
            &rules(),
            0.5,
        );
        assert_eq!(
            d.bounce_to,
            BounceTo::Postmaster(b"postmaster@example.net".to_vec())
        );
        let nobody = Rules {
            postmaster: None,
            ..rules()
        };
        let d = decide(
            &env,
            &DeliveryState::all_pending(1),
            &failed,
            at(&env, HOUR),
            &nobody,
            0.5,
        );
        assert_eq!(d.bounce_to, BounceTo::Nobody);
    }

    #[test]
    fn a_double_bounce_that_fails_is_dropped() {
        let env = envelope(DOUBLE_BOUNCE_SENDER, 1);
        let failed = [answered(0, Answer::bounce("550 no postmaster here"))];
        let mut d = decide(
            &env,
            &DeliveryState::all_pending(1),
            &failed,
            at(&env, DAY),
            &rules(),
            0.5,
        );
        assert_eq!(d.bounce_to, BounceTo::Nobody);
        assert!(d.warn.is_empty());
        d.bounce_queued();
        assert!(!d.state.any_pending());
    }

    #[test]
    fn held_recipients_wait_without_an_attempt() {
        let env = envelope(b"a@example.net", 2);
        let now = at(&env, HOUR);
        let outcomes = [(0, Outcome::Held), answered(1, Answer::delivered("250 ok"))];
        let d = decide(
            &env,
            &DeliveryState::all_pending(2),
            &outcomes,
            now,
            &rules(),
            0.5,
        );
        let r = &d.state.recipients[0];
        assert_eq!((r.status, r.attempts), (Status::Pending, 0));
        assert_eq!(r.next_attempt, Some(now + HOUR));
        assert_eq!(d.results, [(1, DeliveryResult::Delivered)]);
    }

    #[test]
    fn nothing_due_changes_nothing_and_a_clock_before_arrival_is_age_zero() {
        let env = envelope(b"a@example.net", 1);
        let state = DeliveryState::all_pending(1);
        let d = decide(&env, &state, &[], at(&env, HOUR), &rules(), 0.5);
        assert_eq!(d.state, state);
        assert!(d.results.is_empty() && d.bounce.is_empty() && d.warn.is_empty());
        // A clock set back: not expired, not warned.
        let before = env.arrival - DAY;
        let d = decide(
            &env,
            &state,
            &[answered(0, Answer::retry("451"))],
            before,
            &rules(),
            0.5,
        );
        assert!(d.bounce.is_empty() && d.warn.is_empty());
    }

    #[test]
    fn answers_for_recipients_that_do_not_exist_are_ignored() {
        let env = envelope(b"a@example.net", 1);
        let outcomes = [answered(5, Answer::bounce("550")), (7, Outcome::Held)];
        let d = decide(
            &env,
            &DeliveryState::all_pending(1),
            &outcomes,
            at(&env, HOUR),
            &rules(),
            0.5,
        );
        assert_eq!(d.state, DeliveryState::all_pending(1));
        assert!(d.bounce.is_empty() && d.results.is_empty());
    }
}
