//! City geometry as GPU-ready triangle meshes, merged per spatial chunk and layer.
//!
//! Plain arrays only (no bevy): the scene plugin uploads each [`ChunkMesh`] as one
//! mesh entity, so a city of a million buildings is a few thousand draw calls, not a
//! million entities. Built in parallel across chunks.

use std::collections::HashMap;

use earcut::Earcut;
use geo::{Coord, LineString, Polygon};
use rayon::prelude::*;

use super::{AreaKind, CityMap, RoadClass};
use crate::geo_frame::world_from_local;

/// Side of a square chunk in metres: small enough to cull well, big enough to keep draw
/// calls few.
pub const CHUNK_SIZE_M: f64 = 500.0;

/// Drawing heights of the flat layers (metres above ground), kept apart so they never
/// fight for the same depth.
pub const GREEN_Y: f32 = 0.15;
pub const WATER_Y: f32 = 0.3;
pub const ROAD_Y: f32 = 0.5;
/// Pedestrian squares and other highway areas, just under the road ribbons.
pub const PAVED_Y: f32 = 0.42;
pub const DISTRICT_Y: f32 = 1.2;

/// The map layers an operator can switch on and off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapLayer {
    Buildings,
    Roads,
    Water,
    Green,
    Districts,
}

impl MapLayer {
    pub const ALL: [MapLayer; 5] = [
        MapLayer::Buildings,
        MapLayer::Roads,
        MapLayer::Water,
        MapLayer::Green,
        MapLayer::Districts,
    ];

    pub fn label(self) -> &'static str {
        match self {
            MapLayer::Buildings => "Buildings 建筑",
            MapLayer::Roads => "Roads 道路",
            MapLayer::Water => "Water 水系",
            MapLayer::Green => "Green 绿地",
            MapLayer::Districts => "Districts 行政区划",
        }
    }
}

/// One merged triangle mesh. Buildings carry `uvs` = (height of this vertex, height of
/// the building's top) for the building shader; flat layers carry per-vertex colours.
#[derive(Clone, Debug, Default)]
pub struct MeshData {
    pub positions: Vec<[f32; 3]>,
    pub normals: Vec<[f32; 3]>,
    pub uvs: Vec<[f32; 2]>,
    pub colors: Vec<[f32; 4]>,
    pub indices: Vec<u32>,
}

impl MeshData {
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
    pub fn triangle_count(&self) -> usize {
        self.indices.len() / 3
    }
    fn base(&self) -> u32 {
        self.positions.len() as u32
    }
}

/// The meshes of one layer in one chunk.
#[derive(Clone, Debug)]
pub struct ChunkMesh {
    pub chunk: [i32; 2],
    pub layer: MapLayer,
    pub mesh: MeshData,
}

/// All chunk meshes of a city.
#[derive(Clone, Debug, Default)]
pub struct CityMeshes {
    pub chunks: Vec<ChunkMesh>,
}

impl CityMeshes {
    pub fn triangle_count(&self) -> usize {
        self.chunks.iter().map(|c| c.mesh.triangle_count()).sum()
    }
    pub fn vertex_count(&self) -> usize {
        self.chunks.iter().map(|c| c.mesh.positions.len()).sum()
    }
}

fn chunk_of(c: Coord<f64>) -> [i32; 2] {
    [
        (c.x / CHUNK_SIZE_M).floor() as i32,
        (c.y / CHUNK_SIZE_M).floor() as i32,
    ]
}

/// Linear RGBA (what vertex colours are) from an sRGB hex colour as designers pick them.
pub fn linear_from_srgb(hex: u32) -> [f32; 4] {
    let channel = |shift: u32| {
        let c = ((hex >> shift) & 0xff) as f32 / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    [channel(16), channel(8), channel(0), 1.0]
}

/// Road colours by class on the dark command-hall palette (sRGB): arterials amber,
/// minor streets dim slate, rail violet.
pub fn road_colour(class: RoadClass) -> [f32; 4] {
    linear_from_srgb(match class {
        RoadClass::Motorway => 0xE8A33A,
        RoadClass::Trunk => 0xD98E3A,
        RoadClass::Primary => 0xC99A50,
        RoadClass::Secondary => 0x8A8C86,
        RoadClass::Tertiary => 0x5E6670,
        RoadClass::Residential => 0x434B57,
        RoadClass::Service => 0x303741,
        RoadClass::Path => 0x2A3434,
        RoadClass::Rail => 0x6A4C7A,
    })
}

/// sRGB colours of the flat layers.
pub const WATER_SRGB: u32 = 0x0F3358;
pub const GREEN_SRGB: u32 = 0x163A26;
pub const DISTRICT_SRGB: u32 = 0xF2C230;

/// Builds every chunk mesh of the map, in parallel.
pub fn build_city_meshes(map: &CityMap) -> CityMeshes {
    // Bucket feature indices by chunk (by first vertex: cheap and stable).
    let mut buckets: HashMap<([i32; 2], MapLayer), Vec<usize>> = HashMap::new();
    for (i, b) in map.buildings.iter().enumerate() {
        if !b.is_drawn() {
            continue; // an outline drawn by its building:parts
        }
        buckets
            .entry((chunk_of(b.first_point()), MapLayer::Buildings))
            .or_default()
            .push(i);
    }
    for (i, r) in map.roads.iter().enumerate() {
        buckets
            .entry((chunk_of(r.line.0[0]), MapLayer::Roads))
            .or_default()
            .push(i);
    }
    // Paved areas go with roads; indices offset past the roads so both fit one list.
    let paved_offset = map.roads.len();
    for (i, a) in map.areas.iter().enumerate() {
        let (layer, item) = match a.kind {
            AreaKind::Water => (MapLayer::Water, i),
            AreaKind::Green => (MapLayer::Green, i),
            AreaKind::Paved => (MapLayer::Roads, paved_offset + i),
        };
        buckets
            .entry((chunk_of(a.polygon.exterior().0[0]), layer))
            .or_default()
            .push(item);
    }
    // Waterways go with water; indices offset past the areas so both fit one list.
    let offset = map.areas.len();
    for (i, w) in map.waterways.iter().enumerate() {
        buckets
            .entry((chunk_of(w.line.0[0]), MapLayer::Water))
            .or_default()
            .push(offset + i);
    }
    for (i, d) in map.districts.iter().enumerate() {
        if let Some(first) = d.boundary.first() {
            buckets
                .entry((chunk_of(first.0[0]), MapLayer::Districts))
                .or_default()
                .push(i);
        }
    }

    let mut keys: Vec<_> = buckets.into_iter().collect();
    keys.sort_by_key(|(k, _)| (k.1, k.0));
    let chunks = keys
        .into_par_iter()
        .map_init(Earcut::new, |earcut, ((chunk, layer), items)| {
            let mut mesh = MeshData::default();
            match layer {
                MapLayer::Buildings => {
                    for i in items {
                        let b = &map.buildings[i];
                        for piece in b.drawn_pieces() {
                            add_building(
                                &mut mesh,
                                earcut,
                                piece,
                                b.extent.min_height_m,
                                b.extent.height_m,
                            );
                        }
                    }
                }
                MapLayer::Roads => {
                    for i in items {
                        if i >= paved_offset {
                            let a = &map.areas[i - paved_offset];
                            let colour = road_colour(RoadClass::Path);
                            add_flat_polygon(&mut mesh, earcut, &a.polygon, PAVED_Y, colour);
                            continue;
                        }
                        let r = &map.roads[i];
                        let y = ROAD_Y + road_lift(r.class);
                        add_ribbon(&mut mesh, &r.line, r.width_m, y, road_colour(r.class));
                    }
                }
                MapLayer::Water | MapLayer::Green => {
                    for i in items {
                        if i >= offset {
                            let w = &map.waterways[i - offset];
                            add_ribbon(
                                &mut mesh,
                                &w.line,
                                w.width_m,
                                WATER_Y,
                                linear_from_srgb(WATER_SRGB),
                            );
                        } else {
                            let a = &map.areas[i];
                            let (y, colour) = match a.kind {
                                AreaKind::Water => (WATER_Y, linear_from_srgb(WATER_SRGB)),
                                AreaKind::Green => (GREEN_Y, linear_from_srgb(GREEN_SRGB)),
                                AreaKind::Paved => (PAVED_Y, road_colour(RoadClass::Path)),
                            };
                            add_flat_polygon(&mut mesh, earcut, &a.polygon, y, colour);
                        }
                    }
                }
                MapLayer::Districts => {
                    for i in items {
                        for line in &map.districts[i].boundary {
                            add_ribbon(
                                &mut mesh,
                                line,
                                8.0,
                                DISTRICT_Y,
                                linear_from_srgb(DISTRICT_SRGB),
                            );
                        }
                    }
                }
            }
            ChunkMesh { chunk, layer, mesh }
        })
        .filter(|c| !c.mesh.is_empty())
        .collect();
    CityMeshes { chunks }
}

/// Bigger roads draw a few centimetres above smaller ones so junctions read cleanly.
fn road_lift(class: RoadClass) -> f32 {
    match class {
        RoadClass::Motorway | RoadClass::Trunk => 0.08,
        RoadClass::Primary | RoadClass::Secondary => 0.06,
        RoadClass::Tertiary => 0.04,
        RoadClass::Residential => 0.02,
        RoadClass::Rail => 0.03,
        RoadClass::Service | RoadClass::Path => 0.0,
    }
}

/// Triangulates a polygon (with holes) with earcut; returns triangle indices into the
/// concatenated exterior + interior vertex list, wound counter-clockwise seen from above.
fn triangulate(
    earcut: &mut Earcut<f64>,
    polygon: &Polygon<f64>,
    out: &mut Vec<u32>,
) -> Vec<[f64; 2]> {
    let mut vertices: Vec<[f64; 2]> = Vec::with_capacity(polygon.exterior().0.len());
    let mut holes: Vec<u32> = Vec::with_capacity(polygon.interiors().len());
    let push_ring = |ring: &LineString<f64>, vertices: &mut Vec<[f64; 2]>| {
        let pts = &ring.0;
        // Rings are stored open, but accept closed ones too.
        let n = if pts.len() > 1 && pts[0] == pts[pts.len() - 1] {
            pts.len() - 1
        } else {
            pts.len()
        };
        vertices.extend(pts[..n].iter().map(|c| [c.x, c.y]));
    };
    push_ring(polygon.exterior(), &mut vertices);
    for hole in polygon.interiors() {
        holes.push(vertices.len() as u32);
        push_ring(hole, &mut vertices);
    }
    // Triangulate relative to the first vertex: keeps earcut's arithmetic small.
    let [ox, oy] = vertices[0];
    earcut.earcut(vertices.iter().map(|[x, y]| [x - ox, y - oy]), &holes, out);
    // Make every triangle counter-clockwise in east/north (front-facing from above).
    for tri in out.chunks_exact_mut(3) {
        let [a, b, c] = [
            vertices[tri[0] as usize],
            vertices[tri[1] as usize],
            vertices[tri[2] as usize],
        ];
        let cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
        if cross < 0.0 {
            tri.swap(1, 2);
        }
    }
    vertices
}

/// Extruded building: one quad per wall edge (flat-shaded) and an earcut roof.
pub fn add_building(
    mesh: &mut MeshData,
    earcut: &mut Earcut<f64>,
    footprint: &Polygon<f64>,
    min_h: f32,
    max_h: f32,
) {
    // Walls.
    for ring in std::iter::once(footprint.exterior()).chain(footprint.interiors()) {
        let pts = &ring.0;
        let n = if pts.len() > 1 && pts[0] == pts[pts.len() - 1] {
            pts.len() - 1
        } else {
            pts.len()
        };
        for i in 0..n {
            let a = pts[i];
            let b = pts[(i + 1) % n];
            let (de, dn) = (b.x - a.x, b.y - a.y);
            let len = (de * de + dn * dn).sqrt();
            if len < 1e-6 {
                continue;
            }
            // Exterior is CCW and holes CW, so the right-hand side is always outside.
            let normal = [(dn / len) as f32, 0.0, (de / len) as f32];
            let base = mesh.base();
            mesh.positions.extend([
                world_from_local(a.x, a.y, min_h),
                world_from_local(b.x, b.y, min_h),
                world_from_local(b.x, b.y, max_h),
                world_from_local(a.x, a.y, max_h),
            ]);
            mesh.normals.extend([normal; 4]);
            mesh.uvs.extend([
                [min_h, max_h],
                [min_h, max_h],
                [max_h, max_h],
                [max_h, max_h],
            ]);
            mesh.indices
                .extend([base, base + 1, base + 2, base, base + 2, base + 3]);
        }
    }
    // Roof.
    let mut tris = Vec::new();
    let vertices = triangulate(earcut, footprint, &mut tris);
    let base = mesh.base();
    for [x, y] in &vertices {
        mesh.positions.push(world_from_local(*x, *y, max_h));
        mesh.normals.push([0.0, 1.0, 0.0]);
        mesh.uvs.push([max_h, max_h]);
    }
    mesh.indices.extend(tris.iter().map(|i| base + i));
}

/// A flat polygon (water, green) at height `y`.
pub fn add_flat_polygon(
    mesh: &mut MeshData,
    earcut: &mut Earcut<f64>,
    polygon: &Polygon<f64>,
    y: f32,
    colour: [f32; 4],
) {
    let mut tris = Vec::new();
    let vertices = triangulate(earcut, polygon, &mut tris);
    let base = mesh.base();
    for [x, n] in &vertices {
        mesh.positions.push(world_from_local(*x, *n, y));
        mesh.normals.push([0.0, 1.0, 0.0]);
        mesh.uvs.push([y, y]);
        mesh.colors.push(colour);
    }
    mesh.indices.extend(tris.iter().map(|i| base + i));
}

/// A flat ribbon of `width_m` along a line, with mitred joins (bevelled when sharp).
pub fn add_ribbon(
    mesh: &mut MeshData,
    line: &LineString<f64>,
    width_m: f32,
    y: f32,
    colour: [f32; 4],
) {
    let pts = &line.0;
    if pts.len() < 2 {
        return;
    }
    let half = width_m as f64 * 0.5;
    let dir = |a: Coord<f64>, b: Coord<f64>| {
        let (dx, dy) = (b.x - a.x, b.y - a.y);
        let len = (dx * dx + dy * dy).sqrt().max(1e-9);
        (dx / len, dy / len)
    };
    // A closed line (a roundabout, a district ring) is mitred where its ends meet too,
    // so the ribbon shows no notch there.
    let last = pts.len() - 1;
    let closed = pts.len() >= 4 && (pts[0].x - pts[last].x).hypot(pts[0].y - pts[last].y) < 1e-9;
    let base = mesh.base();
    for i in 0..pts.len() {
        let d_in = if i > 0 {
            Some(dir(pts[i - 1], pts[i]))
        } else if closed {
            Some(dir(pts[last - 1], pts[0]))
        } else {
            None
        };
        let d_out = if i + 1 < pts.len() {
            Some(dir(pts[i], pts[i + 1]))
        } else if closed {
            Some(dir(pts[0], pts[1]))
        } else {
            None
        };
        let (nx, ny, scale) = match (d_in, d_out) {
            (Some(a), Some(b)) => {
                let (mx, my) = (a.0 + b.0, a.1 + b.1);
                let len = (mx * mx + my * my).sqrt();
                if len < 1e-6 {
                    (-a.1, a.0, 1.0) // a U-turn: fall back to the incoming normal
                } else {
                    let (tx, ty) = (mx / len, my / len);
                    // Miter length 1/cos(half angle), capped so sharp turns don't spike.
                    let cos_half = (tx * a.0 + ty * a.1).max(0.25);
                    (-ty, tx, 1.0 / cos_half)
                }
            }
            (Some(a), None) | (None, Some(a)) => (-a.1, a.0, 1.0),
            (None, None) => unreachable!("a line has at least two points"),
        };
        let p = pts[i];
        let off = half * scale;
        mesh.positions
            .push(world_from_local(p.x + nx * off, p.y + ny * off, y));
        mesh.positions
            .push(world_from_local(p.x - nx * off, p.y - ny * off, y));
        mesh.normals.extend([[0.0, 1.0, 0.0]; 2]);
        mesh.uvs.extend([[y, y]; 2]);
        mesh.colors.extend([colour; 2]);
    }
    for i in 0..(pts.len() as u32 - 1) {
        let (l0, r0, l1, r1) = (
            base + 2 * i,
            base + 2 * i + 1,
            base + 2 * i + 2,
            base + 2 * i + 3,
        );
        // Left is +normal (north of an eastward line): CCW from above is r0, l1, l0 ...
        mesh.indices.extend([r0, l1, l0, r0, r1, l1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(size: f64) -> Polygon<f64> {
        Polygon::new(
            LineString::from(vec![(0.0, 0.0), (size, 0.0), (size, size), (0.0, size)]),
            vec![],
        )
    }

    fn ccw_from_above(mesh: &MeshData) -> bool {
        mesh.indices.chunks_exact(3).all(|t| {
            let [a, b, c] = [
                mesh.positions[t[0] as usize],
                mesh.positions[t[1] as usize],
                mesh.positions[t[2] as usize],
            ];
            // Normal's y component of (b-a)×(c-a) must point up.
            let (ux, uz, vx, vz) = (b[0] - a[0], b[2] - a[2], c[0] - a[0], c[2] - a[2]);
            uz * vx - ux * vz >= 0.0
        })
    }

    #[test]
    fn a_box_building_has_four_walls_and_a_two_triangle_roof() {
        let mut mesh = MeshData::default();
        add_building(&mut mesh, &mut Earcut::new(), &square(10.0), 0.0, 20.0);
        assert_eq!(mesh.triangle_count(), 4 * 2 + 2);
        assert_eq!(mesh.positions.len(), 4 * 4 + 4);
        let max_y = mesh.positions.iter().map(|p| p[1]).fold(f32::MIN, f32::max);
        assert_eq!(max_y, 20.0);
        // Wall normals point away from the centre.
        for (p, n) in mesh.positions.iter().zip(&mesh.normals).take(16) {
            let (cx, cz) = (5.0, -5.0);
            let outward = (p[0] - cx) * n[0] + (p[2] - cz) * n[2];
            assert!(outward > 0.0, "normal {n:?} at {p:?}");
        }
    }

    #[test]
    fn walls_face_outwards_and_roof_faces_up() {
        let mut mesh = MeshData::default();
        add_building(&mut mesh, &mut Earcut::new(), &square(10.0), 0.0, 20.0);
        for t in mesh.indices.chunks_exact(3) {
            let [a, b, c] = [
                mesh.positions[t[0] as usize],
                mesh.positions[t[1] as usize],
                mesh.positions[t[2] as usize],
            ];
            let u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
            let v = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
            let geometric = [
                u[1] * v[2] - u[2] * v[1],
                u[2] * v[0] - u[0] * v[2],
                u[0] * v[1] - u[1] * v[0],
            ];
            let n = mesh.normals[t[0] as usize];
            let dot = geometric[0] * n[0] + geometric[1] * n[1] + geometric[2] * n[2];
            assert!(dot > 0.0, "triangle winding disagrees with its normal");
        }
    }

    #[test]
    fn holes_are_left_open_in_the_roof_and_get_walls() {
        let hole = LineString::from(vec![(4.0, 4.0), (4.0, 6.0), (6.0, 6.0), (6.0, 4.0)]);
        let poly = Polygon::new(square(10.0).exterior().clone(), vec![hole]);
        let mut mesh = MeshData::default();
        add_building(&mut mesh, &mut Earcut::new(), &poly, 0.0, 10.0);
        // 8 walls × 2 triangles + a square-with-hole roof (8 triangles).
        assert_eq!(mesh.triangle_count(), 16 + 8);
    }

    #[test]
    fn flat_layers_face_up() {
        let mut mesh = MeshData::default();
        add_flat_polygon(
            &mut mesh,
            &mut Earcut::new(),
            &square(10.0),
            WATER_Y,
            linear_from_srgb(WATER_SRGB),
        );
        let line = LineString::from(vec![(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 12.0)]);
        add_ribbon(&mut mesh, &line, 6.0, ROAD_Y, [1.0; 4]);
        assert!(ccw_from_above(&mesh));
        assert_eq!(mesh.colors.len(), mesh.positions.len());
    }

    #[test]
    fn srgb_to_linear() {
        assert_eq!(linear_from_srgb(0xFFFFFF), [1.0; 4]);
        assert_eq!(linear_from_srgb(0x000000), [0.0, 0.0, 0.0, 1.0]);
        assert!((linear_from_srgb(0x808080)[0] - 0.2158).abs() < 1e-3);
    }

    #[test]
    fn ribbon_has_the_requested_width() {
        let mut mesh = MeshData::default();
        add_ribbon(
            &mut mesh,
            &LineString::from(vec![(0.0, 0.0), (100.0, 0.0)]),
            8.0,
            0.0,
            [1.0; 4],
        );
        let zs: Vec<f32> = mesh.positions.iter().map(|p| p[2]).collect();
        let span = zs.iter().cloned().fold(f32::MIN, f32::max)
            - zs.iter().cloned().fold(f32::MAX, f32::min);
        assert!((span - 8.0).abs() < 1e-4);
    }

    #[test]
    fn a_closed_ribbon_has_no_notch_where_its_ends_meet() {
        let ring = LineString::from(vec![
            (0.0, 0.0),
            (10.0, 0.0),
            (10.0, 10.0),
            (0.0, 10.0),
            (0.0, 0.0),
        ]);
        let mut mesh = MeshData::default();
        add_ribbon(&mut mesh, &ring, 2.0, 0.0, [1.0; 4]);
        let n = mesh.positions.len();
        // The first and last cross-sections are the same mitred corner.
        assert_eq!(mesh.positions[0], mesh.positions[n - 2]);
        assert_eq!(mesh.positions[1], mesh.positions[n - 1]);
        // At the corner (0, 0) the outer edge sits at (-1, -1): a mitre, not a notch.
        let [x, _, z] = mesh.positions[n - 1];
        assert!((x + 1.0).abs() < 1e-5 && (z - 1.0).abs() < 1e-5, "{x} {z}");
    }

    #[test]
    fn default_city_meshes_are_chunked() {
        let map = crate::map::load_default().unwrap();
        let meshes = build_city_meshes(&map);
        let building_chunks = meshes
            .chunks
            .iter()
            .filter(|c| c.layer == MapLayer::Buildings)
            .count();
        assert!(building_chunks >= 6, "{building_chunks}");
        assert!(meshes.triangle_count() > 30_000);
        for c in &meshes.chunks {
            assert!(
                c.mesh
                    .indices
                    .iter()
                    .all(|&i| (i as usize) < c.mesh.positions.len())
            );
            assert!(c.mesh.positions.iter().flatten().all(|v| v.is_finite()));
        }
    }
}
