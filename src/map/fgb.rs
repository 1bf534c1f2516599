//! FlatGeobuf (`.fgb`): a header (geometry type, columns, CRS), an optional spatial
//! index, then length-prefixed features, each a FlatBuffer.
//!
//! Read streamed: the header through the `flatgeobuf` crate's reader, then the
//! features in batches, each checked by the crate's FlatBuffers verifier and decoded
//! in parallel, so a city of a million buildings is never held as file bytes and
//! features at once. The feature loop is our own because the crate's trusts what a
//! file says: it allocates whatever length a feature claims before reading it, panics
//! on an index node size of 1, and indexes property bytes unchecked. Here every
//! length is checked against the file, and properties are read bounds-checked into
//! the same property map a GeoJSON feature's properties become.
//!
//! The CRS comes from the header (its EPSG code, else its WKT) and goes through the
//! same [`super::crs`] code as every other format's.

use std::io::{Read, Seek, SeekFrom};

use flatgeobuf::{ColumnType, FgbReader, Geometry, GeometryType};
use rayon::prelude::*;

use super::crs::{self, Crs, CrsError};
use super::{FileRead, MapError, RawFeature, RawGeometry, SkipReason};

/// Whether `head` starts with FlatGeobuf's magic bytes (`fgb`, version, `fgb`, 0).
pub fn has_magic(head: &[u8]) -> bool {
    head.len() >= 8 && head[..3] == *b"fgb" && head[4..7] == *b"fgb" && head[3] <= 3
}

/// File bytes of features gathered before they are decoded together.
const BATCH_BYTES: usize = 8 << 20;

/// The size of one index node (min x, min y, max x, max y, offset).
const INDEX_NODE_BYTES: u64 = 40;

/// A feature's columns: the header's, unless the feature carries its own.
type Columns = Vec<(String, ColumnType)>;

/// What the header says of the CRS.
#[derive(Default)]
struct HeaderCrs {
    org: Option<String>,
    code: i32,
    wkt: Option<String>,
    code_string: Option<String>,
}

impl HeaderCrs {
    /// The CRS: by code (`EPSG`, or Esri's numbers), else by WKT; `None` when the
    /// header names none.
    fn crs(&self) -> Result<Option<Crs>, CrsError> {
        let org = self.org.as_deref().unwrap_or("EPSG").trim();
        let wkt = self.wkt.as_deref().filter(|w| !w.trim().is_empty());
        if let Some(text) = self.code_string.as_deref().filter(|c| !c.trim().is_empty()) {
            let text = if text.trim().parse::<u32>().is_ok() {
                format!("{org}:{}", text.trim())
            } else {
                text.to_string()
            };
            return text.parse().map(Some);
        }
        if self.code > 0 {
            let by_code = if org.eq_ignore_ascii_case("EPSG") || org.eq_ignore_ascii_case("ESRI") {
                crs::from_wkid(self.code as u32)
            } else {
                Err(CrsError::Unreadable(format!("{org}:{}", self.code)))
            };
            return match (by_code, wkt) {
                (Ok(crs), _) => Ok(Some(crs)),
                (Err(e), Some(wkt)) => crs::from_prj(wkt).map(Some).map_err(|_| e),
                (Err(e), None) => Err(e),
            };
        }
        wkt.map(crs::from_prj).transpose()
    }
}

/// Reads a FlatGeobuf of `file_len` bytes from `reader` (at its start): its features
/// in the file's coordinates and the CRS its header names.
pub(crate) fn read<R: Read + Seek>(
    mut reader: R,
    file_len: u64,
    source_name: &str,
) -> Result<FileRead, MapError> {
    let error = |message: String| MapError::FlatGeobuf {
        source_name: source_name.to_string(),
        message,
    };
    let io = |e: std::io::Error| error(format!("cannot read it: {e}"));
    let (geometry_type, columns, header_crs, count, node_size) = {
        let fgb = FgbReader::open(&mut reader).map_err(|e| error(format!("bad header: {e}")))?;
        let header = fgb.header();
        let columns: Columns = header
            .columns()
            .map(|cs| {
                cs.iter()
                    .map(|c| (c.name().to_string(), c.type_()))
                    .collect()
            })
            .unwrap_or_default();
        let header_crs = header
            .crs()
            .map(|c| HeaderCrs {
                org: c.org().map(str::to_string),
                code: c.code(),
                wkt: c.wkt().map(str::to_string),
                code_string: c.code_string().map(str::to_string),
            })
            .unwrap_or_default();
        (
            header.geometry_type(),
            columns,
            header_crs,
            header.features_count(),
            header.index_node_size(),
        )
    };
    let file_crs = header_crs.crs().map_err(|error| MapError::Crs {
        source_name: source_name.to_string(),
        error,
    })?;

    // Past the spatial index, if any.
    let mut at = reader.stream_position().map_err(io)?;
    if node_size > 0 && count > 0 {
        if node_size < 2 {
            return Err(error(format!(
                "bad header: an index node size of {node_size}"
            )));
        }
        if count.saturating_mul(INDEX_NODE_BYTES) > file_len.saturating_sub(at) {
            return Err(error(format!(
                "cut short: the header says {count} features, too many for the index to fit in {file_len} bytes"
            )));
        }
        let index =
            flatgeobuf::packed_r_tree::PackedRTree::index_size(count as usize, node_size) as u64;
        if index > file_len.saturating_sub(at) {
            return Err(error(format!(
                "cut short: the spatial index needs {index} bytes, the file has {} left",
                file_len.saturating_sub(at)
            )));
        }
        reader.seek(SeekFrom::Current(index as i64)).map_err(io)?;
        at += index;
    }

    // The features, a batch at a time.
    let mut decoded: Vec<Result<RawFeature, SkipReason>> = Vec::new();
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH_BYTES + 4096);
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    let mut read_features = 0u64;
    let flush = |batch: &mut Vec<u8>,
                 spans: &mut Vec<std::ops::Range<usize>>,
                 decoded: &mut Vec<Result<RawFeature, SkipReason>>|
     -> Result<(), MapError> {
        let first = decoded.len();
        let bytes: &[u8] = batch;
        let out: Vec<Result<Result<RawFeature, SkipReason>, String>> = spans
            .par_iter()
            .enumerate()
            .with_min_len(64)
            .map(|(i, span)| {
                decode_feature(&bytes[span.clone()], first + i, geometry_type, &columns)
            })
            .collect();
        for (i, f) in out.into_iter().enumerate() {
            decoded
                .push(f.map_err(|e| error(format!("feature {} is corrupt: {e}", first + i + 1)))?);
        }
        batch.clear();
        spans.clear();
        Ok(())
    };
    loop {
        if count > 0 && read_features == count {
            break;
        }
        let mut size = [0u8; 4];
        let got = read_up_to(&mut reader, &mut size).map_err(io)?;
        if got == 0 {
            break;
        }
        let left = file_len.saturating_sub(at + got as u64);
        let len = u32::from_le_bytes(size) as u64;
        if got < 4 || len > left {
            return Err(error(format!(
                "cut short: feature {} says {len} bytes, the file has {left} left",
                read_features + 1
            )));
        }
        let start = batch.len();
        batch.extend_from_slice(&size);
        batch.resize(start + 4 + len as usize, 0);
        reader.read_exact(&mut batch[start + 4..]).map_err(io)?;
        spans.push(start..batch.len());
        at += 4 + len;
        read_features += 1;
        if batch.len() >= BATCH_BYTES {
            flush(&mut batch, &mut spans, &mut decoded)?;
        }
    }
    flush(&mut batch, &mut spans, &mut decoded)?;
    if count > 0 && read_features < count {
        return Err(error(format!(
            "cut short: the header says {count} features, the file holds {read_features}"
        )));
    }
    let (features, skipped) = super::geojson::kept_and_skipped(decoded);
    Ok(FileRead::features(features, skipped, file_crs))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// One feature (its length prefix included): `Err` when it is not a valid FlatBuffer,
/// `Ok(Err(reason))` when it is but cannot be drawn.
fn decode_feature(
    bytes: &[u8],
    index: usize,
    file_type: GeometryType,
    header_columns: &Columns,
) -> Result<Result<RawFeature, SkipReason>, String> {
    let feature = flatgeobuf::size_prefixed_root_as_feature(bytes).map_err(|e| e.to_string())?;
    let own_columns: Option<Columns> = feature.columns().map(|cs| {
        cs.iter()
            .map(|c| (c.name().to_string(), c.type_()))
            .collect()
    });
    let columns = own_columns.as_ref().unwrap_or(header_columns);
    let properties = feature
        .properties()
        .map(|p| properties(p.bytes(), columns))
        .unwrap_or_default();
    let tags = super::geojson::tags_of_properties(properties);
    Ok(
        geometry_of(feature.geometry(), file_type).map(|geometry| RawFeature {
            id: super::object_id(&tags, None, index),
            tags,
            geometry,
        }),
    )
}

/// A geometry's vertices, `[x, y]` (z, m left out).
fn vertices(g: &Geometry) -> Vec<[f64; 2]> {
    let Some(xy) = g.xy() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(xy.len() / 2);
    let mut values = xy.iter();
    while let (Some(x), Some(y)) = (values.next(), values.next()) {
        out.push([x, y]);
    }
    out
}

/// A geometry's vertices cut into its rings or lines at its `ends`.
fn parts(g: &Geometry) -> Result<Vec<Vec<[f64; 2]>>, SkipReason> {
    let points = vertices(g);
    let Some(ends) = g.ends() else {
        return Ok(if points.is_empty() {
            Vec::new()
        } else {
            vec![points]
        });
    };
    let mut out = Vec::with_capacity(ends.len());
    let mut start = 0usize;
    for end in ends.iter() {
        let end = end as usize;
        if end < start || end > points.len() {
            return Err(SkipReason::BadCoordinates);
        }
        out.push(points[start..end].to_vec());
        start = end;
    }
    Ok(out)
}

fn geometry_of(g: Option<Geometry>, file_type: GeometryType) -> Result<RawGeometry, SkipReason> {
    let Some(g) = g else {
        return Ok(RawGeometry::Null);
    };
    let kind = if file_type == GeometryType::Unknown {
        g.type_()
    } else {
        file_type
    };
    Ok(match kind {
        GeometryType::Point | GeometryType::MultiPoint => RawGeometry::Point,
        GeometryType::LineString | GeometryType::MultiLineString => {
            let mut lines = parts(&g)?;
            match lines.len() {
                0 => RawGeometry::Null,
                1 => RawGeometry::Line(lines.remove(0)),
                _ => RawGeometry::MultiLine(lines),
            }
        }
        GeometryType::Polygon => match parts(&g)? {
            rings if rings.is_empty() => RawGeometry::Null,
            rings => RawGeometry::Polygon(rings),
        },
        GeometryType::MultiPolygon => {
            let polygons: Vec<Vec<Vec<[f64; 2]>>> = match g.parts() {
                Some(pieces) => pieces
                    .iter()
                    .map(|p| parts(&p))
                    .collect::<Result<Vec<_>, _>>()?,
                None => vec![parts(&g)?],
            };
            let mut polygons: Vec<_> = polygons.into_iter().filter(|p| !p.is_empty()).collect();
            match polygons.len() {
                0 => RawGeometry::Null,
                1 => RawGeometry::Polygon(polygons.remove(0)),
                _ => RawGeometry::MultiPolygon(polygons),
            }
        }
        // Curves, surfaces, TINs, collections: not footprints or lines the map draws.
        _ => return Err(SkipReason::UnsupportedGeometry),
    })
}

/// Property bytes read front to back, never past their end.
struct PropertyBytes<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> PropertyBytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

/// A feature's property bytes (a column index, then its value, repeated) as JSON
/// values by column name. Reading stops at the first value that does not fit in the
/// bytes or names no column: what came before is kept.
fn properties(bytes: &[u8], columns: &Columns) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    let mut input = PropertyBytes { bytes, at: 0 };
    while let Some(index) = input.array::<2>() {
        let Some((name, kind)) = columns.get(usize::from(u16::from_le_bytes(index))) else {
            break;
        };
        match column_value(*kind, &mut input) {
            Some(Some(value)) => {
                out.insert(name.clone(), value);
            }
            Some(None) => {} // a value the map has no use for (binary)
            None => break,
        }
    }
    out
}

/// The next value of a column of type `kind`: `None` when the bytes run out or the
/// type is unknown, `Some(None)` for a value left out.
fn column_value(kind: ColumnType, input: &mut PropertyBytes) -> Option<Option<serde_json::Value>> {
    use serde_json::Value;
    let number = |n: f64| super::geojson::json_number(n).unwrap_or(Value::Null);
    Some(Some(match kind {
        ColumnType::Bool => Value::Bool(input.array::<1>()?[0] != 0),
        ColumnType::Byte => Value::from(i8::from_le_bytes(input.array()?)),
        ColumnType::UByte => Value::from(u8::from_le_bytes(input.array()?)),
        ColumnType::Short => Value::from(i16::from_le_bytes(input.array()?)),
        ColumnType::UShort => Value::from(u16::from_le_bytes(input.array()?)),
        ColumnType::Int => Value::from(i32::from_le_bytes(input.array()?)),
        ColumnType::UInt => Value::from(u32::from_le_bytes(input.array()?)),
        ColumnType::Long => Value::from(i64::from_le_bytes(input.array()?)),
        ColumnType::ULong => Value::from(u64::from_le_bytes(input.array()?)),
        ColumnType::Float => number(f64::from(f32::from_le_bytes(input.array()?))),
        ColumnType::Double => number(f64::from_le_bytes(input.array()?)),
        ColumnType::String | ColumnType::Json | ColumnType::DateTime | ColumnType::Binary => {
            let len = u32::from_le_bytes(input.array()?) as usize;
            let raw = input.take(len)?;
            match kind {
                ColumnType::Binary => return Some(None),
                ColumnType::Json => {
                    let text = String::from_utf8_lossy(raw);
                    serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.into_owned()))
                }
                _ => Value::String(String::from_utf8_lossy(raw).into_owned()),
            }
        }
        _ => return None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{FgbPolygons, generate_city_flatgeobuf, generate_city_geojson};
    use crate::map::{MapFormat, load_bytes, load_path};
    use flatgeobuf::geozero::{ColumnValue, PropertyProcessor};
    use flatgeobuf::{FgbCrs, FgbWriter, FgbWriterOptions};

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("zhongshu-fgb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
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

    /// A school in two pieces and a library with a courtyard near Tiananmen, with
    /// agency fields (`层数`, `名称`), WGS84, as a FlatGeobuf in memory.
    fn campus_fgb() -> Vec<u8> {
        let mut fgb = FgbWriter::create_with_options(
            "campus",
            GeometryType::MultiPolygon,
            FgbWriterOptions {
                crs: FgbCrs {
                    code: 4326,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
        fgb.add_column("层数", ColumnType::Int, |_, _| {});
        fgb.add_column("名称", ColumnType::String, |_, _| {});
        let school = [
            vec![square(116.3975, 39.9087, 0.0002)],
            vec![square(116.3985, 39.9087, 0.0002)],
        ];
        let library = [vec![
            square(116.3975, 39.9097, 0.0004),
            square(116.3976, 39.9098, 0.0001),
        ]];
        for (polygons, floors, name) in [(&school[..], 3, "教学楼"), (&library[..], 6, "图书馆")]
        {
            fgb.add_feature_geom(FgbPolygons(polygons), |f| {
                f.property(0, "层数", &ColumnValue::Int(floors)).unwrap();
                f.property(1, "名称", &ColumnValue::String(name)).unwrap();
            })
            .unwrap();
        }
        let mut out = Vec::new();
        fgb.write(&mut out).unwrap();
        out
    }

    fn load(bytes: &[u8]) -> Result<crate::map::CityMap, MapError> {
        load_bytes(bytes, MapFormat::FlatGeobuf, "campus", "campus.fgb")
    }

    #[test]
    fn a_flatgeobuf_reads_back_its_pieces_fields_and_names() {
        let map = load(&campus_fgb()).unwrap();
        assert_eq!(map.format, Some(MapFormat::FlatGeobuf));
        assert_eq!(map.crs.name, "EPSG:4326 (WGS 84)");
        assert_eq!(map.buildings.len(), 2, "{:?}", map.skipped);
        let by_name = |name: &str| {
            map.buildings
                .iter()
                .find(|b| b.name.as_deref() == Some(name))
                .unwrap()
        };
        let school = by_name("教学楼");
        assert_eq!(school.footprint.0.len(), 2, "one building in two pieces");
        assert!((school.extent.height_m - 9.6).abs() < 1e-3);
        let library = by_name("图书馆");
        assert_eq!(library.footprint.0[0].interiors().len(), 1);
        assert!((library.extent.height_m - 19.2).abs() < 1e-3);
        assert!(map.schema.fields["floors"].contains("层数"));
    }

    #[test]
    fn a_gauss_kruger_flatgeobuf_city_lands_where_the_same_geojson_city_does() {
        let dir = scratch("city");
        let gk = Crs::from_epsg(4549).unwrap();
        let fgb = dir.join("city.fgb");
        let geojson = dir.join("city.geojson");
        assert_eq!(
            generate_city_flatgeobuf(&fgb, 300, 7, Some(&gk)).unwrap(),
            300
        );
        assert_eq!(generate_city_geojson(&geojson, 300, 7).unwrap(), 300);
        let from_fgb = load_path(&fgb).unwrap();
        let from_geojson = load_path(&geojson).unwrap();
        assert_eq!(
            from_fgb.crs.name,
            "EPSG:4549 (CGCS2000 / 3-degree Gauss-Kruger CM 120E)"
        );
        assert_eq!(from_fgb.name, "city");
        assert_eq!(from_fgb.buildings.len(), 300);
        assert_eq!(from_geojson.buildings.len(), 300);
        for b in &from_fgb.buildings {
            let index = b.id.strip_prefix("feature/").unwrap();
            let twin = from_geojson
                .buildings
                .iter()
                .find(|g| g.id == index)
                .unwrap();
            assert_eq!(b.extent.height_m, twin.extent.height_m, "{index}");
            assert_eq!(b.name, twin.name);
            let points = |map: &crate::map::CityMap, b: &crate::map::Building| -> Vec<[f64; 2]> {
                b.rings()
                    .flat_map(|r| r.0.iter().map(|c| map.frame.wgs84_from_local(c.x, c.y)))
                    .collect()
            };
            let (ours, theirs) = (points(&from_fgb, b), points(&from_geojson, twin));
            assert_eq!(ours.len(), theirs.len());
            for (a, t) in ours.iter().zip(&theirs) {
                let off = from_fgb.frame.local_from_wgs84(a[0], a[1]);
                let to = from_fgb.frame.local_from_wgs84(t[0], t[1]);
                let d = (off[0] - to[0]).hypot(off[1] - to[1]);
                assert!(d < 0.5, "{index}: {a:?} is {d} m from {t:?}");
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_crs_the_header_names_that_is_not_known_is_an_error() {
        let crs = HeaderCrs {
            code: 2385,
            ..Default::default()
        };
        assert_eq!(crs.crs(), Err(CrsError::UnknownCode(2385)));
        let crs = HeaderCrs {
            org: Some("IGNF".into()),
            code: 7,
            ..Default::default()
        };
        assert!(crs.crs().is_err());
        let crs = HeaderCrs {
            code_string: Some("4547".into()),
            ..Default::default()
        };
        assert_eq!(crs.crs().unwrap().and_then(|c| c.epsg()), Some(4547));
        assert_eq!(HeaderCrs::default().crs(), Ok(None));
    }

    #[test]
    fn bad_headers_cut_files_and_flipped_bytes_are_errors_not_panics() {
        let good = campus_fgb();
        assert!(has_magic(&good));
        let e = load(b"fgb\x03fgb\x00\xff\xff\xff\xff")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid FlatGeobuf: bad header"), "{e}");
        let e = load(b"fgb\x03fgb\x00\x10\x00\x00\x00garbagegarbage")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad header"), "{e}");
        for len in 0..good.len() {
            assert!(load(&good[..len]).is_err(), "cut at {len} loaded");
        }
        for at in 0..good.len() {
            for value in [0x00, 0x01, 0xFF] {
                let mut bad = good.clone();
                bad[at] = value;
                let _ = load(&bad);
            }
        }
    }
}
