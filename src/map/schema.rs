//! Which schema a map's properties follow, read as the OpenStreetMap tags the rest of
//! the pipeline classifies by.
//!
//! Real cities hand over more than OSM files: vector-tile style GeoJSON says
//! `kind = building` (Tilezen, Protomaps), a surveying bureau's export has fields like
//! `HEIGHT`, `FLOORS`, `高度` or `层数`. Each feature is read by the first of these that
//! fits:
//! 1. an explicit mapping ([`SchemaFile`]: `--schema FILE`, or `<map>.schema.toml`
//!    beside the map), which wins over guessing;
//! 2. OSM tags, when it has any the map draws by (`building`, `highway`, ...);
//! 3. vector-tile properties (`kind`, `kind_detail`, `height`, `min_height`, `name`);
//! 4. agency fields: a polygon with a height or floors field is a building.
//!
//! The tags the pipeline reads are added; the feature's own properties stay as they
//! came (the inspector shows them). What was detected, and which fields were used, is
//! reported ([`SchemaReport`]) so a user sees why their data looks as it does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{RawFeature, RawGeometry, Tags, tag};

/// Keys whose presence makes a feature OSM-tagged: the ones the map classifies by.
const OSM_KEYS: [&str; 12] = [
    "building",
    "building:part",
    "highway",
    "railway",
    "natural",
    "water",
    "waterway",
    "landuse",
    "leisure",
    "boundary",
    "area:highway",
    "admin_level",
];

/// Common agency field names, in the order they are tried (ASCII ones in any case).
const HEIGHT_FIELDS: [&str; 9] = [
    "height",
    "building_height",
    "bldg_height",
    "building_h",
    "hgt",
    "高度",
    "建筑高度",
    "楼高",
    "房屋高度",
];
const FLOORS_FIELDS: [&str; 11] = [
    "floors",
    "floor",
    "num_floors",
    "storeys",
    "stories",
    "levels",
    "层数",
    "楼层",
    "楼层数",
    "地上层数",
    "建筑层数",
];
const NAME_FIELDS: [&str; 7] = [
    "name",
    "name_zh",
    "name:zh",
    "名称",
    "建筑名称",
    "名字",
    "jzmc",
];

/// How a feature's properties were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Schema {
    /// OpenStreetMap tags, as they are.
    Osm,
    /// Vector-tile style: `kind`, `kind_detail`, `height`, `min_height`.
    VectorTile,
    /// Agency fields: a height or floors field on a polygon.
    Agency,
    /// The explicit mapping given.
    Explicit,
    /// None fits: nothing the map draws.
    Unknown,
}

impl Schema {
    pub fn as_str(self) -> &'static str {
        match self {
            Schema::Osm => "osm",
            Schema::VectorTile => "vector_tile",
            Schema::Agency => "agency",
            Schema::Explicit => "explicit",
            Schema::Unknown => "unknown",
        }
    }
}

/// What the reading of a map's properties found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SchemaReport {
    /// The schema most features follow (`osm` for an empty map).
    pub detected: Option<Schema>,
    /// Features per schema.
    pub features: BTreeMap<Schema, u64>,
    /// For each role (`height`, `min_height`, `floors`, `name`, `kind`), the fields
    /// read for it (vector-tile and agency features, and the explicit mapping's).
    pub fields: BTreeMap<&'static str, BTreeSet<String>>,
    /// The explicit mapping's file, when one was used.
    pub file: Option<PathBuf>,
}

impl SchemaReport {
    fn add(&mut self, schema: Schema, used: &[(&'static str, String)]) {
        *self.features.entry(schema).or_default() += 1;
        for (role, field) in used {
            self.fields.entry(role).or_default().insert(field.clone());
        }
    }

    fn merge(mut self, other: SchemaReport) -> SchemaReport {
        for (schema, n) in other.features {
            *self.features.entry(schema).or_default() += n;
        }
        for (role, fields) in other.fields {
            self.fields.entry(role).or_default().extend(fields);
        }
        self
    }

    /// `{"detected", "features", "fields", "file"}` for `map-info`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "detected": self.detected.map(Schema::as_str),
            "features": self.features.iter()
                .map(|(s, n)| (s.as_str().to_string(), serde_json::Value::from(*n)))
                .collect::<serde_json::Map<_, _>>(),
            "fields": self.fields,
            "file": self.file.as_ref().map(|f| f.display().to_string()),
        })
    }
}

/// An explicit mapping of a map's fields (TOML), for data whose field names cannot be
/// guessed (`JZGD` for a height, `CS` for floors):
///
/// ```toml
/// kind = "building"      # every feature is a building (or water, green, road, auto)
/// height = "JZGD"        # metres
/// floors = "CS"
/// name = "JZMC"
/// # or: what each feature is, by a field's value
/// # kind_field = "TYPE"
/// # [kinds]
/// # "房屋" = "building"
/// # "水系" = "water"
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemaFile {
    /// What every feature is: `building`, `building_part`, `water`, `green`,
    /// `road` (a road of class `residential`, or a class such as `primary`),
    /// `district`, or `auto` (guessed as without a mapping, the default).
    pub kind: Option<String>,
    /// A field whose value says what the feature is, through `kinds`.
    pub kind_field: Option<String>,
    /// `kind_field`'s values → what they are (as `kind`).
    #[serde(default)]
    pub kinds: BTreeMap<String, String>,
    /// The field with the height in metres (of the top, from the ground).
    pub height: Option<String>,
    /// The field with the height of the base in metres.
    pub min_height: Option<String>,
    /// The field with the number of floors above ground.
    pub floors: Option<String>,
    /// The field with the name.
    pub name: Option<String>,
}

/// What a mapping's `kind` may say.
const KINDS: [&str; 8] = [
    "building",
    "building_part",
    "water",
    "green",
    "road",
    "district",
    "auto",
    "none",
];

impl SchemaFile {
    /// Parses and checks a mapping; errors name the problem.
    pub fn parse(text: &str) -> Result<SchemaFile, String> {
        let file: SchemaFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let check = |what: &str, kind: &str| {
            let road_class = kind
                .strip_prefix("road:")
                .is_some_and(|c| super::RoadClass::from_highway(c).is_some());
            if KINDS.contains(&kind) || road_class {
                Ok(())
            } else {
                Err(format!(
                    "{what} = \"{kind}\": say building, building_part, water, green, road (or road:primary, road:residential, ...), district, auto or none"
                ))
            }
        };
        if let Some(kind) = &file.kind {
            check("kind", kind)?;
        }
        for (value, kind) in &file.kinds {
            check(&format!("kinds.\"{value}\""), kind)?;
        }
        if !file.kinds.is_empty() && file.kind_field.is_none() {
            return Err("[kinds] needs kind_field: the field whose values it names".into());
        }
        Ok(file)
    }

    /// Reads a mapping file.
    pub fn load(path: &Path) -> Result<SchemaFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read schema file {}: {e}", path.display()))?;
        SchemaFile::parse(&text).map_err(|e| format!("schema file {}: {e}", path.display()))
    }

    /// The mapping beside a map: `city.schema.toml` for `city.geojson` (or
    /// `city.shp`, ...), if there is one.
    pub fn beside(map: &Path) -> Option<PathBuf> {
        let stem = map.file_name()?.to_str()?.split('.').next()?.to_string();
        let path = map.with_file_name(format!("{stem}.schema.toml"));
        path.is_file().then_some(path)
    }
}

/// Reads every feature's properties by its schema (see the module's description),
/// adding the OSM tags the pipeline classifies by. Runs in parallel.
pub fn normalise(features: &mut [RawFeature], explicit: Option<&SchemaFile>) -> SchemaReport {
    let report = features
        .par_iter_mut()
        .fold(SchemaReport::default, |mut report, f| {
            let (schema, used) = read_feature(f, explicit);
            report.add(schema, &used);
            report
        })
        .reduce(SchemaReport::default, SchemaReport::merge);
    let detected = report
        .features
        .iter()
        .filter(|(s, _)| **s != Schema::Unknown)
        .max_by_key(|(s, n)| (**n, std::cmp::Reverse(**s)))
        .map(|(s, _)| *s)
        .or(Some(Schema::Osm));
    SchemaReport { detected, ..report }
}

/// Reads one feature; returns its schema and the fields used, by role.
fn read_feature(
    f: &mut RawFeature,
    explicit: Option<&SchemaFile>,
) -> (Schema, Vec<(&'static str, String)>) {
    if let Some(mapping) = explicit
        && let Some(used) = read_explicit(f, mapping)
    {
        return (Schema::Explicit, used);
    }
    if OSM_KEYS.iter().any(|k| tag(&f.tags, k).is_some()) {
        return (Schema::Osm, Vec::new());
    }
    if let Some(used) = read_vector_tile(f) {
        return (Schema::VectorTile, used);
    }
    if let Some(used) = read_agency(f) {
        return (Schema::Agency, used);
    }
    (Schema::Unknown, Vec::new())
}

fn is_area(g: &RawGeometry) -> bool {
    match g {
        RawGeometry::Polygon(_) | RawGeometry::MultiPolygon(_) => true,
        RawGeometry::Line(l) => l.len() >= 4 && l.first() == l.last(),
        _ => false,
    }
}

/// The value of a field by one of its names: ASCII names in any case, others exact.
fn field<'a>(tags: &'a Tags, names: &[&str]) -> Option<(&'a str, &'a str)> {
    names.iter().find_map(|name| {
        tags.iter()
            .find(|(k, v)| {
                !v.trim().is_empty()
                    && if name.is_ascii() {
                        k.eq_ignore_ascii_case(name)
                    } else {
                        k == name
                    }
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
    })
}

/// A height in metres above zero (agencies write 0 for "unknown"), in any spelling
/// OSM heights have (`12`, `12 m`, `40 ft`) or with 米.
fn height_m(value: &str) -> Option<f32> {
    let value = value.trim().replace('米', " m").replace('Ｍ', "m");
    let v = super::footprint::parse_length_m(value.trim())?;
    (v.is_finite() && v > 0.0).then_some(v)
}

/// A number of floors above zero: `12`, `12层`, `12 F`, `12楼`.
fn floors(value: &str) -> Option<f64> {
    let v: f64 = value
        .trim()
        .trim_end_matches(['层', '楼', 'F', 'f', 'Ｆ'])
        .trim()
        .parse()
        .ok()?;
    (v.is_finite() && v > 0.0 && v < 500.0).then_some(v)
}

fn push(tags: &mut Tags, key: &str, value: impl Into<String>) {
    if tag(tags, key).is_none() {
        tags.push((key.to_string(), value.into()));
    }
}

/// Adds the tags of what a mapping's kind names.
fn add_kind(f: &mut RawFeature, kind: &str) -> bool {
    let area = is_area(&f.geometry);
    let tags = &mut f.tags;
    match kind {
        "building" => push(tags, "building", "yes"),
        "building_part" => push(tags, "building:part", "yes"),
        "water" if area => push(tags, "natural", "water"),
        "water" => push(tags, "waterway", "river"),
        "green" => push(tags, "leisure", "park"),
        "road" => push(tags, "highway", "residential"),
        "district" => push(tags, "boundary", "administrative"),
        other => match other.strip_prefix("road:") {
            Some(class) => push(tags, "highway", class),
            None => return false, // auto, none
        },
    }
    true
}

/// Heights, floors and the name from the given fields. `overrule`: they replace the
/// feature's own `height`, `building:levels`, `name` (an explicit mapping's do).
fn add_measures(
    f: &mut RawFeature,
    fields: [(&'static str, Option<(String, String)>); 4],
    used: &mut Vec<(&'static str, String)>,
    overrule: bool,
) {
    for (role, found) in fields {
        let Some((name, value)) = found else { continue };
        let (key, value) = match role {
            "height" | "min_height" => match height_m(&value) {
                Some(v) => (role, v.to_string()),
                None => continue,
            },
            "floors" => match floors(&value) {
                Some(v) => ("building:levels", v.to_string()),
                None => continue,
            },
            _ => ("name", value.trim().to_string()),
        };
        if key == name {
            // The field is the tag itself: nothing to add.
        } else if overrule {
            f.tags.retain(|(k, _)| k != key);
            f.tags.push((key.to_string(), value));
        } else if tag(&f.tags, key).is_none() {
            f.tags.push((key.to_string(), value));
        }
        used.push((role, name));
    }
}

fn owned(found: Option<(&str, &str)>) -> Option<(String, String)> {
    found.map(|(k, v)| (k.to_string(), v.to_string()))
}

/// The explicit mapping; `None` when it says to guess this feature (`auto`, or no
/// kind for it).
fn read_explicit(f: &mut RawFeature, mapping: &SchemaFile) -> Option<Vec<(&'static str, String)>> {
    let by_field = mapping.kind_field.as_ref().and_then(|k| {
        let value = tag(&f.tags, k)?;
        mapping.kinds.get(value.trim()).cloned()
    });
    let kind = by_field.or_else(|| mapping.kind.clone())?;
    if kind == "auto" {
        return None;
    }
    let mut used = Vec::new();
    if let Some(k) = &mapping.kind_field {
        used.push(("kind", k.clone()));
    }
    // What the mapping says the feature is wins over what its own keys say.
    f.tags.retain(|(k, _)| !OSM_KEYS.contains(&k.as_str()));
    if kind == "none" {
        return Some(used);
    }
    add_kind(f, &kind);
    let get = |name: &Option<String>| {
        let name = name.as_ref()?;
        owned(tag(&f.tags, name).map(|v| (name.as_str(), v)))
    };
    let fields = [
        ("height", get(&mapping.height)),
        ("min_height", get(&mapping.min_height)),
        ("floors", get(&mapping.floors)),
        ("name", get(&mapping.name)),
    ];
    add_measures(f, fields, &mut used, true);
    Some(used)
}

/// Vector-tile style (`kind`, `kind_detail`), as Tilezen and Protomaps write it.
fn read_vector_tile(f: &mut RawFeature) -> Option<Vec<(&'static str, String)>> {
    let kind = tag(&f.tags, "kind")?.trim().to_ascii_lowercase();
    let detail = tag(&f.tags, "kind_detail").map(|d| d.trim().to_ascii_lowercase());
    let area = is_area(&f.geometry);
    let road = |class: &str| ("highway", class.to_string());
    let (key, value) = match kind.as_str() {
        "building" => (
            "building",
            detail
                .clone()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "yes".into()),
        ),
        "building_part" => ("building:part", "yes".into()),
        "water" | "ocean" | "lake" | "riverbank" | "reservoir" | "basin" | "swimming_pool"
        | "dock" | "pond" | "bay" | "water_body"
            if area =>
        {
            ("natural", "water".into())
        }
        "river" | "stream" | "canal" | "drain" | "ditch" if area => ("natural", "water".into()),
        "river" | "stream" | "canal" | "drain" | "ditch" => ("waterway", kind.clone()),
        "water" => ("waterway", "river".into()),
        "park" | "garden" | "forest" | "wood" | "grass" | "grassland" | "meadow"
        | "nature_reserve" | "golf_course" | "cemetery" | "recreation_ground" | "playground"
        | "pitch" | "village_green" | "allotments" | "orchard" | "scrub" | "heath" | "wetland"
        | "national_park" | "protected_area" => ("leisure", "park".into()),
        "rail" | "railway" | "light_rail" | "tram" | "subway" | "narrow_gauge" => (
            "railway",
            match kind.as_str() {
                "railway" => "rail".into(),
                k => k.to_string(),
            },
        ),
        "highway" | "major_road" | "medium_road" | "minor_road" | "path" | "road" | "street" => {
            // Tilezen and Protomaps give the OSM class in kind_detail.
            match detail
                .as_deref()
                .filter(|d| super::RoadClass::from_highway(d).is_some())
            {
                Some(d) => road(d),
                None => road(match kind.as_str() {
                    "highway" => "motorway",
                    "major_road" => "primary",
                    "medium_road" => "secondary",
                    "path" => "footway",
                    _ => "residential",
                }),
            }
        }
        "district" | "county" | "borough" | "suburb" | "administrative" | "city_district" => {
            ("boundary", "administrative".into())
        }
        // Some write the OSM class itself as the kind.
        other if super::RoadClass::from_highway(other).is_some() => road(other),
        _ => return None,
    };
    f.tags.push((key.to_string(), value));
    let mut used = vec![("kind", "kind".to_string())];
    if detail.is_some() {
        used.push(("kind", "kind_detail".to_string()));
    }
    let name = if tag(&f.tags, "name").is_none() {
        owned(field(
            &f.tags,
            &["name:zh", "name_zh", "name_en", "name:en"],
        ))
    } else {
        None
    };
    let fields = [
        ("height", None),
        ("min_height", None),
        (
            "floors",
            owned(field(&f.tags, &["building_levels", "levels"])),
        ),
        ("name", name),
    ];
    add_measures(f, fields, &mut used, false);
    for (role, key) in [("height", "height"), ("min_height", "min_height")] {
        if tag(&f.tags, key).is_some() {
            used.push((role, key.to_string()));
        }
    }
    Some(used)
}

/// Agency fields: a polygon with a height or floors field is a building.
fn read_agency(f: &mut RawFeature) -> Option<Vec<(&'static str, String)>> {
    if !is_area(&f.geometry) {
        return None;
    }
    let height = owned(field(&f.tags, &HEIGHT_FIELDS)).filter(|(_, v)| height_m(v).is_some());
    let floors = owned(field(&f.tags, &FLOORS_FIELDS)).filter(|(_, v)| self::floors(v).is_some());
    if height.is_none() && floors.is_none() {
        // A height field present but empty or zero still says "building".
        field(&f.tags, &HEIGHT_FIELDS).or_else(|| field(&f.tags, &FLOORS_FIELDS))?;
    }
    push(&mut f.tags, "building", "yes");
    let name = owned(field(&f.tags, &NAME_FIELDS)).filter(|(k, _)| k != "name");
    let mut used = Vec::new();
    add_measures(
        f,
        [
            ("height", height),
            ("min_height", None),
            ("floors", floors),
            ("name", name),
        ],
        &mut used,
        false,
    );
    Some(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square() -> RawGeometry {
        RawGeometry::Polygon(vec![vec![
            [24.94, 60.17],
            [24.9402, 60.17],
            [24.9402, 60.1702],
            [24.94, 60.1702],
            [24.94, 60.17],
        ]])
    }

    fn feature(tags: &[(&str, &str)], geometry: RawGeometry) -> RawFeature {
        RawFeature {
            id: "f".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            geometry,
        }
    }

    #[test]
    fn agency_fields_in_any_case_or_chinese_make_a_building() {
        let mut fs = vec![
            feature(&[("HEIGHT", "45.5"), ("NAME", "市政府")], square()),
            feature(&[("层数", "12"), ("名称", "中枢大厦")], square()),
            feature(&[("Floors", "0"), ("Height", "0")], square()),
            // A height field on a line is no building.
            feature(
                &[("HEIGHT", "3")],
                RawGeometry::Line(vec![[24.94, 60.17], [24.95, 60.17]]),
            ),
        ];
        let report = normalise(&mut fs, None);
        assert_eq!(tag(&fs[0].tags, "building"), Some("yes"));
        assert_eq!(tag(&fs[0].tags, "height"), Some("45.5"));
        assert_eq!(tag(&fs[0].tags, "name"), Some("市政府"));
        assert_eq!(tag(&fs[1].tags, "building:levels"), Some("12"));
        assert_eq!(tag(&fs[1].tags, "name"), Some("中枢大厦"));
        // Zero is "unknown": a building at its default height.
        assert_eq!(tag(&fs[2].tags, "building"), Some("yes"));
        assert_eq!(tag(&fs[2].tags, "height"), None);
        assert_eq!(tag(&fs[3].tags, "building"), None);
        assert_eq!(report.features[&Schema::Agency], 3);
        assert_eq!(report.features[&Schema::Unknown], 1);
        assert_eq!(report.detected, Some(Schema::Agency));
        assert_eq!(
            report.fields["height"],
            BTreeSet::from(["HEIGHT".to_string()])
        );
        assert_eq!(
            report.fields["floors"],
            BTreeSet::from(["层数".to_string()])
        );
    }

    #[test]
    fn vector_tile_kinds_become_what_the_map_draws() {
        let line = RawGeometry::Line(vec![[24.94, 60.17], [24.95, 60.17]]);
        let mut fs = vec![
            feature(
                &[("kind", "building"), ("height", "30"), ("min_height", "5")],
                square(),
            ),
            feature(&[("kind", "building_part")], square()),
            feature(&[("kind", "water")], square()),
            feature(&[("kind", "river")], line.clone()),
            feature(&[("kind", "park"), ("name:zh", "中山公园")], square()),
            feature(
                &[("kind", "major_road"), ("kind_detail", "trunk")],
                line.clone(),
            ),
            feature(&[("kind", "minor_road")], line.clone()),
            feature(&[("kind", "path")], line.clone()),
            feature(&[("kind", "rail")], line.clone()),
            feature(&[("kind", "primary")], line.clone()),
            feature(&[("kind", "bus_stop")], RawGeometry::Point),
        ];
        let report = normalise(&mut fs, None);
        let t = |i: usize, k: &str| tag(&fs[i].tags, k).map(str::to_string);
        assert_eq!(t(0, "building").as_deref(), Some("yes"));
        assert_eq!(t(1, "building:part").as_deref(), Some("yes"));
        assert_eq!(t(2, "natural").as_deref(), Some("water"));
        assert_eq!(t(3, "waterway").as_deref(), Some("river"));
        assert_eq!(t(4, "leisure").as_deref(), Some("park"));
        assert_eq!(t(4, "name").as_deref(), Some("中山公园"));
        assert_eq!(t(5, "highway").as_deref(), Some("trunk"));
        assert_eq!(t(6, "highway").as_deref(), Some("residential"));
        assert_eq!(t(7, "highway").as_deref(), Some("footway"));
        assert_eq!(t(8, "railway").as_deref(), Some("rail"));
        assert_eq!(t(9, "highway").as_deref(), Some("primary"));
        assert_eq!(report.features[&Schema::VectorTile], 10);
        assert_eq!(report.detected, Some(Schema::VectorTile));
        assert!(report.fields["height"].contains("height"));
    }

    #[test]
    fn heights_and_floors_with_their_units() {
        let mut fs = vec![
            feature(&[("HEIGHT", "30米")], square()),
            feature(&[("层数", "10层")], square()),
            feature(&[("FLOORS", "3F")], square()),
            feature(&[("Height", "40 ft")], square()),
        ];
        normalise(&mut fs, None);
        assert_eq!(tag(&fs[0].tags, "height"), Some("30"));
        assert_eq!(tag(&fs[1].tags, "building:levels"), Some("10"));
        assert_eq!(tag(&fs[2].tags, "building:levels"), Some("3"));
        assert_eq!(tag(&fs[3].tags, "height"), Some("12.192"));
    }

    #[test]
    fn osm_tags_are_left_as_they_are() {
        let mut fs = vec![feature(&[("building", "yes"), ("kind", "water")], square())];
        let before = fs[0].tags.clone();
        let report = normalise(&mut fs, None);
        assert_eq!(fs[0].tags, before);
        assert_eq!(report.detected, Some(Schema::Osm));
    }

    #[test]
    fn an_explicit_mapping_wins_over_guessing() {
        let mapping = SchemaFile::parse(
            r#"
            kind_field = "TYPE"
            height = "JZGD"
            floors = "CS"
            name = "JZMC"
            [kinds]
            "房屋" = "building"
            "水系" = "water"
            "道路" = "road:primary"
            "其他" = "none"
            "#,
        )
        .unwrap();
        let mut fs = vec![
            feature(
                &[
                    ("TYPE", "房屋"),
                    ("JZGD", "18"),
                    ("CS", "6"),
                    ("JZMC", "档案馆"),
                ],
                square(),
            ),
            feature(&[("TYPE", "水系")], square()),
            feature(
                &[("TYPE", "道路")],
                RawGeometry::Line(vec![[24.94, 60.17], [24.95, 60.17]]),
            ),
            // A HEIGHT field would make it a building by guessing; the mapping says no.
            feature(&[("TYPE", "其他"), ("HEIGHT", "9")], square()),
            // Not named by the mapping: guessed.
            feature(&[("building", "yes")], square()),
            // Its own height and name lose to the mapping's fields; its own
            // building=yes to what the mapping says it is.
            feature(
                &[
                    ("TYPE", "房屋"),
                    ("JZGD", "40"),
                    ("height", "3"),
                    ("name", "x"),
                ],
                square(),
            ),
            feature(&[("TYPE", "水系"), ("building", "yes")], square()),
        ];
        let report = normalise(&mut fs, Some(&mapping));
        assert_eq!(tag(&fs[0].tags, "building"), Some("yes"));
        assert_eq!(tag(&fs[0].tags, "height"), Some("18"));
        assert_eq!(tag(&fs[0].tags, "building:levels"), Some("6"));
        assert_eq!(tag(&fs[0].tags, "name"), Some("档案馆"));
        assert_eq!(tag(&fs[1].tags, "natural"), Some("water"));
        assert_eq!(tag(&fs[2].tags, "highway"), Some("primary"));
        assert_eq!(tag(&fs[3].tags, "building"), None);
        assert_eq!(tag(&fs[5].tags, "height"), Some("40"));
        assert_eq!(tag(&fs[6].tags, "building"), None);
        assert_eq!(tag(&fs[6].tags, "natural"), Some("water"));
        assert_eq!(report.features[&Schema::Explicit], 6);
        assert_eq!(report.features[&Schema::Osm], 1);
        assert_eq!(report.fields["kind"], BTreeSet::from(["TYPE".to_string()]));
        assert_eq!(
            report.fields["height"],
            BTreeSet::from(["JZGD".to_string()])
        );
    }

    #[test]
    fn a_mapping_with_a_mistake_says_what_is_wrong() {
        let err = SchemaFile::parse("kind = \"house\"").unwrap_err();
        assert!(err.contains("kind = \"house\""), "{err}");
        let err = SchemaFile::parse("hieght = \"H\"").unwrap_err();
        assert!(err.contains("hieght"), "{err}");
        let err = SchemaFile::parse("[kinds]\n\"a\" = \"building\"").unwrap_err();
        assert!(err.contains("kind_field"), "{err}");
        assert!(SchemaFile::parse("kind = \"road:tertiary\"").is_ok());
    }
}
