//! Zhongshu (中枢): a command centre for a city brain.
//!
//! The core (`geo_frame`, `map`) is plain Rust with no bevy imports, so it is tested
//! fast and deterministically; `app` is the thin bevy shell that draws it.
//!
//! Glossary:
//! - **city brain** — the hub every domain *sub-brain* (traffic, safety, ecology, ...) feeds.
//! - **local frame** — metres east/north of the city origin; the render world is
//!   x = east, y = up, z = south.
//! - **chunk** — a square of the city whose features are merged into one mesh per layer.
//! - **skipped feature** — input that could not be drawn, counted by reason and shown.

pub mod app;
pub mod bench;
pub mod briefing;
pub mod clock;
pub mod dispatch;
pub mod feeds;
pub mod fuzz;
pub mod geo_frame;
pub mod governance;
pub mod hall;
pub mod history;
pub mod http;
pub mod map;
pub mod memory;
pub mod model;
pub mod nats;
pub mod sim;
pub mod state;
pub mod stats;
pub mod store;
pub mod surge;
pub mod wall;
