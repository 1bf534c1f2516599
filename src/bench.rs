//! Benchmarks behind `zhongshu bench`: a generated city of any size, timed from file to
//! GPU-ready chunk meshes, with the process's peak memory.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::map::{self, mesh};
use crate::stats::SplitMix;

/// Writes a GeoJSON FeatureCollection of `buildings` footprints laid out in city blocks
/// around Shanghai's centre: boxes and L-shapes, some with courtyards, with a mix of
/// `height`, `building:levels` and untagged heights, and the address and date tags real
/// exports carry. About 350 bytes per building.
pub fn generate_city_geojson(path: &Path, buildings: usize, seed: u64) -> std::io::Result<u64> {
    generate_city_geojson_in(path, buildings, seed, None)
}

/// One building of a generated city, in WGS84.
pub struct GeneratedBuilding {
    pub index: usize,
    /// The `building` value.
    pub kind: &'static str,
    pub height_m: Option<f64>,
    pub levels: Option<u64>,
    pub start_date: u64,
    pub roof_shape: &'static str,
    pub housenumber: usize,
    pub name: Option<String>,
    /// Closed rings `[lon, lat]`: the outer, then a courtyard if it has one (wound the
    /// other way).
    pub rings: Vec<Vec<[f64; 2]>>,
}

/// The buildings of a generated city (see [`generate_city_geojson`]), the same for
/// the same seed whatever format they are written in.
pub fn city_buildings(buildings: usize, seed: u64) -> impl Iterator<Item = GeneratedBuilding> {
    let mut rng = SplitMix(seed);
    let (lon0, lat0) = (121.47, 31.23);
    let frame = crate::geo_frame::GeoFrame::new(lon0, lat0);
    // Blocks of 4×4 lots, 25 m lots, 20 m streets.
    let per_row = ((buildings as f64).sqrt().ceil() as usize).max(1);
    let lot = 25.0;
    let street = 20.0;
    let block = 4.0 * lot + street;
    let half = per_row as f64 / 4.0 * block / 2.0;
    let kinds = [
        "yes",
        "apartments",
        "office",
        "house",
        "commercial",
        "retail",
        "school",
    ];
    (0..buildings).map(move |i| {
        let (row, col) = (i / per_row, i % per_row);
        let x0 = (col / 4) as f64 * block + (col % 4) as f64 * lot - half;
        let y0 = (row / 4) as f64 * block + (row % 4) as f64 * lot - half;
        let (wx, wy) = (
            lot * (0.55 + 0.35 * rng.unit()),
            lot * (0.55 + 0.35 * rng.unit()),
        );
        let (ox, oy) = (x0 + 1.5, y0 + 1.5);
        let shape = rng.next() % 10;
        let outer: Vec<[f64; 2]> = if shape < 3 {
            // L-shape.
            let (cx, cy) = (wx * 0.5, wy * 0.5);
            vec![
                [ox, oy],
                [ox + wx, oy],
                [ox + wx, oy + cy],
                [ox + cx, oy + cy],
                [ox + cx, oy + wy],
                [ox, oy + wy],
            ]
        } else {
            vec![[ox, oy], [ox + wx, oy], [ox + wx, oy + wy], [ox, oy + wy]]
        };
        let kind = kinds[(rng.next() % kinds.len() as u64) as usize];
        let (height_m, levels) = match rng.next() % 3 {
            0 => (Some(6.0 + rng.unit() * rng.unit() * 150.0), None),
            1 => (None, Some(1 + rng.next() % 30)),
            _ => (None, None),
        };
        let start_date = 1950 + rng.next() % 75;
        let roof_shape = ["flat", "gabled", "hipped"][(rng.next() % 3) as usize];
        let name = rng
            .next()
            .is_multiple_of(8)
            .then(|| format!("Block {} 第{}号楼", i / 16, i % 16));
        let wgs84 = |p: &[f64; 2]| frame.wgs84_from_local(p[0], p[1]);
        let mut rings = vec![
            outer
                .iter()
                .chain(std::iter::once(&outer[0]))
                .map(wgs84)
                .collect::<Vec<_>>(),
        ];
        if shape == 9 {
            let (hx, hy) = (ox + wx * 0.3, oy + wy * 0.3);
            let (hw, hh) = (wx * 0.4, wy * 0.4);
            let hole = [
                [hx, hy],
                [hx, hy + hh],
                [hx + hw, hy + hh],
                [hx + hw, hy],
                [hx, hy],
            ];
            rings.push(hole.iter().map(wgs84).collect());
        }
        GeneratedBuilding {
            index: i,
            kind,
            height_m,
            levels,
            start_date,
            roof_shape,
            housenumber: 1 + i % 200,
            name,
            rings,
        }
    })
}

/// [`generate_city_geojson`] with the coordinates in `crs` (e.g. EPSG:4549, CGCS2000
/// Gauss-Krüger CM 120E for Shanghai), named in a GeoJSON `crs` member.
pub fn generate_city_geojson_in(
    path: &Path,
    buildings: usize,
    seed: u64,
    crs: Option<&map::crs::Crs>,
) -> std::io::Result<u64> {
    let project = crs
        .map(map::crs::wgs84_projector)
        .transpose()
        .map_err(std::io::Error::other)?;
    // Degrees to 1 cm, metres to 1 mm.
    let point = |w: &mut BufWriter<std::fs::File>, [lon, lat]: [f64; 2]| -> std::io::Result<()> {
        match &project {
            None => write!(w, "[{lon:.7},{lat:.7}]"),
            Some(project) => {
                let [x, y] = project([lon, lat]).map_err(std::io::Error::other)?;
                write!(w, "[{x:.3},{y:.3}]")
            }
        }
    };
    let file = std::fs::File::create(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(b"{\"type\":\"FeatureCollection\",")?;
    if let Some(code) = crs.and_then(map::crs::Crs::epsg) {
        write!(
            w,
            "\"crs\":{{\"type\":\"name\",\"properties\":{{\"name\":\"urn:ogc:def:crs:EPSG::{code}\"}}}},"
        )?;
    }
    w.write_all(b"\"features\":[\n")?;
    let mut written = 0u64;
    for b in city_buildings(buildings, seed) {
        let i = b.index;
        if i > 0 {
            w.write_all(b",\n")?;
        }
        write!(
            w,
            "{{\"type\":\"Feature\",\"id\":{i},\"properties\":{{\"building\":\"{}\"",
            b.kind
        )?;
        if let Some(h) = b.height_m {
            write!(w, ",\"height\":\"{h:.1}\"")?;
        }
        if let Some(l) = b.levels {
            write!(w, ",\"building:levels\":\"{l}\"")?;
        }
        write!(
            w,
            ",\"start_date\":\"{}\",\"roof:shape\":\"{}\",\"addr:housenumber\":\"{}\"",
            b.start_date, b.roof_shape, b.housenumber
        )?;
        if let Some(name) = &b.name {
            write!(w, ",\"name\":\"{name}\"")?;
        }
        w.write_all(b"},\"geometry\":{\"type\":\"Polygon\",\"coordinates\":[")?;
        for (r, ring) in b.rings.iter().enumerate() {
            w.write_all(if r > 0 { b",[" } else { b"[" })?;
            for (k, p) in ring.iter().enumerate() {
                if k > 0 {
                    w.write_all(b",")?;
                }
                point(&mut w, *p)?;
            }
            w.write_all(b"]")?;
        }
        w.write_all(b"]}}")?;
        written += 1;
    }
    w.write_all(b"\n]}\n")?;
    w.flush()?;
    Ok(written)
}

/// The Esri WKT of a CGCS2000 3-degree Gauss-Krüger CRS, as ArcGIS writes it in a
/// `.prj` (`CGCS2000_3_Degree_GK_CM_120E`, or `..._Zone_40` with the zone in front of
/// the easting); `None` for any other CRS.
pub fn gauss_kruger_prj(crs: &map::crs::Crs) -> Option<String> {
    let map::crs::Crs::GaussKruger {
        zone_width_deg: 3,
        zone,
        zone_prefix,
    } = *crs
    else {
        return None;
    };
    let cm = 3 * u32::from(zone);
    let (name, false_easting) = if zone_prefix {
        (format!("Zone_{zone}"), f64::from(zone) * 1e6 + 500_000.0)
    } else {
        (format!("CM_{cm}E"), 500_000.0)
    };
    Some(format!(
        r#"PROJCS["CGCS2000_3_Degree_GK_{name}",GEOGCS["GCS_China_Geodetic_Coordinate_System_2000",DATUM["D_China_2000",SPHEROID["CGCS2000",6378137.0,298.257222101]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],PROJECTION["Gauss_Kruger"],PARAMETER["False_Easting",{false_easting:.1}],PARAMETER["False_Northing",0.0],PARAMETER["Central_Meridian",{cm}.0],PARAMETER["Scale_Factor",1.0],PARAMETER["Latitude_Of_Origin",0.0],UNIT["Meter",1.0]]"#
    ))
}

/// Rewrites the field names of a `.dbf` written by the `dbase` crate (which writes
/// them as UTF-8 whatever the table's encoding) in `encoding`, as ArcGIS writes them:
/// `层数` in GBK is 4 bytes.
pub fn encode_dbf_field_names(
    dbf: &Path,
    encoding: &'static encoding_rs::Encoding,
) -> std::io::Result<()> {
    let mut bytes = std::fs::read(dbf)?;
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let mut at = 32;
    while at + 32 <= header_len && bytes[at] != 0x0D {
        let raw = &bytes[at..at + 11];
        let end = raw.iter().position(|&b| b == 0).unwrap_or(11);
        let name = String::from_utf8_lossy(&raw[..end]).into_owned();
        let (encoded, _, _) = encoding.encode(&name);
        if encoded.len() > 10 {
            return Err(std::io::Error::other(format!(
                "field name {name} is longer than 10 bytes in {}",
                encoding.name()
            )));
        }
        bytes[at..at + 11].fill(0);
        bytes[at..at + encoded.len()].copy_from_slice(&encoded);
        at += 32;
    }
    std::fs::write(dbf, bytes)
}

/// Writes a generated city (see [`city_buildings`]) as a Shapefile the way a Chinese
/// surveying bureau exports one: polygons in `crs` (its `.prj` beside it), attributes
/// in GBK with a `.cpg` saying so, fields `层数` (floors, every building), `高度`
/// (height, some), `名称` (name, some), `类型` (the kind) and `年份` (year built).
pub fn generate_city_shapefile(
    path: &Path,
    buildings: usize,
    seed: u64,
    crs: &map::crs::Crs,
) -> std::io::Result<u64> {
    use shapefile::dbase::{self, FieldName, FieldValue};
    let prj = gauss_kruger_prj(crs).ok_or_else(|| {
        std::io::Error::other(format!(
            "{}: the generator writes CGCS2000 3-degree Gauss-Krüger Shapefiles",
            crs.label()
        ))
    })?;
    let project = map::crs::wgs84_projector(crs).map_err(std::io::Error::other)?;
    let name =
        |n: &str| FieldName::try_from(n).map_err(|e| std::io::Error::other(format!("{e:?}")));
    let table = dbase::TableWriterBuilder::with_encoding(dbase::encoding::EncodingRs::from(
        encoding_rs::GBK,
    ))
    .add_numeric_field(name("层数")?, 4, 0)
    .add_numeric_field(name("高度")?, 8, 1)
    .add_character_field(name("名称")?, 40)
    .add_character_field(name("类型")?, 16)
    .add_numeric_field(name("年份")?, 4, 0);
    let io = |e: shapefile::Error| std::io::Error::other(e.to_string());
    let mut writer = shapefile::Writer::from_path(path, table).map_err(io)?;
    let mut written = 0u64;
    for b in city_buildings(buildings, seed) {
        let mut rings = Vec::with_capacity(b.rings.len());
        for (r, ring) in b.rings.iter().enumerate() {
            let points = ring
                .iter()
                .map(|p| project(*p).map(|[x, y]| shapefile::Point::new(x, y)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(std::io::Error::other)?;
            rings.push(if r == 0 {
                shapefile::PolygonRing::Outer(points)
            } else {
                shapefile::PolygonRing::Inner(points)
            });
        }
        let polygon = shapefile::Polygon::with_rings(rings);
        let floors = b
            .levels
            .or_else(|| b.height_m.map(|h| (h / 3.2).round().max(1.0) as u64))
            .unwrap_or(1 + (b.index % 6) as u64);
        let mut record = dbase::Record::default();
        record.insert("层数".into(), FieldValue::Numeric(Some(floors as f64)));
        record.insert(
            "高度".into(),
            FieldValue::Numeric(b.height_m.map(|h| (h * 10.0).round() / 10.0)),
        );
        record.insert("名称".into(), FieldValue::Character(b.name.clone()));
        record.insert("类型".into(), FieldValue::Character(Some(b.kind.into())));
        record.insert(
            "年份".into(),
            FieldValue::Numeric(Some(b.start_date as f64)),
        );
        writer
            .write_shape_and_record(&polygon, &record)
            .map_err(io)?;
        written += 1;
    }
    drop(writer);
    encode_dbf_field_names(&path.with_extension("dbf"), encoding_rs::GBK)?;
    std::fs::write(path.with_extension("prj"), prj)?;
    std::fs::write(path.with_extension("cpg"), "GBK")?;
    Ok(written)
}

/// Polygons (each a closed outer ring, then its holes) as FlatGeobuf writes them: one
/// MultiPolygon.
pub struct FgbPolygons<'a>(pub &'a [Vec<Vec<[f64; 2]>>]);

impl flatgeobuf::geozero::GeozeroGeometry for FgbPolygons<'_> {
    fn process_geom<P: flatgeobuf::geozero::GeomProcessor>(
        &self,
        out: &mut P,
    ) -> flatgeobuf::geozero::error::Result<()> {
        out.multipolygon_begin(self.0.len(), 0)?;
        for (p, polygon) in self.0.iter().enumerate() {
            out.polygon_begin(false, polygon.len(), p)?;
            for (r, ring) in polygon.iter().enumerate() {
                out.linestring_begin(false, ring.len(), r)?;
                for (k, [x, y]) in ring.iter().enumerate() {
                    out.xy(*x, *y, k)?;
                }
                out.linestring_end(false, r)?;
            }
            out.polygon_end(false, p)?;
        }
        out.multipolygon_end(0)
    }
}

/// Writes a generated city (see [`city_buildings`]) as a FlatGeobuf with its spatial
/// index, as GDAL writes one: OSM-style columns (`fid`, `building`, `height`,
/// `building:levels`, `name`, `start_date`, `roof:shape`), WGS84 or in `crs` (named by
/// its EPSG code in the header).
pub fn generate_city_flatgeobuf(
    path: &Path,
    buildings: usize,
    seed: u64,
    crs: Option<&map::crs::Crs>,
) -> std::io::Result<u64> {
    let out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    write_city_flatgeobuf(out, buildings, seed, crs)
}

/// [`generate_city_flatgeobuf`] into any writer (a fuzzer's seed in memory).
pub fn write_city_flatgeobuf(
    out: impl Write,
    buildings: usize,
    seed: u64,
    crs: Option<&map::crs::Crs>,
) -> std::io::Result<u64> {
    use flatgeobuf::geozero::{ColumnValue, PropertyProcessor};
    use flatgeobuf::{ColumnType, FgbCrs, FgbWriter, FgbWriterOptions, GeometryType};
    let project = crs
        .map(map::crs::wgs84_projector)
        .transpose()
        .map_err(std::io::Error::other)?;
    let io = |e: flatgeobuf::Error| std::io::Error::other(e.to_string());
    let geo = |e: flatgeobuf::geozero::error::GeozeroError| std::io::Error::other(e.to_string());
    let mut fgb = FgbWriter::create_with_options(
        "buildings",
        GeometryType::MultiPolygon,
        FgbWriterOptions {
            crs: FgbCrs {
                code: crs.and_then(map::crs::Crs::epsg).unwrap_or(4326) as i32,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .map_err(io)?;
    let columns = [
        ("fid", ColumnType::ULong),
        ("building", ColumnType::String),
        ("height", ColumnType::Double),
        ("building:levels", ColumnType::Int),
        ("name", ColumnType::String),
        ("start_date", ColumnType::Int),
        ("roof:shape", ColumnType::String),
    ];
    for (name, kind) in columns {
        fgb.add_column(name, kind, |_, _| {});
    }
    let mut written = 0u64;
    for b in city_buildings(buildings, seed) {
        let rings = match &project {
            None => b.rings.clone(),
            Some(project) => b
                .rings
                .iter()
                .map(|r| r.iter().map(|p| project(*p)).collect::<Result<Vec<_>, _>>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(std::io::Error::other)?,
        };
        let mut failed = None;
        fgb.add_feature_geom(FgbPolygons(&[rings]), |f| {
            let mut put = |i: usize, value: &ColumnValue| {
                if let Err(e) = f.property(i, columns[i].0, value) {
                    failed.get_or_insert(e);
                }
            };
            put(0, &ColumnValue::ULong(b.index as u64));
            put(1, &ColumnValue::String(b.kind));
            if let Some(h) = b.height_m {
                // To the decimetre, as the GeoJSON city writes it.
                put(2, &ColumnValue::Double((h * 10.0).round() / 10.0));
            }
            if let Some(l) = b.levels {
                put(3, &ColumnValue::Int(l as i32));
            }
            if let Some(name) = &b.name {
                put(4, &ColumnValue::String(name));
            }
            put(5, &ColumnValue::Int(b.start_date as i32));
            put(6, &ColumnValue::String(b.roof_shape));
        })
        .map_err(geo)?;
        if let Some(e) = failed {
            return Err(geo(e));
        }
        written += 1;
    }
    fgb.write(out).map_err(io)?;
    Ok(written)
}

/// Peak resident memory of this process so far, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Result of `zhongshu bench map`.
#[derive(Debug, Serialize)]
pub struct MapBenchReport {
    pub file: String,
    /// The format read (`geojson`, `shapefile`, `flatgeobuf`, ...).
    pub format: Option<&'static str>,
    pub file_bytes: u64,
    pub buildings: usize,
    /// Broken features left out.
    pub skipped: u64,
    /// Features the map does not draw (tags it has no layer for, cut by the edge).
    pub not_drawn: u64,
    pub generate_ms: Option<f64>,
    /// Reading the file and building the city model.
    pub load_ms: f64,
    /// Triangulating and merging into chunk meshes.
    pub mesh_ms: f64,
    /// `load_ms + mesh_ms`: file to GPU-ready meshes.
    pub total_ms: f64,
    pub chunks: usize,
    pub triangles: usize,
    pub peak_rss_mb: Option<f64>,
    pub threads: usize,
    /// The CRS the file was read in.
    pub crs: String,
    /// Converting every coordinate to WGS84 (part of `load_ms`).
    pub crs_ms: f64,
}

/// The bytes of a map file, with the files beside a Shapefile's `.shp` that are read
/// with it.
fn map_file_bytes(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let sidecars: u64 = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("shp"))
    {
        ["dbf", "shx", "prj", "cpg"]
            .iter()
            .filter_map(|ext| map::shp::sidecar(path, ext))
            .map(|p| size(&p))
            .sum()
    } else {
        0
    };
    size(path) + sidecars
}

/// Times loading `path` into chunk meshes.
pub fn bench_map_file(
    path: &Path,
    generate_ms: Option<f64>,
    coords: &map::crs::MapCoords,
) -> Result<MapBenchReport, map::MapError> {
    let start = Instant::now();
    let options = map::LoadOptions {
        coords: *coords,
        ..Default::default()
    };
    let city = map::load_path_with(path, &options)?;
    let load_ms = start.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let meshes = mesh::build_city_meshes(&city);
    let mesh_ms = t.elapsed().as_secs_f64() * 1000.0;
    Ok(MapBenchReport {
        file: path.display().to_string(),
        format: city.format.map(map::MapFormat::as_str),
        file_bytes: map_file_bytes(path),
        buildings: city.buildings.len(),
        skipped: city.skipped.broken_total(),
        not_drawn: city.skipped.not_drawn_total(),
        generate_ms,
        load_ms,
        mesh_ms,
        total_ms: load_ms + mesh_ms,
        chunks: meshes.chunks.len(),
        triangles: meshes.triangle_count(),
        peak_rss_mb: peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
        threads: rayon::current_num_threads(),
        crs: city.crs.name.clone(),
        crs_ms: city.crs.convert_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_city_loads_completely() {
        let dir = std::env::temp_dir().join(format!("zhongshu-gen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gen.geojson");
        assert_eq!(generate_city_geojson(&path, 500, 7).unwrap(), 500);
        let report = bench_map_file(&path, None, &Default::default()).unwrap();
        assert_eq!(report.buildings, 500);
        assert_eq!(report.skipped, 0);
        assert!(report.triangles > 500 * 10);
        let bytes_per_building = report.file_bytes as f64 / 500.0;
        assert!(
            (250.0..500.0).contains(&bytes_per_building),
            "{bytes_per_building}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// Result of `zhongshu bench ingest`.
#[derive(Debug, Serialize)]
pub struct IngestBenchReport {
    pub entities: usize,
    pub rounds: usize,
    pub updates: usize,
    pub payload_mb: f64,
    pub decode_ms: f64,
    pub apply_ms: f64,
    pub quality_ms: f64,
    pub decode_per_s: f64,
    pub apply_per_s: f64,
    pub quality_per_s: f64,
    /// Decode and apply together, one after the other, as the app does.
    pub updates_per_s: f64,
    /// Decode, every quality rule, and apply.
    pub updates_per_s_with_quality: f64,
    /// One reconciliation pass over every entity, with a second feed reporting half of
    /// them again (the app runs one every 2 s).
    pub reconcile_ms: f64,
    pub reconcile_links: usize,
    pub reconcile_conflicts: usize,
    pub threads: usize,
}

/// NGSI-LD pages (normalized form) of `entities` moving vehicles, `rounds` times over
/// with new positions and times: the ingest path's real input.
pub fn vehicle_pages(entities: usize, rounds: usize, page: usize) -> Vec<Vec<u8>> {
    let mut rng = SplitMix(42);
    let mut pages = Vec::new();
    for round in 0..rounds {
        let observed = crate::clock::rfc3339_from_unix_ms(1_795_946_400_000 + round as i64 * 1000);
        for start in (0..entities).step_by(page) {
            let items: Vec<serde_json::Value> = (start..(start + page).min(entities))
                .map(|i| {
                    let kind = ["bus", "taxi", "police", "ambulance"][i % 4];
                    serde_json::json!({
                        "id": format!("urn:ngsi-ld:Vehicle:v{i}"),
                        "type": "Vehicle",
                        "vehicleType": {"type": "Property", "value": kind},
                        "speed": {"type": "Property", "value": (rng.unit() * 60.0 * 10.0).round() / 10.0, "observedAt": observed},
                        "heading": {"type": "Property", "value": (rng.unit() * 360.0).round()},
                        "location": {"type": "GeoProperty", "value": {"type": "Point",
                            "coordinates": [121.40 + rng.unit() * 0.15, 31.17 + rng.unit() * 0.12]}},
                    })
                })
                .collect();
            pages.push(serde_json::to_vec(&items).expect("serialise a page"));
        }
    }
    pages
}

/// Times decoding NGSI-LD pages and applying them to the live state with its index.
pub fn bench_ingest(entities: usize, rounds: usize) -> IngestBenchReport {
    let pages = vehicle_pages(entities, rounds, 1000);
    let payload_bytes: usize = pages.iter().map(Vec::len).sum();
    let mut state = crate::state::LiveState::new(crate::geo_frame::GeoFrame::new(121.47, 31.23));
    let rules = crate::governance::quality::QualityRules::for_city([121.40, 31.17, 121.55, 31.29]);
    let feed = crate::feeds::sim_source::default_sim_feeds().remove(0);
    let mut quality = crate::governance::quality::FeedQuality::default();
    let (mut decode_s, mut apply_s, mut quality_s, mut updates) = (0.0, 0.0, 0.0, 0usize);
    for page in &pages {
        let t = Instant::now();
        let decoded = crate::feeds::decode::decode_ngsi_ld(page).expect("valid page");
        decode_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        quality.check_batch(
            &rules,
            &feed,
            &decoded.updates,
            decoded.rejects.len(),
            1_795_946_400_000,
        );
        quality_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for u in decoded.updates {
            state.apply(0, u, 0);
            updates += 1;
        }
        apply_s += t.elapsed().as_secs_f64();
        // The scene drains changes every frame.
        let _ = state.drain_changed();
    }
    // A second department reports every other entity again, some values different.
    let second = vehicle_pages(entities, 1, 1000);
    for page in &second {
        let decoded = crate::feeds::decode::decode_ngsi_ld(page).expect("valid page");
        for u in decoded.updates.into_iter().step_by(2) {
            state.apply(1, u, 0);
        }
    }
    let mut feeds = crate::feeds::sim_source::default_sim_feeds();
    feeds[0].authoritative_for = vec!["Vehicle".into()];
    let t = Instant::now();
    let reconciliation = crate::governance::reconcile::reconcile(&state, &feeds, 1_795_946_400_000);
    let reconcile_ms = t.elapsed().as_secs_f64() * 1000.0;
    IngestBenchReport {
        reconcile_ms,
        reconcile_links: reconciliation.links,
        reconcile_conflicts: reconciliation.conflict_count,
        entities,
        rounds,
        updates,
        payload_mb: payload_bytes as f64 / 1e6,
        decode_ms: decode_s * 1000.0,
        apply_ms: apply_s * 1000.0,
        quality_ms: quality_s * 1000.0,
        decode_per_s: updates as f64 / decode_s,
        apply_per_s: updates as f64 / apply_s,
        quality_per_s: updates as f64 / quality_s,
        updates_per_s: updates as f64 / (decode_s + apply_s),
        updates_per_s_with_quality: updates as f64 / (decode_s + apply_s + quality_s),
        threads: rayon::current_num_threads(),
    }
}

/// Result of `zhongshu bench reconcile`.
#[derive(Debug, Serialize)]
pub struct ReconcileBenchReport {
    pub entities_per_feed: usize,
    /// Things of each feed crowded at one default geocode (a batch of car parks).
    pub at_one_point_per_feed: usize,
    pub links: usize,
    pub conflicts: usize,
    /// Copying the shared part of the state, on the frame thread.
    pub copy_ms: f64,
    /// The pass itself, on its own thread.
    pub reconcile_ms: f64,
}

/// Two feeds reporting the same `entities` stations at shared positions (half under
/// the same ids, half under their own ids, so linked by place; a tenth with a value
/// beyond tolerance), plus `at_one_point` car parks each at one default geocode;
/// times one reconciliation pass.
pub fn bench_reconcile(entities: usize, at_one_point: usize) -> ReconcileBenchReport {
    use crate::feeds::{EntityKind, EntityUpdate};
    let mut state = crate::state::LiveState::new(crate::geo_frame::GeoFrame::new(121.47, 31.23));
    let side = (entities as f64).sqrt().ceil() as usize;
    let now = 1_795_946_400_000;
    for feed in [0u32, 1] {
        for i in 0..entities {
            // A grid ~100 m apart.
            let (x, y) = ((i % side) as f64, (i / side) as f64);
            let aqi = 40.0 + (i % 50) as f64 + if feed == 1 && i % 10 == 0 { 30.0 } else { 0.0 };
            let id = if i % 2 == 0 {
                format!("station-{i}")
            } else {
                format!("feed{feed}-station-{i}")
            };
            state.apply(
                feed,
                EntityUpdate {
                    id,
                    entity_type: "AirQualityObserved".into(),
                    kind: EntityKind::AirQuality {
                        aqi: Some(aqi),
                        pm25: Some(10.0),
                        pm10: None,
                        no2: None,
                        o3: None,
                    },
                    position: Some([121.40 + x * 1e-3, 31.17 + y * 9e-4]),
                    line: None,
                    observed_at_ms: Some(now),
                    fields: Default::default(),
                    units: Default::default(),
                    notes: Vec::new(),
                },
                now,
            );
        }
        for i in 0..at_one_point {
            state.apply(
                feed,
                EntityUpdate {
                    id: format!("feed{feed}-park-{i}"),
                    entity_type: "OffStreetParking".into(),
                    kind: EntityKind::Parking {
                        available_spots: Some((i % 300) as f64),
                        total_spots: Some(300.0),
                        status: None,
                    },
                    position: Some([121.47, 31.23]),
                    line: None,
                    observed_at_ms: Some(now),
                    fields: Default::default(),
                    units: Default::default(),
                    notes: Vec::new(),
                },
                now,
            );
        }
    }
    let mut feeds = crate::feeds::sim_source::default_sim_feeds();
    feeds[0].authoritative_for = vec!["AirQualityObserved".into()];
    let t = Instant::now();
    let input = crate::governance::reconcile::ReconcileInput::from_state(&state, now);
    let copy_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let r = crate::governance::reconcile::reconcile_input(&input, &feeds, now);
    ReconcileBenchReport {
        entities_per_feed: entities,
        at_one_point_per_feed: at_one_point,
        links: r.links,
        conflicts: r.conflict_count,
        copy_ms,
        reconcile_ms: t.elapsed().as_secs_f64() * 1000.0,
    }
}

/// Result of `zhongshu bench sim`.
#[derive(Debug, Serialize)]
pub struct SimBenchReport {
    pub vehicles: usize,
    pub simulated_s: f64,
    pub wall_ms: f64,
    /// Simulated seconds per wall second.
    pub times_real_time: f64,
}

/// Times the simulator driving `vehicles` on the default city for `seconds`.
pub fn bench_sim(vehicles: usize, seconds: u32) -> Result<SimBenchReport, map::MapError> {
    let city = map::load_default()?;
    let mut config = crate::sim::SimConfig::for_map(&city);
    config.vehicles = Some(vehicles);
    let start = 1_795_946_400_000;
    let mut sim = crate::sim::Simulator::new(&city, config, start);
    let t = Instant::now();
    sim.advance(start + seconds as i64 * 1000);
    let wall = t.elapsed().as_secs_f64();
    Ok(SimBenchReport {
        vehicles: sim.vehicle_count(),
        simulated_s: seconds as f64,
        wall_ms: wall * 1000.0,
        times_real_time: seconds as f64 / wall,
    })
}

/// Resident memory of this process now, in bytes (Linux `/proc/self/statm`).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * if page > 0 { page as u64 } else { 4096 })
}

/// Resident memory of this process that is its own (anonymous: heap, stacks), without
/// the pages of the executable and other files the kernel maps in and out (Linux
/// `RssAnon` in `/proc/self/status`), in bytes.
pub fn rss_anon_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What `zhongshu bench soak` runs: the default city's simulated sub-brains through the
/// app's core pipeline, at simulated time.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub simulated_hours: f64,
    /// A sample every this many simulated minutes.
    pub sample_every_min: f64,
    pub seed: u64,
}

/// One sample of a soak.
#[derive(Clone, Debug, Serialize)]
pub struct SoakSample {
    pub simulated_h: f64,
    pub wall_s: f64,
    pub rss_mb: f64,
    /// Entities in the live state.
    pub entities: usize,
    /// Slots the live state holds, live or freed (what its tables are sized by).
    pub state_slots: usize,
    /// Updates received and not yet applied.
    pub ingest_backlog: usize,
    /// Conflicts of the last reconciliation pass.
    pub conflicts: usize,
    /// Incidents the alert de-duplication remembers.
    pub alert_keys: usize,
}

/// Result of `zhongshu bench soak`.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub simulated_hours: f64,
    pub wall_s: f64,
    pub times_real_time: f64,
    pub updates_applied: u64,
    pub samples: Vec<SoakSample>,
    /// Least-squares slope of resident memory over simulated time, after the first
    /// tenth of the run (start-up allocations): MB per simulated hour.
    pub rss_mb_per_hour: f64,
    pub rss_mb_per_day: f64,
    /// The same for the live state's slots: slots per simulated hour.
    pub state_slots_per_hour: f64,
}

/// Least-squares slope of `y` over `x`; 0 for fewer than two points.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

/// Runs the default city headless at simulated time, the way the app does each frame:
/// the simulator publishing every sub-brain at its cadence, the ingest (quality, health,
/// snapshots, expiry) into the live state, the scene draining changes, reconciliation
/// every 2 s, the KPIs every second and the alerts' de-duplication. Calls `progress`
/// with each sample.
pub fn bench_soak(
    options: &SoakOptions,
    mut progress: impl FnMut(&SoakSample),
) -> Result<SoakReport, map::MapError> {
    use crate::feeds::sim_source;
    use crate::governance::reconcile::{ReconcileInput, reconcile_input};

    let city = map::load_default()?;
    let feeds = sim_source::default_sim_feeds();
    let (tx, rx) = std::sync::mpsc::channel();
    let rules = crate::governance::quality::QualityRules::for_city(city.bbox_wgs84);
    let mut ingest = crate::governance::health::Ingest::with_rules(&feeds, rx, rules);
    let mut state = crate::state::LiveState::new(city.frame);
    let mut config = crate::sim::SimConfig::for_map(&city);
    config.seed = options.seed;
    let start = 1_795_946_400_000i64;
    let mut sim = crate::sim::Simulator::new(&city, config, start);
    let mut dedup = crate::dispatch::alerts::AlertDedup::new();
    let mut winner_of = Default::default();
    let mut conflicts = 0;
    let mut sim_feeds =
        sim_source::SimFeeds::new(&feeds, options.seed, start).expect("the default feeds simulate");
    let mut updates_applied = 0u64;
    let end = start + (options.simulated_hours * 3_600_000.0) as i64;
    let sample_every = ((options.sample_every_min * 60_000.0) as i64).max(1000);
    let mut next_sample = start;
    let mut samples = Vec::new();
    let wall = Instant::now();
    let mut now = start;
    while now <= end {
        for event in sim_feeds.publish_due(&mut sim, now) {
            tx.send(event).ok();
        }
        updates_applied += ingest.pump(&mut state, usize::MAX) as u64;
        ingest.expire(&mut state, now);
        for slot in state.drain_changed() {
            let Some(e) = state.entity(slot) else {
                continue;
            };
            if e.entity_type == "Alert" {
                let feed = &feeds[e.feed as usize].name;
                if let Some(alert) = crate::dispatch::alerts::from_ngsi_ld(&e.to_update(), feed) {
                    dedup.observe(&alert);
                }
            }
        }
        if (now - start) % 2000 == 0 {
            let r = reconcile_input(&ReconcileInput::from_state(&state, now), &feeds, now);
            conflicts = r.conflict_count;
            winner_of = r.winner_of;
        }
        let kpis = crate::state::kpi::CityKpis::compute(&state, &winner_of, now);
        std::hint::black_box(kpis);
        if now >= next_sample {
            next_sample += sample_every;
            let sample = SoakSample {
                simulated_h: (now - start) as f64 / 3_600_000.0,
                wall_s: wall.elapsed().as_secs_f64(),
                rss_mb: rss_bytes().unwrap_or(0) as f64 / 1e6,
                entities: state.len(),
                state_slots: state.slot_count(),
                ingest_backlog: ingest.backlog(),
                conflicts,
                alert_keys: dedup.len(),
            };
            progress(&sample);
            samples.push(sample);
        }
        now += 1000;
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let settled: Vec<&SoakSample> = samples
        .iter()
        .filter(|s| s.simulated_h >= options.simulated_hours / 10.0)
        .collect();
    let per_hour = |f: &dyn Fn(&SoakSample) -> f64| {
        slope(
            &settled
                .iter()
                .map(|s| (s.simulated_h, f(s)))
                .collect::<Vec<_>>(),
        )
    };
    let rss_mb_per_hour = per_hour(&|s| s.rss_mb);
    Ok(SoakReport {
        simulated_hours: options.simulated_hours,
        wall_s,
        times_real_time: options.simulated_hours * 3600.0 / wall_s,
        updates_applied,
        rss_mb_per_hour,
        rss_mb_per_day: rss_mb_per_hour * 24.0,
        state_slots_per_hour: per_hour(&|s| s.state_slots as f64),
        samples,
    })
}

#[cfg(test)]
mod frame_tests {
    use super::*;

    #[test]
    fn the_frame_bench_spreads_every_whole_city_job_over_frames() {
        let report = bench_frame(20_000);
        assert_eq!(report.shared_entities, 20_000 - 1000);
        let job = |name: &str| {
            report
                .jobs
                .iter()
                .find(|j| j.job.starts_with(name))
                .unwrap_or_else(|| panic!("{name}: {report:?}"))
        };
        // 22,000 updates in three payloads: scored and applied over frames.
        assert!(job("ingest: the whole city").frames >= 1, "{report:?}");
        // Every station of both feeds is reconciled, and the KPIs see them all.
        assert!(job("reconciliation: copy").frames >= 1);
        assert!(job("KPIs").frames >= 1);
        assert!(job("expiry").frames >= 1);
        assert!(report.worst_whole_city_job_ms > 0.0);
    }
}

#[cfg(test)]
mod soak_tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_is_its_gradient() {
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 + 0.5 * x as f64)).collect();
        assert!((slope(&line) - 0.5).abs() < 1e-12);
        assert_eq!(slope(&[(1.0, 5.0), (2.0, 5.0), (3.0, 5.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 5.0)]), 0.0);
    }

    #[test]
    fn a_soak_samples_memory_and_the_live_state_of_the_default_city() {
        let options = SoakOptions {
            simulated_hours: 0.05,
            sample_every_min: 1.0,
            seed: 1,
        };
        let mut seen = 0;
        let report = bench_soak(&options, |_| seen += 1).unwrap();
        // A sample at the start and after each simulated minute.
        assert_eq!(report.samples.len(), 4);
        assert_eq!(seen, 4);
        assert!(report.updates_applied > 0);
        let last = report.samples.last().unwrap();
        assert!(last.rss_mb > 0.0);
        // Every sub-brain's entities are in, and the pump keeps up.
        assert!(last.entities > 1000, "{last:?}");
        assert_eq!(last.ingest_backlog, 0);
        assert!(last.state_slots >= last.entities);
        assert!(report.rss_mb_per_hour.is_finite());
    }
}

/// `zhongshu bench mqtt`: devices publish flat JSON readings at QoS 1 to a local
/// broker (a `mosquitto` this bench starts, or `broker`), and an MQTT feed takes
/// them through the real path: subscription, decoding, the feed's batches, ingest
/// with quality into the live state. Timed from the first publish to the last update
/// applied.
pub fn bench_mqtt(
    broker: Option<&str>,
    messages: usize,
    devices: usize,
    publishers: usize,
) -> anyhow::Result<serde_json::Value> {
    use rumqttc::{Client, MqttOptions, QoS};
    use std::sync::atomic::{AtomicBool, Ordering};
    if messages == 0 || devices == 0 || publishers == 0 {
        anyhow::bail!("--messages, --devices and --publishers must be at least 1");
    }
    let started_broker;
    let url = match broker {
        Some(url) => url.to_string(),
        None => {
            // A broker set up for a feed that must not lose readings: mosquitto's
            // default queue per client (1,000 messages) drops the rest of a burst.
            started_broker = crate::feeds::mqtt::testing::Mosquitto::start_with(
                "bench",
                "max_queued_messages 10000000\nmax_inflight_messages 1000\n",
            );
            started_broker.url()
        }
    };
    let (host, port, _) = crate::feeds::mqtt::broker_address(&url).map_err(anyhow::Error::msg)?;
    let feeds = crate::feeds::config::parse_feeds(&format!(
        "[[feed]]\nname='bench-devices'\nkind='mqtt'\nurl='{url}'\ntopics=['zhongshu-bench/#']\ndomain='ecology'\nentity_type='AirQualityObserved'\ninterval_s=1\n"
    ))
    .map_err(anyhow::Error::msg)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let pollers = crate::feeds::poll::Pollers::start(&feeds, Default::default(), tx);
    let mut state = crate::state::LiveState::new(crate::geo_frame::GeoFrame::new(121.47, 31.23));
    let rules = crate::governance::quality::QualityRules::for_city([121.40, 31.17, 121.55, 31.29]);
    let mut ingest = crate::governance::health::Ingest::with_rules(&feeds, rx, rules);
    // Connected and subscribed: a probe message comes through.
    let probe = |client: &Client| {
        let _ = client.try_publish(
            "zhongshu-bench/probe",
            QoS::AtLeastOnce,
            false,
            br#"{"id":"probe","lon":121.47,"lat":31.23,"pm25":1}"#.to_vec(),
        );
    };
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let connect = |n: usize| {
        let mut o = MqttOptions::new(
            format!("zhongshu-bench-{n}-{}", std::process::id()),
            host.clone(),
            port,
        );
        o.set_keep_alive(std::time::Duration::from_secs(30))
            .set_inflight(1000);
        let (client, mut connection) = Client::new(o, 10_000);
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Err(_)) = connection.recv_timeout(std::time::Duration::from_millis(100)) {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        });
        client
    };
    let first = connect(0);
    let until = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        probe(&first);
        std::thread::sleep(std::time::Duration::from_millis(100));
        ingest.pump(&mut state, usize::MAX);
        if !state.is_empty() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < until,
            "no message came through the broker at {url} in 20 s"
        );
    }
    // Taken in: applied, or ignored as older than what the entity has; a flood
    // held out by quarantine counts apart (`dropped`).
    let taken = |i: &crate::governance::health::Ingest| i.health[0].updates + i.health[0].ignored;
    let base_applied = taken(&ingest);
    let clients: Vec<Client> = std::iter::once(first)
        .chain((1..publishers).map(connect))
        .collect();
    let started = Instant::now();
    let per = messages.div_ceil(publishers);
    let senders: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(p, client)| {
            std::thread::spawn(move || {
                for i in 0..per {
                    let n = p * per + i;
                    let device = n % devices;
                    let body = format!(
                        r#"{{"id":"aq-{device}","lon":{:.5},"lat":{:.5},"pm25":{}}}"#,
                        121.41 + (device % 100) as f64 * 0.001,
                        31.18 + (device / 100 % 100) as f64 * 0.001,
                        n % 500
                    );
                    if client
                        .publish(
                            format!("zhongshu-bench/{device}"),
                            QoS::AtLeastOnce,
                            false,
                            body,
                        )
                        .is_err()
                    {
                        break;
                    }
                }
                client
            })
        })
        .collect();
    let clients: Vec<Client> = senders.into_iter().filter_map(|s| s.join().ok()).collect();
    let published_s = started.elapsed().as_secs_f64();
    let wanted = (per * publishers) as u64;
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let mut last_progress = (0u64, Instant::now());
    let applied = loop {
        ingest.pump(&mut state, usize::MAX);
        let _ = state.drain_changed();
        let applied = taken(&ingest) - base_applied;
        if applied != last_progress.0 {
            last_progress = (applied, Instant::now());
        }
        // Done, or nothing more for 5 s (what was lost is then counted).
        if applied >= wanted
            || last_progress.1.elapsed() > std::time::Duration::from_secs(5)
            || Instant::now() > deadline
        {
            break applied;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let took = if applied >= wanted {
        started.elapsed().as_secs_f64()
    } else {
        last_progress.1.duration_since(started).as_secs_f64()
    };
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.try_disconnect();
    }
    pollers.stop();
    Ok(serde_json::json!({
        "broker": url,
        "messages": wanted,
        "publishers": publishers,
        "devices": devices,
        "published_s": (published_s * 1000.0).round() / 1000.0,
        "applied": applied,
        "missing": wanted.saturating_sub(applied),
        "seconds": (took * 1000.0).round() / 1000.0,
        "messages_per_s": (applied as f64 / took.max(1e-9)).round(),
        "live_entities": state.len(),
        "rejects": ingest.health[0].rejected,
        "dropped": ingest.health[0].dropped,
        "quarantined": ingest.health[0].quarantined.as_ref().map(|q| q.reason.clone()),
        "peak_rss_mb": peak_rss_bytes().map(|b| (b as f64 / 1048576.0 * 10.0).round() / 10.0),
    }))
}

/// One frame-thread job of `zhongshu bench frame`.
#[derive(Debug, Serialize)]
pub struct FrameJob {
    pub job: &'static str,
    /// How the job reaches the frame.
    pub how: &'static str,
    /// Frames one run of the job was spread over.
    pub frames: usize,
    /// What each of those frames spent on it, ms.
    pub frame_ms: crate::surge::Percentiles,
    /// The same work done in one go (what one frame paid before it was spread), ms.
    pub whole_pass_ms: Option<f64>,
}

/// Result of `zhongshu bench frame`.
#[derive(Debug, Serialize)]
pub struct FrameBenchReport {
    /// Entities in the live state.
    pub entities: usize,
    /// Of them, reported by both of two feeds (reconciled).
    pub shared_entities: usize,
    pub jobs: Vec<FrameJob>,
    /// Slots the state's tables hold (live or freed).
    pub slots: usize,
    /// The most any frame spent on any one whole-city job: reconciliation's copy, the
    /// KPIs, the units, expiry, a 304. The two jobs that apply payloads are left out:
    /// they are bounded by the ingest's 4 ms a frame, plus the growth of the state's
    /// tables as the city arrives.
    pub worst_whole_city_job_ms: f64,
}

/// Runs `step` a frame at a time until it says it is done.
fn stepped(
    job: &'static str,
    how: &'static str,
    whole_ms: f64,
    step: &mut dyn FnMut() -> bool,
) -> FrameJob {
    let mut ms = Vec::new();
    loop {
        let t = Instant::now();
        let done = step();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if done || ms.len() > 1_000_000 {
            break;
        }
    }
    FrameJob {
        job,
        how,
        frames: ms.len(),
        frame_ms: crate::surge::Percentiles::of(ms),
        whole_pass_ms: Some((whole_ms * 100.0).round() / 100.0),
    }
}

fn air_station(id: String, lon: f64, lat: f64, aqi: f64, now: i64) -> crate::feeds::EntityUpdate {
    crate::feeds::EntityUpdate {
        id,
        entity_type: "AirQualityObserved".into(),
        kind: crate::feeds::EntityKind::AirQuality {
            aqi: Some(aqi),
            pm25: Some(10.0),
            pm10: None,
            no2: None,
            o3: None,
        },
        position: Some([lon, lat]),
        line: None,
        observed_at_ms: Some(now),
        fields: Default::default(),
        units: Default::default(),
        notes: Vec::new(),
    }
}

/// Times what the app's frame thread does with a live state of `entities`: two feeds
/// reporting the same `entities / 2` air stations each (so every one is reconciled),
/// and a tenth as many ambulances besides. Each whole-city job runs as the app runs it
/// (a frame's budget at a time), and once in one go for comparison.
pub fn bench_frame(entities: usize) -> FrameBenchReport {
    use crate::feeds::poll::FeedEvent;
    use crate::feeds::{Decoded, EntityKind};
    use crate::governance::health::{Ingest, MAX_UPDATES_PER_FRAME};
    use crate::governance::reconcile::{ReconcileCopy, ReconcileInput};
    use crate::state::kpi::{CityKpis, KpiPass};
    use crate::state::sweep::Budget;
    use crate::surge::Percentiles;

    let now = 1_795_946_400_000i64;
    let per_feed = entities / 2;
    let side = (per_feed as f64).sqrt().ceil().max(1.0) as usize;
    let station = |feed: u32, i: usize, at: i64| {
        let (x, y) = ((i % side) as f64, (i / side) as f64);
        let aqi = 40.0
            + (i % 50) as f64
            + if feed == 1 && i.is_multiple_of(10) {
                30.0
            } else {
                0.0
            };
        air_station(
            format!("station-{i}"),
            121.40 + x * 1e-3,
            31.17 + y * 9e-4,
            aqi,
            at,
        )
    };
    let ambulances = entities / 10;
    let ambulance = |i: usize, at: i64| crate::feeds::EntityUpdate {
        id: format!("amb-{i}"),
        entity_type: "Vehicle".into(),
        kind: EntityKind::Vehicle {
            vehicle_type: Some("ambulance".into()),
            speed_kmh: Some(30.0),
            heading_deg: None,
            service_status: Some("onRoute".into()),
        },
        observed_at_ms: Some(at),
        ..air_station(format!("amb-{i}"), 121.45, 31.2 + i as f64 * 1e-6, 0.0, at)
    };
    let mut feeds = crate::feeds::sim_source::default_sim_feeds();
    feeds.truncate(3);
    for f in &mut feeds {
        f.interval_s = 5.0;
    }
    feeds[0].authoritative_for = vec!["AirQualityObserved".into()];

    // The ingest: the whole city arriving in one payload per feed, as a GeoJSON feed
    // of the city's stations would bring it.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut ingest = Ingest::new(&feeds, rx);
    let mut state = crate::state::LiveState::new(crate::geo_frame::GeoFrame::new(121.47, 31.23));
    let payload = |feed: u32, updates: Vec<crate::feeds::EntityUpdate>, at: i64| {
        [
            FeedEvent::Batch {
                feed,
                decoded: Decoded {
                    updates,
                    rejects: Vec::new(),
                    withheld: Default::default(),
                },
                received_at_ms: at,
            },
            FeedEvent::PollOk {
                feed,
                at_ms: at,
                not_modified: false,
                complete: true,
                bytes: 0,
            },
        ]
    };
    for feed in [0u32, 1] {
        for e in payload(
            feed,
            (0..per_feed).map(|i| station(feed, i, now)).collect(),
            now,
        ) {
            tx.send(e).ok();
        }
    }
    for e in payload(2, (0..ambulances).map(|i| ambulance(i, now)).collect(), now) {
        tx.send(e).ok();
    }
    let mut jobs = Vec::new();
    let timed_pumps = |ingest: &mut Ingest, state: &mut crate::state::LiveState| {
        let mut ms = Vec::new();
        loop {
            let t = Instant::now();
            let deadline = t + crate::governance::health::INGEST_FRAME_BUDGET;
            ingest.pump_within(state, MAX_UPDATES_PER_FRAME, Some(deadline));
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if ingest.backlog() == 0 && ms.len() > 1 && *ms.last().unwrap_or(&0.0) < 0.05 {
                ms.pop();
                break ms;
            }
            if ms.len() > 100_000 {
                break ms;
            }
        }
    };
    let ms = timed_pumps(&mut ingest, &mut state);
    jobs.push(FrameJob {
        job: "ingest: the whole city in one payload per feed",
        how: "scored and queued a part at a time; a frame spends 4 ms on it (at least 1,000 updates, at most 25,000)",
        frames: ms.len(),
        frame_ms: Percentiles::of(ms),
        whole_pass_ms: None,
    });
    // The next poll of feed 1 lacks a tenth of its stations: they leave.
    for e in payload(
        1,
        (0..per_feed)
            .filter(|i| i % 10 != 5)
            .map(|i| station(1, i, now + 5000))
            .collect(),
        now + 5000,
    ) {
        tx.send(e).ok();
    }
    let ms = timed_pumps(&mut ingest, &mut state);
    jobs.push(FrameJob {
        job: "ingest: a feed's next snapshot, a tenth of it gone",
        how: "updates as above; the removals a sweep step a frame (32,768 slots or 2,048 removals, within the 4 ms)",
        frames: ms.len(),
        frame_ms: Percentiles::of(ms),
        whole_pass_ms: None,
    });
    // A 304 of feed 0: every entity still there.
    tx.send(FeedEvent::PollOk {
        feed: 0,
        at_ms: now + 6000,
        not_modified: true,
        complete: true,
        bytes: 0,
    })
    .ok();
    let ms = timed_pumps(&mut ingest, &mut state);
    jobs.push(FrameJob {
        job: "ingest: a 304 marks a feed's entities as still there",
        how: "a sweep step a frame (32,768 slots, within the ingest's 4 ms)",
        frames: ms.len(),
        frame_ms: Percentiles::of(ms),
        whole_pass_ms: None,
    });
    let shared = state
        .iter()
        .filter(|(_, e)| e.entity_type == "AirQualityObserved")
        .count();
    let live_entities = state.len();

    let t = Instant::now();
    let input = ReconcileInput::from_state(&state, now + 6000);
    let whole = t.elapsed().as_secs_f64() * 1000.0;
    drop(input);
    let mut copy = ReconcileCopy::new(now + 6000);
    let mut input = None;
    jobs.push(stepped(
        "reconciliation: copy of the shared entities for the pass",
        "a 1 ms step a frame; the pass itself on its own thread",
        whole,
        &mut || {
            input = copy.step(&state, Budget::frame());
            input.is_some()
        },
    ));
    let input = input.expect("the copy finished");
    let t = Instant::now();
    let r = crate::governance::reconcile::reconcile_input(&input, &feeds, now + 6000);
    let pass_ms = t.elapsed().as_secs_f64() * 1000.0;
    jobs.push(FrameJob {
        job: "reconciliation: the pass",
        how: "on its own thread: no frame time",
        frames: 0,
        frame_ms: Percentiles::of(Vec::new()),
        whole_pass_ms: Some((pass_ms * 100.0).round() / 100.0),
    });
    let winner_of = r.winner_of;

    let t = Instant::now();
    std::hint::black_box(CityKpis::compute(&state, &winner_of, now + 6000));
    let whole = t.elapsed().as_secs_f64() * 1000.0;
    let mut pass = KpiPass::new(now + 6000);
    jobs.push(stepped(
        "KPIs (each thing once, from its winning source)",
        "a 1 ms step a frame, twice a second",
        whole,
        &mut || {
            pass.step(&state, &winner_of, Budget::frame())
                .map(std::hint::black_box)
                .is_some()
        },
    ));

    let t = Instant::now();
    let units = crate::dispatch::recommend::units_from_state(&state);
    let whole = t.elapsed().as_secs_f64() * 1000.0;
    let mut tracker = crate::dispatch::recommend::UnitTracker::default();
    jobs.push(stepped(
        "unit recommendation: the units in the live state",
        "kept from each frame's changed slots; what was there first, a 1 ms step a frame",
        whole,
        &mut || {
            tracker.track(&state, &[], Budget::frame());
            tracker.caught_up()
        },
    ));
    assert_eq!(
        tracker.units().len(),
        units.len(),
        "the tracker finds every unit"
    );
    let t = Instant::now();
    std::hint::black_box(tracker.units());
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    jobs.push(FrameJob {
        job: "unit recommendation: the units handed to a re-ranking",
        how: "a copy of the tracked units, every 2 s while an incident is selected",
        frames: 1,
        frame_ms: Percentiles::of(vec![ms]),
        whole_pass_ms: None,
    });

    // Expiry: an hour later nothing has been reported; everything expires.
    let mut ms = Vec::new();
    let mut gone = 0;
    while !state.is_empty() && ms.len() < 100_000 {
        let t = Instant::now();
        let deadline = t + crate::governance::health::INGEST_FRAME_BUDGET;
        gone += ingest.expire_within(
            &mut state,
            now + 3_600_000 + ms.len() as i64 * 16,
            Some(deadline),
        );
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    std::hint::black_box(gone);
    jobs.push(FrameJob {
        job: "expiry: every entity unreported for its expiry time",
        how: "a sweep step a frame (32,768 slots or 2,048 removals, within the ingest's 4 ms)",
        frames: ms.len(),
        frame_ms: Percentiles::of(ms),
        whole_pass_ms: None,
    });
    let worst_whole_city_job_ms = jobs
        .iter()
        .filter(|j| !j.job.starts_with("ingest:") || j.job.contains("304"))
        .map(|j| j.frame_ms.max)
        .fold(0.0, f64::max);
    FrameBenchReport {
        entities: live_entities,
        slots: state.slot_count(),
        shared_entities: shared,
        jobs,
        worst_whole_city_job_ms,
    }
}

/// Result of `zhongshu bench labels`.
#[derive(Debug, Serialize)]
pub struct LabelsBenchReport {
    pub candidates: usize,
    /// Placing them, per frame.
    pub place_ms: crate::surge::Percentiles,
    /// Names kept in the last frame.
    pub placed: usize,
    /// The default city's names, found once at load.
    pub default_city_candidates: usize,
    pub default_city_candidates_ms: f64,
}

/// Times [`crate::map::labels::place`] on `n` random names over 300 frames.
pub fn bench_labels(n: usize) -> anyhow::Result<LabelsBenchReport> {
    use crate::map::labels::{ScreenLabel, place, text_size};
    let mut seed = 0x5EED_u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as f32 / (1u64 << 31) as f32
    };
    let names = [
        "中山东一路",
        "Mannerheimintie",
        "人民广场",
        "Kiasma",
        "南京西路地铁站",
    ];
    let view = [0.0, 0.0, 1920.0, 1080.0];
    let mut times = Vec::with_capacity(300);
    let mut placed = 0;
    for _ in 0..300 {
        let labels: Vec<ScreenLabel> = (0..n)
            .map(|i| {
                let name = names[i % names.len()];
                ScreenLabel {
                    index: i,
                    centre: [next() * 1920.0, next() * 1080.0],
                    size: text_size(name, 16.0 + next() * 14.0),
                    priority: 1 + (i % 3) as u8,
                    rank: next(),
                }
            })
            .collect();
        let t = Instant::now();
        placed = place(&labels, view, &[[900.0, 500.0, 1020.0, 580.0]], 6.0).len();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let city = map::load_default()?;
    let t = Instant::now();
    let found = crate::map::labels::candidates(&city).len();
    Ok(LabelsBenchReport {
        candidates: n,
        place_ms: crate::surge::Percentiles::of(times),
        placed,
        default_city_candidates: found,
        default_city_candidates_ms: t.elapsed().as_secs_f64() * 1000.0,
    })
}

/// What `bench history` measured.
#[derive(Debug, Serialize)]
pub struct HistoryBenchReport {
    pub entities: usize,
    /// Data time recorded.
    pub seconds: u64,
    pub updates: u64,
    /// Updates encoded and written (zstd chunks, keyframes, segments) per second of
    /// wall time, on one thread.
    pub record_updates_per_s: f64,
    /// The history's size on disk over the updates (keyframes included).
    pub bytes_per_update: f64,
    pub bytes_on_disk: u64,
    pub segments: u64,
    pub keyframes: u64,
    /// `state-at` (open, find the keyframe, read up to the instant) at random
    /// instants of the whole recording.
    pub seek_ms: crate::surge::Percentiles,
    /// Replaying at 60x at 60 frames a second: a frame applies one second of data to
    /// a live state (decoded ahead on the replay's own thread); its time.
    pub replay_frame_ms_at_60x: crate::surge::Percentiles,
    /// The same frames' CPU time on the frame's thread (without the time the machine
    /// ran something else): the figure the goal is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_frame_cpu_ms_at_60x: Option<crate::surge::Percentiles>,
    pub replay_frames: usize,
    /// Records the replay wrote from their place and numbers alone (the rest were
    /// applied whole).
    pub replay_records: u64,
    pub replay_records_from_numbers: u64,
    /// Frames whose second of data was not all decoded yet (playback catching up).
    pub replay_frames_behind: usize,
}

/// Records `seconds` of `entities` moving vehicles updated every second into a
/// history in a temporary folder, then seeks and replays in it.
pub fn bench_history(
    entities: usize,
    seconds: u64,
    seeks: usize,
) -> anyhow::Result<HistoryBenchReport> {
    use crate::history::{History, HistoryOptions, HistoryWriter};
    use crate::model::{EntityUpdate, FieldValue};
    let dir = std::env::temp_dir().join(format!("zhongshu-bench-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let t0: i64 = 1_795_946_400_000;
    let feeds = vec![crate::history::FeedMeta {
        id: 0,
        name: "vehicles".into(),
        domain: "traffic".into(),
    }];
    let mut writer = HistoryWriter::create(&dir, feeds, HistoryOptions::default())?;
    let vehicle = |i: usize, s: u64| -> EntityUpdate {
        let t = s as f64;
        let (lon0, lat0) = (
            121.40 + (i % 100) as f64 * 1.5e-3,
            31.17 + (i / 100) as f64 * 1.2e-3,
        );
        // ~10 m/s along a slow curve, speed to 0.1 km/h, heading in whole degrees.
        let angle = (i as f64 * 0.7 + t * 0.01) % std::f64::consts::TAU;
        let speed = ((30.0 + 20.0 * (t * 0.05 + i as f64).sin()) * 10.0).round() / 10.0;
        let heading = (angle.to_degrees()).round();
        EntityUpdate {
            id: format!("urn:ngsi-ld:Vehicle:taxi-{i}"),
            entity_type: "Vehicle".into(),
            kind: crate::model::EntityKind::Vehicle {
                vehicle_type: Some("taxi".into()),
                speed_kmh: Some(speed),
                heading_deg: Some(heading),
                service_status: Some("onRoute".into()),
            },
            position: Some([lon0 + t * 9e-5 * angle.cos(), lat0 + t * 9e-5 * angle.sin()]),
            line: None,
            observed_at_ms: Some(t0 + s as i64 * 1000 - 200),
            fields: [
                ("vehicleType".to_string(), FieldValue::Text("taxi".into())),
                ("speed".to_string(), FieldValue::Number(speed)),
                ("heading".to_string(), FieldValue::Number(heading)),
            ]
            .into_iter()
            .collect(),
            units: Default::default(),
            notes: Vec::new(),
        }
    };
    // Updates are made before the clock starts: what is timed is recording them.
    let mut record_s = 0.0;
    let mut updates = 0u64;
    for s in 0..seconds {
        let batch: Vec<EntityUpdate> = (0..entities).map(|i| vehicle(i, s)).collect();
        let at = t0 + s as i64 * 1000;
        let t = Instant::now();
        for u in &batch {
            writer.upsert(0, at, u)?;
        }
        record_s += t.elapsed().as_secs_f64();
        updates += batch.len() as u64;
    }
    let t = Instant::now();
    let stats = writer.finish()?;
    record_s += t.elapsed().as_secs_f64();
    let bytes_on_disk: u64 = crate::history::segments(&dir)?
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let mut seek = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..seeks {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = t0 + (seed % (seconds * 1000)) as i64;
        let t = Instant::now();
        let history = History::open(&dir)?;
        let snap = history.state_at(at)?;
        seek.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            snap.entities.len() == entities,
            "state at {at}: {} entities",
            snap.entities.len()
        );
    }
    // Replay at 60x, 60 frames a second: each frame takes one second of data, read
    // ahead and decoded on the replay's own thread, and applies it to a live state.
    let history = History::open(&dir)?;
    let mut replay_ms = Vec::new();
    let mut replay_cpu_ms = Vec::new();
    let mut behind = 0usize;
    let frame = crate::geo_frame::GeoFrame::new(121.47, 31.23);
    let start = t0 + (seconds as i64 * 1000 / 3);
    let mut replay = crate::history::ReplayAhead::start_in(&history, start, frame)?;
    let mut state = replay.live_state(frame);
    let frames = 120i64.min(seconds as i64 * 2 / 3 - 1).max(1);
    let mut next_frame = Instant::now();
    for k in 1..=frames {
        next_frame += std::time::Duration::from_micros(16_667);
        if let Some(wait) = next_frame.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        let cpu = crate::stats::thread_cpu();
        let whole = replay.apply_until(start + k * 1000, &mut state);
        let _ = state.drain_changed();
        replay_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if let (Some(a), Some(b)) = (cpu, crate::stats::thread_cpu()) {
            replay_cpu_ms.push((b - a).as_secs_f64() * 1000.0);
        }
        if !whole {
            behind += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(HistoryBenchReport {
        entities,
        seconds,
        updates,
        record_updates_per_s: updates as f64 / record_s,
        bytes_per_update: bytes_on_disk as f64 / updates as f64,
        bytes_on_disk,
        segments: stats.segments,
        keyframes: stats.keyframes,
        seek_ms: crate::surge::Percentiles::of(seek),
        replay_frame_ms_at_60x: crate::surge::Percentiles::of(replay_ms),
        replay_frame_cpu_ms_at_60x: (!replay_cpu_ms.is_empty())
            .then(|| crate::surge::Percentiles::of(replay_cpu_ms)),
        replay_frames: frames as usize,
        replay_records: replay.applied(),
        replay_records_from_numbers: replay.fast_applied(),
        replay_frames_behind: behind,
    })
}
