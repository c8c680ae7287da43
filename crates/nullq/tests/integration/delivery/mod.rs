//! Delivering: from the spool to each target, through crashes, full disks and the queue tools.

mod backends;
mod crash;
mod health;
mod maildir;
mod memory;
mod policy;
mod queue;
mod smtp;
