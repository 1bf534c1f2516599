//! Live feeds from the sub-brains: what an update is, how payloads decode, how feeds
//! are configured and polled. Plain Rust; the bevy layers only read the results.
//!
//! Glossary: a **feed** is one configured source (a URL or the simulator) owned by a
//! department; an **entity** is one real-world thing a feed reports (a station, a
//! vehicle, a road segment), identified by (feed, id); an **update** is one observation
//! of an entity; a **reject** is one item of a payload that could not be decoded.

pub mod cap;
pub mod cap_intake;
pub mod cap_list;
pub mod config;
pub mod decode;
pub mod gazetteer;
pub mod mqtt;
pub mod ngsi_notify;
pub mod poll;
pub mod sim_source;

pub use crate::model::{
    DecodeNote, Decoded, Domain, EntityKind, EntityUpdate, FieldValue, PayloadError, Reject,
    RejectReason,
};

/// Everything feeding the hub: HTTP pollers and the simulator. Dropping it stops all.
pub struct RunningFeeds {
    _pollers: poll::Pollers,
    _sim: Option<sim_source::SimSource>,
}

/// Starts every configured feed; events arrive on the returned channel. CAP alerts
/// that name their area are located in the map's districts and the feeds file's
/// `[[area]]` entries (`areas`).
pub fn start_feeds(
    feeds: &[config::FeedConfig],
    areas: &[config::AreaConfig],
    map: &crate::map::CityMap,
    seed: u64,
) -> (RunningFeeds, std::sync::mpsc::Receiver<poll::FeedEvent>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let places = std::sync::Arc::new(gazetteer::Gazetteer::new(map, areas));
    let pollers = poll::Pollers::start(feeds, places, tx.clone());
    let sim = sim_source::SimSource::start(feeds, map, seed, tx);
    (
        RunningFeeds {
            _pollers: pollers,
            _sim: sim,
        },
        rx,
    )
}

/// Largest payload a feed may send in one response.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;
