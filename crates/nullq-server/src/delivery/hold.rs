//! The `none` target: nothing is delivered, every recipient stays queued (for a server that
//! only collects, or while the site's mail server is being moved).

use crate::delivery::backend::{Backend, Delivery};
use crate::delivery::job::{Answer, Job};

/// `none`.
#[derive(Debug)]
pub struct Hold;

impl Backend for Hold {
    fn deliver<'a>(&'a self, job: &'a Job) -> Delivery<'a> {
        let answers = vec![Answer::retry("held: delivery target is none"); job.recipients.len()];
        Box::pin(std::future::ready(answers))
    }

    fn holds(&self) -> bool {
        true
    }
}
