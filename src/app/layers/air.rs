//! Air quality heat map: the live stations' AQI interpolated on a translucent ground
//! sheet by our shader (`shaders/air_heatmap.wgsl`).

use bevy::asset::uuid_handle;
use bevy::prelude::*;
use bevy::render::render_resource::AsBindGroup;
use bevy::shader::ShaderRef;

use super::super::live::{ChangedSlots, DomainVisibility, Live};
use super::super::{AppSystems, City};
use crate::feeds::{Domain, EntityKind};
use crate::geo_frame::world_from_local;

const HEATMAP_SHADER: Handle<Shader> = uuid_handle!("6a0c7e1d-93b4-4c1f-8f0e-2d4b9a7c5e31");
/// Stations the shader interpolates at most.
pub const MAX_STATIONS: usize = 64;

#[derive(Asset, TypePath, AsBindGroup, Debug, Clone)]
pub struct HeatmapMaterial {
    /// xy: world x/z, z: AQI, w: used.
    #[uniform(0)]
    pub stations: [Vec4; MAX_STATIONS],
    /// x: count, y: influence radius (m), z: opacity.
    #[uniform(0)]
    pub params: Vec4,
}

impl Material for HeatmapMaterial {
    fn fragment_shader() -> ShaderRef {
        HEATMAP_SHADER.into()
    }
    fn alpha_mode(&self) -> AlphaMode {
        AlphaMode::Blend
    }
}

#[derive(Component)]
pub struct HeatmapSheet;

#[derive(Resource)]
struct HeatmapHandle(Handle<HeatmapMaterial>);

pub(super) fn plugin(app: &mut App) {
    app.world_mut()
        .resource_mut::<Assets<Shader>>()
        .insert(
            HEATMAP_SHADER.id(),
            Shader::from_wgsl(
                include_str!("../../../shaders/air_heatmap.wgsl"),
                "shaders/air_heatmap.wgsl",
            ),
        )
        .expect("the heat map shader handle is a fixed, valid id");
    app.add_plugins(MaterialPlugin::<HeatmapMaterial>::default())
        .add_systems(Startup, spawn_sheet)
        .add_systems(
            Update,
            (update_heatmap, sheet_visibility).in_set(AppSystems::SyncScene),
        );
}

fn spawn_sheet(
    mut commands: Commands,
    city: Res<City>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<HeatmapMaterial>>,
) {
    let [min_e, min_n, max_e, max_n] = city.map.local_bounds();
    let extent = (max_e - min_e).max(max_n - min_n).max(500.0);
    let material = materials.add(HeatmapMaterial {
        stations: [Vec4::ZERO; MAX_STATIONS],
        params: Vec4::new(0.0, (extent * 0.3).clamp(300.0, 3000.0) as f32, 0.28, 0.0),
    });
    let centre = world_from_local((min_e + max_e) * 0.5, (min_n + max_n) * 0.5, 0.4);
    commands.spawn((
        Name::new("Air quality heat map"),
        HeatmapSheet,
        Mesh3d(meshes.add(Plane3d::default().mesh().size(
            (max_e - min_e) as f32 + 400.0,
            (max_n - min_n) as f32 + 400.0,
        ))),
        MeshMaterial3d(material.clone()),
        Transform::from_translation(Vec3::from_array(centre)),
    ));
    commands.insert_resource(HeatmapHandle(material));
}

fn update_heatmap(
    changed: Res<ChangedSlots>,
    live: Option<Res<Live>>,
    handle: Option<Res<HeatmapHandle>>,
    mut materials: ResMut<Assets<HeatmapMaterial>>,
    mut drawn_epoch: Local<u64>,
) {
    let (Some(live), Some(handle)) = (live, handle) else {
        return;
    };
    let shown = live.shown();
    let epoch = std::mem::replace(&mut *drawn_epoch, live.shown_epoch) != live.shown_epoch;
    let touches_air = epoch
        || changed.0.iter().any(|&s| {
            matches!(
                shown.entity(s).map(|e| &e.kind),
                Some(EntityKind::AirQuality { .. })
            )
        });
    if !touches_air {
        return;
    }
    let Some(mut material) = materials.get_mut(&handle.0) else {
        return;
    };
    let mut n = 0;
    for (_, e) in shown.iter() {
        if n == MAX_STATIONS {
            break;
        }
        if let (EntityKind::AirQuality { aqi: Some(aqi), .. }, Some([east, north])) =
            (&e.kind, e.local)
        {
            let [x, _, z] = world_from_local(east, north, 0.0);
            material.stations[n] = Vec4::new(x, z, *aqi as f32, 1.0);
            n += 1;
        }
    }
    material.params.x = n as f32;
}

fn sheet_visibility(
    visibility: Res<DomainVisibility>,
    mut sheets: Query<&mut Visibility, With<HeatmapSheet>>,
) {
    if !visibility.is_changed() {
        return;
    }
    for mut v in &mut sheets {
        *v = if visibility.is_visible(Domain::Ecology) {
            Visibility::Inherited
        } else {
            Visibility::Hidden
        };
    }
}
