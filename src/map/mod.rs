//! The city map model and its loaders.
//!
//! Every source format is read into [`RawFeature`]s (WGS84 geometry + string tags),
//! then one shared pipeline classifies, validates and projects them into a
//! [`CityMap`] in local metres. Nothing downstream ever sees OSM tags' raw structure
//! or a file format: only buildings, roads, water, green and districts.

pub mod crs;
pub mod esri;
pub mod fgb;
pub mod footprint;
pub mod geojson;
pub mod graph;
pub mod labels;
pub mod mesh;
pub mod osm;
pub(crate) mod pbf_fixture;
pub mod pick;
pub mod rings;
pub mod schema;
pub mod shp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use geo::{Coord, LineString, MultiPolygon, Polygon};
use rayon::prelude::*;
use serde::Serialize;

use crate::geo_frame::{GeoFrame, is_valid_wgs84};
pub use footprint::{Extent, HeightSource};
use rings::Ring;

/// The embedded default city: Helsinki city centre (© OpenStreetMap contributors, ODbL).
pub const DEFAULT_MAP_PBF: &[u8] = include_bytes!("../../maps/helsinki.osm.pbf");
/// Name shown for the embedded default city.
pub const DEFAULT_MAP_NAME: &str = "Helsinki 赫尔辛基";
/// Attribution that must be visible wherever OSM-derived maps are drawn.
pub const OSM_ATTRIBUTION: &str = "© OpenStreetMap contributors (ODbL)";

/// Features farther than this from the city origin are not part of the city.
const MAX_DISTANCE_FROM_ORIGIN_M: f64 = 200_000.0;

/// Why a feature was left out of the map; counted and shown to the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Fewer than three distinct points in a ring, or fewer than two in a line.
    TooFewPoints,
    /// A ring crosses or touches itself.
    SelfIntersecting,
    /// A ring encloses no area.
    ZeroArea,
    /// NaN, infinite or out-of-range longitude/latitude, or coordinates that are not numbers.
    BadCoordinates,
    /// Far outside the city (more than 200 km from its centre).
    OutsideCity,
    /// A feature with no geometry.
    NullGeometry,
    /// A geometry type that cannot be drawn as that kind of feature (e.g. a point building).
    UnsupportedGeometry,
    /// Tags that describe nothing the map draws.
    UnknownTags,
    /// A way or relation referring to nodes or ways missing from the file.
    MissingReferences,
    /// Multipolygon member ways that do not join into closed rings.
    UnclosedRing,
    /// A hole lying outside every outer ring of its polygon.
    HoleOutsideOuter,
    /// A turn restriction through a way (`via` a way, not a node): routing does not
    /// follow it.
    ViaWayRestriction,
    /// A turn restriction without exactly one via node, or whose `from`/`to` ways do
    /// not pass through it.
    InvalidRestriction,
    /// A turn restriction that holds only at certain times (`restriction:conditional`
    /// alone): routing does not follow it.
    ConditionalRestriction,
    /// A relation with a member of a type OSM does not have (corrupt data).
    UnreadableMembers,
    /// A point (a label point, a POI): the map draws areas and lines.
    PointFeature,
}

impl SkipReason {
    /// Whether the feature was broken input (bad geometry, corrupt references), as
    /// opposed to whole input the map simply does not draw: tags it has no layer for,
    /// ways cut by the extract's edge, places far outside the city, restrictions
    /// routing does not follow. Only broken input is a warning.
    pub fn is_broken(self) -> bool {
        !matches!(
            self,
            SkipReason::UnknownTags
                | SkipReason::MissingReferences
                | SkipReason::OutsideCity
                | SkipReason::ViaWayRestriction
                | SkipReason::ConditionalRestriction
                | SkipReason::PointFeature
        )
    }

    /// What the reason means, for the status bar's list.
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::TooFewPoints => "fewer than 3 points in a ring, or 2 in a line",
            SkipReason::SelfIntersecting => "a ring crosses itself",
            SkipReason::ZeroArea => "a ring encloses no area",
            SkipReason::BadCoordinates => "coordinates that are not a place on Earth",
            SkipReason::OutsideCity => "more than 200 km from the city",
            SkipReason::NullGeometry => "no geometry",
            SkipReason::UnsupportedGeometry => "a geometry this kind cannot have",
            SkipReason::UnknownTags => "tags the map has no layer for",
            SkipReason::MissingReferences => "cut by the extract's edge",
            SkipReason::UnclosedRing => "multipolygon ways that do not close",
            SkipReason::HoleOutsideOuter => "a hole outside its polygon",
            SkipReason::ViaWayRestriction => "turn restriction via a way",
            SkipReason::InvalidRestriction => "malformed turn restriction",
            SkipReason::ConditionalRestriction => "turn restriction at certain times only",
            SkipReason::UnreadableMembers => "relation members of no OSM type",
            SkipReason::PointFeature => "a point: the map draws areas and lines",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::TooFewPoints => "too_few_points",
            SkipReason::SelfIntersecting => "self_intersecting",
            SkipReason::ZeroArea => "zero_area",
            SkipReason::BadCoordinates => "bad_coordinates",
            SkipReason::OutsideCity => "outside_city",
            SkipReason::NullGeometry => "null_geometry",
            SkipReason::UnsupportedGeometry => "unsupported_geometry",
            SkipReason::UnknownTags => "unknown_tags",
            SkipReason::MissingReferences => "missing_references",
            SkipReason::UnclosedRing => "unclosed_ring",
            SkipReason::HoleOutsideOuter => "hole_outside_outer",
            SkipReason::ViaWayRestriction => "via_way_restriction",
            SkipReason::InvalidRestriction => "invalid_restriction",
            SkipReason::ConditionalRestriction => "conditional_restriction",
            SkipReason::UnreadableMembers => "unreadable_members",
            SkipReason::PointFeature => "point_feature",
        }
    }
}

/// Counts of skipped features by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SkipCounts(pub BTreeMap<SkipReason, u64>);

impl SkipCounts {
    pub fn add(&mut self, reason: SkipReason) {
        self.add_n(reason, 1);
    }
    pub fn add_n(&mut self, reason: SkipReason, n: u64) {
        if n > 0 {
            *self.0.entry(reason).or_default() += n;
        }
    }
    pub fn get(&self, reason: SkipReason) -> u64 {
        self.0.get(&reason).copied().unwrap_or(0)
    }
    /// Everything left out, broken or not drawn.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
    /// Broken input only: what the status bar warns of and `map-info` calls skipped.
    pub fn broken_total(&self) -> u64 {
        self.broken().map(|(_, n)| n).sum()
    }
    /// Whole input the map does not draw (see [`SkipReason::is_broken`]).
    pub fn not_drawn_total(&self) -> u64 {
        self.not_drawn().map(|(_, n)| n).sum()
    }
    pub fn broken(&self) -> impl Iterator<Item = (SkipReason, u64)> + '_ {
        self.0
            .iter()
            .map(|(&r, &n)| (r, n))
            .filter(|(r, _)| r.is_broken())
    }
    pub fn not_drawn(&self) -> impl Iterator<Item = (SkipReason, u64)> + '_ {
        self.0
            .iter()
            .map(|(&r, &n)| (r, n))
            .filter(|(r, _)| !r.is_broken())
    }
    pub fn merge(&mut self, other: &SkipCounts) {
        for (&reason, &n) in &other.0 {
            self.add_n(reason, n);
        }
    }
    /// `{"reason": count, ...}` of broken input, for JSON output.
    pub fn broken_json(&self) -> serde_json::Value {
        Self::json(self.broken())
    }
    /// `{"reason": count, ...}` of input not drawn, for JSON output.
    pub fn not_drawn_json(&self) -> serde_json::Value {
        Self::json(self.not_drawn())
    }
    fn json(counts: impl Iterator<Item = (SkipReason, u64)>) -> serde_json::Value {
        counts
            .map(|(r, n)| (r.as_str().to_string(), serde_json::Value::from(n)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Key/value tags of a feature as they came from the source.
pub type Tags = Vec<(String, String)>;

fn tag<'a>(tags: &'a [(String, String)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Geometry in WGS84 `[lon, lat]` as read from a source, before validation.
#[derive(Clone, Debug, PartialEq)]
pub enum RawGeometry {
    Null,
    Point,
    Line(Vec<[f64; 2]>),
    MultiLine(Vec<Vec<[f64; 2]>>),
    /// First ring outer, the rest holes.
    Polygon(Vec<Vec<[f64; 2]>>),
    MultiPolygon(Vec<Vec<Vec<[f64; 2]>>>),
    /// The runs of consecutive nodes present in the file of a way some of whose nodes
    /// are missing (cut by the extract's edge). Lines keep the runs; areas cannot be
    /// closed from them and are skipped as [`SkipReason::MissingReferences`].
    CutLine(Vec<Vec<[f64; 2]>>),
}

/// One feature from any source format.
#[derive(Clone, Debug)]
pub struct RawFeature {
    pub id: String,
    pub tags: Tags,
    pub geometry: RawGeometry,
}

/// Road classes, from motorway down to footpaths, plus rail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoadClass {
    Motorway,
    Trunk,
    Primary,
    Secondary,
    Tertiary,
    Residential,
    Service,
    Path,
    Rail,
}

impl RoadClass {
    pub const ALL: [RoadClass; 9] = [
        RoadClass::Motorway,
        RoadClass::Trunk,
        RoadClass::Primary,
        RoadClass::Secondary,
        RoadClass::Tertiary,
        RoadClass::Residential,
        RoadClass::Service,
        RoadClass::Path,
        RoadClass::Rail,
    ];

    fn from_highway(value: &str) -> Option<RoadClass> {
        Some(match value {
            "motorway" | "motorway_link" => RoadClass::Motorway,
            "trunk" | "trunk_link" => RoadClass::Trunk,
            "primary" | "primary_link" => RoadClass::Primary,
            "secondary" | "secondary_link" => RoadClass::Secondary,
            "tertiary" | "tertiary_link" => RoadClass::Tertiary,
            "residential" | "unclassified" | "living_street" | "road" => RoadClass::Residential,
            "service" | "busway" | "bus_guideway" => RoadClass::Service,
            "pedestrian" | "footway" | "path" | "cycleway" | "steps" | "track" | "bridleway" => {
                RoadClass::Path
            }
            _ => return None,
        })
    }

    /// Carriageway width drawn when no `width` or `lanes` tag says otherwise.
    pub fn default_width_m(self) -> f32 {
        match self {
            RoadClass::Motorway => 22.0,
            RoadClass::Trunk => 18.0,
            RoadClass::Primary => 14.0,
            RoadClass::Secondary => 12.0,
            RoadClass::Tertiary => 10.0,
            RoadClass::Residential => 7.0,
            RoadClass::Service => 4.5,
            RoadClass::Path => 2.5,
            RoadClass::Rail => 3.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoadClass::Motorway => "motorway",
            RoadClass::Trunk => "trunk",
            RoadClass::Primary => "primary",
            RoadClass::Secondary => "secondary",
            RoadClass::Tertiary => "tertiary",
            RoadClass::Residential => "residential",
            RoadClass::Service => "service",
            RoadClass::Path => "path",
            RoadClass::Rail => "rail",
        }
    }
}

/// A building (or building part) footprint with its vertical extent.
#[derive(Clone, Debug)]
pub struct Building {
    pub id: String,
    /// Local metres; one polygon per part of a multipolygon (a building in several
    /// pieces is still one building); exteriors counter-clockwise, holes clockwise,
    /// rings open.
    pub footprint: MultiPolygon<f64>,
    pub extent: Extent,
    /// The `building` value (`yes`, `apartments`, `church`, ...).
    pub kind: String,
    pub name: Option<String>,
    pub tags: Tags,
    /// A `building:part` (Simple 3D Buildings): drawn and picked instead of its outline.
    pub is_part: bool,
    /// For a part: index into [`CityMap::buildings`] of the outline it lies in.
    pub outline: Option<usize>,
    /// For an outline: it has parts, which are drawn and picked instead of it; the
    /// outline stays in the map for the inspector and the building's facts.
    pub has_parts: bool,
    /// For an outline in several pieces: which pieces have parts (those are drawn by
    /// their parts; the others by the outline). Empty when it has none.
    pub parted_pieces: Vec<bool>,
}

impl Building {
    /// Whether the building is drawn and picked: everything except outlines whose
    /// every piece is drawn by its parts.
    pub fn is_drawn(&self) -> bool {
        !self.has_parts || self.parted_pieces.iter().any(|parted| !parted)
    }

    /// The pieces of the footprint the building itself draws: all of them, but for
    /// an outline those with parts in them.
    pub fn drawn_pieces(&self) -> impl Iterator<Item = &Polygon<f64>> {
        self.footprint
            .0
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.parted_pieces.get(*i).copied().unwrap_or(false))
            .map(|(_, p)| p)
    }

    /// Every ring of the footprint: each piece's exterior, then its holes.
    pub fn rings(&self) -> impl Iterator<Item = &LineString<f64>> {
        self.footprint
            .0
            .iter()
            .flat_map(|p| std::iter::once(p.exterior()).chain(p.interiors()))
    }

    /// A vertex of the footprint (the first of its first piece).
    pub fn first_point(&self) -> Coord<f64> {
        self.footprint.0[0].exterior().0[0]
    }
}

/// Which ways along its line a road may be driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OneWay {
    /// Both directions.
    No,
    /// Only in the direction of the line (`oneway=yes`, roundabouts, motorways).
    Forward,
    /// Only against the direction of the line (`oneway=-1`).
    Backward,
}

impl OneWay {
    /// From OSM tags: `oneway` (the motor-vehicle specific keys first), else implied
    /// by `junction=roundabout|circular` and `highway=motorway|motorway_link`.
    pub fn from_tags(tags: &[(String, String)]) -> OneWay {
        let value = tag(tags, "oneway:motor_vehicle")
            .or_else(|| tag(tags, "oneway:vehicle"))
            .or_else(|| tag(tags, "oneway"));
        match value.map(str::trim) {
            Some("yes" | "true" | "1") => OneWay::Forward,
            Some("-1" | "reverse") => OneWay::Backward,
            Some(_) => OneWay::No, // "no", and reversible/alternating: both ways in turn
            None if matches!(tag(tags, "junction"), Some("roundabout" | "circular"))
                || matches!(tag(tags, "highway"), Some("motorway" | "motorway_link")) =>
            {
                OneWay::Forward
            }
            None => OneWay::No,
        }
    }
}

/// A road, path or railway centreline.
#[derive(Clone, Debug)]
pub struct Road {
    pub id: String,
    pub class: RoadClass,
    pub width_m: f32,
    pub name: Option<String>,
    /// Local metres.
    pub line: LineString<f64>,
    /// Driving directions allowed along `line`.
    pub oneway: OneWay,
    /// A `*_link` road (slip road, ramp): same class, lower speed.
    pub link: bool,
}

/// What a turn restriction does at its via node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnRule {
    /// `no_*`: the turn from a `from` road into a `to` road is forbidden.
    No,
    /// `only_*`: from a `from` road, every turn but the one into a `to` road is
    /// forbidden.
    Only,
}

/// An OSM turn restriction (`type=restriction`, via a node) that binds the city's
/// responders: restrictions for other vehicles only, or with `except=emergency`, are
/// not kept.
#[derive(Clone, Debug, PartialEq)]
pub struct TurnRestriction {
    /// `relation/{id}`.
    pub id: String,
    pub rule: TurnRule,
    /// `no_u_turn` / `only_u_turn`: where a `from` road is also a `to` road, the turn
    /// meant is turning back along it (and for the other kinds, going on along it).
    pub u_turn: bool,
    /// [`Road::id`]s of the roads the turn comes from, and goes into.
    pub from: Vec<String>,
    pub to: Vec<String>,
    /// The junction: local metres in a [`CityMap`], WGS84 `[lon, lat]` as read.
    pub via: [f64; 2],
}

/// What an area is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AreaKind {
    Water,
    Green,
    /// A highway area: a pedestrian square, a service yard (`area=yes`,
    /// `area:highway=*`, or a highway multipolygon). Drawn with the roads, never routed.
    Paved,
}

/// A water body or green area.
#[derive(Clone, Debug)]
pub struct Area {
    pub id: String,
    pub kind: AreaKind,
    pub name: Option<String>,
    pub polygon: Polygon<f64>,
}

/// A river, stream or canal centreline.
#[derive(Clone, Debug)]
pub struct Waterway {
    pub id: String,
    pub width_m: f32,
    pub line: LineString<f64>,
}

/// An administrative district (city → district → street levels).
#[derive(Clone, Debug)]
pub struct District {
    pub id: String,
    pub name: Option<String>,
    pub admin_level: Option<u8>,
    /// Boundary rings in local metres (outer rings; closed or clipped at the extract edge).
    pub boundary: Vec<LineString<f64>>,
}

/// A loaded city: everything the 3D scene and the panels need, in local metres.
#[derive(Clone, Debug)]
pub struct CityMap {
    pub name: String,
    pub frame: GeoFrame,
    /// `[min_lon, min_lat, max_lon, max_lat]` of what was kept.
    pub bbox_wgs84: [f64; 4],
    pub buildings: Vec<Building>,
    pub roads: Vec<Road>,
    pub waterways: Vec<Waterway>,
    pub areas: Vec<Area>,
    pub districts: Vec<District>,
    /// Turn restrictions for routing (via points in local metres).
    pub turn_restrictions: Vec<TurnRestriction>,
    pub skipped: SkipCounts,
    /// Broken pieces of features kept in part, by reason: a polygon of a building in
    /// several pieces (a MultiPolygon, a Shapefile polygon of many outer rings) with a
    /// vertex that is no place, a hole outside its polygon, a line of a MultiLineString
    /// with one point. The feature is drawn without them.
    pub pieces_dropped: SkipCounts,
    /// Wall time from bytes to this model, in milliseconds.
    pub load_ms: f64,
    /// Attribution the data's licence requires to be shown (OSM data: ODbL).
    pub attribution: Option<String>,
    /// The file's format (`osm_pbf`, `geojson`, `esri_json`, `shapefile`, `flatgeobuf`).
    pub format: Option<MapFormat>,
    /// How the attributes' text was decoded, for a format that does not fix it (a
    /// Shapefile's `.dbf`).
    pub encoding: Option<shp::TextEncoding>,
    /// How the features' properties were read, and which fields were used.
    pub schema: schema::SchemaReport,
    /// The CRS the file was read in and the offset undone (converted at load).
    pub crs: crs::CrsReport,
}

impl CityMap {
    pub fn count_areas(&self, kind: AreaKind) -> usize {
        self.areas.iter().filter(|a| a.kind == kind).count()
    }

    /// Bounds `[min_e, min_n, max_e, max_n]` of everything in local metres.
    pub fn local_bounds(&self) -> [f64; 4] {
        let f = &self.frame;
        let [a, b] = f.local_from_wgs84(self.bbox_wgs84[0], self.bbox_wgs84[1]);
        let [c, d] = f.local_from_wgs84(self.bbox_wgs84[2], self.bbox_wgs84[3]);
        [a, b, c, d]
    }
}

/// Errors that stop a map from loading at all (bad features are skipped, not errors).
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    // The reason is in the message, so not also a source an error chain would print
    // a second time.
    #[error("cannot read map file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{path}: not an OpenStreetMap .osm.pbf, GeoJSON, Esri JSON, Shapefile nor FlatGeobuf file (expected .pbf, .geojson, .json, .shp or .fgb)"
    )]
    UnknownFormat { path: PathBuf },
    #[error("{source_name}: invalid OSM PBF: {message}")]
    OsmPbf {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: invalid GeoJSON: {message}")]
    GeoJson {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: invalid Esri JSON: {message}")]
    EsriJson {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {message}")]
    Shapefile {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: invalid FlatGeobuf: {message}")]
    FlatGeobuf {
        source_name: String,
        message: String,
    },
    #[error("{0}")]
    Schema(String),
    #[error(
        "{source_name}: no drawable features (buildings, roads, water, green or districts) found; {skipped} features skipped"
    )]
    Empty { source_name: String, skipped: u64 },
    /// The CRS is not understood, or the coordinates do not fit it.
    #[error("{source_name}: {error}")]
    Crs {
        source_name: String,
        error: crs::CrsError,
    },
}

/// Map file formats Zhongshu reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MapFormat {
    OsmPbf,
    GeoJson,
    /// ArcGIS REST `f=json` and ArcGIS's JSON export.
    EsriJson,
    /// An Esri Shapefile: the `.shp` with its `.dbf` (and `.shx`, `.prj`, `.cpg`).
    Shapefile,
    /// FlatGeobuf (`.fgb`), read streamed.
    FlatGeobuf,
}

/// How much of a JSON file's start is looked at to tell GeoJSON from Esri JSON.
const JSON_HEAD_BYTES: usize = 64 * 1024;

impl MapFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            MapFormat::OsmPbf => "osm_pbf",
            MapFormat::GeoJson => "geojson",
            MapFormat::EsriJson => "esri_json",
            MapFormat::Shapefile => "shapefile",
            MapFormat::FlatGeobuf => "flatgeobuf",
        }
    }

    /// Guesses the format from the extension, then from the first bytes (up to
    /// 64 KiB: JSON files say in their first keys whether they are Esri JSON).
    pub fn detect(path: &Path, head: &[u8]) -> Option<MapFormat> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".pbf") {
            return Some(MapFormat::OsmPbf);
        }
        if name.ends_with(".shp") {
            return Some(MapFormat::Shapefile);
        }
        if name.ends_with(".fgb") || fgb::has_magic(head) {
            return Some(MapFormat::FlatGeobuf);
        }
        let json = || {
            if esri::looks_like_esri(head) {
                MapFormat::EsriJson
            } else {
                MapFormat::GeoJson
            }
        };
        if name.ends_with(".geojson") {
            return Some(MapFormat::GeoJson);
        }
        if name.ends_with(".json") || name.ends_with(".esrijson") {
            return Some(json());
        }
        match head.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Some(json()),
            // A PBF file starts with a big-endian BlobHeader length, then "OSMHeader".
            _ if head.len() > 16 && head[4..].windows(9).any(|w| w == b"OSMHeader") => {
                Some(MapFormat::OsmPbf)
            }
            // A .shp starts with the big-endian file code 9994.
            _ if head.starts_with(&9994i32.to_be_bytes()) => Some(MapFormat::Shapefile),
            _ => None,
        }
    }
}

/// How to read a map file beyond what it says itself.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--crs` and `--coords`.
    pub coords: crs::MapCoords,
    /// `--schema FILE`: how its fields are read; else `<name>.schema.toml` beside it.
    pub schema: Option<PathBuf>,
}

/// Loads a map file (`.osm.pbf`, GeoJSON, Esri JSON, a Shapefile's `.shp`, FlatGeobuf)
/// in the coordinates the file says, its fields read by the mapping beside it
/// (`<name>.schema.toml`) if any.
pub fn load_path(path: &Path) -> Result<CityMap, MapError> {
    load_path_with(path, &LoadOptions::default())
}

/// Loads a map file, reading its coordinates as `options.coords` says (`--crs`,
/// `--coords`) and its fields by `options.schema`, else the mapping beside it, else
/// by guessing (see [`schema`]). A Shapefile is read from its `.shp` and the files
/// beside it, a FlatGeobuf streamed from the file; other formats whole.
pub fn load_path_with(path: &Path, options: &LoadOptions) -> Result<CityMap, MapError> {
    use std::io::{Read, Seek};

    let start = Instant::now();
    let io_error = |error| MapError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let mut head = Vec::with_capacity(JSON_HEAD_BYTES);
    (&mut file)
        .take(JSON_HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(io_error)?;
    let format = MapFormat::detect(path, &head).ok_or_else(|| MapError::UnknownFormat {
        path: path.to_path_buf(),
    })?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| path.display().to_string());
    // `city.osm.pbf`, `city.SHP` → `city`.
    let lower = file_name.to_ascii_lowercase();
    let end = [".pbf", ".osm", ".geojson", ".json", ".shp", ".fgb"]
        .iter()
        .fold(file_name.len(), |end, ext| {
            if lower[..end].ends_with(ext) {
                end - ext.len()
            } else {
                end
            }
        });
    let name = file_name[..end].to_string();
    // An OSM PBF is read by its OSM tags: a mapping beside it is not its own, and
    // one given for it is a mistake.
    let mapping = match (format, options.schema.clone()) {
        (MapFormat::OsmPbf, Some(file)) => {
            return Err(MapError::Schema(format!(
                "--schema {}: an OpenStreetMap PBF is read by its OSM tags; a mapping is for GeoJSON, Esri JSON, Shapefiles and FlatGeobuf",
                file.display()
            )));
        }
        (MapFormat::OsmPbf, None) => None,
        (_, given) => match given.or_else(|| schema::SchemaFile::beside(path)) {
            Some(file) => Some((
                schema::SchemaFile::load(&file).map_err(MapError::Schema)?,
                file,
            )),
            None => None,
        },
    };
    let mapping = mapping.as_ref().map(|(m, f)| (m, f.as_path()));
    let source_name = path.display().to_string();
    let read = match format {
        MapFormat::Shapefile => shp::read_path(path, &source_name)?,
        MapFormat::FlatGeobuf => {
            let len = file.metadata().map_err(io_error)?.len();
            file.rewind().map_err(io_error)?;
            let reader = std::io::BufReader::with_capacity(1 << 20, file);
            fgb::read(reader, len, &source_name)?
        }
        _ => {
            // Whole, in one allocation of the file's size (as `fs::read` does).
            let len = file.metadata().map_err(io_error)?.len() as usize;
            let mut bytes = head;
            bytes.reserve_exact(len.saturating_sub(bytes.len()));
            file.read_to_end(&mut bytes).map_err(io_error)?;
            read_bytes(&bytes, format, &source_name)?
        }
    };
    finish_load(
        read,
        format,
        &name,
        &source_name,
        &options.coords,
        mapping,
        start,
    )
}

/// Loads a map from bytes already in memory.
pub fn load_bytes(
    bytes: &[u8],
    format: MapFormat,
    name: &str,
    source_name: &str,
) -> Result<CityMap, MapError> {
    load_bytes_with(
        bytes,
        format,
        name,
        source_name,
        &crs::MapCoords::default(),
        None,
    )
}

/// Loads a map from bytes, reading its coordinates as `coords` says, and its fields
/// by an explicit mapping (and the file it came from) when given. A Shapefile is
/// several files: it loads from its path ([`load_path_with`]).
pub fn load_bytes_with(
    bytes: &[u8],
    format: MapFormat,
    name: &str,
    source_name: &str,
    coords: &crs::MapCoords,
    mapping: Option<(&schema::SchemaFile, &Path)>,
) -> Result<CityMap, MapError> {
    let start = Instant::now();
    let read = read_bytes(bytes, format, source_name)?;
    finish_load(read, format, name, source_name, coords, mapping, start)
}

/// What a format's reader hands over: features in the file's own coordinates, with
/// what the file says of them.
pub(crate) struct FileRead {
    pub features: Vec<RawFeature>,
    pub restrictions: Vec<TurnRestriction>,
    pub skipped: SkipCounts,
    /// The CRS the file declares (a GeoJSON `crs` member, an Esri `spatialReference`,
    /// a `.prj`, a FlatGeobuf header).
    pub file_crs: Option<crs::Crs>,
    /// How attribute text was decoded, where the format leaves it open.
    pub encoding: Option<shp::TextEncoding>,
}

impl FileRead {
    fn features(
        features: Vec<RawFeature>,
        skipped: SkipCounts,
        file_crs: Option<crs::Crs>,
    ) -> Self {
        FileRead {
            features,
            restrictions: Vec::new(),
            skipped,
            file_crs,
            encoding: None,
        }
    }
}

/// Reads a map held in memory in any format but a Shapefile's.
fn read_bytes(bytes: &[u8], format: MapFormat, source_name: &str) -> Result<FileRead, MapError> {
    let crs_error = |error| MapError::Crs {
        source_name: source_name.to_string(),
        error,
    };
    Ok(match format {
        MapFormat::OsmPbf => {
            let (features, restrictions, skipped) = osm::read_map(bytes, source_name)?;
            FileRead {
                restrictions,
                ..FileRead::features(features, skipped, None)
            }
        }
        MapFormat::GeoJson => {
            let (features, skipped, file_crs) = geojson::read_features_and_crs(bytes, source_name)?;
            FileRead::features(features, skipped, file_crs)
        }
        MapFormat::EsriJson => {
            let (features, skipped, sr) = esri::read_features(bytes, source_name)?;
            let file_crs = match (sr.code(), sr.wkt.as_deref()) {
                (Some(code), _) => Some(crs::from_wkid(code).map_err(crs_error)?),
                (None, Some(wkt)) => Some(crs::from_prj(wkt).map_err(crs_error)?),
                (None, None) => None,
            };
            FileRead::features(features, skipped, file_crs)
        }
        MapFormat::FlatGeobuf => {
            fgb::read(std::io::Cursor::new(bytes), bytes.len() as u64, source_name)?
        }
        MapFormat::Shapefile => {
            return Err(MapError::Shapefile {
                source_name: source_name.to_string(),
                message: "a Shapefile is several files: load it from its .shp path, with its .dbf beside it".into(),
            });
        }
    })
}

/// The pipeline every format shares once read: coordinates to WGS 84, properties by
/// their schema, then the city.
fn finish_load(
    read: FileRead,
    format: MapFormat,
    name: &str,
    source_name: &str,
    coords: &crs::MapCoords,
    mapping: Option<(&schema::SchemaFile, &Path)>,
    start: Instant,
) -> Result<CityMap, MapError> {
    let FileRead {
        mut features,
        restrictions,
        skipped,
        file_crs,
        encoding,
    } = read;
    // Converted once, here: everything after this is WGS84 degrees.
    let fixed_wgs84 = format == MapFormat::OsmPbf;
    let crs = crs::to_wgs84_at_boundary(&mut features, file_crs, coords, fixed_wgs84)
        .map_err(|error| match error {
            // A Shapefile says its CRS in a .prj, not a crs member.
            crs::CrsError::LooksProjected { x, y, hint } if format == MapFormat::Shapefile => {
                crs::CrsError::LooksProjectedWithoutPrj { x, y, hint }
            }
            other => other,
        })
        .map_err(|error| MapError::Crs {
            source_name: source_name.to_string(),
            error,
        })?;
    // OSM data is OSM-tagged; other formats say what they are in their own words.
    let mut report = if format == MapFormat::OsmPbf {
        schema::SchemaReport {
            detected: Some(schema::Schema::Osm),
            ..Default::default()
        }
    } else {
        schema::normalise(&mut features, mapping.map(|(m, _)| m))
    };
    report.file = mapping.map(|(_, f)| f.to_path_buf());
    let mut map = build_city(name, features, skipped);
    map.format = Some(format);
    map.encoding = encoding;
    map.schema = report;
    map.crs = crs;
    add_turn_restrictions(&mut map, restrictions);
    if format == MapFormat::OsmPbf {
        map.attribution = Some(OSM_ATTRIBUTION.to_string());
    }
    map.load_ms = start.elapsed().as_secs_f64() * 1000.0;
    let drawable = map.buildings.len()
        + map.roads.len()
        + map.areas.len()
        + map.waterways.len()
        + map.districts.len();
    if drawable == 0 {
        return Err(MapError::Empty {
            source_name: source_name.to_string(),
            skipped: map.skipped.total(),
        });
    }
    Ok(map)
}

/// A feature's id from an object-id field (`OBJECTID`, `FID`, any case), else its
/// place in the file: `feature/{value}`.
pub(crate) fn object_id(
    tags: &[(String, String)],
    oid_field: Option<&str>,
    index: usize,
) -> String {
    let by_name = oid_field.and_then(|o| tags.iter().find(|(k, _)| k == o));
    let id_field = by_name.or_else(|| {
        tags.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("objectid") || k.eq_ignore_ascii_case("fid"))
    });
    match id_field {
        Some((_, v)) => format!("feature/{v}"),
        None => format!("feature/{index}"),
    }
}

/// Projects turn restrictions read in WGS84 into the city's frame; one whose junction
/// is not a valid point in the city is skipped and counted.
fn add_turn_restrictions(map: &mut CityMap, restrictions: Vec<TurnRestriction>) {
    for mut r in restrictions {
        match project(&[r.via], &map.frame) {
            Ok(p) => {
                r.via = p[0];
                map.turn_restrictions.push(r);
            }
            Err(reason) => map.skipped.add(reason),
        }
    }
}

/// The embedded default city.
pub fn load_default() -> Result<CityMap, MapError> {
    load_bytes(
        DEFAULT_MAP_PBF,
        MapFormat::OsmPbf,
        DEFAULT_MAP_NAME,
        "embedded default map",
    )
}

/// What a feature's tags make it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Class {
    Building,
    Road(RoadClass),
    Water,
    Waterway,
    Green,
    Paved,
    District,
}

/// Classifies a feature by its tags. `is_area` says whether the geometry encloses an
/// area, which decides between e.g. a pedestrian square and a footway.
fn classify(tags: &[(String, String)]) -> Option<Class> {
    // GeoJSON writes booleans as `true`/`false`; `"building": false` is not a building.
    let yes = |v: &str| !matches!(v, "no" | "false" | "0");
    if tag(tags, "building").is_some_and(yes) || tag(tags, "building:part").is_some_and(yes) {
        return Some(Class::Building);
    }
    if let Some(h) = tag(tags, "highway")
        && let Some(c) = RoadClass::from_highway(h)
    {
        return Some(if tag(tags, "area") == Some("yes") {
            Class::Paved
        } else {
            Class::Road(c)
        });
    }
    if tag(tags, "area:highway").is_some_and(|v| v != "no") {
        return Some(Class::Paved);
    }
    if let Some(r) = tag(tags, "railway")
        && matches!(
            r,
            "rail" | "tram" | "light_rail" | "subway" | "narrow_gauge"
        )
        && tag(tags, "tunnel").is_none_or(|t| t == "no")
    {
        return Some(Class::Road(RoadClass::Rail));
    }
    if tag(tags, "natural") == Some("water")
        || tag(tags, "water").is_some()
        || matches!(tag(tags, "waterway"), Some("riverbank" | "dock"))
        || matches!(tag(tags, "landuse"), Some("reservoir" | "basin"))
        || tag(tags, "leisure") == Some("swimming_pool")
    {
        return Some(Class::Water);
    }
    if matches!(
        tag(tags, "waterway"),
        Some("river" | "stream" | "canal" | "drain" | "ditch")
    ) {
        return Some(Class::Waterway);
    }
    if matches!(
        tag(tags, "leisure"),
        Some(
            "park"
                | "garden"
                | "pitch"
                | "playground"
                | "nature_reserve"
                | "golf_course"
                | "dog_park"
        )
    ) || matches!(
        tag(tags, "landuse"),
        Some(
            "grass"
                | "forest"
                | "meadow"
                | "recreation_ground"
                | "cemetery"
                | "village_green"
                | "allotments"
                | "orchard"
                | "flowerbed"
        )
    ) || matches!(
        tag(tags, "natural"),
        Some("wood" | "scrub" | "grassland" | "heath" | "wetland")
    ) {
        return Some(Class::Green);
    }
    if tag(tags, "boundary") == Some("administrative")
        || (tag(tags, "admin_level").is_some() && tag(tags, "boundary").is_none())
    {
        return Some(Class::District);
    }
    None
}

/// Validated, projected output of one raw feature.
enum Built {
    Building(Building),
    Roads(Vec<Road>),
    Waterways(Vec<Waterway>),
    Areas(Vec<Area>),
    District(District),
}

/// Turns raw features into a city: classification, coordinate checks, projection
/// around a robust centre, ring validation. Runs in parallel.
pub fn build_city(name: &str, features: Vec<RawFeature>, mut skipped: SkipCounts) -> CityMap {
    let frame = pick_origin(&features);
    let results: Vec<(Result<Built, SkipReason>, SkipCounts)> = features
        .into_par_iter()
        .map(|f| {
            let mut dropped = SkipCounts::default();
            (build_feature(f, &frame, &mut dropped), dropped)
        })
        .collect();

    let mut map = CityMap {
        name: name.to_string(),
        frame,
        bbox_wgs84: [0.0; 4],
        buildings: Vec::new(),
        roads: Vec::new(),
        waterways: Vec::new(),
        areas: Vec::new(),
        districts: Vec::new(),
        turn_restrictions: Vec::new(),
        skipped: SkipCounts::default(),
        pieces_dropped: SkipCounts::default(),
        load_ms: 0.0,
        attribution: None,
        format: None,
        encoding: None,
        schema: schema::SchemaReport::default(),
        crs: crs::CrsReport::default(),
    };
    for (r, dropped) in results {
        map.pieces_dropped.merge(&dropped);
        match r {
            Ok(Built::Building(b)) => map.buildings.push(b),
            Ok(Built::Roads(r)) => map.roads.extend(r),
            Ok(Built::Waterways(w)) => map.waterways.extend(w),
            Ok(Built::Areas(a)) => map.areas.extend(a),
            Ok(Built::District(d)) => map.districts.push(d),
            Err(reason) => skipped.add(reason),
        }
    }
    link_building_parts(&mut map.buildings);
    clip_districts_to_city(&mut map, &mut skipped);
    map.skipped = skipped;
    map.bbox_wgs84 = kept_bbox(&map);
    map
}

/// District boundaries reach as far as their relations do (a region, a country), far
/// beyond the extract. They are cut to the city (what everything else spans, plus a
/// margin) so they neither stretch the city's extent nor draw across the countryside.
/// A district with nothing left near the city is counted as outside it.
fn clip_districts_to_city(map: &mut CityMap, skipped: &mut SkipCounts) {
    let Some(core) = core_bounds(map) else {
        return; // only districts: they are the city
    };
    let span = (core[2] - core[0]).max(core[3] - core[1]);
    let margin = (span * 0.1).max(500.0);
    let rect = [
        core[0] - margin,
        core[1] - margin,
        core[2] + margin,
        core[3] + margin,
    ];
    let before = map.districts.len();
    for d in &mut map.districts {
        d.boundary = d.boundary.iter().flat_map(|l| clip_line(l, rect)).collect();
    }
    map.districts.retain(|d| !d.boundary.is_empty());
    skipped.add_n(
        SkipReason::OutsideCity,
        (before - map.districts.len()) as u64,
    );
}

/// `[min_e, min_n, max_e, max_n]` of the district boundaries, `None` when none.
fn district_bounds(map: &CityMap) -> Option<[f64; 4]> {
    let mut b = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    let mut add = |c: &Coord<f64>| {
        b[0] = b[0].min(c.x);
        b[1] = b[1].min(c.y);
        b[2] = b[2].max(c.x);
        b[3] = b[3].max(c.y);
    };
    map.districts.iter().for_each(|x| {
        x.boundary
            .iter()
            .for_each(|l| l.0.iter().for_each(&mut add))
    });
    (b[0] <= b[2]).then_some(b)
}

/// `[min_e, min_n, max_e, max_n]` of everything but districts, `None` when empty.
fn core_bounds(map: &CityMap) -> Option<[f64; 4]> {
    let mut b = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    let mut add = |c: &Coord<f64>| {
        b[0] = b[0].min(c.x);
        b[1] = b[1].min(c.y);
        b[2] = b[2].max(c.x);
        b[3] = b[3].max(c.y);
    };
    map.buildings.iter().for_each(|x| {
        x.footprint
            .0
            .iter()
            .for_each(|p| p.exterior().0.iter().for_each(&mut add))
    });
    map.roads
        .iter()
        .for_each(|x| x.line.0.iter().for_each(&mut add));
    map.waterways
        .iter()
        .for_each(|x| x.line.0.iter().for_each(&mut add));
    map.areas
        .iter()
        .for_each(|x| x.polygon.exterior().0.iter().for_each(&mut add));
    (b[0] <= b[2]).then_some(b)
}

/// The runs of a line inside a rectangle `[min_x, min_y, max_x, max_y]` (Liang–Barsky
/// per segment; consecutive inside pieces are joined).
fn clip_line(line: &LineString<f64>, rect: [f64; 4]) -> Vec<LineString<f64>> {
    let mut runs: Vec<Vec<Coord<f64>>> = Vec::new();
    let mut current: Vec<Coord<f64>> = Vec::new();
    for w in line.0.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (dx, dy) = (b.x - a.x, b.y - a.y);
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        let mut visible = true;
        for (p, q) in [
            (-dx, a.x - rect[0]),
            (dx, rect[2] - a.x),
            (-dy, a.y - rect[1]),
            (dy, rect[3] - a.y),
        ] {
            if p == 0.0 {
                if q < 0.0 {
                    visible = false;
                }
            } else {
                let t = q / p;
                if p < 0.0 {
                    t0 = t0.max(t);
                } else {
                    t1 = t1.min(t);
                }
            }
        }
        if !visible || t0 > t1 {
            if current.len() >= 2 {
                runs.push(std::mem::take(&mut current));
            }
            current.clear();
            continue;
        }
        let start = Coord {
            x: a.x + dx * t0,
            y: a.y + dy * t0,
        };
        let end = Coord {
            x: a.x + dx * t1,
            y: a.y + dy * t1,
        };
        if t0 > 0.0 || current.is_empty() {
            if current.len() >= 2 {
                runs.push(std::mem::take(&mut current));
            }
            current.clear();
            current.push(start);
        }
        current.push(end);
        if t1 < 1.0 {
            runs.push(std::mem::take(&mut current));
        }
    }
    if current.len() >= 2 {
        runs.push(current);
    }
    runs.into_iter()
        .filter(|r| r.windows(2).any(|w| w[0] != w[1]))
        .map(LineString)
        .collect()
}

/// Holes of a part past which the point that links it to its outline is found inside
/// its outer ring alone.
const MAX_HOLES_FOR_INTERIOR_POINT: usize = 32;

/// Simple 3D Buildings: a `building:part` belongs to the smallest outline (a building
/// that is not a part) containing a point inside the part. An outline with parts is
/// marked, so it is not drawn over them nor picked instead of them.
fn link_building_parts(buildings: &mut [Building]) {
    use geo::{Area as _, BoundingRect, Contains, InteriorPoint};
    use rstar::{AABB, RTree, primitives::GeomWithData};

    if !buildings.iter().any(|b| b.is_part) {
        return;
    }
    let outlines: Vec<GeomWithData<rstar::primitives::Rectangle<[f64; 2]>, usize>> = buildings
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.is_part)
        .filter_map(|(i, b)| {
            let r = b.footprint.bounding_rect()?;
            Some(GeomWithData::new(
                rstar::primitives::Rectangle::from_corners(
                    [r.min().x, r.min().y],
                    [r.max().x, r.max().y],
                ),
                i,
            ))
        })
        .collect();
    let tree = RTree::bulk_load(outlines);
    let links: Vec<(usize, usize, usize)> = buildings
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_part)
        .filter_map(|(part, b)| {
            // Finding a point inside a polygon costs more than linear time in its
            // holes: past a few, one inside the outer ring has to do.
            // The largest piece's point links a part in several pieces.
            let piece = b
                .footprint
                .0
                .iter()
                .max_by(|x, y| x.unsigned_area().total_cmp(&y.unsigned_area()))?;
            let p = if piece.interiors().len() <= MAX_HOLES_FOR_INTERIOR_POINT {
                piece.interior_point()?
            } else {
                geo::Polygon::new(piece.exterior().clone(), Vec::new()).interior_point()?
            };
            // The smallest piece of an outline containing it.
            let (outline, piece, _) = tree
                .locate_in_envelope_intersecting(&AABB::from_point([p.x(), p.y()]))
                .map(|o| o.data)
                .filter_map(|o| {
                    let (i, piece) = buildings[o]
                        .footprint
                        .0
                        .iter()
                        .enumerate()
                        .find(|(_, piece)| piece.contains(&p))?;
                    Some((o, i, piece.unsigned_area()))
                })
                .min_by(|x, y| x.2.total_cmp(&y.2).then(x.0.cmp(&y.0)))?;
            Some((part, outline, piece))
        })
        .collect();
    for (part, outline, piece) in links {
        buildings[part].outline = Some(outline);
        let o = &mut buildings[outline];
        o.has_parts = true;
        if o.parted_pieces.is_empty() {
            o.parted_pieces = vec![false; o.footprint.0.len()];
        }
        o.parted_pieces[piece] = true;
    }
}

/// The origin is the median of feature positions, so one stray feature on the far side
/// of the world cannot drag the city off the screen.
fn pick_origin(features: &[RawFeature]) -> GeoFrame {
    let mut lons = Vec::with_capacity(features.len());
    let mut lats = Vec::with_capacity(features.len());
    for f in features {
        if let Some([lon, lat]) = first_point(&f.geometry)
            && is_valid_wgs84(lon, lat)
        {
            lons.push(lon);
            lats.push(lat);
        }
    }
    if lons.is_empty() {
        return GeoFrame::new(0.0, 0.0);
    }
    let mid = lons.len() / 2;
    let lon = *lons.select_nth_unstable_by(mid, f64::total_cmp).1;
    let lat = *lats.select_nth_unstable_by(mid, f64::total_cmp).1;
    GeoFrame::new(lon, lat)
}

fn first_point(g: &RawGeometry) -> Option<[f64; 2]> {
    match g {
        RawGeometry::Line(l) => l.first().copied(),
        RawGeometry::MultiLine(ls) | RawGeometry::CutLine(ls) => ls.first()?.first().copied(),
        RawGeometry::Polygon(rs) => rs.first()?.first().copied(),
        RawGeometry::MultiPolygon(ps) => ps.first()?.first()?.first().copied(),
        RawGeometry::Null | RawGeometry::Point => None,
    }
}

fn kept_bbox(map: &CityMap) -> [f64; 4] {
    let Some(b) = core_bounds(map).or_else(|| district_bounds(map)) else {
        return [
            map.frame.origin_lon,
            map.frame.origin_lat,
            map.frame.origin_lon,
            map.frame.origin_lat,
        ];
    };
    let [min_lon, min_lat] = map.frame.wgs84_from_local(b[0], b[1]);
    let [max_lon, max_lat] = map.frame.wgs84_from_local(b[2], b[3]);
    [min_lon, min_lat, max_lon, max_lat]
}

/// Projects a WGS84 point list, rejecting impossible or far-away coordinates.
fn project(points: &[[f64; 2]], frame: &GeoFrame) -> Result<Ring, SkipReason> {
    let mut out = Vec::with_capacity(points.len());
    for &[lon, lat] in points {
        if !is_valid_wgs84(lon, lat) {
            return Err(SkipReason::BadCoordinates);
        }
        let p = frame.local_from_wgs84(lon, lat);
        if !(p[0].abs() <= MAX_DISTANCE_FROM_ORIGIN_M && p[1].abs() <= MAX_DISTANCE_FROM_ORIGIN_M) {
            return Err(SkipReason::OutsideCity);
        }
        out.push(p);
    }
    Ok(out)
}

fn to_linestring(ring: Ring) -> LineString<f64> {
    LineString(ring.into_iter().map(|[x, y]| Coord { x, y }).collect())
}

/// Builds validated polygons (outer CCW, holes CW) from WGS84 rings.
/// Every drawable polygon of an area; a broken polygon or hole is left out and counted
/// in `dropped` (the feature is drawn without it), and the first reason is returned
/// only when no polygon is left.
fn polygons(
    rings_by_polygon: Vec<Vec<Vec<[f64; 2]>>>,
    frame: &GeoFrame,
    dropped: &mut SkipCounts,
) -> Result<Vec<Polygon<f64>>, SkipReason> {
    let mut out = Vec::with_capacity(rings_by_polygon.len());
    let mut errors = Vec::new();
    for rings in rings_by_polygon {
        let mut iter = rings.into_iter();
        let Some(outer) = iter.next() else {
            errors.push(SkipReason::TooFewPoints);
            continue;
        };
        let outer = match project(&outer, frame).and_then(|r| rings::clean_ring(r, true)) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let mut holes = Vec::new();
        for hole in iter {
            let hole = project(&hole, frame).and_then(|r| rings::clean_ring(r, false));
            match hole {
                Ok(h) if rings::ring_inside(&h, &outer) => holes.push(to_linestring(h)),
                // A broken or misplaced hole does not cost the whole building.
                Ok(_) => errors.push(SkipReason::HoleOutsideOuter),
                Err(e) => errors.push(e),
            }
        }
        out.push(Polygon::new(to_linestring(outer), holes));
    }
    kept(out, errors, dropped)
}

fn area_rings(geometry: RawGeometry) -> Result<Vec<Vec<Vec<[f64; 2]>>>, SkipReason> {
    match geometry {
        RawGeometry::Polygon(rings) => Ok(vec![rings]),
        RawGeometry::MultiPolygon(polys) => Ok(polys),
        // A closed line is an area ring (an OSM closed way).
        RawGeometry::Line(l) if l.len() >= 4 && l.first() == l.last() => Ok(vec![vec![l]]),
        RawGeometry::CutLine(_) => Err(SkipReason::MissingReferences),
        RawGeometry::Null => Err(SkipReason::NullGeometry),
        _ => Err(SkipReason::UnsupportedGeometry),
    }
}

fn line_points(geometry: RawGeometry) -> Result<Vec<Vec<[f64; 2]>>, SkipReason> {
    match geometry {
        RawGeometry::Line(l) => Ok(vec![l]),
        RawGeometry::MultiLine(ls) | RawGeometry::CutLine(ls) => Ok(ls),
        RawGeometry::Polygon(rings) => Ok(rings),
        RawGeometry::MultiPolygon(ps) => Ok(ps.into_iter().flatten().collect()),
        RawGeometry::Null => Err(SkipReason::NullGeometry),
        RawGeometry::Point => Err(SkipReason::UnsupportedGeometry),
    }
}

fn project_line(points: &[[f64; 2]], frame: &GeoFrame) -> Result<LineString<f64>, SkipReason> {
    let mut ring = project(points, frame)?;
    ring.dedup();
    if ring.len() < 2 {
        return Err(SkipReason::TooFewPoints);
    }
    Ok(to_linestring(ring))
}

/// Every drawable part of a (multi)line; broken parts are left out and counted in
/// `dropped`, and the first reason is returned only when no part is left (an empty
/// geometry is a null one).
fn project_lines(
    lines: Vec<Vec<[f64; 2]>>,
    frame: &GeoFrame,
    dropped: &mut SkipCounts,
) -> Result<Vec<LineString<f64>>, SkipReason> {
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(lines.len());
    for l in &lines {
        match project_line(l, frame) {
            Ok(line) => out.push(line),
            Err(e) => errors.push(e),
        }
    }
    kept(out, errors, dropped)
}

/// The pieces kept, the broken ones counted in `dropped`; none kept: the feature is
/// skipped for the first piece's reason (an empty geometry is a null one).
fn kept<T>(
    out: Vec<T>,
    errors: Vec<SkipReason>,
    dropped: &mut SkipCounts,
) -> Result<Vec<T>, SkipReason> {
    if out.is_empty() {
        return Err(errors
            .into_iter()
            .next()
            .unwrap_or(SkipReason::NullGeometry));
    }
    for e in errors {
        dropped.add(e);
    }
    Ok(out)
}

fn width_from_tags(tags: &[(String, String)], default: f32) -> f32 {
    if let Some(w) = tag(tags, "width").and_then(footprint::parse_length_m)
        && (1.0..=100.0).contains(&w)
    {
        return w;
    }
    if let Some(l) = tag(tags, "lanes").and_then(footprint::parse_levels)
        && (1.0..=16.0).contains(&l)
    {
        return (l * 3.5).max(default * 0.6);
    }
    default
}

/// `dropped`: pieces of the feature left out as broken (it is drawn without them).
fn build_feature(
    f: RawFeature,
    frame: &GeoFrame,
    dropped: &mut SkipCounts,
) -> Result<Built, SkipReason> {
    // A line cut by the extract's edge leaves pieces of a point or none: nodes outside
    // the file, not broken input (a piece broken otherwise still is).
    if matches!(f.geometry, RawGeometry::CutLine(_)) {
        let mut cut = SkipCounts::default();
        let built = build_whole_feature(f, frame, &mut cut);
        for (reason, n) in cut.0 {
            let reason = match reason {
                SkipReason::TooFewPoints => SkipReason::MissingReferences,
                other => other,
            };
            dropped.add_n(reason, n);
        }
        return built;
    }
    build_whole_feature(f, frame, dropped)
}

fn build_whole_feature(
    f: RawFeature,
    frame: &GeoFrame,
    dropped: &mut SkipCounts,
) -> Result<Built, SkipReason> {
    let RawFeature { id, tags, geometry } = f;
    if geometry == RawGeometry::Null {
        return Err(SkipReason::NullGeometry);
    }
    if geometry == RawGeometry::Point {
        return Err(SkipReason::PointFeature);
    }
    let class = classify(&tags).ok_or(SkipReason::UnknownTags)?;
    // A highway drawn as a polygon (a relation, a GeoJSON area) is a paved area; a
    // railway drawn as one (a rail yard's land) is not drawn.
    let class = match class {
        Class::Road(road)
            if matches!(
                geometry,
                RawGeometry::Polygon(_) | RawGeometry::MultiPolygon(_)
            ) =>
        {
            if road == RoadClass::Rail {
                return Err(SkipReason::UnknownTags);
            }
            Class::Paved
        }
        other => other,
    };
    let name = tag(&tags, "name").map(str::to_string);
    match class {
        Class::Building => {
            let polys = polygons(area_rings(geometry)?, frame, dropped)?;
            let yes = |v: &&str| !matches!(*v, "no" | "false" | "0");
            let kind = tag(&tags, "building")
                .filter(yes)
                .or_else(|| tag(&tags, "building:part").filter(yes))
                .unwrap_or("yes")
                .to_string();
            let is_part =
                tag(&tags, "building:part").is_some_and(|v| !matches!(v, "no" | "false" | "0"));
            let extent = footprint::building_extent(&kind, |k| tag(&tags, k));
            // A building in several pieces (a MultiPolygon, a relation with several
            // outer rings) is one building.
            Ok(Built::Building(Building {
                id,
                footprint: MultiPolygon(polys),
                extent,
                kind,
                name,
                tags,
                is_part,
                outline: None,
                has_parts: false,
                parted_pieces: Vec::new(),
            }))
        }
        Class::Road(class) => {
            let lines = project_lines(line_points(geometry)?, frame, dropped)?;
            let width_m = width_from_tags(&tags, class.default_width_m());
            let oneway = if class == RoadClass::Rail {
                OneWay::No
            } else {
                OneWay::from_tags(&tags)
            };
            let link = tag(&tags, "highway").is_some_and(|h| h.ends_with("_link"));
            Ok(Built::Roads(
                lines
                    .into_iter()
                    .map(|line| Road {
                        id: id.clone(),
                        class,
                        width_m,
                        name: name.clone(),
                        line,
                        oneway,
                        link,
                    })
                    .collect(),
            ))
        }
        Class::Waterway => {
            let lines = project_lines(line_points(geometry)?, frame, dropped)?;
            let default = if tag(&tags, "waterway") == Some("river") {
                20.0
            } else {
                5.0
            };
            let width_m = width_from_tags(&tags, default);
            Ok(Built::Waterways(
                lines
                    .into_iter()
                    .map(|line| Waterway {
                        id: id.clone(),
                        width_m,
                        line,
                    })
                    .collect(),
            ))
        }
        Class::Water | Class::Green | Class::Paved => {
            let kind = match class {
                Class::Water => AreaKind::Water,
                Class::Green => AreaKind::Green,
                _ => AreaKind::Paved,
            };
            let polys = polygons(area_rings(geometry)?, frame, dropped)?;
            Ok(Built::Areas(
                polys
                    .into_iter()
                    .map(|polygon| Area {
                        id: id.clone(),
                        kind,
                        name: name.clone(),
                        polygon,
                    })
                    .collect(),
            ))
        }
        Class::District => {
            let admin_level = tag(&tags, "admin_level").and_then(|l| l.parse().ok());
            let boundary = project_lines(line_points(geometry)?, frame, dropped)?;
            Ok(Built::District(District {
                id,
                name,
                admin_level,
                boundary,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn square(lon: f64, lat: f64, d: f64) -> Vec<[f64; 2]> {
        vec![
            [lon, lat],
            [lon + d, lat],
            [lon + d, lat + d],
            [lon, lat + d],
            [lon, lat],
        ]
    }

    fn feature(id: &str, t: &[(&str, &str)], geometry: RawGeometry) -> RawFeature {
        RawFeature {
            id: id.into(),
            tags: tags(t),
            geometry,
        }
    }

    #[test]
    fn classifies_every_layer() {
        assert_eq!(
            classify(&tags(&[("building", "yes")])),
            Some(Class::Building)
        );
        assert_eq!(classify(&tags(&[("building", "no")])), None);
        assert_eq!(classify(&tags(&[("building", "false")])), None);
        assert_eq!(
            classify(&tags(&[("building", "false"), ("building:part", "yes")])),
            Some(Class::Building)
        );
        assert_eq!(
            classify(&tags(&[("highway", "primary")])),
            Some(Class::Road(RoadClass::Primary))
        );
        assert_eq!(
            classify(&tags(&[("railway", "tram")])),
            Some(Class::Road(RoadClass::Rail))
        );
        assert_eq!(classify(&tags(&[("natural", "water")])), Some(Class::Water));
        assert_eq!(
            classify(&tags(&[("waterway", "river")])),
            Some(Class::Waterway)
        );
        assert_eq!(classify(&tags(&[("leisure", "park")])), Some(Class::Green));
        assert_eq!(
            classify(&tags(&[
                ("boundary", "administrative"),
                ("admin_level", "9")
            ])),
            Some(Class::District)
        );
        assert_eq!(classify(&tags(&[("amenity", "bench")])), None);
        assert_eq!(classify(&tags(&[])), None);
    }

    #[test]
    fn builds_a_small_city_and_counts_what_it_skips() {
        let features = vec![
            feature(
                "b1",
                &[("building", "yes"), ("height", "30")],
                RawGeometry::Polygon(vec![square(24.94, 60.17, 0.0002)]),
            ),
            feature(
                "b2",
                &[("building", "house")],
                RawGeometry::Polygon(vec![
                    square(24.95, 60.17, 0.0004),
                    square(24.9501, 60.1701, 0.0001),
                ]),
            ),
            feature(
                "r1",
                &[("highway", "residential")],
                RawGeometry::Line(vec![[24.94, 60.17], [24.95, 60.171]]),
            ),
            feature(
                "w1",
                &[("natural", "water")],
                RawGeometry::Polygon(vec![square(24.96, 60.16, 0.001)]),
            ),
            feature(
                "g1",
                &[("leisure", "park")],
                RawGeometry::Polygon(vec![square(24.93, 60.16, 0.001)]),
            ),
            feature(
                "x1",
                &[("amenity", "bench")],
                RawGeometry::Polygon(vec![square(24.93, 60.16, 0.001)]),
            ),
            feature("n1", &[("building", "yes")], RawGeometry::Null),
            feature("p1", &[("building", "yes")], RawGeometry::Point),
            feature(
                "bad",
                &[("building", "yes")],
                RawGeometry::Polygon(vec![square(f64::NAN, 60.17, 0.001)]),
            ),
            feature(
                "huge",
                &[("building", "yes")],
                RawGeometry::Polygon(vec![square(1e300, 60.17, 0.001)]),
            ),
            feature(
                "far",
                &[("building", "yes")],
                RawGeometry::Polygon(vec![square(-70.0, -30.0, 0.001)]),
            ),
            feature(
                "few",
                &[("building", "yes")],
                RawGeometry::Polygon(vec![vec![[24.94, 60.17], [24.941, 60.17]]]),
            ),
            feature(
                "bow",
                &[("building", "yes")],
                RawGeometry::Polygon(vec![vec![
                    [24.94, 60.17],
                    [24.941, 60.171],
                    [24.941, 60.17],
                    [24.94, 60.171],
                    [24.94, 60.17],
                ]]),
            ),
        ];
        let map = build_city("test", features, SkipCounts::default());
        assert_eq!(map.buildings.len(), 2);
        assert_eq!(map.roads.len(), 1);
        assert_eq!(map.count_areas(AreaKind::Water), 1);
        assert_eq!(map.count_areas(AreaKind::Green), 1);
        let s = &map.skipped;
        assert_eq!(s.get(SkipReason::UnknownTags), 1);
        assert_eq!(s.get(SkipReason::NullGeometry), 1);
        assert_eq!(
            s.get(SkipReason::PointFeature),
            1,
            "a point building: not drawn"
        );
        assert_eq!(s.get(SkipReason::BadCoordinates), 2);
        assert_eq!(s.get(SkipReason::OutsideCity), 1);
        assert_eq!(s.get(SkipReason::TooFewPoints), 1);
        assert_eq!(s.get(SkipReason::SelfIntersecting), 1);
        assert_eq!(s.total(), 8);

        let b1 = map.buildings.iter().find(|b| b.id == "b1").unwrap();
        assert_eq!(b1.extent.height_m, 30.0);
        let b2 = map.buildings.iter().find(|b| b.id == "b2").unwrap();
        assert_eq!(b2.footprint.0[0].interiors().len(), 1, "hole kept");
        assert_eq!(b2.extent.height_m, 7.0, "house default");
        // The stray far-away building must not move the city: bbox stays in Helsinki.
        assert!(
            map.bbox_wgs84[0] > 24.9 && map.bbox_wgs84[2] < 25.0,
            "{:?}",
            map.bbox_wgs84
        );
    }

    #[test]
    fn broken_pieces_are_counted_but_a_cut_line_s_stubs_are_not_broken() {
        let mut bad = square(24.96, 60.17, 0.0004);
        bad[1] = [240.0, 95.0];
        let building = feature(
            "b",
            &[("building", "yes")],
            RawGeometry::MultiPolygon(vec![
                vec![square(24.94, 60.17, 0.0004)],
                vec![bad],
                vec![square(24.95, 60.17, 0.0004), square(24.97, 60.17, 0.0001)],
            ]),
        );
        let road = feature(
            "r",
            &[("highway", "primary")],
            RawGeometry::MultiLine(vec![
                vec![[24.94, 60.17], [24.95, 60.17]],
                vec![[24.95, 60.171]],
            ]),
        );
        let cut = feature(
            "c",
            &[("highway", "primary")],
            RawGeometry::CutLine(vec![
                vec![[24.94, 60.172], [24.95, 60.172]],
                vec![[24.95, 60.173]],
            ]),
        );
        let map = build_city("t", vec![building, road, cut], SkipCounts::default());
        assert_eq!(map.buildings.len(), 1);
        assert_eq!(map.buildings[0].footprint.0.len(), 2);
        assert_eq!(map.roads.len(), 2);
        assert_eq!(map.skipped.broken_total(), 0);
        // The polygon with a vertex off the Earth, the hole outside its polygon, the
        // road's line of one point; the cut road's stub is a reference outside the file.
        assert_eq!(map.pieces_dropped.get(SkipReason::BadCoordinates), 1);
        assert_eq!(map.pieces_dropped.get(SkipReason::HoleOutsideOuter), 1);
        assert_eq!(map.pieces_dropped.get(SkipReason::TooFewPoints), 1);
        assert_eq!(map.pieces_dropped.broken_total(), 3);
        assert_eq!(map.pieces_dropped.get(SkipReason::MissingReferences), 1);
    }

    #[test]
    fn a_building_in_pieces_with_parts_in_one_draws_the_other_itself() {
        let outline = feature(
            "b",
            &[("building", "yes"), ("height", "10")],
            RawGeometry::MultiPolygon(vec![
                vec![square(24.94, 60.17, 0.0004)],
                vec![square(24.95, 60.17, 0.0004)],
            ]),
        );
        let part = feature(
            "p",
            &[("building:part", "yes"), ("height", "30")],
            RawGeometry::Polygon(vec![square(24.9401, 60.1701, 0.0002)]),
        );
        let map = build_city("t", vec![outline, part], SkipCounts::default());
        let b = map.buildings.iter().position(|b| b.id == "b").unwrap();
        let p = map.buildings.iter().position(|b| b.id == "p").unwrap();
        assert_eq!(map.buildings[p].outline, Some(b));
        assert!(map.buildings[b].has_parts);
        assert_eq!(map.buildings[b].parted_pieces, vec![true, false]);
        // The piece without parts is still drawn and picked as the building; the
        // other shows its part.
        assert!(map.buildings[b].is_drawn());
        assert_eq!(map.buildings[b].drawn_pieces().count(), 1);
        let index = pick::BuildingIndex::new(&map);
        let [e, n] = map.frame.local_from_wgs84(24.9502, 60.1702);
        assert_eq!(index.building_at(&map, e, n), Some(b));
        let [e, n] = map.frame.local_from_wgs84(24.9402, 60.1702);
        assert_eq!(index.building_at(&map, e, n), Some(p));
    }

    #[test]
    fn a_railway_drawn_as_an_area_is_not_drawn_and_never_a_crash() {
        let yard = |id: &str, tags: &[(&str, &str)]| {
            feature(
                id,
                tags,
                RawGeometry::Polygon(vec![square(24.94, 60.17, 0.001)]),
            )
        };
        let features = vec![
            yard("r1", &[("railway", "rail")]),
            yard("r2", &[("railway", "tram"), ("area", "yes")]),
            yard("h", &[("highway", "pedestrian")]),
        ];
        let map = build_city("t", features, SkipCounts::default());
        assert_eq!(map.skipped.get(SkipReason::UnknownTags), 2);
        assert_eq!(map.count_areas(AreaKind::Paved), 1);
    }

    #[test]
    fn a_multipolygon_building_is_one_building() {
        let f = feature(
            "mp",
            &[("building", "yes")],
            RawGeometry::MultiPolygon(vec![
                vec![square(24.94, 60.17, 0.0002)],
                vec![square(24.95, 60.17, 0.0002)],
            ]),
        );
        let map = build_city("t", vec![f], SkipCounts::default());
        assert_eq!(map.buildings.len(), 1);
        assert_eq!(map.buildings[0].id, "mp");
        assert_eq!(map.buildings[0].footprint.0.len(), 2);
    }

    #[test]
    fn a_hole_outside_its_outer_is_dropped_but_the_building_stays() {
        let f = feature(
            "h",
            &[("building", "yes")],
            RawGeometry::Polygon(vec![
                square(24.94, 60.17, 0.0002),
                square(24.96, 60.17, 0.0001),
            ]),
        );
        let map = build_city("t", vec![f], SkipCounts::default());
        assert_eq!(map.buildings.len(), 1);
        assert!(map.buildings[0].footprint.0[0].interiors().is_empty());
    }

    #[test]
    fn building_parts_are_drawn_and_picked_instead_of_their_outline() {
        let outline = feature(
            "outline",
            &[
                ("building", "yes"),
                ("height", "16"),
                ("name", "Lasipalatsi"),
            ],
            RawGeometry::Polygon(vec![square(24.94, 60.17, 0.001)]),
        );
        let parts = vec![
            feature(
                "low",
                &[("building:part", "yes"), ("height", "5")],
                RawGeometry::Polygon(vec![square(24.9401, 60.1701, 0.0004)]),
            ),
            feature(
                "tall",
                &[("building:part", "yes"), ("height", "10")],
                RawGeometry::Polygon(vec![square(24.9405, 60.1705, 0.0004)]),
            ),
            feature(
                "other",
                &[("building", "yes")],
                RawGeometry::Polygon(vec![square(24.95, 60.17, 0.0002)]),
            ),
        ];
        let mut features = vec![outline];
        features.extend(parts.iter().cloned());
        let map = build_city("t", features, SkipCounts::default());
        let at = |id: &str| map.buildings.iter().position(|b| b.id == id).unwrap();
        let o = &map.buildings[at("outline")];
        assert!(o.has_parts && !o.is_drawn() && !o.is_part);
        for part in ["low", "tall"] {
            let b = &map.buildings[at(part)];
            assert!(b.is_part && b.is_drawn());
            assert_eq!(b.outline, Some(at("outline")), "{part}");
        }
        let other = &map.buildings[at("other")];
        assert!(!other.has_parts && other.outline.is_none() && other.is_drawn());

        // The outline adds nothing to the meshes: the same triangles as without it.
        let without = build_city("t", parts, SkipCounts::default());
        assert_eq!(
            mesh::build_city_meshes(&map).triangle_count(),
            mesh::build_city_meshes(&without).triangle_count()
        );

        // Picking inside the low part returns the part, not the taller outline.
        let index = pick::BuildingIndex::new(&map);
        let [e, n] = map.frame.local_from_wgs84(24.9402, 60.1702);
        assert_eq!(index.building_at(&map, e, n), Some(at("low")));
        let hit = index.building_on_ray(&map, [e, n, 500.0], [0.0, 0.0, -1.0], 1000.0);
        assert_eq!(hit, Some(at("low")));
    }

    #[test]
    fn default_city_parts_are_not_hidden_by_their_outlines() {
        let map = load_default().unwrap();
        let parts: Vec<&Building> = map.buildings.iter().filter(|b| b.is_part).collect();
        let linked = parts.iter().filter(|b| b.outline.is_some()).count();
        let outlines = map.buildings.iter().filter(|b| b.has_parts).count();
        assert!(
            parts.len() >= 120 && linked >= 120,
            "{} parts, {linked} linked",
            parts.len()
        );
        // Counted once each, whatever the number of their outer rings.
        assert!(outlines >= 45, "{outlines} outlines with parts");
        // Lasipalatsi: a 16 m default box over its ten lower parts before.
        let lasi = map
            .buildings
            .iter()
            .position(|b| b.id == "way/8035238")
            .unwrap();
        assert!(map.buildings[lasi].has_parts);
        let lasi_parts = parts.iter().filter(|b| b.outline == Some(lasi)).count();
        assert_eq!(lasi_parts, 10);
        // Picking inside any part returns a part, never an outline.
        let index = pick::BuildingIndex::new(&map);
        use geo::InteriorPoint;
        for b in parts.iter().filter(|b| b.outline.is_some()) {
            let p = b.footprint.interior_point().unwrap();
            let hit = index.building_at(&map, p.x(), p.y()).unwrap();
            assert!(map.buildings[hit].is_drawn(), "{} picked an outline", b.id);
        }
    }

    #[test]
    fn districts_reaching_far_outside_do_not_set_the_city_extent() {
        let features = vec![
            feature(
                "b",
                &[("building", "yes")],
                RawGeometry::Polygon(vec![square(7.42, 43.73, 0.02)]),
            ),
            // A region around the city, 100 km across.
            feature(
                "region",
                &[
                    ("boundary", "administrative"),
                    ("admin_level", "4"),
                    ("name", "Région"),
                ],
                RawGeometry::MultiLine(vec![square(6.8, 43.3, 1.2)]),
            ),
            // A district boundary crossing the city.
            feature(
                "quarter",
                &[("boundary", "administrative"), ("admin_level", "10")],
                RawGeometry::Line(vec![[7.0, 43.74], [8.0, 43.74]]),
            ),
            // One wholly 60 km away.
            feature(
                "far",
                &[("boundary", "administrative"), ("admin_level", "8")],
                RawGeometry::Line(vec![[8.2, 43.9], [8.3, 43.9]]),
            ),
        ];
        let map = build_city("t", features, SkipCounts::default());
        let [w, s, e, n] = map.local_bounds();
        assert!(e - w < 2_500.0 && n - s < 3_000.0, "{}×{} m", e - w, n - s);
        let quarter = map.districts.iter().find(|d| d.id == "quarter").unwrap();
        let len: f64 = quarter
            .boundary
            .iter()
            .map(|l| geo::Length::length(&geo::Euclidean, l))
            .sum();
        // The city is 1.6 km wide, the margin 500 m each side.
        assert!((len - 2_610.0).abs() < 50.0, "{len}");
        assert!(
            !map.districts.iter().any(|d| d.id == "region"),
            "no edge near the city"
        );
        assert!(!map.districts.iter().any(|d| d.id == "far"));
        assert_eq!(map.skipped.get(SkipReason::OutsideCity), 2);
    }

    #[test]
    fn a_city_of_districts_only_keeps_them_whole() {
        let f = feature(
            "d",
            &[("boundary", "administrative"), ("admin_level", "9")],
            RawGeometry::MultiLine(vec![square(24.9, 60.1, 0.1)]),
        );
        let map = build_city("t", vec![f], SkipCounts::default());
        assert_eq!(map.districts[0].boundary[0].0.len(), 5);
        assert!(map.bbox_wgs84[2] - map.bbox_wgs84[0] > 0.09);
    }

    #[test]
    fn a_city_across_the_antimeridian_keeps_both_sides() {
        let features = vec![
            feature(
                "west",
                &[("building", "yes")],
                RawGeometry::Polygon(vec![square(179.95, -16.8, 0.001)]),
            ),
            feature(
                "east",
                &[("building", "yes")],
                RawGeometry::Polygon(vec![square(-179.97, -16.8, 0.001)]),
            ),
            feature(
                "road",
                &[("highway", "primary")],
                RawGeometry::Line(vec![[179.99, -16.8], [-179.99, -16.8]]),
            ),
        ];
        let map = build_city("t", features, SkipCounts::default());
        assert_eq!(map.buildings.len(), 2, "{:?}", map.skipped);
        assert_eq!(map.roads.len(), 1);
        let len = geo::Length::length(&geo::Euclidean, &map.roads[0].line);
        assert!((len - 2_130.0).abs() < 20.0, "{len}");
    }

    #[test]
    fn road_width_from_width_or_lanes() {
        assert_eq!(width_from_tags(&tags(&[("width", "9 m")]), 7.0), 9.0);
        assert_eq!(width_from_tags(&tags(&[("lanes", "4")]), 7.0), 14.0);
        assert_eq!(width_from_tags(&tags(&[("width", "-2")]), 7.0), 7.0);
    }

    #[test]
    fn detects_formats() {
        assert_eq!(
            MapFormat::detect(Path::new("a.osm.pbf"), b""),
            Some(MapFormat::OsmPbf)
        );
        assert_eq!(
            MapFormat::detect(Path::new("a.geojson"), b""),
            Some(MapFormat::GeoJson)
        );
        assert_eq!(
            MapFormat::detect(Path::new("a.dat"), b"  {\"type\""),
            Some(MapFormat::GeoJson)
        );
        assert_eq!(MapFormat::detect(Path::new("a.dat"), b"hello"), None);
        assert_eq!(
            MapFormat::detect(Path::new("城市.SHP"), b""),
            Some(MapFormat::Shapefile)
        );
        assert_eq!(
            MapFormat::detect(Path::new("a.dat"), &[0, 0, 0x27, 0x0A, 0, 0]),
            Some(MapFormat::Shapefile)
        );
        assert_eq!(
            MapFormat::detect(Path::new("a.fgb"), b""),
            Some(MapFormat::FlatGeobuf)
        );
        assert_eq!(
            MapFormat::detect(Path::new("a.dat"), b"fgb\x03fgb\x00\x10\x00"),
            Some(MapFormat::FlatGeobuf)
        );
    }

    #[test]
    fn missing_file_is_an_error_naming_the_path() {
        let err = load_path(Path::new("/no/such/city.osm.pbf")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/no/such/city.osm.pbf"), "{text}");
    }
}
