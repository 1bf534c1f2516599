//! Coordinate reference systems, converted once at the boundary.
//!
//! Every loader hands over [`RawFeature`]s in whatever coordinates its file holds;
//! [`to_wgs84_at_boundary`] decides which CRS they are in (the `--crs` flag, else what
//! the file says, else WGS84 degrees), converts them in place to WGS84 `[lon, lat]`
//! and applies a `--coords gcj02|bd09` offset, before anything else sees them. A CRS
//! that is not understood is an error naming it, and coordinates that do not fit the
//! CRS they are read in (metres read as degrees, degrees read as metres) are refused:
//! a map is never drawn in the wrong place.
//!
//! Understood: WGS 84 (EPSG:4326, `CRS84`), CGCS2000 (EPSG:4490), Web Mercator
//! (EPSG:3857; Esri 102100, 102113, 900913, 3785), WGS 84 / UTM (EPSG:32601–32660,
//! 32701–32760), CGCS2000 Gauss-Krüger 3-degree zones (EPSG:4513–4533 with the zone
//! number before the false easting, 4534–4554 without) and 6-degree zones
//! (EPSG:4491–4501, 4502–4512), and any transverse Mercator on the WGS 84 or CGCS2000
//! datum described by a `.prj` WKT. Projections are undone with `proj4rs` (a pure-Rust
//! PROJ); GCJ-02 and BD-09 with `coordtransform`.
//!
//! CGCS2000 is taken as WGS 84: the two frames differ by a few centimetres, far below
//! what a city map shows, so no datum shift is applied. Other datums (Beijing 1954,
//! Xian 1980) need parameters a file does not carry and are refused by name.
//!
//! Glossary: *GCJ-02* ("Mars coordinates") is the obfuscated lon/lat of maps published
//! in mainland China (Amap, Tencent, Google China); *BD-09* is Baidu's further offset
//! of it. Both are hundreds of metres from WGS 84.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{RawFeature, RawGeometry};

/// The datum of a geographic or projected CRS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datum {
    Wgs84,
    /// China Geodetic Coordinate System 2000: read as WGS 84 (centimetres apart).
    Cgcs2000,
}

impl Datum {
    fn ellps(self) -> &'static str {
        match self {
            Datum::Wgs84 => "WGS84",
            // CGCS2000's ellipsoid has GRS 80's axes (1/f 298.257222101).
            Datum::Cgcs2000 => "GRS80",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Datum::Wgs84 => "WGS 84",
            Datum::Cgcs2000 => "CGCS2000",
        }
    }
}

/// A coordinate reference system a map file's coordinates may be in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Crs {
    /// Longitude, latitude in degrees on WGS 84 (EPSG:4326).
    Wgs84,
    /// Longitude, latitude in degrees on CGCS2000 (EPSG:4490).
    Cgcs2000,
    /// Web Mercator (EPSG:3857), metres.
    WebMercator,
    /// WGS 84 / UTM, metres.
    Utm { zone: u8, north: bool },
    /// CGCS2000 Gauss-Krüger, metres: `zone_width_deg` 3 (EPSG:4513–4554) or 6
    /// (EPSG:4491–4512); `zone_prefix` when the false easting carries the zone number
    /// (38 500 000 m instead of 500 000 m).
    GaussKruger {
        zone_width_deg: u8,
        zone: u8,
        zone_prefix: bool,
    },
    /// Any other transverse Mercator on WGS 84 or CGCS2000 (from a `.prj`), metres.
    TransverseMercator {
        datum: Datum,
        central_meridian: f64,
        latitude_of_origin: f64,
        scale_factor: f64,
        false_easting: f64,
        false_northing: f64,
    },
}

/// Why a CRS could not be read or a map's coordinates do not fit it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CrsError {
    #[error(
        "unknown CRS EPSG:{0}: Zhongshu reads EPSG:4326, 4490, 3857, WGS 84 / UTM (32601–32660, 32701–32760) and CGCS2000 Gauss-Krüger (4491–4554); convert the file to one of them"
    )]
    UnknownCode(u32),
    #[error("unknown CRS {0:?}: give it as EPSG:n (e.g. EPSG:4547)")]
    Unreadable(String),
    #[error(
        "the CRS's datum {0:?} is not supported (only WGS 84 and CGCS2000): convert the file to one of them"
    )]
    UnsupportedDatum(String),
    #[error(
        "the CRS's projection {0:?} is not supported (transverse Mercator, Gauss-Krüger, UTM and Web Mercator are)"
    )]
    UnsupportedProjection(String),
    #[error("the CRS's unit {0:?} is not metres")]
    UnsupportedUnit(String),
    #[error("the .prj is not WKT Zhongshu can read: {0}")]
    BadWkt(String),
    #[error(
        "coordinates look projected (e.g. {x}, {y}), not degrees: give the CRS with --crs EPSG:n or a crs member{hint}"
    )]
    LooksProjected { x: f64, y: f64, hint: String },
    #[error(
        "coordinates look projected (e.g. {x}, {y}), not degrees, and the Shapefile has no .prj beside it: put its .prj beside the .shp or give the CRS with --crs EPSG:n{hint}"
    )]
    LooksProjectedWithoutPrj { x: f64, y: f64, hint: String },
    #[error(
        "the file says {crs}, but its coordinates look projected (e.g. {x}, {y}), not degrees: give the right CRS with --crs EPSG:n"
    )]
    DeclaredDegreesLooksProjected { crs: String, x: f64, y: f64 },
    #[error(
        "coordinates look like degrees (e.g. {x}, {y}), not the metres of {crs}: leave --crs out or give the CRS the file is really in"
    )]
    LooksLikeDegrees { crs: String, x: f64, y: f64 },
    #[error(
        "coordinates do not fit {crs}: (e.g. {x}, {y}) is more than 1000 km east or west of its central meridian; are easting and northing swapped, or is it another zone?"
    )]
    OutsideZone { crs: String, x: f64, y: f64 },
    #[error("{0} does not apply: an OSM PBF is always WGS 84 longitude/latitude")]
    FlagDoesNotApply(String),
    #[error("cannot undo {crs}: {message}")]
    Projection { crs: String, message: String },
}

const ESRI_WEB_MERCATOR: [u32; 4] = [102100, 102113, 900913, 3785];

impl Crs {
    /// The CRS of an EPSG code.
    pub fn from_epsg(code: u32) -> Result<Crs, CrsError> {
        Ok(match code {
            4326 => Crs::Wgs84,
            4490 => Crs::Cgcs2000,
            3857 => Crs::WebMercator,
            32601..=32660 => Crs::Utm {
                zone: (code - 32600) as u8,
                north: true,
            },
            32701..=32760 => Crs::Utm {
                zone: (code - 32700) as u8,
                north: false,
            },
            4491..=4501 => Crs::GaussKruger {
                zone_width_deg: 6,
                zone: (code - 4491 + 13) as u8,
                zone_prefix: true,
            },
            4502..=4512 => Crs::GaussKruger {
                zone_width_deg: 6,
                zone: (code - 4502 + 13) as u8,
                zone_prefix: false,
            },
            4513..=4533 => Crs::GaussKruger {
                zone_width_deg: 3,
                zone: (code - 4513 + 25) as u8,
                zone_prefix: true,
            },
            4534..=4554 => Crs::GaussKruger {
                zone_width_deg: 3,
                zone: (code - 4534 + 25) as u8,
                zone_prefix: false,
            },
            _ => return Err(CrsError::UnknownCode(code)),
        })
    }

    /// The EPSG code, when the CRS has one.
    pub fn epsg(&self) -> Option<u32> {
        Some(match *self {
            Crs::Wgs84 => 4326,
            Crs::Cgcs2000 => 4490,
            Crs::WebMercator => 3857,
            Crs::Utm { zone, north } => (if north { 32600 } else { 32700 }) + u32::from(zone),
            Crs::GaussKruger {
                zone_width_deg: 3,
                zone,
                zone_prefix,
            } => (if zone_prefix { 4513 } else { 4534 }) + u32::from(zone) - 25,
            Crs::GaussKruger {
                zone, zone_prefix, ..
            } => (if zone_prefix { 4491 } else { 4502 }) + u32::from(zone) - 13,
            Crs::TransverseMercator { .. } => return None,
        })
    }

    /// Whether coordinates are longitude and latitude in degrees.
    pub fn is_geographic(&self) -> bool {
        matches!(self, Crs::Wgs84 | Crs::Cgcs2000)
    }

    /// The CRS's name as EPSG gives it (`CGCS2000 / 3-degree Gauss-Kruger CM 114E`).
    pub fn name(&self) -> String {
        match *self {
            Crs::Wgs84 => "WGS 84".into(),
            Crs::Cgcs2000 => "CGCS2000".into(),
            Crs::WebMercator => "WGS 84 / Pseudo-Mercator".into(),
            Crs::Utm { zone, north } => {
                format!("WGS 84 / UTM zone {zone}{}", if north { 'N' } else { 'S' })
            }
            Crs::GaussKruger {
                zone_width_deg,
                zone,
                zone_prefix,
            } => {
                let width = if zone_width_deg == 3 { "3-degree " } else { "" };
                if zone_prefix {
                    format!("CGCS2000 / {width}Gauss-Kruger zone {zone}")
                } else {
                    let cm = self.central_meridian();
                    format!("CGCS2000 / {width}Gauss-Kruger CM {cm}E")
                }
            }
            Crs::TransverseMercator {
                datum,
                central_meridian,
                latitude_of_origin,
                scale_factor,
                false_easting,
                false_northing,
            } => format!(
                "{} / Transverse Mercator (CM {central_meridian}, latitude of origin {latitude_of_origin}, k {scale_factor}, false easting {false_easting}, false northing {false_northing})",
                datum.name()
            ),
        }
    }

    /// `EPSG:4547 (CGCS2000 / 3-degree Gauss-Kruger CM 114E)`, or the name alone.
    pub fn label(&self) -> String {
        match self.epsg() {
            Some(code) => format!("EPSG:{code} ({})", self.name()),
            None => self.name(),
        }
    }

    /// The false easting of a transverse Mercator (UTM, Gauss-Krüger), metres.
    fn false_easting(&self) -> Option<f64> {
        match *self {
            Crs::Utm { .. } => Some(500_000.0),
            Crs::GaussKruger {
                zone, zone_prefix, ..
            } => Some(if zone_prefix {
                f64::from(zone) * 1e6 + 500_000.0
            } else {
                500_000.0
            }),
            Crs::TransverseMercator { false_easting, .. } => Some(false_easting),
            _ => None,
        }
    }

    /// Central meridian of a Gauss-Krüger zone, degrees east.
    fn central_meridian(&self) -> i32 {
        match *self {
            Crs::GaussKruger {
                zone_width_deg: 3,
                zone,
                ..
            } => 3 * i32::from(zone),
            Crs::GaussKruger { zone, .. } => 6 * i32::from(zone) - 3,
            Crs::Utm { zone, .. } => 6 * i32::from(zone) - 183,
            _ => 0,
        }
    }

    /// The PROJ string of a projected CRS whose inverse proj4rs computes.
    fn proj_string(&self) -> Option<(String, Datum)> {
        Some(match *self {
            Crs::Wgs84 | Crs::Cgcs2000 | Crs::WebMercator => return None,
            Crs::Utm { zone, north } => (
                format!(
                    "+proj=utm +zone={zone}{} +ellps=WGS84 +units=m +no_defs",
                    if north { "" } else { " +south" }
                ),
                Datum::Wgs84,
            ),
            Crs::GaussKruger {
                zone, zone_prefix, ..
            } => {
                let false_easting = if zone_prefix {
                    f64::from(zone) * 1e6 + 500_000.0
                } else {
                    500_000.0
                };
                (
                    format!(
                        "+proj=tmerc +lat_0=0 +lon_0={} +k=1 +x_0={false_easting} +y_0=0 +ellps=GRS80 +units=m +no_defs",
                        self.central_meridian()
                    ),
                    Datum::Cgcs2000,
                )
            }
            Crs::TransverseMercator {
                datum,
                central_meridian,
                latitude_of_origin,
                scale_factor,
                false_easting,
                false_northing,
            } => (
                format!(
                    "+proj=tmerc +lat_0={latitude_of_origin} +lon_0={central_meridian} +k={scale_factor} +x_0={false_easting} +y_0={false_northing} +ellps={} +units=m +no_defs",
                    datum.ellps()
                ),
                datum,
            ),
        })
    }
}

impl fmt::Display for Crs {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl FromStr for Crs {
    type Err = CrsError;

    /// `EPSG:4547`, `4547`, `urn:ogc:def:crs:EPSG::4547`,
    /// `http://www.opengis.net/def/crs/EPSG/0/4547`, `CRS84`, `ESRI:102100`.
    fn from_str(text: &str) -> Result<Crs, CrsError> {
        let t = text.trim();
        let upper = t.to_ascii_uppercase();
        if upper == "CRS84"
            || upper.ends_with(":CRS84")
            || upper.ends_with("/CRS84")
            || upper == "WGS84"
        {
            return Ok(Crs::Wgs84);
        }
        let code = upper
            .rsplit([':', '/'])
            .next()
            .filter(|c| !c.is_empty())
            .and_then(|c| c.parse::<u32>().ok());
        let authority_ok = upper.parse::<u32>().is_ok()
            || upper.starts_with("EPSG:")
            || upper.starts_with("ESRI:")
            || upper.starts_with("URN:OGC:DEF:CRS:EPSG:")
            || upper.contains("OPENGIS.NET/DEF/CRS/EPSG/");
        match code {
            Some(code) if authority_ok => from_wkid(code),
            _ => Err(CrsError::Unreadable(t.to_string())),
        }
    }
}

/// The CRS of an Esri `spatialReference.wkid` (or `latestWkid`): EPSG codes, plus
/// Esri's own numbers for Web Mercator (102100, 102113) and the old 900913.
pub fn from_wkid(wkid: u32) -> Result<Crs, CrsError> {
    if ESRI_WEB_MERCATOR.contains(&wkid) {
        return Ok(Crs::WebMercator);
    }
    Crs::from_epsg(wkid)
}

/// The CRS of a GeoJSON (2008) `crs` member: `{"type": "name", "properties": {"name":
/// "urn:ogc:def:crs:EPSG::4547"}}` or `{"type": "EPSG", "properties": {"code": 4547}}`.
/// `Ok(None)` for `null`.
pub fn from_geojson_member(member: &serde_json::Value) -> Result<Option<Crs>, CrsError> {
    if member.is_null() {
        return Ok(None);
    }
    let props = &member["properties"];
    let named = props["name"].as_str();
    let code = props["code"]
        .as_u64()
        .map(|c| c.to_string())
        .or_else(|| props["code"].as_str().map(str::to_string));
    match (member["type"].as_str(), named, code) {
        (Some("name"), Some(name), _) => name.parse().map(Some),
        (Some("EPSG" | "epsg"), _, Some(code)) => format!("EPSG:{code}").parse().map(Some),
        _ => Err(CrsError::Unreadable(member.to_string())),
    }
}

// ---------------------------------------------------------------------------
// WKT (.prj)
// ---------------------------------------------------------------------------

/// One `KEYWORD[...]` of a WKT text, or a value inside one.
#[derive(Debug)]
enum Wkt {
    Node {
        keyword: String,
        items: Vec<Wkt>,
    },
    Text(String),
    Number(f64),
    /// A bare word (`EAST` in `AXIS["Easting",EAST]`).
    Word,
}

impl Wkt {
    fn keyword(&self) -> &str {
        match self {
            Wkt::Node { keyword, .. } => keyword,
            _ => "",
        }
    }

    fn items(&self) -> &[Wkt] {
        match self {
            Wkt::Node { items, .. } => items,
            _ => &[],
        }
    }

    /// The first child node with one of these keywords.
    fn child(&self, keywords: &[&str]) -> Option<&Wkt> {
        self.items()
            .iter()
            .find(|w| keywords.iter().any(|k| w.keyword().eq_ignore_ascii_case(k)))
    }

    fn children<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a Wkt> + 'a {
        self.items()
            .iter()
            .filter(move |w| w.keyword().eq_ignore_ascii_case(keyword))
    }

    /// The node's quoted name (its first item).
    fn name(&self) -> &str {
        match self.items().first() {
            Some(Wkt::Text(t)) => t,
            _ => "",
        }
    }

    fn number(&self, index: usize) -> Option<f64> {
        match self.items().get(index) {
            Some(Wkt::Number(n)) => Some(*n),
            Some(Wkt::Text(t)) => t.trim().parse().ok(),
            _ => None,
        }
    }
}

struct WktParser<'a> {
    text: &'a [u8],
    at: usize,
}

impl WktParser<'_> {
    fn skip_space(&mut self) {
        while self.at < self.text.len() && self.text[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn error(&self, what: &str) -> CrsError {
        CrsError::BadWkt(format!("{what} at byte {}", self.at))
    }

    fn value(&mut self, depth: usize) -> Result<Wkt, CrsError> {
        if depth > 32 {
            return Err(self.error("nested too deep"));
        }
        self.skip_space();
        let Some(&c) = self.text.get(self.at) else {
            return Err(self.error("unexpected end"));
        };
        if c == b'"' {
            self.at += 1;
            let mut out = Vec::new();
            loop {
                match self.text.get(self.at) {
                    None => return Err(self.error("unterminated text")),
                    Some(b'"') if self.text.get(self.at + 1) == Some(&b'"') => {
                        out.push(b'"');
                        self.at += 2;
                    }
                    Some(b'"') => {
                        self.at += 1;
                        break;
                    }
                    Some(&b) => {
                        out.push(b);
                        self.at += 1;
                    }
                }
            }
            return Ok(Wkt::Text(String::from_utf8_lossy(&out).into_owned()));
        }
        let start = self.at;
        while self.at < self.text.len()
            && !matches!(self.text[self.at], b'[' | b'(' | b']' | b')' | b',' | b'"')
        {
            self.at += 1;
        }
        let word = String::from_utf8_lossy(&self.text[start..self.at])
            .trim()
            .to_string();
        self.skip_space();
        if matches!(self.text.get(self.at), Some(b'[' | b'(')) {
            if word.is_empty() {
                return Err(self.error("a bracket without a keyword"));
            }
            self.at += 1;
            let mut items = Vec::new();
            loop {
                self.skip_space();
                if matches!(self.text.get(self.at), Some(b']' | b')')) {
                    self.at += 1;
                    break;
                }
                items.push(self.value(depth + 1)?);
                self.skip_space();
                match self.text.get(self.at) {
                    Some(b',') => self.at += 1,
                    Some(b']' | b')') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(self.error("expected , or ]")),
                }
            }
            return Ok(Wkt::Node {
                keyword: word,
                items,
            });
        }
        if word.is_empty() {
            return Err(self.error("expected a value"));
        }
        Ok(match word.parse::<f64>() {
            Ok(n) => Wkt::Number(n),
            Err(_) => Wkt::Word,
        })
    }
}

fn parse_wkt(text: &str) -> Result<Wkt, CrsError> {
    let mut p = WktParser {
        text: text.trim_start_matches('\u{feff}').as_bytes(),
        at: 0,
    };
    let root = p.value(0)?;
    if !matches!(root, Wkt::Node { .. }) {
        return Err(CrsError::BadWkt("no CRS keyword".into()));
    }
    Ok(root)
}

/// Lower case, letters and digits only: `"Central_Meridian"` and `"central meridian"`
/// meet as `centralmeridian`.
fn squash(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The EPSG code in `AUTHORITY["EPSG","4547"]` (WKT 1) or `ID["EPSG",4547]` (WKT 2).
fn authority_code(node: &Wkt) -> Option<u32> {
    let id = node.child(&["AUTHORITY", "ID"])?;
    if !id.name().eq_ignore_ascii_case("EPSG") {
        return None;
    }
    match id.items().get(1)? {
        Wkt::Number(n) => Some(*n as u32),
        Wkt::Text(t) => t.trim().parse().ok(),
        _ => None,
    }
}

fn datum_of(geographic: &Wkt) -> Result<Datum, CrsError> {
    let datum = geographic.child(&["DATUM", "GEODETICDATUM", "TRF"]);
    let names = [
        datum.map(Wkt::name).unwrap_or(""),
        geographic.name(),
        datum
            .and_then(|d| d.child(&["SPHEROID", "ELLIPSOID"]))
            .map(Wkt::name)
            .unwrap_or(""),
    ];
    for name in names {
        let s = squash(name);
        if s.contains("wgs84") || s.contains("wgs1984") || s == "worldgeodeticsystem1984" {
            return Ok(Datum::Wgs84);
        }
        if s.contains("china2000") || s.contains("cgcs2000") || s.contains("cgcs") {
            return Ok(Datum::Cgcs2000);
        }
    }
    let shown = datum.map(Wkt::name).unwrap_or(geographic.name());
    Err(CrsError::UnsupportedDatum(shown.to_string()))
}

/// The CRS a `.prj` (WKT 1, Esri or OGC flavour, or WKT 2) describes: by its EPSG
/// authority when it names one Zhongshu knows, else by its datum, projection and
/// parameters (central meridian, false easting, scale factor).
pub fn from_prj(text: &str) -> Result<Crs, CrsError> {
    let root = parse_wkt(text)?;
    let top = squash(root.keyword());
    if let Some(code) = authority_code(&root)
        && let Ok(crs) = Crs::from_epsg(code)
    {
        return Ok(crs);
    }
    match top.as_str() {
        "geogcs" | "geogcrs" | "geodcrs" | "geographiccrs" | "geodeticcrs" => {
            return Ok(match datum_of(&root)? {
                Datum::Wgs84 => Crs::Wgs84,
                Datum::Cgcs2000 => Crs::Cgcs2000,
            });
        }
        "projcs" | "projcrs" | "projectedcrs" => {}
        _ => return Err(CrsError::BadWkt(format!("{} is not a CRS", root.keyword()))),
    }
    let geographic = root
        .child(&["GEOGCS", "BASEGEOGCRS", "BASEGEODCRS", "GEOGCRS"])
        .ok_or_else(|| CrsError::BadWkt("a PROJCS without its GEOGCS".into()))?;
    let datum = datum_of(geographic)?;
    let conversion = root.child(&["CONVERSION"]).unwrap_or(&root);
    let method = conversion
        .child(&["PROJECTION", "METHOD"])
        .map(Wkt::name)
        .unwrap_or("");
    let unit = root
        .children("UNIT")
        .chain(root.children("LENGTHUNIT"))
        .last()
        .or_else(|| {
            root.child(&["CS"])?;
            root.children("AXIS")
                .find_map(|a| a.child(&["LENGTHUNIT", "UNIT"]))
        });
    if let Some(unit) = unit
        && unit.number(1).is_some_and(|m| (m - 1.0).abs() > 1e-9)
    {
        return Err(CrsError::UnsupportedUnit(unit.name().to_string()));
    }
    let mut central_meridian = 0.0;
    let mut latitude_of_origin = 0.0;
    let mut scale_factor = 1.0;
    let mut false_easting = 0.0;
    let mut false_northing = 0.0;
    for p in conversion.children("PARAMETER") {
        let Some(v) = p.number(1) else { continue };
        match squash(p.name()).as_str() {
            "centralmeridian"
            | "longitudeofnaturalorigin"
            | "longitudeofcenter"
            | "longitudeoforigin" => central_meridian = v,
            "latitudeoforigin" | "latitudeofnaturalorigin" | "latitudeofcenter" => {
                latitude_of_origin = v
            }
            "scalefactor" | "scalefactoratnaturalorigin" => scale_factor = v,
            "falseeasting" => false_easting = v,
            "falsenorthing" => false_northing = v,
            _ => {}
        }
    }
    let method_s = squash(method);
    let name_s = squash(root.name());
    if method_s.contains("mercatorauxiliarysphere")
        || method_s.contains("pseudomercator")
        || name_s.contains("webmercator")
        || name_s.contains("pseudomercator")
    {
        return Ok(Crs::WebMercator);
    }
    if !matches!(
        method_s.as_str(),
        "transversemercator" | "gausskruger" | "gaussianprojection"
    ) {
        return Err(CrsError::UnsupportedProjection(method.to_string()));
    }
    Ok(match_transverse_mercator(
        datum,
        &name_s,
        central_meridian,
        latitude_of_origin,
        scale_factor,
        false_easting,
        false_northing,
    ))
}

/// The EPSG entry (UTM, Gauss-Krüger) a transverse Mercator's parameters match, else
/// the transverse Mercator itself.
fn match_transverse_mercator(
    datum: Datum,
    name: &str,
    central_meridian: f64,
    latitude_of_origin: f64,
    scale_factor: f64,
    false_easting: f64,
    false_northing: f64,
) -> Crs {
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
    let whole = |v: f64| near(v, v.round());
    if near(latitude_of_origin, 0.0) && whole(central_meridian) {
        let cm = central_meridian.round() as i32;
        if datum == Datum::Wgs84
            && near(scale_factor, 0.9996)
            && near(false_easting, 500_000.0)
            && (near(false_northing, 0.0) || near(false_northing, 10_000_000.0))
            && (cm + 183) % 6 == 0
            && (1..=60).contains(&((cm + 183) / 6))
        {
            return Crs::Utm {
                zone: ((cm + 183) / 6) as u8,
                north: near(false_northing, 0.0),
            };
        }
        if datum == Datum::Cgcs2000 && near(scale_factor, 1.0) && near(false_northing, 0.0) {
            let prefix = ((false_easting - 500_000.0) / 1e6).round();
            let prefixed = prefix >= 1.0 && near(false_easting, prefix * 1e6 + 500_000.0);
            let plain = near(false_easting, 500_000.0);
            let six = (cm + 3) % 6 == 0 && (13..=23).contains(&((cm + 3) / 6));
            let three = cm % 3 == 0 && (25..=45).contains(&(cm / 3));
            // Esri and EPSG name 3-degree zones so; 6-degree ones plainly
            // ("CGCS2000_GK_CM_117E", "CGCS2000 / Gauss-Kruger CM 117E").
            let six_named = !name.contains("3degree")
                && [
                    "6degree",
                    "gkcm",
                    "gkzone",
                    "gausskrugercm",
                    "gausskrugerzone",
                ]
                .iter()
                .any(|n| name.contains(n));
            // A prefixed easting says the zone: 38 is a 3-degree zone, 20 a 6-degree one.
            let crs = if prefixed && six && prefix as i32 == (cm + 3) / 6 {
                Some(((cm + 3) / 6, 6, true))
            } else if prefixed && three && prefix as i32 == cm / 3 {
                Some((cm / 3, 3, true))
            } else if plain && six && six_named {
                Some(((cm + 3) / 6, 6, false))
            } else if plain && three {
                Some((cm / 3, 3, false))
            } else if plain && six {
                Some(((cm + 3) / 6, 6, false))
            } else {
                None
            };
            if let Some((zone, zone_width_deg, zone_prefix)) = crs {
                return Crs::GaussKruger {
                    zone_width_deg,
                    zone: zone as u8,
                    zone_prefix,
                };
            }
        }
    }
    Crs::TransverseMercator {
        datum,
        central_meridian,
        latitude_of_origin,
        scale_factor,
        false_easting,
        false_northing,
    }
}

// ---------------------------------------------------------------------------
// GCJ-02 / BD-09
// ---------------------------------------------------------------------------

/// Which longitude/latitude a source's positions are: WGS 84, or China's offset GCJ-02
/// or BD-09 (`--coords`, a feed's `coords`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Coords {
    #[default]
    Wgs84,
    Gcj02,
    Bd09,
}

impl Coords {
    pub fn as_str(self) -> &'static str {
        match self {
            Coords::Wgs84 => "wgs84",
            Coords::Gcj02 => "gcj02",
            Coords::Bd09 => "bd09",
        }
    }

    /// The WGS 84 `[lon, lat]` of a position in these coordinates. The inverse of
    /// GCJ-02 has no closed form: `coordtransform` refines it numerically (two
    /// fixed-point steps, far below a centimetre). Outside mainland China the offsets
    /// do not apply and the position is returned as it is.
    pub fn to_wgs84(self, lon: f64, lat: f64) -> [f64; 2] {
        let (lon, lat) = match self {
            Coords::Wgs84 => (lon, lat),
            Coords::Gcj02 => coordtransform::gcj02_to_wgs84(lon, lat),
            Coords::Bd09 => coordtransform::bd09_to_wgs84(lon, lat),
        };
        [lon, lat]
    }
}

impl fmt::Display for Coords {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Coords {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Coords, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl FromStr for Coords {
    type Err = String;

    fn from_str(text: &str) -> Result<Coords, String> {
        match squash(text).as_str() {
            "wgs84" => Ok(Coords::Wgs84),
            "gcj02" => Ok(Coords::Gcj02),
            "bd09" => Ok(Coords::Bd09),
            _ => Err(format!(
                "unknown coordinates {text:?}: one of wgs84, gcj02, bd09"
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// Conversion
// ---------------------------------------------------------------------------

/// Undoes one CRS: projected coordinates to WGS 84 `[lon, lat]` degrees.
enum Inverse {
    Identity,
    WebMercator,
    /// Boxed: a `Proj` is a kilobyte, and one `Inverse` serves a whole map.
    Proj {
        from: Box<proj4rs::Proj>,
        to: Box<proj4rs::Proj>,
    },
}

impl Inverse {
    fn new(crs: &Crs) -> Result<Inverse, CrsError> {
        if crs.is_geographic() {
            return Ok(Inverse::Identity);
        }
        if *crs == Crs::WebMercator {
            return Ok(Inverse::WebMercator);
        }
        let Some((proj, datum)) = crs.proj_string() else {
            return Err(CrsError::UnsupportedProjection(crs.label()));
        };
        let error = |e: proj4rs::errors::Error| CrsError::Projection {
            crs: crs.label(),
            message: e.to_string(),
        };
        // Both ends on the same ellipsoid: no datum shift (CGCS2000 is read as WGS 84).
        let to = format!("+proj=longlat +ellps={} +no_defs", datum.ellps());
        Ok(Inverse::Proj {
            from: Box::new(proj4rs::Proj::from_proj_string(&proj).map_err(error)?),
            to: Box::new(proj4rs::Proj::from_proj_string(&to).map_err(error)?),
        })
    }

    /// `[lon, lat]` degrees, or NaN where the point cannot be undone (the feature is
    /// then skipped as bad coordinates).
    fn point(&self, [x, y]: [f64; 2]) -> [f64; 2] {
        match self {
            Inverse::Identity => [x, y],
            Inverse::WebMercator => match coordtransform::try_epsg3857_to_wgs84(x, y) {
                Ok((lon, lat)) => [lon, lat],
                Err(_) => [f64::NAN, f64::NAN],
            },
            Inverse::Proj { from, to } => {
                let mut p = (x, y);
                match proj4rs::transform::transform(from, to, &mut p) {
                    Ok(()) if p.0.is_finite() && p.1.is_finite() => {
                        [p.0.to_degrees(), p.1.to_degrees()]
                    }
                    _ => [f64::NAN, f64::NAN],
                }
            }
        }
    }
}

fn each_point(geometry: &mut RawGeometry, f: &impl Fn([f64; 2]) -> [f64; 2]) {
    let line = |points: &mut Vec<[f64; 2]>| {
        for p in points.iter_mut() {
            *p = f(*p);
        }
    };
    match geometry {
        RawGeometry::Null | RawGeometry::Point => {}
        RawGeometry::Line(points) => line(points),
        RawGeometry::MultiLine(lines)
        | RawGeometry::Polygon(lines)
        | RawGeometry::CutLine(lines) => lines.iter_mut().for_each(line),
        RawGeometry::MultiPolygon(polygons) => {
            polygons.iter_mut().flatten().for_each(line);
        }
    }
}

fn first_point(geometry: &RawGeometry) -> Option<[f64; 2]> {
    match geometry {
        RawGeometry::Null | RawGeometry::Point => None,
        RawGeometry::Line(points) => points.first().copied(),
        RawGeometry::MultiLine(lines)
        | RawGeometry::Polygon(lines)
        | RawGeometry::CutLine(lines) => lines.iter().flatten().next().copied(),
        RawGeometry::MultiPolygon(polygons) => polygons.iter().flatten().flatten().next().copied(),
    }
}

/// Converts every feature's coordinates from `crs` to WGS 84 `[lon, lat]`, in place
/// and in parallel. A point that cannot be undone becomes NaN, so its feature is
/// skipped and counted as bad coordinates. Refuses coordinates that look like degrees
/// when `crs` is projected.
pub fn features_to_wgs84(features: &mut Vec<RawFeature>, crs: &Crs) -> Result<(), CrsError> {
    if crs.is_geographic() {
        return Ok(());
    }
    if let Some([x, y]) = mostly(features, |[x, y]| x.abs() <= 180.0 && y.abs() <= 90.0) {
        return Err(CrsError::LooksLikeDegrees {
            crs: crs.label(),
            x,
            y,
        });
    }
    // A transverse Mercator zone is a few hundred kilometres wide: an easting far
    // outside it is swapped axes or another zone, and would land somewhere else.
    if let Some(false_easting) = crs.false_easting()
        && let Some([x, y]) = mostly(features, |[x, _]| (x - false_easting).abs() > 1e6)
    {
        return Err(CrsError::OutsideZone {
            crs: crs.label(),
            x,
            y,
        });
    }
    let inverse = Inverse::new(crs)?;
    features
        .par_iter_mut()
        .for_each(|f| each_point(&mut f.geometry, &|p| inverse.point(p)));
    Ok(())
}

/// Projects WGS 84 `[lon, lat]` points into `crs`, in place: what loading undoes.
/// For fixtures and benchmarks that write files in a projected CRS.
pub fn project_from_wgs84(points: &mut [[f64; 2]], crs: &Crs) -> Result<(), CrsError> {
    let project = wgs84_projector(crs)?;
    for p in points.iter_mut() {
        *p = project(*p)?;
    }
    Ok(())
}

/// A function projecting WGS 84 `[lon, lat]` into `crs` (set up once, used many times).
pub fn wgs84_projector(
    crs: &Crs,
) -> Result<impl Fn([f64; 2]) -> Result<[f64; 2], CrsError> + Send + Sync, CrsError> {
    let inverse = Inverse::new(crs)?;
    let label = crs.label();
    Ok(move |p: [f64; 2]| match &inverse {
        Inverse::Identity => Ok(p),
        Inverse::WebMercator => {
            let (x, y) = coordtransform::wgs84_to_epsg3857(p[0], p[1]);
            Ok([x, y])
        }
        Inverse::Proj { from, to } => {
            let mut q = (p[0].to_radians(), p[1].to_radians());
            proj4rs::transform::transform(to, from, &mut q).map_err(|e| CrsError::Projection {
                crs: label.clone(),
                message: e.to_string(),
            })?;
            Ok([q.0, q.1])
        }
    })
}

/// Shifts every feature's GCJ-02 or BD-09 positions to WGS 84, in place.
pub fn features_from_offset(features: &mut [RawFeature], coords: Coords) {
    if coords == Coords::Wgs84 {
        return;
    }
    features
        .par_iter_mut()
        .for_each(|f| each_point(&mut f.geometry, &|[x, y]| coords.to_wgs84(x, y)));
}

/// When more than half of the features (by their first point) pass `test`, the first
/// such point.
fn mostly(features: &[RawFeature], test: impl Fn([f64; 2]) -> bool + Sync) -> Option<[f64; 2]> {
    let (with_points, passing, example) = features
        .par_iter()
        .filter_map(|f| first_point(&f.geometry))
        .filter(|[x, y]| x.is_finite() && y.is_finite())
        .map(|p| (1usize, usize::from(test(p)), test(p).then_some(p)))
        .reduce(|| (0, 0, None), |a, b| (a.0 + b.0, a.1 + b.1, a.2.or(b.2)));
    (with_points > 0 && passing * 2 > with_points).then_some(example?)
}

/// Where a map's CRS came from, for `map-info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CrsSource {
    /// No flag, no metadata: WGS 84 degrees, as GeoJSON (RFC 7946) defines.
    #[default]
    Default,
    /// The format fixes it (an OSM PBF is WGS 84).
    Format,
    /// The file says (a GeoJSON `crs` member, a `.prj`, an Esri `wkid`).
    File,
    /// `--crs`.
    Flag,
}

/// What was done to a map's coordinates at the boundary, for `map-info`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CrsReport {
    /// `EPSG:4547 (CGCS2000 / 3-degree Gauss-Kruger CM 114E)`.
    pub name: String,
    pub source: CrsSource,
    /// What the file said, when `--crs` overrode it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_says: Option<String>,
    /// The offset undone (`gcj02`, `bd09`); `wgs84` when none.
    #[serde(skip)]
    pub coords: Coords,
    /// Time spent converting, milliseconds (for the benchmark).
    #[serde(skip)]
    pub convert_ms: f64,
}

impl Default for CrsReport {
    fn default() -> Self {
        CrsReport {
            name: Crs::Wgs84.label(),
            source: CrsSource::Default,
            file_says: None,
            coords: Coords::Wgs84,
            convert_ms: 0.0,
        }
    }
}

/// How the command line says to read a map's coordinates (`--crs`, `--coords`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MapCoords {
    /// `--crs`: wins over what the file says.
    pub crs: Option<Crs>,
    /// `--coords`: an offset lon/lat (after undoing the CRS).
    pub coords: Coords,
}

/// Converts a loader's features to WGS 84 degrees, once: in the CRS of `--crs`, else
/// the one the file declares, else WGS 84; then undoes a `--coords` offset.
/// `fixed_wgs84` is for formats that are WGS 84 by definition (OSM PBF), where `--crs`
/// is refused. Coordinates that do not fit their CRS are refused, never drawn.
pub fn to_wgs84_at_boundary(
    features: &mut Vec<RawFeature>,
    file_crs: Option<Crs>,
    options: &MapCoords,
    fixed_wgs84: bool,
) -> Result<CrsReport, CrsError> {
    if fixed_wgs84 {
        if let Some(flag) = options.crs {
            return Err(CrsError::FlagDoesNotApply(format!(
                "--crs {}",
                flag.label()
            )));
        }
        if options.coords != Coords::Wgs84 {
            return Err(CrsError::FlagDoesNotApply(format!(
                "--coords {}",
                options.coords
            )));
        }
    }
    let start = std::time::Instant::now();
    let (crs, source) = match (options.crs, file_crs) {
        _ if fixed_wgs84 => (Crs::Wgs84, CrsSource::Format),
        (Some(flag), _) => (flag, CrsSource::Flag),
        (None, Some(file)) => (file, CrsSource::File),
        (None, None) => (Crs::Wgs84, CrsSource::Default),
    };
    if crs.is_geographic() {
        let projected = |[x, y]: [f64; 2]| x.abs() > 180.0 || y.abs() > 90.0;
        if let Some([x, y]) = mostly(features, projected) {
            return Err(match source {
                CrsSource::Default => CrsError::LooksProjected {
                    x,
                    y,
                    hint: zone_hint(x),
                },
                _ => CrsError::DeclaredDegreesLooksProjected {
                    crs: crs.label(),
                    x,
                    y,
                },
            });
        }
    } else {
        features_to_wgs84(features, &crs)?;
    }
    features_from_offset(features, options.coords);
    Ok(CrsReport {
        name: crs.label(),
        source,
        file_says: file_crs
            .filter(|f| source == CrsSource::Flag && Some(*f) != options.crs)
            .map(|f| f.label()),
        coords: options.coords,
        convert_ms: start.elapsed().as_secs_f64() * 1000.0,
    })
}

/// A guess from an easting that carries a 3-degree Gauss-Krüger zone number.
fn zone_hint(x: f64) -> String {
    let zone = (x / 1e6).floor();
    if (25.0..=45.0).contains(&zone) && (x - zone * 1e6 - 500_000.0).abs() < 400_000.0 {
        let code = 4513 + zone as u32 - 25;
        format!(
            " (an easting of {x} looks like CGCS2000 3-degree Gauss-Krüger zone {zone}: EPSG:{code})"
        )
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsg_codes_and_their_names() {
        let gk = Crs::from_epsg(4547).unwrap();
        assert_eq!(
            gk,
            Crs::GaussKruger {
                zone_width_deg: 3,
                zone: 38,
                zone_prefix: false
            }
        );
        assert_eq!(
            gk.label(),
            "EPSG:4547 (CGCS2000 / 3-degree Gauss-Kruger CM 114E)"
        );
        assert_eq!(
            Crs::from_epsg(4526).unwrap().label(),
            "EPSG:4526 (CGCS2000 / 3-degree Gauss-Kruger zone 38)"
        );
        assert_eq!(
            Crs::from_epsg(4513).unwrap().name(),
            "CGCS2000 / 3-degree Gauss-Kruger zone 25"
        );
        assert_eq!(
            Crs::from_epsg(4554).unwrap().name(),
            "CGCS2000 / 3-degree Gauss-Kruger CM 135E"
        );
        assert_eq!(
            Crs::from_epsg(4491).unwrap().name(),
            "CGCS2000 / Gauss-Kruger zone 13"
        );
        assert_eq!(
            Crs::from_epsg(4502).unwrap().name(),
            "CGCS2000 / Gauss-Kruger CM 75E"
        );
        assert_eq!(
            Crs::from_epsg(32650).unwrap().label(),
            "EPSG:32650 (WGS 84 / UTM zone 50N)"
        );
        for code in (4491..=4554).chain([4326, 4490, 3857, 32601, 32660, 32701, 32760]) {
            assert_eq!(Crs::from_epsg(code).unwrap().epsg(), Some(code));
        }
        let unknown = Crs::from_epsg(2385).unwrap_err().to_string();
        assert!(unknown.contains("EPSG:2385"), "{unknown}");
    }

    #[test]
    fn codes_as_written_in_flags_and_geojson() {
        for text in [
            "EPSG:4547",
            "epsg:4547",
            "4547",
            "urn:ogc:def:crs:EPSG::4547",
            "urn:ogc:def:crs:EPSG:9.8.15:4547",
            "http://www.opengis.net/def/crs/EPSG/0/4547",
        ] {
            assert_eq!(text.parse::<Crs>().unwrap().epsg(), Some(4547), "{text}");
        }
        assert_eq!(
            "urn:ogc:def:crs:OGC:1.3:CRS84".parse::<Crs>().unwrap(),
            Crs::Wgs84
        );
        assert!(
            "EPSG:abc"
                .parse::<Crs>()
                .unwrap_err()
                .to_string()
                .contains("EPSG:abc")
        );
        assert!("Beijing".parse::<Crs>().is_err());
        let member = serde_json::json!({"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4547"}});
        assert_eq!(
            from_geojson_member(&member).unwrap().and_then(|c| c.epsg()),
            Some(4547)
        );
        let old = serde_json::json!({"type": "EPSG", "properties": {"code": 32650}});
        assert_eq!(
            from_geojson_member(&old).unwrap(),
            Some(Crs::Utm {
                zone: 50,
                north: true
            })
        );
        assert_eq!(from_geojson_member(&serde_json::Value::Null).unwrap(), None);
        let link = serde_json::json!({"type": "link", "properties": {"href": "x.prj"}});
        assert!(from_geojson_member(&link).is_err());
    }

    #[test]
    fn esri_wkids() {
        for wkid in [102100, 102113, 900913, 3857] {
            assert_eq!(from_wkid(wkid).unwrap(), Crs::WebMercator, "{wkid}");
        }
        assert_eq!(from_wkid(4490).unwrap(), Crs::Cgcs2000);
        assert_eq!(from_wkid(4547).unwrap().epsg(), Some(4547));
        assert!(matches!(
            from_wkid(102_003),
            Err(CrsError::UnknownCode(102_003))
        ));
    }

    /// As ArcGIS writes them (`.prj` of a CGCS2000 Gauss-Krüger shapefile).
    const ESRI_GK_CM_114: &str = r#"PROJCS["CGCS2000_3_Degree_GK_CM_114E",GEOGCS["GCS_China_Geodetic_Coordinate_System_2000",DATUM["D_China_2000",SPHEROID["CGCS2000",6378137.0,298.257222101]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],PROJECTION["Gauss_Kruger"],PARAMETER["False_Easting",500000.0],PARAMETER["False_Northing",0.0],PARAMETER["Central_Meridian",114.0],PARAMETER["Scale_Factor",1.0],PARAMETER["Latitude_Of_Origin",0.0],UNIT["Meter",1.0]]"#;
    const ESRI_GK_ZONE_39: &str = r#"PROJCS["CGCS2000_3_Degree_GK_Zone_39",GEOGCS["GCS_China_Geodetic_Coordinate_System_2000",DATUM["D_China_2000",SPHEROID["CGCS2000",6378137.0,298.257222101]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],PROJECTION["Gauss_Kruger"],PARAMETER["False_Easting",39500000.0],PARAMETER["False_Northing",0.0],PARAMETER["Central_Meridian",117.0],PARAMETER["Scale_Factor",1.0],PARAMETER["Latitude_Of_Origin",0.0],UNIT["Meter",1.0]]"#;

    #[test]
    fn gauss_kruger_prj_files() {
        let cm114 = from_prj(ESRI_GK_CM_114).unwrap();
        assert_eq!(cm114.epsg(), Some(4547), "{cm114:?}");
        let zone39 = from_prj(ESRI_GK_ZONE_39).unwrap();
        assert_eq!(zone39.epsg(), Some(4527), "{zone39:?}");
        assert_eq!(zone39.name(), "CGCS2000 / 3-degree Gauss-Kruger zone 39");
        // A 6-degree zone, and a 3-degree one whose CM is also a 6-degree CM.
        let six = ESRI_GK_CM_114
            .replace("3_Degree_GK_CM_114E", "GK_CM_117E")
            .replace("114.0", "117.0");
        assert_eq!(from_prj(&six).unwrap().epsg(), Some(4509));
        let six_zone = ESRI_GK_ZONE_39
            .replace("3_Degree_GK_Zone_39", "GK_Zone_20")
            .replace("39500000.0", "20500000.0");
        assert_eq!(from_prj(&six_zone).unwrap().epsg(), Some(4498));
        let three = ESRI_GK_CM_114.replace("114", "117");
        assert_eq!(from_prj(&three).unwrap().epsg(), Some(4548));
    }

    #[test]
    fn ogc_and_wkt2_prj_files() {
        let ogc = r#"PROJCS["WGS 84 / UTM zone 50N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",117],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]"#;
        assert_eq!(
            from_prj(ogc).unwrap(),
            Crs::Utm {
                zone: 50,
                north: true
            }
        );
        let with_authority = ogc.replace(
            r#"AXIS["Northing",NORTH]]"#,
            r#"AXIS["Northing",NORTH],AUTHORITY["EPSG","32650"]]"#,
        );
        assert_eq!(from_prj(&with_authority).unwrap().epsg(), Some(32650));
        let wkt2 = r#"PROJCRS["CGCS2000 / 3-degree Gauss-Kruger CM 114E",
            BASEGEOGCRS["China Geodetic Coordinate System 2000",
                DATUM["China 2000", ELLIPSOID["CGCS2000",6378137,298.257222101,LENGTHUNIT["metre",1]]],
                PRIMEM["Greenwich",0,ANGLEUNIT["degree",0.0174532925199433]]],
            CONVERSION["3-degree Gauss-Kruger CM 114E",
                METHOD["Transverse Mercator",ID["EPSG",9807]],
                PARAMETER["Latitude of natural origin",0,ANGLEUNIT["degree",0.0174532925199433]],
                PARAMETER["Longitude of natural origin",114,ANGLEUNIT["degree",0.0174532925199433]],
                PARAMETER["Scale factor at natural origin",1,SCALEUNIT["unity",1]],
                PARAMETER["False easting",500000,LENGTHUNIT["metre",1]],
                PARAMETER["False northing",0,LENGTHUNIT["metre",1]]],
            CS[Cartesian,2],
                AXIS["northing (X)",north,ORDER[1],LENGTHUNIT["metre",1]],
                AXIS["easting (Y)",east,ORDER[2],LENGTHUNIT["metre",1]]]"#;
        assert_eq!(from_prj(wkt2).unwrap().epsg(), Some(4547));
        let web = r#"PROJCS["WGS_1984_Web_Mercator_Auxiliary_Sphere",GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",6378137.0,298.257223563]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],PROJECTION["Mercator_Auxiliary_Sphere"],PARAMETER["False_Easting",0.0],PARAMETER["False_Northing",0.0],PARAMETER["Central_Meridian",0.0],PARAMETER["Standard_Parallel_1",0.0],PARAMETER["Auxiliary_Sphere_Type",0.0],UNIT["Meter",1.0]]"#;
        assert_eq!(from_prj(web).unwrap(), Crs::WebMercator);
        let geographic = r#"GEOGCS["GCS_China_Geodetic_Coordinate_System_2000",DATUM["D_China_2000",SPHEROID["CGCS2000",6378137.0,298.257222101]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]"#;
        assert_eq!(from_prj(geographic).unwrap(), Crs::Cgcs2000);
        // Any other transverse Mercator on a supported datum is kept as it is.
        let local = ogc.replace("0.9996", "1").replace("500000", "50000");
        assert!(matches!(
            from_prj(&local).unwrap(),
            Crs::TransverseMercator { .. }
        ));
    }

    #[test]
    fn prj_files_that_cannot_be_read_say_why() {
        let xian = r#"PROJCS["Xian_1980_3_Degree_GK_CM_114E",GEOGCS["GCS_Xian_1980",DATUM["D_Xian_1980",SPHEROID["Xian_1980",6378140.0,298.257]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],PROJECTION["Gauss_Kruger"],PARAMETER["False_Easting",500000.0],PARAMETER["False_Northing",0.0],PARAMETER["Central_Meridian",114.0],PARAMETER["Scale_Factor",1.0],PARAMETER["Latitude_Of_Origin",0.0],UNIT["Meter",1.0]]"#;
        let e = from_prj(xian).unwrap_err().to_string();
        assert!(e.contains("D_Xian_1980") && e.contains("datum"), "{e}");
        let lambert = ESRI_GK_CM_114.replace("Gauss_Kruger", "Lambert_Conformal_Conic");
        let e = from_prj(&lambert).unwrap_err().to_string();
        assert!(e.contains("Lambert_Conformal_Conic"), "{e}");
        let feet = ESRI_GK_CM_114.replace(
            r#"UNIT["Meter",1.0]"#,
            r#"UNIT["Foot_US",0.3048006096012192]"#,
        );
        assert!(from_prj(&feet).unwrap_err().to_string().contains("Foot_US"));
        for broken in ["", "PROJCS[", "hello", "PROJCS[\"x\",GEOGCS[\"y\""] {
            assert!(from_prj(broken).is_err(), "{broken:?}");
        }
    }

    fn line(points: &[[f64; 2]]) -> Vec<RawFeature> {
        vec![RawFeature {
            id: "l".into(),
            tags: Vec::new(),
            geometry: RawGeometry::Line(points.to_vec()),
        }]
    }

    fn converted(crs: Crs, points: &[[f64; 2]]) -> Vec<[f64; 2]> {
        let mut features = line(points);
        features_to_wgs84(&mut features, &crs).unwrap();
        match &features[0].geometry {
            RawGeometry::Line(p) => p.clone(),
            _ => unreachable!(),
        }
    }

    /// Metres between two WGS 84 points (equirectangular; fine at these distances).
    fn metres(a: [f64; 2], b: [f64; 2]) -> f64 {
        let lat = a[1].to_radians();
        let dx = (a[0] - b[0]).to_radians() * 6_378_137.0 * lat.cos();
        let dy = (a[1] - b[1]).to_radians() * 6_378_137.0;
        dx.hypot(dy)
    }

    /// Projected coordinates of three city centres as PROJ 9.5.1 gives them
    /// (pyproj 3.7.2, `Transformer.from_crs("EPSG:4326", "EPSG:n", always_xy=True)`).
    #[test]
    fn projected_points_land_where_proj_puts_them() {
        let shenzhen = [114.0579, 22.5431];
        let beijing = [116.3975, 39.9087];
        let shanghai = [121.4737, 31.2304];
        let sydney = [151.2153, -33.8568];
        let cases: [(u32, [f64; 2], [f64; 2]); 9] = [
            (4547, [505955.8462, 2493941.2457], shenzhen),
            (4547, [705014.8807, 4422144.4302], beijing),
            (4526, [38505955.8462, 2493941.2457], shenzhen),
            (4527, [39448481.5746, 4419565.4353], beijing),
            (4509, [197268.2385, 2496921.7097], shenzhen),
            (4549, [640412.3150, 3457455.4886], shanghai),
            (32650, [448502.1820, 4417797.6093], beijing),
            (3857, [13522390.4288, 3662707.2571], shanghai),
            (32756, [334900.5697, 6252288.7529], sydney),
        ];
        for (code, xy, expected) in cases {
            let crs = Crs::from_epsg(code).unwrap();
            let got = converted(crs, &[xy])[0];
            let off = metres(got, expected);
            assert!(
                off < 0.01,
                "EPSG:{code}: {got:?} is {off} m from {expected:?}"
            );
            let mut back = [expected];
            project_from_wgs84(&mut back, &crs).unwrap();
            let dx = (back[0][0] - xy[0]).hypot(back[0][1] - xy[1]);
            assert!(dx < 0.01, "EPSG:{code}: forward {:?} vs {xy:?}", back[0]);
        }
    }

    #[test]
    fn degrees_read_as_metres_are_refused() {
        let mut f = line(&[[114.05, 22.54], [114.06, 22.55]]);
        let e = features_to_wgs84(&mut f, &Crs::from_epsg(4547).unwrap()).unwrap_err();
        assert!(matches!(e, CrsError::LooksLikeDegrees { .. }), "{e}");
        assert!(e.to_string().contains("114.05, 22.54"), "{e}");
        assert!(e.to_string().contains("EPSG:4547"), "{e}");
        // Northing first (EPSG:4547's official axis order) would land 20° away.
        let mut f = line(&[[2_493_941.2, 505_955.8]]);
        let e = features_to_wgs84(&mut f, &Crs::from_epsg(4547).unwrap()).unwrap_err();
        assert!(matches!(e, CrsError::OutsideZone { .. }), "{e}");
        assert!(e.to_string().contains("swapped"), "{e}");
    }

    #[test]
    fn metres_read_as_degrees_are_refused_naming_the_problem() {
        let mut f = line(&[[500_123.4, 3_456_789.0], [500_200.0, 3_456_800.0]]);
        let e = to_wgs84_at_boundary(&mut f, None, &MapCoords::default(), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "coordinates look projected (e.g. 500123.4, 3456789), not degrees: give the CRS with --crs EPSG:n or a crs member"
        );
        let mut f = line(&[[38_500_123.4, 3_456_789.0]]);
        let e = to_wgs84_at_boundary(&mut f, None, &MapCoords::default(), false).unwrap_err();
        assert!(e.to_string().contains("EPSG:4526"), "{e}");
        let mut f = line(&[[500_123.4, 3_456_789.0]]);
        let e = to_wgs84_at_boundary(&mut f, Some(Crs::Wgs84), &MapCoords::default(), false)
            .unwrap_err();
        assert!(e.to_string().contains("the file says EPSG:4326"), "{e}");
        // A few bad points among good ones are the features' problem, not the file's.
        let mut f = line(&[[114.0, 22.5]]);
        f.extend(line(&[[114.0, 22.5]]));
        f.extend(line(&[[500_123.4, 3_456_789.0]]));
        to_wgs84_at_boundary(&mut f, None, &MapCoords::default(), false).unwrap();
    }

    #[test]
    fn the_flag_wins_over_the_file_and_says_so() {
        let gk = Crs::from_epsg(4547).unwrap();
        let mut f = line(&[[505955.8462, 2493941.2457]]);
        let flags = MapCoords {
            crs: Some(gk),
            coords: Coords::Wgs84,
        };
        let report = to_wgs84_at_boundary(&mut f, Some(Crs::Wgs84), &flags, false).unwrap();
        assert_eq!(report.source, CrsSource::Flag);
        assert_eq!(report.file_says.as_deref(), Some("EPSG:4326 (WGS 84)"));
        let e = to_wgs84_at_boundary(&mut line(&[[24.9, 60.1]]), None, &flags, true).unwrap_err();
        assert!(e.to_string().contains("OSM PBF"), "{e}");
    }

    /// Published WGS 84 / GCJ-02 pairs: the test table of googollee/eviltransform
    /// (`python/tests.py`, shanghai, shenzhen, beijing: wgsLat, wgsLng, gcjLat, gcjLng).
    const GCJ_PAIRS: [(f64, f64, f64, f64); 3] = [
        (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),
        (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),
        (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),
    ];

    #[test]
    fn gcj02_points_land_within_a_metre_of_their_wgs84() {
        for (wlat, wlon, glat, glon) in GCJ_PAIRS {
            let got = Coords::Gcj02.to_wgs84(glon, glat);
            let off = metres(got, [wlon, wlat]);
            assert!(off < 1.0, "{glon},{glat} → {got:?}: {off} m off");
            // The offset undone is the real one (hundreds of metres), not nothing.
            assert!(metres([glon, glat], [wlon, wlat]) > 100.0);
        }
        // Outside mainland China nothing moves (Hong Kong).
        assert_eq!(
            Coords::Gcj02.to_wgs84(114.1694, 22.3193),
            [114.1694, 22.3193]
        );
    }

    /// BD-09 from GCJ-02, the published forward formula (Baidu's, as every port has
    /// it), written out here so the test does not check the crate with itself.
    fn bd09_from_gcj02(lon: f64, lat: f64) -> [f64; 2] {
        let x_pi = std::f64::consts::PI * 3000.0 / 180.0;
        let z = lon.hypot(lat) + 0.00002 * (lat * x_pi).sin();
        let theta = lat.atan2(lon) + 0.000003 * (lon * x_pi).cos();
        [z * theta.cos() + 0.0065, z * theta.sin() + 0.006]
    }

    #[test]
    fn bd09_points_land_within_a_metre_of_their_wgs84() {
        // The formula above against the pair in qichengzx/coordtransform's README
        // (GCJ02toBD09(116.404, 39.915)).
        let bd = bd09_from_gcj02(116.404, 39.915);
        assert!((bd[0] - 116.41036949371029).abs() < 1e-9, "{bd:?}");
        assert!((bd[1] - 39.92133699351022).abs() < 1e-9, "{bd:?}");
        for (wlat, wlon, glat, glon) in GCJ_PAIRS {
            let [blon, blat] = bd09_from_gcj02(glon, glat);
            let got = Coords::Bd09.to_wgs84(blon, blat);
            let off = metres(got, [wlon, wlat]);
            assert!(off < 1.0, "{blon},{blat} → {got:?}: {off} m off");
        }
    }

    /// A 30 m × 20 m building in Shenzhen, its corners in WGS 84.
    fn shenzhen_building() -> Vec<[f64; 2]> {
        let frame = crate::geo_frame::GeoFrame::new(114.0579, 22.5431);
        [
            [0.0, 0.0],
            [30.0, 0.0],
            [30.0, 20.0],
            [0.0, 20.0],
            [0.0, 0.0],
        ]
        .iter()
        .map(|&[e, n]| frame.wgs84_from_local(e, n))
        .collect()
    }

    fn building_geojson(ring: &[[f64; 2]], crs_member: Option<&str>) -> String {
        let crs = crs_member
            .map(|name| format!(r#""crs":{{"type":"name","properties":{{"name":"{name}"}}}},"#))
            .unwrap_or_default();
        let ring: Vec<String> = ring
            .iter()
            .map(|[x, y]| format!("[{x:.9},{y:.9}]"))
            .collect();
        format!(
            r#"{{"type":"FeatureCollection",{crs}"features":[{{"type":"Feature","id":"b1","properties":{{"building":"yes"}},"geometry":{{"type":"Polygon","coordinates":[[{}]]}}}}]}}"#,
            ring.join(",")
        )
    }

    fn load(text: &str, coords: MapCoords) -> crate::map::CityMap {
        crate::map::load_bytes_with(
            text.as_bytes(),
            crate::map::MapFormat::GeoJson,
            "t",
            "t.geojson",
            &coords,
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_building_lands_within_half_a_metre_whatever_its_route() {
        let wgs84 = shenzhen_building();
        let reference = load(&building_geojson(&wgs84, None), MapCoords::default());
        let in_crs = |code: u32| {
            let mut ring = wgs84.clone();
            project_from_wgs84(&mut ring, &Crs::from_epsg(code).unwrap()).unwrap();
            ring
        };
        let flag = |crs: Crs| MapCoords {
            crs: Some(crs),
            coords: Coords::Wgs84,
        };
        let offset = |coords: Coords, f: fn(f64, f64) -> (f64, f64)| {
            let ring: Vec<[f64; 2]> = wgs84
                .iter()
                .map(|p| f(p[0], p[1]))
                .map(|(x, y)| [x, y])
                .collect();
            (
                building_geojson(&ring, None),
                MapCoords { crs: None, coords },
            )
        };
        let routes: Vec<(&str, String, MapCoords, &str)> = vec![
            (
                "GeoJSON crs member, Gauss-Krüger CM 114E",
                building_geojson(&in_crs(4547), Some("urn:ogc:def:crs:EPSG::4547")),
                MapCoords::default(),
                "EPSG:4547 (CGCS2000 / 3-degree Gauss-Kruger CM 114E)",
            ),
            (
                "--crs EPSG:4547",
                building_geojson(&in_crs(4547), None),
                flag("EPSG:4547".parse().unwrap()),
                "EPSG:4547 (CGCS2000 / 3-degree Gauss-Kruger CM 114E)",
            ),
            (
                "crs member, zone-prefixed Gauss-Krüger zone 38",
                building_geojson(&in_crs(4526), Some("EPSG:4526")),
                MapCoords::default(),
                "EPSG:4526 (CGCS2000 / 3-degree Gauss-Kruger zone 38)",
            ),
            (
                ".prj of Gauss-Krüger zone 39",
                building_geojson(&in_crs(4527), None),
                flag(from_prj(ESRI_GK_ZONE_39).unwrap()),
                "EPSG:4527 (CGCS2000 / 3-degree Gauss-Kruger zone 39)",
            ),
            (
                "Esri wkid 102100",
                building_geojson(&in_crs(3857), None),
                flag(from_wkid(102100).unwrap()),
                "EPSG:3857 (WGS 84 / Pseudo-Mercator)",
            ),
            (
                "UTM zone 50N",
                building_geojson(&in_crs(32650), Some("EPSG:32650")),
                MapCoords::default(),
                "EPSG:32650 (WGS 84 / UTM zone 50N)",
            ),
        ];
        let (gcj, gcj_flags) = offset(Coords::Gcj02, coordtransform::wgs84_to_gcj02);
        let (bd, bd_flags) = offset(Coords::Bd09, coordtransform::wgs84_to_bd09);
        let routes = routes.into_iter().chain([
            ("--coords gcj02", gcj, gcj_flags, "EPSG:4326 (WGS 84)"),
            ("--coords bd09", bd, bd_flags, "EPSG:4326 (WGS 84)"),
        ]);
        let expected: Vec<_> = reference.buildings[0]
            .rings()
            .flat_map(|r| r.0.clone())
            .collect();
        for (route, text, coords, name) in routes {
            let city = load(&text, coords);
            assert_eq!(city.buildings.len(), 1, "{route}");
            assert_eq!(city.crs.name, name, "{route}");
            assert_eq!(city.crs.coords, coords.coords, "{route}");
            let got: Vec<_> = city.buildings[0]
                .rings()
                .flat_map(|r| r.0.clone())
                .collect();
            assert_eq!(got.len(), expected.len(), "{route}");
            for (a, b) in got.iter().zip(&expected) {
                let off = (a.x - b.x).hypot(a.y - b.y);
                assert!(off < 0.5, "{route}: {a:?} is {off} m from {b:?}");
            }
        }
    }

    #[test]
    fn a_crs_member_that_is_not_understood_is_an_error_naming_it() {
        let text = building_geojson(&shenzhen_building(), Some("EPSG:2385"));
        let e = crate::map::load_bytes(
            text.as_bytes(),
            crate::map::MapFormat::GeoJson,
            "t",
            "t.geojson",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("t.geojson: unknown CRS EPSG:2385"), "{e}");
    }

    #[test]
    fn coords_values() {
        assert_eq!("gcj02".parse::<Coords>().unwrap(), Coords::Gcj02);
        assert_eq!("GCJ-02".parse::<Coords>().unwrap(), Coords::Gcj02);
        assert_eq!("bd09".parse::<Coords>().unwrap(), Coords::Bd09);
        let e = "mars".parse::<Coords>().unwrap_err();
        assert!(e.contains("mars") && e.contains("gcj02"), "{e}");
    }
}
