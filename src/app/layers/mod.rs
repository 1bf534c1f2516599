//! One layer per sub-brain, drawn from the live state: traffic on the roads, markers
//! for units, stations, facilities, alerts and districts, and the air heat map.

pub mod air;
pub mod choropleth;
pub mod markers;
pub mod pick;
pub mod traffic;

use bevy::prelude::*;

pub(super) fn plugin(app: &mut App) {
    app.add_plugins((
        traffic::plugin,
        markers::plugin,
        air::plugin,
        choropleth::plugin,
    ));
}

/// Colour ramp for a speed ratio (share of free flow): red jammed → amber → green free.
pub fn speed_colour(ratio: f32) -> [f32; 4] {
    use crate::map::mesh::linear_from_srgb;
    let stops = [
        (0.0, 0xB3122A),
        (0.35, 0xE8412C),
        (0.6, 0xF2A23A),
        (0.8, 0x9CD64A),
        (1.0, 0x2FBF71),
    ];
    let r = ratio.clamp(0.0, 1.0);
    for w in stops.windows(2) {
        let ((a, ca), (b, cb)) = (w[0], w[1]);
        if r <= b {
            let t = (r - a) / (b - a);
            let (x, y) = (linear_from_srgb(ca), linear_from_srgb(cb));
            return [
                x[0] + (y[0] - x[0]) * t,
                x[1] + (y[1] - x[1]) * t,
                x[2] + (y[2] - x[2]) * t,
                1.0,
            ];
        }
    }
    linear_from_srgb(0x2FBF71)
}
