//! Data governance: what every feed is (catalog), how good its data is (quality rules
//! and scores), so the state of the data is as visible as the state of the city; and
//! what of it may leave the hall (open data).

pub mod catalog;
#[cfg(test)]
mod frame_share_tests;
pub mod health;
pub mod open_data;
pub mod quality;
pub mod reconcile;
