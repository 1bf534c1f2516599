// Zhongshu air-quality heat map: inverse-distance-weighted AQI from the live stations,
// drawn on a translucent ground sheet and faded away from any station so it never
// claims knowledge where there is none. AQI colour bands follow the common scale:
// good (green) → moderate (yellow) → unhealthy for some (orange) → unhealthy (red)
// → very unhealthy (purple).

#import bevy_pbr::forward_io::VertexOutput

struct Heatmap {
    // xy: station position in world x/z, z: AQI, w: 1 when the slot is used.
    stations: array<vec4<f32>, 64>,
    // x: station count, y: influence radius (m), z: opacity, w: unused.
    params: vec4<f32>,
}

@group(#{MATERIAL_BIND_GROUP}) @binding(0) var<uniform> heat: Heatmap;

fn aqi_colour(aqi: f32) -> vec3<f32> {
    let green = vec3<f32>(0.10, 0.75, 0.35);
    let yellow = vec3<f32>(0.95, 0.85, 0.15);
    let orange = vec3<f32>(1.00, 0.50, 0.10);
    let red = vec3<f32>(0.90, 0.12, 0.15);
    let purple = vec3<f32>(0.55, 0.15, 0.65);
    if (aqi < 50.0) { return mix(green, yellow, aqi / 50.0 * 0.5); }
    if (aqi < 100.0) { return mix(mix(green, yellow, 0.5), yellow, (aqi - 50.0) / 50.0); }
    if (aqi < 150.0) { return mix(yellow, orange, (aqi - 100.0) / 50.0); }
    if (aqi < 200.0) { return mix(orange, red, (aqi - 150.0) / 50.0); }
    return mix(red, purple, clamp((aqi - 200.0) / 100.0, 0.0, 1.0));
}

@fragment
fn fragment(in: VertexOutput) -> @location(0) vec4<f32> {
    let p = in.world_position.xz;
    let count = i32(heat.params.x);
    let radius = heat.params.y;
    var weight_sum = 0.0;
    var value_sum = 0.0;
    var nearest = 1e9;
    for (var i = 0; i < count; i = i + 1) {
        let s = heat.stations[i];
        let d = distance(p, s.xy);
        let w = 1.0 / (d * d + 400.0);
        weight_sum = weight_sum + w;
        value_sum = value_sum + w * s.z;
        nearest = min(nearest, d);
    }
    if (count == 0) {
        discard;
    }
    let aqi = value_sum / weight_sum;
    let coverage = 1.0 - smoothstep(radius * 0.4, radius, nearest);
    let alpha = heat.params.z * coverage;
    if (alpha < 0.01) {
        discard;
    }
    return vec4<f32>(aqi_colour(aqi), alpha);
}
