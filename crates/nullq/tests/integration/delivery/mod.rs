//! Delivering: from the spool to each target, through crashes, full disks, leftovers and
//! corrupt files, and the queue tools.

mod backends;
mod crash;
mod failing_disk;
mod health;
mod leftovers;
mod maildir;
mod memory;
mod planted;
mod policy;
mod queue;
mod smtp;
