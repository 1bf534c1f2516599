//! The 3D city: chunk meshes per layer, the building material with our WGSL shader,
//! the ground, selection highlight, and layer visibility.

use bevy::asset::{RenderAssetUsages, uuid_handle};
use bevy::mesh::{Indices, PrimitiveTopology};
use bevy::prelude::*;
use bevy::render::render_resource::AsBindGroup;
use bevy::shader::ShaderRef;

use super::theme;
use super::{AppSystems, City, Selection};
use crate::map::mesh::{self, MapLayer, MeshData};

const BUILDING_SHADER: Handle<Shader> = uuid_handle!("0d9f4f52-6c1e-4c53-9f0e-4a7d2b8e51c3");

/// Material for merged building meshes, drawn by `shaders/buildings.wgsl`.
#[derive(Asset, TypePath, AsBindGroup, Debug, Clone)]
pub struct BuildingMaterial {
    #[uniform(0)]
    pub low_colour: LinearRgba,
    #[uniform(0)]
    pub high_colour: LinearRgba,
    #[uniform(0)]
    pub edge_colour: LinearRgba,
    /// x: full-tint height (m), y: storey height (m), z: brightness.
    #[uniform(0)]
    pub params: Vec4,
}

impl Material for BuildingMaterial {
    fn fragment_shader() -> ShaderRef {
        BUILDING_SHADER.into()
    }
}

/// Which map layers are shown; toggled from the layer panel.
#[derive(Resource, Debug, Clone)]
pub struct LayerVisibility(pub std::collections::BTreeMap<MapLayer, bool>);

impl Default for LayerVisibility {
    fn default() -> Self {
        Self(MapLayer::ALL.iter().map(|&l| (l, true)).collect())
    }
}

impl LayerVisibility {
    pub fn is_visible(&self, layer: MapLayer) -> bool {
        self.0.get(&layer).copied().unwrap_or(true)
    }
}

/// A chunk mesh entity of one layer.
#[derive(Component)]
pub struct ChunkLayer(pub MapLayer);

/// The highlight drawn around the selected building.
#[derive(Component)]
struct SelectionHighlight;

/// Scene facts the status bar shows.
#[derive(Resource, Default, Debug, Clone)]
pub struct SceneStats {
    pub chunk_entities: usize,
    pub triangles: usize,
    pub mesh_ms: f64,
}

/// The one material of flat layers (map areas, traffic, dispatch overlay): colour from
/// the vertex colours, unlit so the palette is exact.
#[derive(Resource, Clone)]
pub struct FlatMaterial(pub Handle<StandardMaterial>);

impl FromWorld for FlatMaterial {
    fn from_world(world: &mut World) -> Self {
        Self(
            world
                .resource_mut::<Assets<StandardMaterial>>()
                .add(StandardMaterial {
                    base_color: Color::WHITE,
                    unlit: true,
                    ..default()
                }),
        )
    }
}

pub(super) fn plugin(app: &mut App) {
    app.world_mut()
        .resource_mut::<Assets<Shader>>()
        .insert(
            BUILDING_SHADER.id(),
            Shader::from_wgsl(
                include_str!("../../shaders/buildings.wgsl"),
                "shaders/buildings.wgsl",
            ),
        )
        .expect("the building shader handle is a fixed, valid id");
    app.add_plugins(MaterialPlugin::<BuildingMaterial>::default())
        .init_resource::<FlatMaterial>()
        .init_resource::<LayerVisibility>()
        .init_resource::<SceneStats>()
        .add_systems(Startup, spawn_city)
        .add_systems(
            Update,
            (apply_layer_visibility, update_selection_highlight).in_set(AppSystems::SyncScene),
        );
}

/// A render-only mesh (its CPU copy is freed after upload).
pub fn bevy_mesh(data: MeshData) -> Mesh {
    bevy_mesh_with(data, RenderAssetUsages::RENDER_WORLD)
}

/// A mesh with the given usage; `RenderAssetUsages::default()` keeps it editable.
pub fn bevy_mesh_with(data: MeshData, usage: RenderAssetUsages) -> Mesh {
    let MeshData {
        positions,
        normals,
        uvs,
        colors,
        indices,
    } = data;
    let mut mesh = Mesh::new(PrimitiveTopology::TriangleList, usage);
    mesh.insert_attribute(Mesh::ATTRIBUTE_POSITION, positions);
    mesh.insert_attribute(Mesh::ATTRIBUTE_NORMAL, normals);
    if !uvs.is_empty() {
        mesh.insert_attribute(Mesh::ATTRIBUTE_UV_0, uvs);
    }
    if !colors.is_empty() {
        mesh.insert_attribute(Mesh::ATTRIBUTE_COLOR, colors);
    }
    mesh.insert_indices(Indices::U32(indices));
    mesh
}

fn spawn_city(
    mut commands: Commands,
    city: Res<City>,
    mut stats: ResMut<SceneStats>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut building_materials: ResMut<Assets<BuildingMaterial>>,
    mut flat_materials: ResMut<Assets<StandardMaterial>>,
    flat: Res<FlatMaterial>,
) {
    let start = std::time::Instant::now();
    let city_meshes = mesh::build_city_meshes(&city.map);
    stats.mesh_ms = start.elapsed().as_secs_f64() * 1000.0;
    stats.triangles = city_meshes.triangle_count();
    stats.chunk_entities = city_meshes.chunks.len();

    let building_material = building_materials.add(BuildingMaterial {
        low_colour: theme::BUILDING_LOW.to_linear(),
        high_colour: theme::BUILDING_HIGH.to_linear(),
        edge_colour: theme::BUILDING_EDGE.to_linear(),
        params: Vec4::new(
            theme::BUILDING_TINT_FULL_M,
            crate::map::footprint::METRES_PER_LEVEL,
            1.0,
            0.0,
        ),
    });
    let flat_material = flat.0.clone();

    for chunk in city_meshes.chunks {
        let layer = chunk.layer;
        let handle = meshes.add(bevy_mesh(chunk.mesh));
        let name = Name::new(format!("{:?} chunk {:?}", layer, chunk.chunk));
        if layer == MapLayer::Buildings {
            commands.spawn((
                name,
                ChunkLayer(layer),
                Mesh3d(handle),
                MeshMaterial3d(building_material.clone()),
            ));
        } else {
            commands.spawn((
                name,
                ChunkLayer(layer),
                Mesh3d(handle),
                MeshMaterial3d(flat_material.clone()),
            ));
        }
    }

    // Ground: a plane under the whole city, a little larger than it.
    let [min_e, min_n, max_e, max_n] = city.map.local_bounds();
    let margin = 0.15 * (max_e - min_e).max(max_n - min_n) + 200.0;
    let (w, d) = (
        (max_e - min_e + 2.0 * margin) as f32,
        (max_n - min_n + 2.0 * margin) as f32,
    );
    let centre =
        crate::geo_frame::world_from_local((min_e + max_e) * 0.5, (min_n + max_n) * 0.5, 0.0);
    commands.spawn((
        Name::new("Ground"),
        Mesh3d(meshes.add(Plane3d::default().mesh().size(w, d))),
        MeshMaterial3d(flat_materials.add(StandardMaterial {
            base_color: theme::GROUND,
            unlit: true,
            ..default()
        })),
        Transform::from_translation(Vec3::from_array(centre)),
    ));
    info!(
        "city scene: {} chunk meshes, {} triangles, meshed in {:.0} ms",
        stats.chunk_entities, stats.triangles, stats.mesh_ms
    );
}

fn apply_layer_visibility(
    visibility: Res<LayerVisibility>,
    mut chunks: Query<(&ChunkLayer, &mut Visibility)>,
) {
    if !visibility.is_changed() {
        return;
    }
    for (layer, mut vis) in &mut chunks {
        *vis = if visibility.is_visible(layer.0) {
            Visibility::Inherited
        } else {
            Visibility::Hidden
        };
    }
}

/// Outlines the selected building's roof and base in the accent colour.
fn update_selection_highlight(
    mut commands: Commands,
    selection: Res<Selection>,
    city: Res<City>,
    existing: Query<Entity, With<SelectionHighlight>>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    if !selection.is_changed() {
        return;
    }
    for e in &existing {
        commands.entity(e).despawn();
    }
    let Some(index) = selection.building else {
        return;
    };
    let Some(building) = city.map.buildings.get(index) else {
        return;
    };
    let mut data = MeshData::default();
    let top = building.extent.height_m + 0.4;
    for ring in building.rings() {
        let mut closed = ring.clone();
        closed.close();
        mesh::add_ribbon(&mut data, &closed, 1.6, top, [1.0; 4]);
        mesh::add_ribbon(&mut data, &closed, 2.4, mesh::ROAD_Y + 0.3, [1.0; 4]);
    }
    commands.spawn((
        Name::new("Selection highlight"),
        SelectionHighlight,
        Mesh3d(meshes.add(bevy_mesh(data))),
        MeshMaterial3d(materials.add(StandardMaterial {
            base_color: theme::SELECTION,
            unlit: true,
            depth_bias: 50.0,
            ..default()
        })),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toggling_a_layer_hides_only_its_chunks() {
        let mut app = App::new();
        app.add_plugins(MinimalPlugins)
            .init_resource::<LayerVisibility>()
            .add_systems(Update, apply_layer_visibility);
        let roads = app
            .world_mut()
            .spawn((ChunkLayer(MapLayer::Roads), Visibility::Inherited))
            .id();
        let buildings = app
            .world_mut()
            .spawn((ChunkLayer(MapLayer::Buildings), Visibility::Inherited))
            .id();
        app.update();
        app.world_mut()
            .resource_mut::<LayerVisibility>()
            .0
            .insert(MapLayer::Roads, false);
        app.update();
        assert_eq!(
            app.world().get::<Visibility>(roads),
            Some(&Visibility::Hidden)
        );
        assert_eq!(
            app.world().get::<Visibility>(buildings),
            Some(&Visibility::Inherited)
        );
        app.world_mut()
            .resource_mut::<LayerVisibility>()
            .0
            .insert(MapLayer::Roads, true);
        app.update();
        assert_eq!(
            app.world().get::<Visibility>(roads),
            Some(&Visibility::Inherited)
        );
    }
}
