//! Esri Shapefiles: the `.shp` a user names, with the `.dbf` beside it (its attribute
//! table) and, when there, the `.shx` (where each shape starts), the `.prj` (the CRS
//! as WKT) and the `.cpg` (the code page of the attribute text).
//!
//! Attribute text is decoded as the `.cpg` says (UTF-8, GBK, GB18030, Big5, Windows
//! code pages, ...); without one it is UTF-8 when every text is valid UTF-8, else
//! GB18030 (which covers GBK and GB2312, what a Chinese agency's export without a
//! `.cpg` is written in) when its high bytes stand in pairs as Chinese text's do, or
//! Windows-1252 (Latin-1) when they stand alone among letters. A `.dbf` record becomes the same property map a GeoJSON
//! feature's properties do, so the schema reads every format's fields alike.
//!
//! Polygon rings are sorted into pieces and holes by how they nest, as Esri JSON's
//! are ([`super::esri`]): a polygon with several outer rings is one feature in
//! pieces. A deleted `.dbf` record deletes its shape. A missing `.dbf`, a `.dbf`
//! whose records do not match the shapes one for one, and a cut-short or corrupt file
//! stop the load with the file named; a `.prj` that is not understood stops it too.

use std::io::{BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use ::shapefile::dbase;
use ::shapefile::record::traits::HasXY;
use ::shapefile::{Shape, ShapeReader};
use encoding_rs::Encoding;
use serde::Serialize;

use super::{FileRead, MapError, RawFeature, RawGeometry, SkipCounts, SkipReason};

/// How a Shapefile's attribute text was decoded, for `map-info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TextEncoding {
    /// The encoding's name as the Encoding Standard gives it, lower case (`utf-8`,
    /// `gbk`, `gb18030`, `big5`, `windows-1252`).
    pub name: String,
    pub source: EncodingSource,
    /// What the `.cpg` said, when it named nothing known or a code page that cannot
    /// read the text (the text was then detected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpg: Option<String>,
    /// Text values that are not valid in the encoding used (a `.cpg` that does not
    /// match the table): they read with replacement characters.
    #[serde(skip_serializing_if = "is_zero")]
    pub undecodable: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Where a Shapefile's encoding came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodingSource {
    /// The `.cpg` beside the `.shp`.
    Cpg,
    /// No (understood) `.cpg`: UTF-8 if every text is valid UTF-8, else GB18030 or
    /// Windows-1252 by how the high bytes stand.
    Detected,
}

/// The file beside `shp` with the same name and extension `ext`, in any letter case
/// (Windows tools write `.DBF`, `.Dbf`, and a name's case as they like): the same
/// name with the extension in lower or upper case first, else the one file in the
/// folder whose name and extension match ignoring case.
pub fn sidecar(shp: &Path, ext: &str) -> Option<PathBuf> {
    if let Some(found) = [ext.to_ascii_lowercase(), ext.to_ascii_uppercase()]
        .into_iter()
        .map(|e| shp.with_extension(e))
        .find(|p| p.is_file())
    {
        return Some(found);
    }
    let stem = shp.file_stem()?.to_str()?;
    let dir = match shp.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let same = |a: Option<&std::ffi::OsStr>, b: &str| {
                a.and_then(|a| a.to_str())
                    .is_some_and(|a| a.eq_ignore_ascii_case(b))
            };
            same(p.file_stem(), stem) && same(p.extension(), ext) && p.is_file()
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// The encoding a `.cpg` names: an Encoding Standard label (`UTF-8`, `GBK`,
/// `GB2312`, `GB18030`, `Big5`, ...) or a Windows code page number (`936`, `CP936`,
/// `ANSI 936`, `54936`, `65001`, `1252`, ...).
pub fn encoding_of_cpg(text: &str) -> Option<&'static Encoding> {
    let label = text.trim().trim_start_matches('\u{feff}').trim();
    let usable = |e: &'static Encoding| {
        (e != encoding_rs::UTF_16LE && e != encoding_rs::UTF_16BE).then_some(e)
    };
    if let Some(e) = Encoding::for_label_no_replacement(label.as_bytes()) {
        return usable(e);
    }
    let upper = label.to_ascii_uppercase();
    let number = ["ANSI", "CP", "WINDOWS-", "MS"]
        .iter()
        .fold(upper.as_str(), |rest, prefix| {
            rest.strip_prefix(prefix).unwrap_or(rest)
        })
        .trim();
    Some(match number {
        "936" => encoding_rs::GBK,
        "54936" => encoding_rs::GB18030,
        "65001" => encoding_rs::UTF_8,
        "950" => encoding_rs::BIG5,
        "932" => encoding_rs::SHIFT_JIS,
        "949" => encoding_rs::EUC_KR,
        "866" => encoding_rs::IBM866,
        "874" | "1250" | "1251" | "1252" | "1253" | "1254" | "1255" | "1256" | "1257" | "1258" => {
            Encoding::for_label(format!("windows-{number}").as_bytes())?
        }
        "28591" | "88591" | "8859-1" => encoding_rs::WINDOWS_1252,
        _ => return None,
    })
}

/// Where a `.dbf`'s records lie, from its header.
struct DbfLayout {
    records: usize,
    first_record: usize,
    record_len: usize,
    /// Each field's type and width, in record order.
    fields: Vec<(dbase::FieldType, usize)>,
}

impl DbfLayout {
    fn of<T: Read + Seek>(reader: &dbase::Reader<T>) -> DbfLayout {
        let header = reader.header();
        DbfLayout {
            records: header.num_records as usize,
            first_record: usize::from(header.offset_to_first_record),
            record_len: usize::from(header.size_of_record),
            fields: reader
                .fields()
                .iter()
                .map(|f| (f.field_type(), usize::from(f.length())))
                .collect(),
        }
    }

    fn record<'a>(&self, bytes: &'a [u8], i: usize) -> Option<&'a [u8]> {
        let start = self
            .first_record
            .checked_add(i.checked_mul(self.record_len)?)?;
        bytes.get(start..start.checked_add(self.record_len)?)
    }

    /// Whether each record is deleted (`*` in its first byte).
    fn deleted(&self, bytes: &[u8]) -> Vec<bool> {
        (0..self.records)
            .map(|i| self.record(bytes, i).and_then(|r| r.first()) == Some(&b'*'))
            .collect()
    }
}

/// Where each text field lies in a record.
fn text_fields(layout: &DbfLayout) -> Vec<std::ops::Range<usize>> {
    let mut fields = Vec::new();
    let mut at = 1; // past the deletion flag
    for &(kind, width) in &layout.fields {
        if kind == dbase::FieldType::Character {
            fields.push(at..at + width);
        }
        at += width;
    }
    fields
}

/// Text values of the records kept that are not valid in `encoding` (trailing spaces
/// and a character cut at the field's width aside).
fn undecodable(
    bytes: &[u8],
    layout: &DbfLayout,
    deleted: &[bool],
    encoding: &'static Encoding,
) -> usize {
    let fields = text_fields(layout);
    (0..layout.records)
        .filter(|&i| !deleted[i])
        .filter_map(|i| layout.record(bytes, i))
        .map(|record| {
            fields
                .iter()
                .filter_map(|f| record.get(f.clone()))
                .filter(|text| {
                    let end = text
                        .iter()
                        .rposition(|&b| b != b' ' && b != 0)
                        .map_or(0, |i| i + 1);
                    // Valid, or valid once a character cut at the field's width (its
                    // first bytes, up to 3) is left off: only a value that fills its
                    // field can have been cut.
                    let cuttable = if end == text.len() { end.min(3) } else { 0 };
                    !(0..=cuttable).any(|cut| {
                        text[end - cut..end].iter().all(|&b| b >= 0x80)
                            && encoding
                                .decode_without_bom_handling_and_without_replacement(
                                    &text[..end - cut],
                                )
                                .is_some()
                    })
                })
                .count()
        })
        .sum()
}

/// UTF-8 if every field name and every text value of the records kept is valid UTF-8
/// (a value cut mid-character at its field's width counts as valid); else GB18030 when
/// the high bytes read as Chinese (pairs, four-byte units), Windows-1252 (Latin-1)
/// when they stand alone among letters.
fn detect_encoding(bytes: &[u8], layout: &DbfLayout, deleted: &[bool]) -> &'static Encoding {
    let valid = |text: &[u8]| {
        let end = text
            .iter()
            .rposition(|&b| b != b' ' && b != 0)
            .map_or(0, |i| i + 1);
        match std::str::from_utf8(&text[..end]) {
            Ok(_) => true,
            // Cut mid-character: only a value that fills its field can have been.
            Err(e) => e.error_len().is_none() && end == text.len(),
        }
    };
    let names_valid = (0..layout.fields.len()).all(|i| {
        let at = 32 + 32 * i;
        bytes.get(at..at + 11).is_none_or(valid)
    });
    let text_fields = text_fields(layout);
    let values_valid = (0..layout.records)
        .filter(|&i| !deleted[i])
        .filter_map(|i| layout.record(bytes, i))
        .all(|record| {
            record.is_ascii()
                || text_fields
                    .iter()
                    .all(|f| record.get(f.clone()).is_none_or(valid))
        });
    if names_valid && values_valid {
        return encoding_rs::UTF_8;
    }
    // Not UTF-8: Chinese (GB18030) or Western (Windows-1252, which covers Latin-1)?
    let (chinese, western) = high_byte_votes(bytes, layout, deleted);
    if western > chinese {
        encoding_rs::WINDOWS_1252
    } else {
        encoding_rs::GB18030
    }
}

/// Single-byte code pages of Latin scripts, which read any bytes at all: one named by
/// a `.cpg` over text that is plainly UTF-8 or Chinese is mojibake, set aside.
const LATIN_CODE_PAGES: [&Encoding; 6] = [
    encoding_rs::WINDOWS_1252,
    encoding_rs::WINDOWS_1250,
    encoding_rs::WINDOWS_1254,
    encoding_rs::WINDOWS_1257,
    encoding_rs::ISO_8859_2,
    encoding_rs::ISO_8859_15,
];

/// Whether the text is beyond doubt in a multi-byte encoding: it has high bytes and
/// they all stand as UTF-8's sequences, or as Chinese text's (a tenth may not, for a
/// stray Latin-1 sign) with all of it reading as GB18030. A single-byte code page
/// reads any bytes at all, so a `.cpg` naming one cannot be checked by what it fails
/// to read: this is how mojibake is told.
fn reads_multi_byte(bytes: &[u8], layout: &DbfLayout, deleted: &[bool]) -> bool {
    // Only a Latin code page's text has lone high bytes among ASCII letters; Thai,
    // Cyrillic or Greek text under its own code page is high bytes throughout.
    let (chinese, western) = high_byte_votes(bytes, layout, deleted);
    if chinese + western == 0 {
        return false;
    }
    detect_encoding(bytes, layout, deleted) == encoding_rs::UTF_8
        || (western * 10 <= chinese
            && undecodable(bytes, layout, deleted, encoding_rs::GB18030) == 0)
}

/// How the field names' and kept records' text's high bytes stand: (as Chinese, as
/// Western). Chinese text is high bytes in pairs (GBK's two-byte characters, both
/// bytes high) or GB18030's four-byte units; Western text has lone high bytes among
/// letters, or two in a word ("ção").
fn high_byte_votes(bytes: &[u8], layout: &DbfLayout, deleted: &[bool]) -> (usize, usize) {
    let text_fields = text_fields(layout);
    let mut votes = (0usize, 0usize); // (Chinese, Western)
    let mut count = |text: &[u8]| {
        let mut i = 0;
        while i < text.len() {
            let b = text[i];
            if b < 0x80 {
                i += 1;
                continue;
            }
            let at = |k: usize| text.get(i + k).copied().unwrap_or(0);
            let four = (0x81..=0xFE).contains(&b)
                && (0x30..=0x39).contains(&at(1))
                && (0x81..=0xFE).contains(&at(2))
                && (0x30..=0x39).contains(&at(3));
            if four {
                votes.0 += 1;
                i += 4;
                continue;
            }
            // The run of high bytes from here.
            let run = text[i..].iter().take_while(|&&b| b >= 0x80).count();
            // A GBK/GB18030 two-byte character with both bytes high (GB2312's
            // are 0xA1 and up; GBK's others lead from 0x81, and a trail below 0x80
            // would be an ASCII letter, which Western text has after an accent).
            let pair = (0x81..=0xFE).contains(&at(0)) && (0x80..=0xFE).contains(&at(1));
            // One pair inside a word ("ção", "ÇÃO", "Ñé") is a Western word's two
            // accented letters; a Chinese name is a run of characters, or one set
            // apart by spaces, digits or signs.
            let letter = |c: Option<&u8>| c.is_some_and(u8::is_ascii_alphabetic);
            if run == 2 && pair && ((i > 0 && letter(text.get(i - 1))) || letter(text.get(i + 2))) {
                votes.1 += 1;
                i += 2;
            } else if pair {
                votes.0 += 1;
                i += 2;
            } else {
                votes.1 += 1;
                i += 1;
            }
        }
    };
    for i in 0..layout.fields.len() {
        let at = 32 + 32 * i;
        if let Some(name) = bytes.get(at..at + 11) {
            count(name);
        }
    }
    for record in (0..layout.records)
        .filter(|&i| !deleted[i])
        .filter_map(|i| layout.record(bytes, i))
    {
        for f in &text_fields {
            if let Some(text) = record.get(f.clone()) {
                count(text);
            }
        }
    }
    votes
}

/// A `.dbf` record as properties: every field that holds a value, as JSON (text as
/// strings, numbers as numbers, logicals as booleans, dates as `YYYY-MM-DD`). A value
/// that does not parse as its field's type (text in a numeric field) is left out.
struct Attributes(serde_json::Map<String, serde_json::Value>);

/// More fields than a `.dbf` header can describe (its size is a `u16`).
const MAX_FIELDS: usize = 4096;

impl dbase::ReadableRecord for Attributes {
    fn read_using<Source, MemoSource>(
        fields: &mut dbase::FieldIterator<Source, MemoSource>,
    ) -> Result<Self, dbase::FieldError>
    where
        Source: Read + Seek,
        MemoSource: Read + Seek,
    {
        let mut map = serde_json::Map::new();
        for _ in 0..MAX_FIELDS {
            match fields.read_next_field() {
                Ok(field) => {
                    if let Some(value) = json_of(field.value) {
                        map.insert(field.name.to_string(), value);
                    }
                }
                Err(e) => match e.kind() {
                    dbase::ErrorKind::EndOfRecord => break,
                    dbase::ErrorKind::IoError(_) => return Err(e),
                    // The field was read past; only its value is unusable.
                    _ => {}
                },
            }
        }
        Ok(Attributes(map))
    }
}

fn date(d: &dbase::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

fn json_of(value: dbase::FieldValue) -> Option<serde_json::Value> {
    use super::geojson::json_number;
    use dbase::FieldValue as F;
    match value {
        F::Character(s) => s.map(serde_json::Value::String),
        F::Memo(s) => (!s.is_empty()).then_some(serde_json::Value::String(s)),
        F::Numeric(n) => json_number(n?),
        F::Float(n) => json_number(f64::from(n?)),
        F::Double(n) | F::Currency(n) => json_number(n),
        F::Integer(n) => Some(n.into()),
        F::Logical(b) => b.map(serde_json::Value::Bool),
        F::Date(d) => d.map(|d| date(&d).into()),
        F::DateTime(t) => {
            let time = t.time();
            Some(
                format!(
                    "{}T{:02}:{:02}:{:02}",
                    date(&t.date()),
                    time.hours(),
                    time.minutes(),
                    time.seconds()
                )
                .into(),
            )
        }
    }
}

fn xy<P: HasXY>(points: Vec<P>) -> Vec<[f64; 2]> {
    points.into_iter().map(|p| [p.x(), p.y()]).collect()
}

fn lines(parts: Vec<Vec<[f64; 2]>>) -> RawGeometry {
    let mut parts: Vec<_> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    match parts.len() {
        0 => RawGeometry::Null,
        1 => RawGeometry::Line(parts.remove(0)),
        _ => RawGeometry::MultiLine(parts),
    }
}

fn rings<P: HasXY>(rings: Vec<::shapefile::PolygonRing<P>>) -> RawGeometry {
    super::esri::polygon_of_rings(rings.into_iter().map(|r| xy(r.into_inner())).collect())
}

/// A shape's geometry in the file's coordinates (z and m left out).
fn geometry_of(shape: Shape) -> Result<RawGeometry, SkipReason> {
    Ok(match shape {
        Shape::NullShape => RawGeometry::Null,
        Shape::Point(_)
        | Shape::PointM(_)
        | Shape::PointZ(_)
        | Shape::Multipoint(_)
        | Shape::MultipointM(_)
        | Shape::MultipointZ(_) => RawGeometry::Point,
        Shape::Polyline(l) => lines(l.into_inner().into_iter().map(xy).collect()),
        Shape::PolylineM(l) => lines(l.into_inner().into_iter().map(xy).collect()),
        Shape::PolylineZ(l) => lines(l.into_inner().into_iter().map(xy).collect()),
        Shape::Polygon(p) => rings(p.into_inner()),
        Shape::PolygonM(p) => rings(p.into_inner()),
        Shape::PolygonZ(p) => rings(p.into_inner()),
        // Multipatches are 3D models (triangle strips), not footprints.
        Shape::Multipatch(_) => return Err(SkipReason::UnsupportedGeometry),
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| path.display().to_string())
}

/// Checks that a `.shx`'s entries step forward through a `.shp` of `shp_len` bytes,
/// each shape after the one before and inside the file: an index that points twice
/// at one shape, or back, would read a shape twice and pair the `.dbf`'s records
/// with the wrong shapes.
fn check_index(shx: &[u8], shp_len: u64) -> Result<(), String> {
    let word = |at: usize| {
        shx.get(at..at + 4)
            .map(|b| i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    };
    // The header (100 bytes) is checked by the reader; here the entries it holds.
    let mut end_of_last = 100i64;
    for (i, at) in (100..shx.len().saturating_sub(7)).step_by(8).enumerate() {
        let (Some(offset), Some(len)) = (word(at), word(at + 4)) else {
            break;
        };
        let (start, end) = (offset * 2, offset * 2 + 8 + len * 2);
        if start < end_of_last || len < 0 {
            return Err(format!(
                "shape {} starts at byte {start}, before the end of the shape before it (byte {end_of_last})",
                i + 1
            ));
        }
        if end > shp_len as i64 {
            return Err(format!(
                "shape {} ends at byte {end}, past the end of the file ({shp_len} bytes)",
                i + 1
            ));
        }
        end_of_last = end;
    }
    Ok(())
}

/// Reads the Shapefile whose `.shp` is `path`: its features in the file's
/// coordinates, the CRS of its `.prj` and the encoding its text was read in.
pub(crate) fn read_path(path: &Path, source_name: &str) -> Result<FileRead, MapError> {
    let error = |message: String| MapError::Shapefile {
        source_name: source_name.to_string(),
        message,
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| MapError::Io { path, error }
    };
    let shp_name = file_name(path);
    let Some(dbf_path) = sidecar(path, "dbf") else {
        let expected = file_name(&path.with_extension("dbf"));
        return Err(error(format!(
            "its attribute table {expected} is missing: a Shapefile is the .shp with a .dbf of the same name beside it (and a .shx, .prj and .cpg when there are)"
        )));
    };
    let dbf_name = file_name(&dbf_path);

    // The CRS first: a .prj that is not understood stops the load before the work.
    let file_crs = match sidecar(path, "prj") {
        Some(prj) => {
            let bytes = std::fs::read(&prj).map_err(io(&prj))?;
            let text = String::from_utf8_lossy(&bytes);
            if text.trim().is_empty() {
                None
            } else {
                Some(super::crs::from_prj(&text).map_err(|error| MapError::Crs {
                    source_name: prj.display().to_string(),
                    error,
                })?)
            }
        }
        None => None,
    };

    // The attribute table, whole: its layout tells deleted records and the encoding.
    let dbf = std::fs::read(&dbf_path).map_err(io(&dbf_path))?;
    let open_dbf = |encoding: &'static Encoding| {
        dbase::ReaderBuilder::new()
            .with_encoding(dbase::encoding::EncodingRs::from(encoding))
            .build(Cursor::new(dbf.as_slice()))
            .map_err(|e| {
                error(format!(
                    "{dbf_name} is not a dBase table Zhongshu can read: {e}"
                ))
            })
    };
    let layout = DbfLayout::of(&open_dbf(encoding_rs::UTF_8)?);
    let needed = layout
        .records
        .checked_mul(layout.record_len)
        .and_then(|n| n.checked_add(layout.first_record));
    if layout.record_len == 0 {
        return Err(error(format!(
            "{dbf_name} is corrupt: its records have no length"
        )));
    }
    if needed.is_none_or(|n| n > dbf.len()) {
        return Err(error(format!(
            "{dbf_name} is cut short: its header says {} records of {} bytes, the file holds {} bytes",
            layout.records,
            layout.record_len,
            dbf.len()
        )));
    }
    let deleted = layout.deleted(&dbf);
    let cpg = match sidecar(path, "cpg") {
        Some(cpg) => {
            let mut text = String::new();
            std::fs::File::open(&cpg)
                .and_then(|f| f.take(1024).read_to_string(&mut text))
                .map_err(io(&cpg))?;
            Some(
                text.trim()
                    .trim_start_matches('\u{feff}')
                    .trim()
                    .to_string(),
            )
        }
        None => None,
    };
    let detected = |said: Option<String>| {
        let e = detect_encoding(&dbf, &layout, &deleted);
        let by_text = undecodable(&dbf, &layout, &deleted, e);
        (e, (EncodingSource::Detected, said), by_text)
    };
    // `text_undecodable`: text the encoding used cannot read (replacement characters,
    // or its records skipped), said by map-info.
    let (encoding, text_encoding, text_undecodable) =
        match cpg.as_deref().map(|c| (c, encoding_of_cpg(c))) {
            // A .cpg whose code page cannot read the text (a table written in
            // another): set aside for what the text itself says, when that reads more
            // of it.
            Some((said, Some(e))) => match undecodable(&dbf, &layout, &deleted, e) {
                0 if LATIN_CODE_PAGES.contains(&e) && reads_multi_byte(&dbf, &layout, &deleted) => {
                    detected(Some(said.to_string()))
                }
                0 => (e, (EncodingSource::Cpg, None), 0),
                by_cpg => match detected(Some(said.to_string())) {
                    guess @ (_, _, by_text) if by_text < by_cpg => guess,
                    _ => (e, (EncodingSource::Cpg, None), by_cpg),
                },
            },
            Some((said, None)) => detected(Some(said.to_string())),
            None => detected(None),
        };
    let mut table = open_dbf(encoding)?;

    // The shapes, streamed; through the .shx when there is one.
    let shp = BufReader::with_capacity(1 << 20, std::fs::File::open(path).map_err(io(path))?);
    let shp_error = |e: ::shapefile::Error| {
        error(format!(
            "{shp_name} is not a Shapefile Zhongshu can read: {e}"
        ))
    };
    // A .shx too short to hold its header (an empty file left by a failed copy) is
    // no index: the shapes are read one after another, as without one.
    let index =
        sidecar(path, "shx").filter(|shx| std::fs::metadata(shx).is_ok_and(|m| m.len() >= 100));
    let mut shapes = match index {
        Some(shx) => {
            let shx_name = file_name(&shx);
            let index = std::fs::read(&shx).map_err(io(&shx))?;
            let shp_len = std::fs::metadata(path).map_err(io(path))?.len();
            if let Err(problem) = check_index(&index, shp_len) {
                return Err(error(format!(
                    "its index {shx_name} does not match {shp_name}: {problem}; delete the {shx_name} to read {shp_name} without it"
                )));
            }
            ShapeReader::with_shx(shp, Cursor::new(index)).map_err(|e| {
                error(format!(
                    "{shp_name} or its index {shx_name} is unreadable: {e}"
                ))
            })?
        }
        None => ShapeReader::new(shp).map_err(shp_error)?,
    };
    let mismatch = |shapes: &str| {
        error(format!(
            "{shp_name} has {shapes} shapes but {dbf_name} has {} records: the two do not belong together, or one is cut short",
            layout.records
        ))
    };
    if let Ok(count) = shapes.shape_count()
        && count != layout.records
    {
        return Err(mismatch(&count.to_string()));
    }

    let mut records = table.iter_records_as::<Attributes>();
    let mut shape_iter = shapes.iter_shapes();
    let mut decoded = Vec::with_capacity(layout.records);
    for (i, &is_deleted) in deleted.iter().enumerate() {
        let shape = match shape_iter.next() {
            Some(Ok(shape)) => shape,
            Some(Err(e)) => {
                return Err(error(format!(
                    "{shp_name} is cut short or corrupt at shape {}: {e}",
                    i + 1
                )));
            }
            None => return Err(mismatch(&i.to_string())),
        };
        if is_deleted {
            continue; // the dBase reader passes deleted records by itself
        }
        let attributes = match records.next() {
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                return Err(error(format!(
                    "{dbf_name} is cut short or corrupt at record {}: {e}",
                    i + 1
                )));
            }
            None => return Err(mismatch("more")),
        };
        decoded.push(geometry_of(shape).map(|geometry| {
            let tags = super::geojson::tags_of_properties(attributes.0);
            RawFeature {
                id: super::object_id(&tags, None, i),
                tags,
                geometry,
            }
        }));
    }
    if shape_iter.next().is_some() {
        return Err(mismatch("more"));
    }
    let (features, skipped): (Vec<RawFeature>, SkipCounts) =
        super::geojson::kept_and_skipped(decoded);
    let (source, cpg) = text_encoding;
    Ok(FileRead {
        encoding: Some(TextEncoding {
            name: encoding.name().to_ascii_lowercase(),
            source,
            cpg,
            undecodable: text_undecodable,
        }),
        ..FileRead::features(features, skipped, file_crs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{CityMap, MapFormat, load_path};
    use ::shapefile::dbase::{FieldName, FieldValue, Record};
    use ::shapefile::{Point, Polygon, PolygonRing};

    /// Tiananmen in CGCS2000 3-degree Gauss-Krüger zone 39 (EPSG:4527), and the
    /// longitude/latitude PROJ 9.5.1 gives for it (see `crs`'s tests).
    const TIANANMEN_GK39: [f64; 2] = [39448481.5746, 4419565.4353];
    const TIANANMEN: [f64; 2] = [116.3975, 39.9087];
    /// The .prj ArcGIS writes for zone 39.
    const ESRI_GK_ZONE_39: &str = r#"PROJCS["CGCS2000_3_Degree_GK_Zone_39",GEOGCS["GCS_China_Geodetic_Coordinate_System_2000",DATUM["D_China_2000",SPHEROID["CGCS2000",6378137.0,298.257222101]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],PROJECTION["Gauss_Kruger"],PARAMETER["False_Easting",39500000.0],PARAMETER["False_Northing",0.0],PARAMETER["Central_Meridian",117.0],PARAMETER["Scale_Factor",1.0],PARAMETER["Latitude_Of_Origin",0.0],UNIT["Meter",1.0]]"#;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zhongshu-shp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A closed square `side` metres wide, `dx`, `dy` metres from Tiananmen, in zone 39.
    fn square(dx: f64, dy: f64, side: f64) -> Vec<Point> {
        let [x, y] = [TIANANMEN_GK39[0] + dx, TIANANMEN_GK39[1] + dy];
        [
            [0.0, 0.0],
            [side, 0.0],
            [side, side],
            [0.0, side],
            [0.0, 0.0],
        ]
        .iter()
        .map(|[a, b]| Point::new(x + a, y + b))
        .collect()
    }

    /// One building of a test Shapefile: its rings, floors (`层数`) and name (`名称`).
    struct Row {
        rings: Vec<PolygonRing<Point>>,
        floors: Option<f64>,
        name: Option<&'static str>,
    }

    /// A 20 m square of two floors for each name, 50 m apart.
    fn squares_named(names: &[&'static str]) -> Vec<Row> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                row(
                    vec![PolygonRing::Outer(square(50.0 * i as f64, 0.0, 20.0))],
                    2.0,
                    name,
                )
            })
            .collect()
    }

    fn row(rings: Vec<PolygonRing<Point>>, floors: f64, name: &'static str) -> Row {
        Row {
            rings,
            floors: Some(floors),
            name: Some(name),
        }
    }

    /// Writes `dir/name.shp` (with `.shx` and `.dbf`) with fields `层数` and `名称`,
    /// names and text in `encoding` as ArcGIS writes them.
    fn write(dir: &Path, name: &str, encoding: &'static Encoding, rows: Vec<Row>) -> PathBuf {
        write_fields(dir, name, encoding, rows, ["层数", "名称"])
    }

    /// [`write`] with other names for the floors and name fields.
    fn write_fields(
        dir: &Path,
        name: &str,
        encoding: &'static Encoding,
        rows: Vec<Row>,
        [floors, title]: [&str; 2],
    ) -> PathBuf {
        let field = |n: &str| FieldName::try_from(n).unwrap();
        let table =
            dbase::TableWriterBuilder::with_encoding(dbase::encoding::EncodingRs::from(encoding))
                .add_numeric_field(field(floors), 4, 0)
                .add_character_field(field(title), 40);
        let path = dir.join(format!("{name}.shp"));
        let mut writer = ::shapefile::Writer::from_path(&path, table).unwrap();
        for row in rows {
            let mut record = Record::default();
            record.insert(floors.into(), FieldValue::Numeric(row.floors));
            record.insert(
                title.into(),
                FieldValue::Character(row.name.map(str::to_string)),
            );
            writer
                .write_shape_and_record(&Polygon::with_rings(row.rings), &record)
                .unwrap();
        }
        drop(writer);
        crate::bench::encode_dbf_field_names(&path.with_extension("dbf"), encoding).unwrap();
        path
    }

    /// A library with a courtyard, a school in two pieces, a block of flats: GBK with a
    /// `.cpg` saying so, in Gauss-Krüger zone 39 with its `.prj`.
    fn gbk_campus(dir: &Path) -> PathBuf {
        let path = write(
            dir,
            "campus",
            encoding_rs::GBK,
            vec![
                row(
                    vec![
                        PolygonRing::Outer(square(0.0, 0.0, 40.0)),
                        PolygonRing::Inner(square(10.0, 10.0, 20.0)),
                    ],
                    6.0,
                    "图书馆",
                ),
                row(
                    vec![
                        PolygonRing::Outer(square(100.0, 0.0, 20.0)),
                        PolygonRing::Outer(square(140.0, 0.0, 20.0)),
                    ],
                    3.0,
                    "教学楼",
                ),
                row(
                    vec![PolygonRing::Outer(square(0.0, 100.0, 30.0))],
                    18.0,
                    "住宅楼",
                ),
            ],
        );
        std::fs::write(path.with_extension("prj"), ESRI_GK_ZONE_39).unwrap();
        std::fs::write(path.with_extension("cpg"), "GBK").unwrap();
        path
    }

    fn building<'a>(map: &'a CityMap, name: &str) -> &'a crate::map::Building {
        map.buildings
            .iter()
            .find(|b| b.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {:?}", map.buildings))
    }

    /// Metres between two longitude/latitude points (a city's few hundred metres).
    fn metres(a: [f64; 2], b: [f64; 2]) -> f64 {
        let lat = a[1].to_radians();
        let dx = (a[0] - b[0]).to_radians() * 6_378_137.0 * lat.cos();
        let dy = (a[1] - b[1]).to_radians() * 6_378_137.0;
        dx.hypot(dy)
    }

    #[test]
    fn a_gbk_shapefile_in_gauss_kruger_lands_on_its_reference_point_with_its_floors_and_names() {
        let dir = scratch("campus");
        let map = load_path(&gbk_campus(&dir)).unwrap();
        assert_eq!(map.format, Some(MapFormat::Shapefile));
        assert_eq!(map.name, "campus");
        assert_eq!(
            map.crs.name,
            "EPSG:4527 (CGCS2000 / 3-degree Gauss-Kruger zone 39)"
        );
        assert_eq!(
            map.encoding,
            Some(TextEncoding {
                name: "gbk".into(),
                source: EncodingSource::Cpg,
                cpg: None,
                undecodable: 0,
            })
        );
        // The school in two pieces is one building.
        assert_eq!(map.buildings.len(), 3, "{:?}", map.skipped);
        let school = building(&map, "教学楼");
        assert_eq!(school.footprint.0.len(), 2);
        assert!((school.extent.height_m - 3.0 * 3.2).abs() < 1e-3);
        let library = building(&map, "图书馆");
        assert_eq!(library.footprint.0.len(), 1);
        assert_eq!(library.footprint.0[0].interiors().len(), 1, "the courtyard");
        assert!((library.extent.height_m - 6.0 * 3.2).abs() < 1e-3);
        assert!(
            library
                .tags
                .iter()
                .any(|(k, v)| k == "名称" && v == "图书馆"),
            "{:?}",
            library.tags
        );
        assert!((building(&map, "住宅楼").extent.height_m - 18.0 * 3.2).abs() < 1e-3);
        // The library's south-west corner is Tiananmen, where PROJ puts it.
        let corner = library.footprint.0[0]
            .exterior()
            .0
            .iter()
            .map(|c| map.frame.wgs84_from_local(c.x, c.y))
            .min_by(|a, b| metres(*a, TIANANMEN).total_cmp(&metres(*b, TIANANMEN)))
            .unwrap();
        let off = metres(corner, TIANANMEN);
        assert!(off < 0.5, "{corner:?} is {off} m from {TIANANMEN:?}");
        assert_eq!(
            map.schema.detected,
            Some(crate::map::schema::Schema::Agency)
        );
        assert!(map.schema.fields["floors"].contains("层数"));
        assert!(map.schema.fields["name"].contains("名称"));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Sidecars in another letter case (`.Dbf`, `CAMPUS.PRJ`), and an empty `.shx`
    /// left by a failed copy, load the same city.
    #[test]
    fn sidecars_in_any_letter_case_and_an_empty_index_load_the_same_city() {
        let dir = scratch("campus-case");
        let path = gbk_campus(&dir);
        let want = load_path(&path).unwrap();
        std::fs::rename(dir.join("campus.dbf"), dir.join("campus.Dbf")).unwrap();
        std::fs::rename(dir.join("campus.prj"), dir.join("CAMPUS.PRJ")).unwrap();
        std::fs::rename(dir.join("campus.cpg"), dir.join("Campus.cpg")).unwrap();
        std::fs::write(dir.join("campus.shx"), b"").unwrap();
        let got = load_path(&path).unwrap();
        assert_eq!(got.crs.name, want.crs.name);
        assert_eq!(got.encoding, want.encoding);
        assert_eq!(got.buildings.len(), want.buildings.len());
        for (a, b) in got.buildings.iter().zip(&want.buildings) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.footprint, b.footprint);
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_prj_in_any_crs_zhongshu_knows_places_the_shapefile_where_proj_does() {
        // Reference points as PROJ 9.5.1 gives them (see `crs`'s tests).
        let beijing = [116.3975, 39.9087];
        let shanghai = [121.4737, 31.2304];
        let wgs84 = r#"GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",6378137.0,298.257223563]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]"#;
        let cgcs2000 = r#"GEOGCS["China Geodetic Coordinate System 2000",DATUM["China_2000",SPHEROID["CGCS2000",6378137,298.257222101]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]]"#;
        let web = r#"PROJCS["WGS_1984_Web_Mercator_Auxiliary_Sphere",GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",6378137.0,298.257223563]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],PROJECTION["Mercator_Auxiliary_Sphere"],PARAMETER["False_Easting",0.0],PARAMETER["False_Northing",0.0],PARAMETER["Central_Meridian",0.0],PARAMETER["Standard_Parallel_1",0.0],PARAMETER["Auxiliary_Sphere_Type",0.0],UNIT["Meter",1.0]]"#;
        let utm = r#"PROJCS["WGS 84 / UTM zone 50N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",117],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]"#;
        let cases = [
            (wgs84, beijing, 0.0003, beijing, "EPSG:4326 (WGS 84)"),
            (cgcs2000, beijing, 0.0003, beijing, "EPSG:4490 (CGCS2000)"),
            (
                web,
                [13522390.4288, 3662707.2571],
                30.0,
                shanghai,
                "EPSG:3857 (WGS 84 / Pseudo-Mercator)",
            ),
            (
                utm,
                [448502.1820, 4417797.6093],
                30.0,
                beijing,
                "EPSG:32650 (WGS 84 / UTM zone 50N)",
            ),
            (
                ESRI_GK_ZONE_39,
                TIANANMEN_GK39,
                30.0,
                TIANANMEN,
                "EPSG:4527 (CGCS2000 / 3-degree Gauss-Kruger zone 39)",
            ),
        ];
        let dir = scratch("prj");
        for (i, (prj, [x, y], side, expected, name)) in cases.into_iter().enumerate() {
            let ring = [
                [0.0, 0.0],
                [side, 0.0],
                [side, side],
                [0.0, side],
                [0.0, 0.0],
            ]
            .iter()
            .map(|[a, b]| Point::new(x + a, y + b))
            .collect();
            let path = write(
                &dir,
                &format!("case{i}"),
                encoding_rs::UTF_8,
                vec![row(vec![PolygonRing::Outer(ring)], 4.0, "楼")],
            );
            std::fs::write(path.with_extension("prj"), prj).unwrap();
            let map = load_path(&path).unwrap();
            assert_eq!(map.crs.name, name);
            let corner = map.buildings[0].footprint.0[0]
                .exterior()
                .0
                .iter()
                .map(|c| map.frame.wgs84_from_local(c.x, c.y))
                .min_by(|a, b| metres(*a, expected).total_cmp(&metres(*b, expected)))
                .unwrap();
            let off = metres(corner, expected);
            assert!(off < 0.5, "{name}: {corner:?} is {off} m from {expected:?}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn without_a_cpg_gb18030_text_is_detected_and_utf8_stays_utf8() {
        let dir = scratch("detect");
        // 䶮 is four bytes in GB18030 (CJK extension A): GBK has no such character.
        let names = ["䶮楼", "图书馆"];
        for (encoding, expected) in [
            (encoding_rs::GB18030, "gb18030"),
            (encoding_rs::UTF_8, "utf-8"),
        ] {
            let path = write(&dir, expected, encoding, squares_named(&names));
            std::fs::write(path.with_extension("prj"), ESRI_GK_ZONE_39).unwrap();
            let map = load_path(&path).unwrap();
            let encoding = map.encoding.clone().unwrap();
            assert_eq!(encoding.name, expected);
            assert_eq!(encoding.source, EncodingSource::Detected);
            for name in names {
                assert!((building(&map, name).extent.height_m - 6.4).abs() < 1e-3);
            }
        }
        // Western names without a .cpg (a European agency's export): Latin-1, not
        // Chinese.
        let western = ["Müller", "Straße 5", "Café Ñandú"];
        let path = write_fields(
            &dir,
            "western",
            encoding_rs::WINDOWS_1252,
            squares_named(&western),
            ["FLOORS", "NAME"],
        );
        std::fs::write(path.with_extension("prj"), ESRI_GK_ZONE_39).unwrap();
        let map = load_path(&path).unwrap();
        assert_eq!(map.encoding.clone().unwrap().name, "windows-1252");
        for name in western {
            building(&map, name);
        }
        // A .cpg that lies (UTF-8 over GB18030 text): set aside for what the text
        // says, and what it said is reported.
        let path = dir.join("gb18030.shp");
        std::fs::write(path.with_extension("cpg"), "UTF-8").unwrap();
        let map = load_path(&path).unwrap();
        let encoding = map.encoding.clone().unwrap();
        assert_eq!(encoding.name, "gb18030");
        assert_eq!(encoding.source, EncodingSource::Detected);
        assert_eq!(encoding.cpg.as_deref(), Some("UTF-8"));
        assert_eq!(encoding.undecodable, 0);
        building(&map, "图书馆");
        // Big5 said over GB18030 text that Big5 cannot read all of: the same.
        std::fs::write(path.with_extension("cpg"), "Big5").unwrap();
        let encoding = load_path(&path).unwrap().encoding.unwrap();
        assert_eq!(encoding.name, "gb18030", "{encoding:?}");
        // A single-byte code page said over Chinese text (a tool that wrote its own
        // Windows code page): every byte reads in it, as mojibake; the text's
        // Chinese is preferred, and what the .cpg said is reported.
        for said in ["1252", "ISO-8859-1", "ANSI 1252"] {
            std::fs::write(path.with_extension("cpg"), said).unwrap();
            let map = load_path(&path).unwrap();
            let encoding = map.encoding.clone().unwrap();
            assert_eq!(encoding.name, "gb18030", "{said}: {encoding:?}");
            assert_eq!(encoding.source, EncodingSource::Detected);
            assert_eq!(encoding.cpg.as_deref(), Some(said));
            building(&map, "图书馆");
        }
        // Western text its .cpg names rightly stays as said: a last accented letter
        // is no UTF-8 cut at the field's width (the field is wider), and Portuguese
        // "ção" pairs are no Chinese; nor is Thai, Cyrillic or Greek under its own
        // code page, whose letters all lie above 0xA0.
        for (said, encoding, names, expected) in [
            (
                "1252",
                encoding_rs::WINDOWS_1252,
                &["Café", "José", "Bogotá", "Town Hall"][..],
                "windows-1252",
            ),
            (
                "1252",
                encoding_rs::WINDOWS_1252,
                &["Estação", "Habitação", "Educação", "Associação"][..],
                "windows-1252",
            ),
            (
                "874",
                encoding_rs::WINDOWS_874,
                &["กรุงเทพมหานคร", "โรงพยาบาลศิริราช"][..],
                "windows-874",
            ),
            (
                "1251",
                encoding_rs::WINDOWS_1251,
                &["Москва", "Казань", "Самара", "Тверь"][..],
                "windows-1251",
            ),
            (
                "1253",
                encoding_rs::WINDOWS_1253,
                &["Αθήνα", "Πειραιάς"][..],
                "windows-1253",
            ),
        ] {
            let names: Vec<&'static str> = names.to_vec();
            let path = write_fields(
                &dir,
                &format!("cp{said}-{}", names.len()),
                encoding,
                squares_named(&names),
                ["FLOORS", "NAME"],
            );
            std::fs::write(path.with_extension("prj"), ESRI_GK_ZONE_39).unwrap();
            std::fs::write(path.with_extension("cpg"), said).unwrap();
            let map = load_path(&path).unwrap();
            let got = map.encoding.clone().unwrap();
            assert_eq!(got.name, expected, "{names:?}: {got:?}");
            assert_eq!(got.source, EncodingSource::Cpg, "{names:?}");
            for name in &names {
                building(&map, name);
            }
            // Without the .cpg, a Western last accent is still no UTF-8.
            if said == "1252" {
                std::fs::remove_file(path.with_extension("cpg")).unwrap();
                let map = load_path(&path).unwrap();
                assert_eq!(map.encoding.clone().unwrap().name, "windows-1252");
                for name in &names {
                    building(&map, name);
                }
            }
        }
        // UTF-8 text under a single-byte code page's .cpg: the same.
        let path = dir.join("utf-8.shp");
        std::fs::write(path.with_extension("cpg"), "1252").unwrap();
        let map = load_path(&path).unwrap();
        let encoding = map.encoding.clone().unwrap();
        assert_eq!(encoding.name, "utf-8");
        assert_eq!(encoding.cpg.as_deref(), Some("1252"));
        building(&map, "图书馆");
        // ... while Western text under the code page its .cpg names keeps it.
        let path = dir.join("western.shp");
        std::fs::write(path.with_extension("cpg"), "1252").unwrap();
        let map = load_path(&path).unwrap();
        let encoding = map.encoding.clone().unwrap();
        assert_eq!(encoding.name, "windows-1252");
        assert_eq!(encoding.source, EncodingSource::Cpg);
        assert_eq!(encoding.cpg, None);
        for name in western {
            building(&map, name);
        }
        // A .cpg naming nothing known: detected, and what it said is reported.
        let path = dir.join("gb18030.shp");
        std::fs::write(path.with_extension("cpg"), "Klingon").unwrap();
        let encoding = load_path(&path).unwrap().encoding.unwrap();
        assert_eq!(encoding.name, "gb18030");
        assert_eq!(encoding.cpg.as_deref(), Some("Klingon"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn code_pages_as_cpg_files_write_them() {
        for (text, name) in [
            ("UTF-8", "UTF-8"),
            ("utf8", "UTF-8"),
            ("GBK", "GBK"),
            ("gb2312", "GBK"),
            ("936", "GBK"),
            ("CP936", "GBK"),
            ("ANSI 936", "GBK"),
            ("\u{feff}GB18030\r\n", "gb18030"),
            ("54936", "gb18030"),
            ("65001", "UTF-8"),
            ("1252", "windows-1252"),
            ("big5", "Big5"),
        ] {
            assert_eq!(
                encoding_of_cpg(text).map(Encoding::name),
                Some(name),
                "{text:?}"
            );
        }
        for text in ["", "System", "UTF-16", "Klingon"] {
            assert_eq!(encoding_of_cpg(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_broken_piece_of_a_building_in_pieces_is_counted_and_the_rest_drawn() {
        let dir = scratch("nan-piece");
        let mut broken = square(200.0, 0.0, 20.0);
        broken[2] = Point::new(f64::NAN, f64::NAN);
        let path = write(
            &dir,
            "pieces",
            encoding_rs::UTF_8,
            vec![
                row(
                    vec![
                        PolygonRing::Outer(square(100.0, 0.0, 20.0)),
                        PolygonRing::Outer(broken),
                        PolygonRing::Outer(square(140.0, 0.0, 20.0)),
                    ],
                    3.0,
                    "教学楼",
                ),
                row(
                    vec![PolygonRing::Outer(square(0.0, 100.0, 30.0))],
                    18.0,
                    "住宅楼",
                ),
            ],
        );
        std::fs::write(path.with_extension("prj"), ESRI_GK_ZONE_39).unwrap();
        let map = load_path(&path).unwrap();
        assert_eq!(map.buildings.len(), 2);
        assert_eq!(building(&map, "教学楼").footprint.0.len(), 2);
        assert_eq!(map.skipped.broken_total(), 0);
        assert_eq!(map.pieces_dropped.get(SkipReason::BadCoordinates), 1);
        assert_eq!(map.pieces_dropped.broken_total(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_deleted_record_deletes_its_shape_and_the_rest_stay_in_step() {
        let dir = scratch("deleted");
        let path = gbk_campus(&dir);
        let dbf = path.with_extension("dbf");
        let mut bytes = std::fs::read(&dbf).unwrap();
        let first = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        bytes[first] = b'*';
        std::fs::write(&dbf, bytes).unwrap();
        let map = load_path(&path).unwrap();
        assert_eq!(map.buildings.len(), 2);
        assert_eq!(building(&map, "教学楼").footprint.0.len(), 2);
        assert!(
            map.buildings
                .iter()
                .all(|b| b.name.as_deref() != Some("图书馆"))
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_dbf_or_a_prj_not_understood_is_an_error_naming_the_file() {
        let dir = scratch("missing");
        let path = gbk_campus(&dir);
        std::fs::write(
            path.with_extension("prj"),
            ESRI_GK_ZONE_39
                .replace("China_2000", "Xian_1980")
                .replace("CGCS2000", "Xian_1980"),
        )
        .unwrap();
        let e = load_path(&path).unwrap_err().to_string();
        assert!(e.contains("campus.prj") && e.contains("Xian_1980"), "{e}");

        // No .prj and metres: refused, saying what to do.
        std::fs::remove_file(path.with_extension("prj")).unwrap();
        let e = load_path(&path).unwrap_err().to_string();
        assert!(
            e.contains("look projected") && e.contains(".prj") && e.contains("EPSG:4527"),
            "{e}"
        );

        // No .shx: read without it.
        std::fs::write(path.with_extension("prj"), ESRI_GK_ZONE_39).unwrap();
        std::fs::remove_file(path.with_extension("shx")).unwrap();
        assert_eq!(load_path(&path).unwrap().buildings.len(), 3);

        std::fs::remove_file(path.with_extension("dbf")).unwrap();
        let e = load_path(&path).unwrap_err().to_string();
        assert!(e.contains("campus.dbf") && e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_dbf_with_fewer_records_than_shapes_is_an_error() {
        let dir = scratch("fewer");
        let path = gbk_campus(&dir);
        let two = write(
            &dir,
            "two",
            encoding_rs::GBK,
            (0..2)
                .map(|i| {
                    row(
                        vec![PolygonRing::Outer(square(i as f64 * 50.0, 0.0, 20.0))],
                        2.0,
                        "楼",
                    )
                })
                .collect(),
        );
        std::fs::copy(two.with_extension("dbf"), path.with_extension("dbf")).unwrap();
        let e = load_path(&path).unwrap_err().to_string();
        assert!(
            e.contains("campus.shp has 3 shapes but campus.dbf has 2 records"),
            "{e}"
        );
        // The same without the index to count the shapes by.
        std::fs::remove_file(path.with_extension("shx")).unwrap();
        let e = load_path(&path).unwrap_err().to_string();
        assert!(e.contains("campus.dbf has 2 records"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Every cut and many flipped bytes of the `.shp` and the `.dbf`: an error or a
    /// map, never a panic; a cut `.shp` is always an error.
    #[test]
    fn cut_and_corrupt_files_are_errors_not_panics() {
        let dir = scratch("hostile");
        let path = gbk_campus(&dir);
        for ext in ["shp", "dbf", "shx"] {
            let file = path.with_extension(ext);
            let good = std::fs::read(&file).unwrap();
            for len in 0..good.len() {
                std::fs::write(&file, &good[..len]).unwrap();
                let result = load_path(&path);
                if ext == "shp" {
                    assert!(result.is_err(), ".shp cut at {len} loaded");
                }
            }
            for at in 0..good.len() {
                for value in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
                    let mut bad = good.clone();
                    bad[at] = value;
                    std::fs::write(&file, &bad).unwrap();
                    let _ = load_path(&path);
                }
            }
            std::fs::write(&file, &good).unwrap();
        }
        assert_eq!(load_path(&path).unwrap().buildings.len(), 3);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn lines_are_read_by_the_mapping_beside_them_and_points_are_not_drawn() {
        let dir = scratch("lines");
        let field = |n: &str| FieldName::try_from(n).unwrap();
        let table = dbase::TableWriterBuilder::with_encoding(dbase::encoding::EncodingRs::from(
            encoding_rs::UTF_8,
        ))
        .add_character_field(field("名称"), 40);
        let path = dir.join("roads.shp");
        let mut writer = ::shapefile::Writer::from_path(&path, table).unwrap();
        let mut record = Record::default();
        record.insert("名称".into(), FieldValue::Character(Some("长安街".into())));
        let line = ::shapefile::Polyline::with_parts(vec![
            square(0.0, 0.0, 200.0)[..2].to_vec(),
            square(0.0, 50.0, 200.0)[..2].to_vec(),
        ]);
        writer.write_shape_and_record(&line, &record).unwrap();
        drop(writer);
        std::fs::write(path.with_extension("prj"), ESRI_GK_ZONE_39).unwrap();
        std::fs::write(
            dir.join("roads.schema.toml"),
            "kind = \"road:primary\"\nname = \"名称\"\n",
        )
        .unwrap();
        let map = load_path(&path).unwrap();
        assert_eq!(map.roads.len(), 2, "both parts");
        assert!(
            map.roads
                .iter()
                .all(|r| r.name.as_deref() == Some("长安街"))
        );
        assert_eq!(map.roads[0].class, crate::map::RoadClass::Primary);

        let table = dbase::TableWriterBuilder::new().add_character_field(field("NAME"), 20);
        let path = dir.join("pois.shp");
        let mut writer = ::shapefile::Writer::from_path(&path, table).unwrap();
        let mut record = Record::default();
        record.insert("NAME".into(), FieldValue::Character(Some("Gate".into())));
        writer
            .write_shape_and_record(&Point::new(116.3975, 39.9087), &record)
            .unwrap();
        drop(writer);
        let e = load_path(&path).unwrap_err().to_string();
        assert!(e.contains("no drawable features"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_index_pointing_twice_at_one_shape_is_an_error_not_a_copy() {
        let dir = scratch("shx");
        let path = gbk_campus(&dir);
        let shx = path.with_extension("shx");
        let good = std::fs::read(&shx).unwrap();
        // Every entry points at the first shape (the library, 2 rings).
        let mut same = good.clone();
        let first: [u8; 8] = good[100..108].try_into().unwrap();
        for at in (100..good.len()).step_by(8) {
            same[at..at + 8].copy_from_slice(&first);
        }
        std::fs::write(&shx, &same).unwrap();
        let e = load_path(&path).unwrap_err().to_string();
        assert!(
            e.contains("campus.shx does not match campus.shp") && e.contains("shape 2"),
            "{e}"
        );
        // Back in order, it loads.
        std::fs::write(&shx, &good).unwrap();
        assert_eq!(load_path(&path).unwrap().buildings.len(), 3);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A dissolved layer: one shape of 50,000 buildings, each with a courtyard. Its
    /// rings are sorted into pieces and holes by their boxes, not each against every
    /// other (which took minutes).
    #[test]
    fn a_shape_of_many_thousand_parts_is_sorted_into_pieces_quickly() {
        let mut rings = Vec::new();
        for i in 0..50_000 {
            let [x, y] = [(i % 250) as f64 * 30.0, (i / 250) as f64 * 30.0];
            // Clockwise outer, counter-clockwise courtyard (Esri's winding).
            rings.push(vec![
                [x, y],
                [x, y + 20.0],
                [x + 20.0, y + 20.0],
                [x + 20.0, y],
                [x, y],
            ]);
            rings.push(vec![
                [x + 5.0, y + 5.0],
                [x + 10.0, y + 5.0],
                [x + 10.0, y + 10.0],
                [x + 5.0, y + 10.0],
                [x + 5.0, y + 5.0],
            ]);
        }
        let start = std::time::Instant::now();
        let geometry = crate::map::esri::polygon_of_rings(rings);
        let took = start.elapsed();
        let RawGeometry::MultiPolygon(pieces) = geometry else {
            panic!("not a multipolygon");
        };
        assert_eq!(pieces.len(), 50_000);
        for (i, piece) in pieces.iter().enumerate() {
            assert_eq!(piece.len(), 2, "piece {i} and its courtyard");
            assert_eq!(piece[1][0], [piece[0][0][0] + 5.0, piece[0][0][1] + 5.0]);
        }
        assert!(took.as_secs_f64() < 5.0, "took {took:?}");
    }

    #[test]
    fn a_shapefile_is_loaded_from_its_path_not_bytes() {
        let e = crate::map::load_bytes(&[0; 100], MapFormat::Shapefile, "t", "t.shp")
            .unwrap_err()
            .to_string();
        assert!(e.contains(".shp path"), "{e}");
    }
}
