//! Economy choropleth: area entities (closed outlines such as statistical grid cells or
//! districts) filled by their `footfallPerHour`, on a sequential violet ramp relative
//! to the busiest area. Redrawn when any area's figures change.

use bevy::prelude::*;
use geo::{LineString, Polygon};

use super::super::live::{ChangedSlots, DomainVisibility, Live};
use super::super::scene::bevy_mesh;
use super::super::{AppSystems, City};
use crate::feeds::Domain;
use crate::map::mesh::{self, MeshData, linear_from_srgb};
use crate::state::LiveEntity;

/// Just above the heat map, below the roads.
const CHOROPLETH_Y: f32 = 0.45;
/// The indicator the choropleth shows.
pub const INDICATOR: &str = "footfallPerHour";

#[derive(Component)]
pub struct ChoroplethSheet;

#[derive(Resource, Default)]
pub struct ChoroplethLayer {
    mesh: Option<Handle<Mesh>>,
    entity: Option<Entity>,
    /// Areas drawn and the largest indicator value, for the legend.
    pub areas: usize,
    pub max_value: f64,
    /// The [`Live::shown_epoch`] drawn.
    epoch: u64,
}

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<ChoroplethLayer>().add_systems(
        Update,
        (update_choropleth, choropleth_visibility)
            .chain()
            .in_set(AppSystems::SyncScene),
    );
}

fn is_area(e: &LiveEntity) -> bool {
    e.line
        .as_ref()
        .is_some_and(|l| l.len() >= 4 && l.first() == l.last())
}

/// An area the choropleth fills: a closed outline with the indicator. A closed road
/// (a roundabout reported by a traffic feed) is not one.
fn is_indicator_area(e: &LiveEntity) -> bool {
    is_area(e) && e.fields.get(INDICATOR).and_then(|v| v.as_f64()).is_some()
}

/// Sequential ramp: quiet areas deep violet, the busiest bright magenta.
pub fn ramp(t: f64) -> [f32; 4] {
    let (a, b) = (linear_from_srgb(0x2A1B4D), linear_from_srgb(0xE05CFF));
    let t = t.clamp(0.0, 1.0) as f32;
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
        0.32,
    ]
}

#[allow(clippy::too_many_arguments)]
fn update_choropleth(
    mut commands: Commands,
    changed: Res<ChangedSlots>,
    live: Option<Res<Live>>,
    city: Res<City>,
    mut layer: ResMut<ChoroplethLayer>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
    mut material: Local<Option<Handle<StandardMaterial>>>,
) {
    let Some(live) = live else { return };
    // Redrawn when an area changes, or (while areas are drawn) when one may have gone,
    // or another state is shown.
    let shown = live.shown();
    let epoch = std::mem::replace(&mut layer.epoch, live.shown_epoch) != live.shown_epoch;
    let touched = epoch
        || changed.0.iter().any(|&s| match shown.entity(s) {
            Some(e) => is_indicator_area(e) || (layer.areas > 0 && is_area(e)),
            None => layer.areas > 0,
        });
    if !touched {
        return;
    }
    let areas: Vec<(&LiveEntity, f64)> = shown
        .iter()
        .filter(|(_, e)| is_indicator_area(e))
        .filter_map(|(_, e)| Some((e, e.fields.get(INDICATOR)?.as_f64()?)))
        .collect();
    let max_value = areas.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1.0);
    let mut data = MeshData::default();
    let mut earcut = earcut::Earcut::new();
    for (e, value) in &areas {
        let Some(ring) = &e.line else { continue };
        let local: Vec<(f64, f64)> = ring[..ring.len() - 1]
            .iter()
            .map(|&[lon, lat]| {
                let [x, y] = city.map.frame.local_from_wgs84(lon, lat);
                (x, y)
            })
            .collect();
        let polygon = Polygon::new(LineString::from(local), vec![]);
        mesh::add_flat_polygon(
            &mut data,
            &mut earcut,
            &polygon,
            CHOROPLETH_Y,
            ramp(value / max_value),
        );
    }
    layer.areas = areas.len();
    layer.max_value = max_value;
    // A mesh without vertices or triangles (areas that triangulate to nothing) is
    // never added: bevy's mesh allocator skips allocating
    // it but still copies it, logging "Use-after-free" (twice) each time.
    if data.positions.is_empty() || data.indices.is_empty() {
        if let Some(e) = layer.entity.take() {
            commands.entity(e).despawn();
        }
        if let Some(old) = layer.mesh.take() {
            meshes.remove(&old);
        }
        return;
    }
    let handle = meshes.add(bevy_mesh(data));
    if let Some(old) = layer.mesh.replace(handle.clone()) {
        meshes.remove(&old);
    }
    let material = material
        .get_or_insert_with(|| {
            materials.add(StandardMaterial {
                base_color: Color::WHITE,
                unlit: true,
                alpha_mode: AlphaMode::Blend,
                ..default()
            })
        })
        .clone();
    match layer.entity {
        Some(e) => {
            commands.entity(e).insert(Mesh3d(handle));
        }
        None => {
            let e = commands
                .spawn((
                    Name::new("Economy choropleth"),
                    ChoroplethSheet,
                    Mesh3d(handle),
                    MeshMaterial3d(material),
                ))
                .id();
            layer.entity = Some(e);
        }
    }
}

fn choropleth_visibility(
    visibility: Res<DomainVisibility>,
    mut sheets: Query<&mut Visibility, With<ChoroplethSheet>>,
) {
    let want = if visibility.is_visible(Domain::Economy) {
        Visibility::Inherited
    } else {
        Visibility::Hidden
    };
    for mut v in &mut sheets {
        if *v != want {
            *v = want;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::bench_markers::{apply_updates, headless_live_app};
    use crate::feeds::{EntityKind, EntityUpdate, FieldValue};

    fn ring(frame: &crate::geo_frame::GeoFrame, id: &str, kind: EntityKind) -> EntityUpdate {
        let line: Vec<[f64; 2]> = [
            (0.0, 0.0),
            (80.0, 0.0),
            (80.0, 80.0),
            (0.0, 80.0),
            (0.0, 0.0),
        ]
        .iter()
        .map(|&(e, n)| frame.wgs84_from_local(e, n))
        .collect();
        EntityUpdate {
            id: id.into(),
            entity_type: "Test".into(),
            kind,
            position: Some(line[0]),
            line: Some(line),
            observed_at_ms: Some(0),
            fields: Default::default(),
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn a_roundabout_in_a_traffic_feed_never_makes_an_empty_choropleth_mesh() {
        // An empty mesh is what made bevy log "Use-after-free" twice per traffic
        // update: a closed road segment counted as an area, and no area had figures.
        let mut app = headless_live_app();
        app.init_resource::<ChoroplethLayer>()
            .add_systems(Update, update_choropleth.in_set(AppSystems::SyncScene));
        let frame = app.world().resource::<City>().map.frame;
        let roundabout = EntityKind::TrafficFlow {
            average_speed_kmh: Some(20.0),
            intensity: None,
            occupancy: None,
            congested: None,
        };
        for _ in 0..3 {
            apply_updates(
                &mut app,
                0,
                [ring(&frame, "roundabout", roundabout.clone())],
            );
            app.update();
        }
        let meshes = app.world().resource::<Assets<Mesh>>();
        assert_eq!(meshes.len(), 0, "a mesh for no area");
        assert!(app.world().resource::<ChoroplethLayer>().entity.is_none());

        // A real area with figures is drawn.
        let mut area = ring(&frame, "cell-1", EntityKind::Generic);
        area.fields
            .insert(INDICATOR.into(), FieldValue::Number(1200.0));
        let economy = crate::feeds::Domain::ALL
            .iter()
            .position(|&d| d == crate::feeds::Domain::Economy)
            .unwrap() as u32;
        apply_updates(&mut app, economy, [area]);
        app.update();
        let layer = app.world().resource::<ChoroplethLayer>();
        assert_eq!(layer.areas, 1);
        let handle = layer.mesh.clone().expect("the area's mesh");
        let mesh = app.world().resource::<Assets<Mesh>>().get(&handle).unwrap();
        assert!(mesh.count_vertices() > 0);
    }
}
