//! Traffic: every road segment a traffic feed reports is drawn over its road, coloured
//! by speed against free flow. Geometry is built once per chunk; later updates only
//! rewrite the colours of that chunk's mesh.

use std::collections::HashMap;
use std::ops::Range;

use bevy::prelude::*;

use super::super::live::{ChangedSlots, DomainVisibility, Live};
use super::super::scene::bevy_mesh_with;
use super::super::{AppSystems, City};
use super::speed_colour;
use crate::feeds::{Domain, EntityKind};
use crate::map::mesh::{self, CHUNK_SIZE_M, MeshData};

/// Above the road ribbons.
const TRAFFIC_Y: f32 = mesh::ROAD_Y + 0.2;

struct TrafficChunk {
    data: MeshData,
    entity: Option<Entity>,
    handle: Option<Handle<Mesh>>,
    geometry_dirty: bool,
    colours_dirty: bool,
}

/// Where each traffic segment's vertices live.
#[derive(Resource, Default)]
pub struct TrafficLayer {
    chunks: HashMap<[i32; 2], TrafficChunk>,
    segments: HashMap<u32, ([i32; 2], Range<usize>)>,
    pub segment_count: usize,
}

#[derive(Component)]
pub struct TrafficChunkMarker;

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<TrafficLayer>().add_systems(
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

/// A road segment no feed reports any more (the trust overlay's grey).
const NO_DATA_SRGB: u32 = 0x5A6270;

fn update_traffic(
    changed: Res<ChangedSlots>,
    live: Option<Res<Live>>,
    city: Res<City>,
    mut layer: ResMut<TrafficLayer>,
) {
    let Some(live) = live else { return };
    let layer = &mut *layer;
    for &slot in &changed.0 {
        let Some(e) = live.state.entity(slot) else {
            // The segment has left its feed: drawn as a road without data.
            if let Some((key, range)) = layer.segments.get(&slot)
                && let Some(chunk) = layer.chunks.get_mut(key)
            {
                let no_data = crate::map::mesh::linear_from_srgb(NO_DATA_SRGB);
                for c in &mut chunk.data.colors[range.clone()] {
                    *c = no_data;
                }
                chunk.colours_dirty = true;
            }
            continue;
        };
        let Some(ratio) = speed_ratio(e) else {
            continue;
        };
        let colour = speed_colour(ratio);
        if let Some((key, range)) = layer.segments.get(&slot) {
            if let Some(chunk) = layer.chunks.get_mut(key) {
                for c in &mut chunk.data.colors[range.clone()] {
                    *c = colour;
                }
                chunk.colours_dirty = true;
            }
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
        // Match the road's own width when the segment is one of the map's roads.
        let width =
            e.id.rsplit_once("road-")
                .and_then(|(_, n)| n.parse::<usize>().ok())
                .and_then(|i| city.map.roads.get(i))
                .map_or(8.0, |r| r.width_m.max(5.0));
        let key = [
            (local[0].0 / CHUNK_SIZE_M).floor() as i32,
            (local[0].1 / CHUNK_SIZE_M).floor() as i32,
        ];
        let chunk = layer.chunks.entry(key).or_insert_with(|| TrafficChunk {
            data: MeshData::default(),
            entity: None,
            handle: None,
            geometry_dirty: false,
            colours_dirty: false,
        });
        let start = chunk.data.positions.len();
        mesh::add_ribbon(
            &mut chunk.data,
            &geo::LineString::from(local),
            width,
            TRAFFIC_Y,
            colour,
        );
        let end = chunk.data.positions.len();
        chunk.geometry_dirty = true;
        layer.segments.insert(slot, (key, start..end));
        layer.segment_count += 1;
    }
}

fn sync_traffic_meshes(
    mut commands: Commands,
    mut layer: ResMut<TrafficLayer>,
    mut meshes: ResMut<Assets<Mesh>>,
    flat: Res<super::super::scene::FlatMaterial>,
) {
    let material = flat.0.clone();
    for chunk in layer.chunks.values_mut() {
        if chunk.geometry_dirty {
            chunk.geometry_dirty = false;
            chunk.colours_dirty = false;
            let handle = meshes.add(bevy_mesh_with(
                chunk.data.clone(),
                bevy::asset::RenderAssetUsages::default(),
            ));
            match chunk.entity {
                Some(e) => {
                    commands.entity(e).insert(Mesh3d(handle.clone()));
                }
                None => {
                    let e = commands
                        .spawn((
                            Name::new("Traffic chunk"),
                            TrafficChunkMarker,
                            Mesh3d(handle.clone()),
                            MeshMaterial3d(material.clone()),
                        ))
                        .id();
                    chunk.entity = Some(e);
                }
            }
            if let Some(old) = chunk.handle.replace(handle) {
                meshes.remove(&old);
            }
        } else if chunk.colours_dirty {
            chunk.colours_dirty = false;
            if let Some(mut m) = chunk.handle.as_ref().and_then(|h| meshes.get_mut(h)) {
                m.insert_attribute(Mesh::ATTRIBUTE_COLOR, chunk.data.colors.clone());
            }
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
