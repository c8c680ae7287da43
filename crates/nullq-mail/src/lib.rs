//! nullq-mail (being written).

pub mod date;
