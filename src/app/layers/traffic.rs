//! Traffic: every road segment a traffic feed reports is drawn over its road, coloured
//! by speed against free flow. Geometry is built once per chunk and lives on the GPU
//! only; each segment's colour is one texel of a small colour texture the shader
//! (`shaders/traffic.wgsl`) looks up by the segment number each vertex carries, so a
//! traffic update rewrites a few bytes per segment and re-uploads no mesh.

use std::collections::HashMap;

use bevy::asset::{RenderAssetUsages, uuid_handle};
use bevy::prelude::*;
use bevy::render::render_resource::{AsBindGroup, Extent3d, TextureDimension, TextureFormat};
use bevy::shader::ShaderRef;

use super::super::live::{ChangedSlots, DomainVisibility, Live};
use super::super::scene::bevy_mesh_with;
use super::super::{AppSystems, City};
use super::speed_colour;
use crate::feeds::{Domain, EntityKind};
use crate::map::mesh::{self, CHUNK_SIZE_M, MeshData};

/// Above the road ribbons.
const TRAFFIC_Y: f32 = mesh::ROAD_Y + 0.2;
const TRAFFIC_SHADER: Handle<Shader> = uuid_handle!("3b1f6c2e-7d4a-4e8b-9c21-5f0a8d6e4b17");
/// Texels per row of the colour texture (rows are added as segments arrive).
pub const COLOURS_PER_ROW: u32 = 1024;

/// Draws traffic ribbons in their segment's colour: `uv.x` of every vertex is the
/// segment's number, the texel of `colours` that holds its colour.
#[derive(Asset, TypePath, AsBindGroup, Debug, Clone)]
pub struct TrafficMaterial {
    #[texture(0)]
    pub colours: Handle<Image>,
}

impl Material for TrafficMaterial {
    fn fragment_shader() -> ShaderRef {
        TRAFFIC_SHADER.into()
    }
}

/// One chunk's ribbons. The geometry is kept here (positions, normals, segment
/// numbers, indices; no colours) only to append segments that arrive later; the mesh
/// asset itself is render-world only.
struct TrafficChunk {
    geometry: MeshData,
    entity: Option<Entity>,
    handle: Option<Handle<Mesh>>,
    dirty: bool,
}

/// Where each traffic segment is drawn and which texel holds its colour.
#[derive(Resource, Default)]
pub struct TrafficLayer {
    chunks: HashMap<[i32; 2], TrafficChunk>,
    /// Live slot → segment number (texel of the colour texture), in the state shown.
    segments: HashMap<u32, u32>,
    /// Feed and id → segment number: a road keeps its ribbon and texel whichever state
    /// is shown (now, or the timeline's past).
    by_key: HashMap<(u32, String), u32>,
    /// The [`Live::shown_epoch`] drawn.
    epoch: u64,
    pub segment_count: usize,
    colours: Option<Handle<Image>>,
    material: Option<Handle<TrafficMaterial>>,
    /// The material changed (the texture grew): chunk entities take the new one.
    material_changed: bool,
}

impl TrafficLayer {
    /// The colour texture, once a segment has been drawn.
    pub fn colours(&self) -> Option<&Handle<Image>> {
        self.colours.as_ref()
    }

    /// The texel index of a live slot's segment.
    pub fn segment_of(&self, slot: u32) -> Option<u32> {
        self.segments.get(&slot).copied()
    }
}

#[derive(Component)]
pub struct TrafficChunkMarker;

pub(super) fn plugin(app: &mut App) {
    app.world_mut()
        .resource_mut::<Assets<Shader>>()
        .insert(
            TRAFFIC_SHADER.id(),
            Shader::from_wgsl(
                include_str!("../../../shaders/traffic.wgsl"),
                "shaders/traffic.wgsl",
            ),
        )
        .expect("the traffic shader handle is a fixed, valid id");
    app.add_plugins(MaterialPlugin::<TrafficMaterial>::default())
        .init_resource::<TrafficLayer>()
        .add_systems(
            Update,
            (update_traffic, sync_traffic_meshes, traffic_visibility)
                .chain()
                .in_set(AppSystems::SyncScene),
        );
}

/// Speed as a share of free flow: the feed's `speedRatio` when it gives one, else the
/// average speed against a 50 km/h city free flow.
pub fn speed_ratio(entity: &crate::state::LiveEntity) -> Option<f32> {
    if let Some(r) = entity.fields.get("speedRatio").and_then(|v| v.as_f64()) {
        return Some(r as f32);
    }
    match entity.kind {
        EntityKind::TrafficFlow {
            average_speed_kmh: Some(v),
            ..
        } => Some((v / 50.0) as f32),
        _ => None,
    }
}

/// How wide a segment's ribbon is drawn: the road's own width when the segment is one
/// of the map's roads, else 8 m.
pub fn ribbon_width_m(e: &crate::state::LiveEntity, map: &crate::map::CityMap) -> f32 {
    e.id.rsplit_once("road-")
        .and_then(|(_, n)| n.parse::<usize>().ok())
        .and_then(|i| map.roads.get(i))
        .map_or(8.0, |r| r.width_m.max(5.0))
}

/// A road segment no feed reports any more (the trust overlay's grey).
const NO_DATA_SRGB: u32 = 0x5A6270;

/// An sRGB texel from a linear colour (the texture is sRGB, as the screen is).
fn texel(linear: [f32; 4]) -> [u8; 4] {
    Color::LinearRgba(LinearRgba::from_f32_array(linear))
        .to_srgba()
        .to_u8_array()
}

fn no_data_texel() -> [u8; 4] {
    [
        (NO_DATA_SRGB >> 16) as u8,
        (NO_DATA_SRGB >> 8) as u8,
        NO_DATA_SRGB as u8,
        255,
    ]
}

/// A colour texture with room for `rows` rows, every texel "no data".
fn colour_image(rows: u32) -> Image {
    Image::new_fill(
        Extent3d {
            width: COLOURS_PER_ROW,
            height: rows.max(1),
            depth_or_array_layers: 1,
        },
        TextureDimension::D2,
        &no_data_texel(),
        TextureFormat::Rgba8UnormSrgb,
        RenderAssetUsages::default(),
    )
}

#[allow(clippy::too_many_arguments)]
fn update_traffic(
    changed: Res<ChangedSlots>,
    live: Option<Res<Live>>,
    city: Res<City>,
    mut layer: ResMut<TrafficLayer>,
    mut images: ResMut<Assets<Image>>,
    mut materials: ResMut<Assets<TrafficMaterial>>,
) {
    let Some(live) = live else { return };
    let layer = &mut *layer;
    // New colours, written into the texture at the end in one go.
    let mut writes: Vec<(u32, [u8; 4])> = Vec::new();
    let mut all = Vec::new();
    if layer.epoch != live.shown_epoch {
        // Another state shown: every road without data until the new state says.
        layer.epoch = live.shown_epoch;
        layer.segments.clear();
        writes.extend((0..layer.segment_count as u32).map(|s| (s, no_data_texel())));
        all = live.shown().iter().map(|(slot, _)| slot).collect();
    }
    for &slot in changed.0.iter().chain(&all) {
        let Some(e) = live.shown().entity(slot) else {
            // The segment has left its feed: drawn as a road without data.
            if let Some(&segment) = layer.segments.get(&slot) {
                writes.push((segment, no_data_texel()));
            }
            continue;
        };
        let Some(ratio) = speed_ratio(e) else {
            continue;
        };
        let colour = texel(speed_colour(ratio));
        if let Some(&segment) = layer.segments.get(&slot) {
            writes.push((segment, colour));
            continue;
        }
        if let Some(&segment) = layer.by_key.get(&(e.feed, e.id.clone())) {
            layer.segments.insert(slot, segment);
            writes.push((segment, colour));
            continue;
        }
        let Some(line) = &e.line else { continue };
        if line.len() < 2 {
            continue;
        }
        let local: Vec<(f64, f64)> = line
            .iter()
            .map(|&[lon, lat]| {
                let [x, y] = city.map.frame.local_from_wgs84(lon, lat);
                (x, y)
            })
            .collect();
        let width = ribbon_width_m(e, &city.map);
        let key = [
            (local[0].0 / CHUNK_SIZE_M).floor() as i32,
            (local[0].1 / CHUNK_SIZE_M).floor() as i32,
        ];
        let segment = layer.segment_count as u32;
        let chunk = layer.chunks.entry(key).or_insert_with(|| TrafficChunk {
            geometry: MeshData::default(),
            entity: None,
            handle: None,
            dirty: false,
        });
        let g = &mut chunk.geometry;
        let start = g.positions.len();
        mesh::add_ribbon(g, &geo::LineString::from(local), width, TRAFFIC_Y, [1.0; 4]);
        if g.positions.len() == start {
            continue;
        }
        // Each vertex carries its segment's number; the colour lives in the texture.
        g.colors.clear();
        for uv in &mut g.uvs[start..] {
            *uv = [segment as f32, 0.0];
        }
        chunk.dirty = true;
        layer.segments.insert(slot, segment);
        layer.by_key.insert((e.feed, e.id.clone()), segment);
        layer.segment_count += 1;
        writes.push((segment, colour));
    }
    if writes.is_empty() {
        return;
    }
    let rows_needed = (layer.segment_count as u32)
        .div_ceil(COLOURS_PER_ROW)
        .max(1);
    let rows_now = layer
        .colours
        .as_ref()
        .and_then(|h| images.get(h))
        .map(|i| i.height());
    if rows_now.is_none_or(|rows| rows < rows_needed) {
        // A larger texture (twice the rows, so growth is rare) in a new asset, with a
        // new material: nothing drawn keeps pointing at the old one.
        let mut image = colour_image(rows_needed.next_power_of_two());
        if let (Some(old), Some(data)) = (
            layer.colours.as_ref().and_then(|h| images.get(h)),
            image.data.as_mut(),
        ) && let Some(old_data) = &old.data
        {
            data[..old_data.len()].copy_from_slice(old_data);
        }
        let handle = images.add(image);
        if let Some(old) = layer.colours.replace(handle.clone()) {
            images.remove(&old);
        }
        let material = materials.add(TrafficMaterial { colours: handle });
        if let Some(old) = layer.material.replace(material) {
            materials.remove(&old);
        }
        layer.material_changed = true;
    }
    let Some(mut image) = layer.colours.as_ref().and_then(|h| images.get_mut(h)) else {
        return;
    };
    let Some(data) = image.data.as_mut() else {
        return;
    };
    for (segment, rgba) in writes {
        let at = segment as usize * 4;
        data[at..at + 4].copy_from_slice(&rgba);
    }
}

fn sync_traffic_meshes(
    mut commands: Commands,
    mut layer: ResMut<TrafficLayer>,
    mut meshes: ResMut<Assets<Mesh>>,
) {
    let layer = &mut *layer;
    let Some(material) = layer.material.clone() else {
        return;
    };
    let new_material = std::mem::take(&mut layer.material_changed);
    for chunk in layer.chunks.values_mut() {
        if chunk.dirty {
            chunk.dirty = false;
            // Render-world only: the main world keeps no copy once it is uploaded.
            let mesh = bevy_mesh_with(chunk.geometry.clone(), RenderAssetUsages::RENDER_WORLD);
            // The same asset is replaced: its id, and the entity's handle, stay.
            match chunk.handle.as_ref().map(Handle::id) {
                Some(id) if meshes.contains(id) => {
                    let _ = meshes.insert(id, mesh);
                }
                _ => {
                    let handle = meshes.add(mesh);
                    if let Some(e) = chunk.entity {
                        commands.entity(e).insert(Mesh3d(handle.clone()));
                    }
                    chunk.handle = Some(handle);
                }
            }
        }
        let Some(handle) = chunk.handle.clone() else {
            continue;
        };
        match chunk.entity {
            None => {
                let e = commands
                    .spawn((
                        Name::new("Traffic chunk"),
                        TrafficChunkMarker,
                        Mesh3d(handle),
                        MeshMaterial3d(material.clone()),
                    ))
                    .id();
                chunk.entity = Some(e);
            }
            Some(e) if new_material => {
                commands.entity(e).insert(MeshMaterial3d(material.clone()));
            }
            Some(_) => {}
        }
    }
}

fn traffic_visibility(
    visibility: Res<DomainVisibility>,
    mut chunks: Query<&mut Visibility, With<TrafficChunkMarker>>,
) {
    let shown = visibility.is_visible(Domain::Traffic);
    for mut v in &mut chunks {
        let want = if shown {
            Visibility::Inherited
        } else {
            Visibility::Hidden
        };
        if *v != want {
            *v = want;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::bench_markers::{apply_updates, headless_live_app};
    use crate::feeds::EntityUpdate;
    use crate::map::CityMap;

    fn segment(map: &CityMap, i: usize, speed_kmh: f64) -> EntityUpdate {
        let line: Vec<[f64; 2]> = map.roads[i]
            .line
            .0
            .iter()
            .map(|c| map.frame.wgs84_from_local(c.x, c.y))
            .collect();
        EntityUpdate {
            id: format!("road-{i}"),
            entity_type: "TrafficFlowObserved".into(),
            kind: EntityKind::TrafficFlow {
                average_speed_kmh: Some(speed_kmh),
                intensity: None,
                occupancy: None,
                congested: None,
            },
            position: Some(line[0]),
            line: Some(line),
            observed_at_ms: Some(0),
            fields: Default::default(),
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    #[derive(Resource, Default)]
    struct MeshEvents(usize);

    fn count_mesh_events(mut events: MessageReader<AssetEvent<Mesh>>, mut n: ResMut<MeshEvents>) {
        n.0 += events.read().count();
    }

    #[test]
    fn a_speed_update_rewrites_colour_texels_and_re_uploads_no_mesh() {
        let mut app = headless_live_app();
        app.init_asset::<TrafficMaterial>()
            .init_resource::<TrafficLayer>()
            .init_resource::<MeshEvents>()
            .add_systems(
                Update,
                (update_traffic, sync_traffic_meshes)
                    .chain()
                    .in_set(AppSystems::SyncScene),
            )
            .add_systems(Last, count_mesh_events);
        let n = 300;
        let (free, jammed): (Vec<_>, Vec<_>) = {
            let map = &app.world().resource::<City>().map;
            (0..n)
                .map(|i| (segment(map, i, 50.0), segment(map, i, 5.0)))
                .unzip()
        };
        apply_updates(&mut app, 0, free);
        app.update();
        app.update();
        let layer = app.world().resource::<TrafficLayer>();
        assert_eq!(layer.segment_count, n);
        // The chunk meshes live on the GPU only.
        let meshes = app.world().resource::<Assets<Mesh>>();
        assert!(meshes.len() >= 2, "{} chunk meshes", meshes.len());
        assert!(
            meshes
                .iter()
                .all(|(_, m)| m.asset_usage == RenderAssetUsages::RENDER_WORLD)
        );
        let colours = layer.colours().expect("a colour texture").clone();
        let texels = |app: &App| -> Vec<[u8; 4]> {
            let image = app
                .world()
                .resource::<Assets<Image>>()
                .get(&colours)
                .unwrap();
            image.data.as_ref().unwrap()[..n * 4]
                .chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect()
        };
        let green = texel(speed_colour(1.0));
        assert!(texels(&app).iter().all(|t| *t == green));

        // Every segment jams: the texels turn red, and not one mesh is touched.
        app.world_mut().resource_mut::<MeshEvents>().0 = 0;
        apply_updates(&mut app, 0, jammed);
        app.update();
        app.update();
        let red = texel(speed_colour(0.1));
        assert_ne!(red, green);
        assert!(texels(&app).iter().all(|t| *t == red));
        assert_eq!(
            app.world().resource::<MeshEvents>().0,
            0,
            "a colour update touched a mesh"
        );
    }
}
