// Zhongshu building shader: height-tinted walls with storey lines and lit roof edges,
// tuned to read on a dark command-hall video wall. Unlit (no shadow or light passes):
// a fixed sun and sky term keep faces distinct at any zoom at negligible cost.
//
// Mesh contract (see src/map/mesh.rs): world-space positions, flat normals,
// uv.y = the building's top height in metres.

#import bevy_pbr::forward_io::VertexOutput

struct BuildingStyle {
    low_colour: vec4<f32>,
    high_colour: vec4<f32>,
    edge_colour: vec4<f32>,
    // x: height in metres that gets the full "high" tint, y: storey height in metres,
    // z: brightness, w: unused.
    params: vec4<f32>,
}

@group(#{MATERIAL_BIND_GROUP}) @binding(0) var<uniform> style: BuildingStyle;

@fragment
fn fragment(in: VertexOutput) -> @location(0) vec4<f32> {
    let n = normalize(in.world_normal);
    let height_here = in.world_position.y;
#ifdef VERTEX_UVS_A
    let top = in.uv.y;
#else
    let top = height_here;
#endif
    // Low-rise stays deep blue; the tint climbs with height so towers stand out.
    let tint = clamp((top - 6.0) / (style.params.x - 6.0), 0.0, 1.0);
    var colour = mix(style.low_colour.rgb, style.high_colour.rgb, tint);

    let sun = normalize(vec3<f32>(0.45, 0.75, 0.35));
    let lambert = max(dot(n, sun), 0.0);
    let sky = 0.5 + 0.5 * n.y;
    var light = 0.3 + 0.55 * lambert + 0.2 * sky;

    if (n.y > 0.5) {
        // Roof: brighter, so footprints read from above.
        colour = colour * 1.15;
    } else {
        // Walls darken toward the street, like ambient occlusion in a canyon.
        let rel = clamp(height_here / max(top, 1.0), 0.0, 1.0);
        colour = colour * (0.35 + 0.65 * rel);
        // Storey lines.
        let storey = fract(height_here / style.params.y);
        colour = colour * (1.0 - 0.25 * (1.0 - smoothstep(0.0, 0.08, storey)));
        // Lit edge along the top of every wall: the city's silhouette glows.
        let edge = 1.0 - smoothstep(0.0, 0.9, top - height_here);
        colour = mix(colour, style.edge_colour.rgb, edge * 0.9);
        light = max(light, edge);
    }
    return vec4<f32>(colour * light * style.params.z, 1.0);
}
