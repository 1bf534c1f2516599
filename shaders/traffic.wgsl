// Zhongshu traffic ribbons: each road segment in its own colour, looked up in a small
// colour texture (one texel per segment, sRGB) by the segment number every vertex
// carries in uv.x. A traffic update rewrites texels; the meshes stay on the GPU.

#import bevy_pbr::forward_io::VertexOutput

@group(#{MATERIAL_BIND_GROUP}) @binding(0) var colours: texture_2d<f32>;

@fragment
fn fragment(in: VertexOutput) -> @location(0) vec4<f32> {
#ifdef VERTEX_UVS_A
    let segment = u32(round(in.uv.x));
#else
    let segment = 0u;
#endif
    let width = textureDimensions(colours).x;
    let texel = vec2<i32>(i32(segment % width), i32(segment / width));
    return vec4<f32>(textureLoad(colours, texel, 0).rgb, 1.0);
}
