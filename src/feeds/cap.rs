//! CAP 1.0–1.2 messages (OASIS Common Alerting Protocol) decoded into alerts and live
//! `Alert` entities, beside the NGSI-LD and GeoJSON decoders; and the words alerts of
//! every source share (incident kinds, domains of categories).

use geo::Centroid;
use oasiscap::v1dot2;

use super::gazetteer::Gazetteer;

use crate::model::{
    AlertIn, Decoded, Domain, EntityKind, EntityUpdate, FieldValue, PayloadError, Severity,
};

/// Why a CAP document gave no alerts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("malformed CAP XML: {0}")]
    Malformed(String),
    #[error(
        "not a CAP alert: the document is <{root}>{namespace}, expected \
         <alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\"> (CAP 1.0–1.2)"
    )]
    NotCap { root: String, namespace: String },
    #[error(
        "CAP message {key}: no location (no <circle> or <polygon>, no <geocode> or <areaDesc> \
         the gazetteer knows, and no city to put it in)"
    )]
    NoLocation { key: String },
    #[error("CAP message {key}: {problem}")]
    Invalid { key: String, problem: String },
}

/// A CAP alert as a live entity (type `Alert`), so CAP feeds show on the map and reach
/// the desk through the same path as NGSI-LD alerts; [`from_ngsi_ld`] gives back the
/// same [`AlertIn`] (key, source, superseded keys).
pub fn to_entity_update(a: &AlertIn) -> EntityUpdate {
    let mut fields = std::collections::BTreeMap::new();
    let status = if a.cancel { "resolved" } else { "open" };
    fields.insert("status".to_string(), FieldValue::Text(status.into()));
    fields.insert("capSource".to_string(), FieldValue::Text(a.source.clone()));
    if !a.supersedes.is_empty() {
        fields.insert(
            "capSupersedes".to_string(),
            FieldValue::Text(a.supersedes.join(" ")),
        );
    }
    if let Some(r) = a.radius_m {
        fields.insert("radiusM".to_string(), FieldValue::Number(r));
    }
    if let Some(area) = &a.area {
        fields.insert("areaDesc".to_string(), FieldValue::Text(area.clone()));
    }
    if a.citywide {
        fields.insert(
            CITYWIDE_FIELD.to_string(),
            FieldValue::Text(CITYWIDE.to_string()),
        );
    }
    let located = !(a.lon == 0.0 && a.lat == 0.0);
    EntityUpdate {
        id: a.key.clone(),
        entity_type: "Alert".into(),
        kind: EntityKind::Alert {
            category: Some(a.domain.as_str().to_string()),
            sub_category: Some(a.kind.clone()),
            severity: Some(a.severity.as_str().to_string()),
            description: Some(a.headline.clone()),
        },
        position: located.then_some([a.lon, a.lat]),
        line: None,
        observed_at_ms: (a.sent_ms > 0).then_some(a.sent_ms),
        fields,
        units: Default::default(),
        notes: Vec::new(),
    }
}

/// The field of a CAP alert entity that says how it was located: `city-wide` when the
/// message named its area only in words or codes nobody here knows.
pub const CITYWIDE_FIELD: &str = "capLocated";
pub const CITYWIDE: &str = "city-wide";
/// The field of a CAP alert entity that carries a status other than `Actual`
/// (`Exercise`, `Test`, `System`, `Draft`): shown, never raised as an incident.
pub const STATUS_FIELD: &str = "capStatus";

/// A feed payload of one CAP message, decoded for the feeds pipeline: in the encoding
/// its XML declaration names (UTF-8, ISO-8859-1, GBK/GB2312/GB18030, ...), located by
/// shape, else by the gazetteer, else city-wide.
///
/// A message that must not raise an incident is counted in `withheld` by why (`test`,
/// `exercise`, `system`, `draft`, `ack`, `error`); a test or exercise that says where
/// it is still lands, as an `Alert` entity with a `capStatus` field, so operators see
/// it for what it is.
pub fn decode_cap(body: &[u8], places: &Gazetteer) -> Result<Decoded, PayloadError> {
    let text = xml_text(body).map_err(PayloadError::WrongShape)?;
    let read = read_cap(&text, places).map_err(|e| PayloadError::WrongShape(e.to_string()))?;
    let withheld = read
        .withheld
        .map(|why| (why.to_string(), read.key.clone()))
        .into_iter()
        .collect();
    let updates = read
        .alert
        .iter()
        .map(|a| {
            let mut update = to_entity_update(a);
            if let Some(status) = read.status {
                update
                    .fields
                    .insert(STATUS_FIELD.to_string(), FieldValue::Text(status.into()));
            }
            update
        })
        .collect();
    Ok(Decoded {
        updates,
        rejects: Vec::new(),
        withheld,
    })
}

/// The text of an XML document in the encoding it declares (or its byte-order mark
/// says), with the declaration rewritten to UTF-8 so the parser reads it as it is now.
pub fn xml_text(body: &[u8]) -> Result<String, String> {
    // What the bytes themselves say: a byte-order mark, or UTF-16 without one (`<?`
    // as 16-bit units, XML 1.0 appendix F); else the declaration, else UTF-8.
    let sniffed = encoding_rs::Encoding::for_bom(body).or_else(|| {
        if body.starts_with(&[0x3C, 0x00, 0x3F, 0x00]) {
            Some((encoding_rs::UTF_16LE, 0))
        } else if body.starts_with(&[0x00, 0x3C, 0x00, 0x3F]) {
            Some((encoding_rs::UTF_16BE, 0))
        } else {
            None
        }
    });
    let (encoding, skip, label) = match sniffed {
        Some((encoding, skip)) => (encoding, skip, None),
        None => {
            let label = declared_encoding(body);
            let encoding = match &label {
                None => encoding_rs::UTF_8,
                Some(label) => encoding_rs::Encoding::for_label(label.as_bytes()).ok_or_else(|| {
                    format!("CAP declares encoding {label:?}, which is not an encoding this reader knows")
                })?,
            };
            (encoding, 0, Some(label))
        }
    };
    let (text, had_errors) = encoding.decode_without_bom_handling(&body[skip..]);
    if had_errors {
        return Err(match label {
            None => format!("CAP is not valid {}", encoding.name()),
            Some(Some(label)) => format!(
                "CAP declares encoding {label:?} ({}) but its bytes are not valid {}",
                encoding.name(),
                encoding.name()
            ),
            Some(None) => "CAP is not UTF-8 and declares no other encoding".to_string(),
        });
    }
    Ok(utf8_declaration(&text))
}

/// The `encoding` of an `<?xml ... ?>` declaration at the start of `body`.
fn declared_encoding(body: &[u8]) -> Option<String> {
    let head = &body[..body.len().min(200)];
    let head: String = head.iter().map(|&b| b as char).collect();
    let declaration = head.trim_start().strip_prefix("<?xml")?;
    let declaration = &declaration[..declaration.find("?>")?];
    let at = declaration.find("encoding")?;
    let rest = declaration[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?;
    let rest = rest.trim_start();
    let quote = rest.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let value = &rest[1..];
    Some(value[..value.find(quote)?].trim().to_owned())
}

/// `text` with its XML declaration's encoding, if any, set to UTF-8.
fn utf8_declaration(text: &str) -> String {
    let trimmed = text.trim_start_matches('\u{feff}');
    let start = trimmed.len() - trimmed.trim_start().len();
    let body = &trimmed[start..];
    if let Some(rest) = body.strip_prefix("<?xml")
        && let Some(end) = rest.find("?>")
        && let Some(at) = rest[..end].find("encoding")
    {
        let after = &rest[at..end];
        let value_end = after
            .char_indices()
            .filter(|(_, c)| *c == '"' || *c == '\'')
            .nth(1)
            .map(|(i, _)| i + 1);
        if let Some(value_end) = value_end {
            return format!(
                "<?xml{}encoding=\"UTF-8\"{}",
                &rest[..at],
                &rest[at + value_end..]
            );
        }
    }
    body.to_owned()
}

/// The namespaces of the CAP versions `oasiscap` reads.
const CAP_NAMESPACES: [&str; 3] = [
    "urn:oasis:names:tc:emergency:cap:1.2",
    "urn:oasis:names:tc:emergency:cap:1.1",
    "http://www.incident.com/cap/1.0",
];

/// The alerts of one CAP message (1.0, 1.1 or 1.2) that raise incidents, located by
/// shape only (no gazetteer, no city): [`read_cap`] with nothing known.
///
/// Gives no alerts (an empty list) for messages that must not raise incidents:
/// status other than `Actual` (exercises, tests, drafts, system messages) and message
/// types `Ack` and `Error`.
pub fn from_cap(xml: &str) -> Result<Vec<AlertIn>, AlertError> {
    let read = read_cap(xml, &Gazetteer::default())?;
    Ok(match read.withheld {
        Some(_) => Vec::new(),
        None => read.alert.into_iter().collect(),
    })
}

/// What one CAP message gives.
#[derive(Clone, Debug, PartialEq)]
pub struct CapRead {
    /// The message's alert: for a withheld message too, when it says what and where.
    pub alert: Option<AlertIn>,
    /// Why it must not raise an incident: its status in lower case (`test`,
    /// `exercise`, `system`, `draft`) or its message type (`ack`, `error`).
    pub withheld: Option<&'static str>,
    /// Its status as CAP writes it, when not `Actual`.
    pub status: Option<&'static str>,
    /// The message's own `sender,identifier`.
    pub key: String,
}

/// One CAP message read.
///
/// One [`AlertIn`] per *message*, not per `<info>`: senders publish one `<info>` per
/// language (Finnish, Swedish, English...), which are the same alert. The English one
/// (else the first) gives kind, headline and category; severity is the highest of all.
///
/// Where: the first circle's centre, else the first polygon's centroid (of any info);
/// else the first `<geocode>` or `<areaDesc>` the gazetteer knows (the headline then
/// names the place); else the whole city, with the headline saying "city-wide" and
/// where the message says it applies in words. A message is never dropped for naming
/// its area by code instead of shape.
///
/// An Update or Cancel takes the key of the earliest message in its `<references>`, so
/// it updates or cancels that incident instead of adding one.
pub fn read_cap(xml: &str, places: &Gazetteer) -> Result<CapRead, AlertError> {
    check_root(xml)?;
    check_structure(xml)?;
    let alert: oasiscap::Alert = ascii_lists(xml)
        .parse()
        .map_err(|e: xml_error::Error| AlertError::Malformed(plain_names(&e.to_string())))?;
    let alert = alert.into_latest();
    let key = cap_key(alert.sender.as_str(), alert.identifier.as_str());
    let status = match alert.status {
        v1dot2::Status::Actual => None,
        v1dot2::Status::Exercise => Some("Exercise"),
        v1dot2::Status::System => Some("System"),
        v1dot2::Status::Test => Some("Test"),
        v1dot2::Status::Draft => Some("Draft"),
    };
    let withheld = match alert.message_type {
        v1dot2::MessageType::Ack => Some("ack"),
        v1dot2::MessageType::Error => Some("error"),
        _ => match status {
            Some("Exercise") => Some("exercise"),
            Some("System") => Some("system"),
            Some("Test") => Some("test"),
            Some(_) => Some("draft"),
            None => None,
        },
    };
    if matches!(withheld, Some("ack" | "error")) {
        return Ok(CapRead {
            alert: None,
            withheld,
            status,
            key,
        });
    }
    let built = cap_alert(&alert, places);
    Ok(match withheld {
        // A test or exercise is shown when it can be; it is never an error of the feed.
        Some(_) => CapRead {
            alert: built.ok().flatten(),
            withheld,
            status,
            key,
        },
        None => CapRead {
            alert: built?,
            withheld,
            status,
            key,
        },
    })
}

/// Longest area text kept from `<areaDesc>` (the NWS lists dozens of counties).
const MAX_AREA_CHARS: usize = 240;

/// The alert of a parsed message; `None` for a bare Cancel's nothing-to-show is never
/// the case (a Cancel without info is matched by key), so `None` means no info at all
/// in a message that is not a Cancel of a known one.
fn cap_alert(alert: &v1dot2::Alert, places: &Gazetteer) -> Result<Option<AlertIn>, AlertError> {
    let own_key = cap_key(alert.sender.as_str(), alert.identifier.as_str());
    let (update, cancel) = match alert.message_type {
        v1dot2::MessageType::Update => (true, false),
        v1dot2::MessageType::Cancel => (true, true),
        _ => (false, false),
    };
    let invalid = |problem: String| AlertError::Invalid {
        key: own_key.clone(),
        problem,
    };
    let sent_ms = cap_time_ms(&alert.sent).ok_or_else(|| invalid("unreadable <sent>".into()))?;

    // An Update/Cancel belongs to the earliest message it references.
    let mut references: Vec<(i64, String)> = Vec::new();
    if update {
        for r in alert.references.iter().flatten() {
            let at = cap_time_ms(&r.sent).unwrap_or(i64::MAX);
            references.push((at, cap_key(r.sender.as_str(), r.identifier.as_str())));
        }
    }
    // Stable: equal times keep the order written.
    references.sort_by_key(|(at, _)| *at);
    let (key, supersedes) = match references.split_first() {
        Some(((_, original), rest)) => {
            let mut others: Vec<String> = rest.iter().map(|(_, k)| k.clone()).collect();
            others.push(own_key.clone());
            others.retain(|k| k != original);
            others.sort();
            others.dedup();
            (original.clone(), others)
        }
        None => (own_key.clone(), Vec::new()),
    };
    let source = format!("cap:{}", alert.sender.as_str());

    let Some(info) = alert
        .info
        .iter()
        .find(|i| i.language.as_str().to_ascii_lowercase().starts_with("en"))
        .or(alert.info.first())
    else {
        if cancel {
            // A bare Cancel: matched by key alone.
            let note = alert.note.as_deref().map(str::trim).unwrap_or("");
            return Ok(Some(AlertIn {
                source,
                key,
                kind: String::new(),
                domain: Domain::Urban,
                severity: Severity::Minor,
                lon: 0.0,
                lat: 0.0,
                headline: if note.is_empty() {
                    "cancelled".into()
                } else {
                    note.into()
                },
                sent_ms,
                cancel,
                supersedes,
                radius_m: None,
                area: None,
                citywide: false,
            }));
        }
        return Err(invalid("no <info> block".into()));
    };

    let kind = incident_kind(&info.event);
    let domain = info
        .categories
        .first()
        .map_or_else(|| domain_for_kind(&kind), |c| domain_for_cap_category(*c));
    let severity = alert
        .info
        .iter()
        .map(|i| severity_from_cap(i.severity))
        .max()
        .unwrap_or(Severity::Moderate);
    let headline = info
        .headline
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .unwrap_or(info.event.trim())
        .to_owned();
    let infos = || std::iter::once(info).chain(alert.info.iter());
    let words = area_words(info).or_else(|| alert.info.iter().find_map(area_words));
    let (lon, lat, radius_m, headline, citywide) = match infos().find_map(cap_location) {
        Some((lon, lat, radius)) => (lon, lat, radius, headline, false),
        None => match infos().find_map(|i| named_place(i, places)) {
            Some(place) => {
                let headline = if headline.to_lowercase().contains(&place.name.to_lowercase()) {
                    headline
                } else {
                    format!("{headline} — {}", place.name)
                };
                (place.lon, place.lat, None, headline, false)
            }
            None if cancel => (0.0, 0.0, None, headline, false),
            None => {
                let Some(city) = places.city() else {
                    return Err(AlertError::NoLocation { key: own_key });
                };
                let headline = match &words {
                    Some(words) => format!("{headline} — city-wide ({words})"),
                    None => format!("{headline} — city-wide"),
                };
                (city.lon, city.lat, None, headline, true)
            }
        },
    };
    Ok(Some(AlertIn {
        source,
        key,
        kind,
        domain,
        severity,
        lon,
        lat,
        headline,
        sent_ms,
        cancel,
        supersedes,
        radius_m,
        area: words,
        citywide,
    }))
}

/// The `<areaDesc>` texts of an info's areas, joined with "; ", at most
/// [`MAX_AREA_CHARS`] characters (cut with "…").
fn area_words(info: &v1dot2::Info) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for area in &info.areas {
        let text = area.description.trim();
        if !text.is_empty() && !parts.contains(&text) {
            parts.push(text);
        }
    }
    let joined = parts.join("; ");
    let joined = joined.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.is_empty() {
        return None;
    }
    Some(if joined.chars().count() > MAX_AREA_CHARS {
        let mut cut: String = joined.chars().take(MAX_AREA_CHARS - 1).collect();
        cut.push('…');
        cut
    } else {
        joined
    })
}

/// The first place an info's areas name that the gazetteer knows: by `<geocode>`,
/// then by `<areaDesc>`.
fn named_place<'g>(
    info: &v1dot2::Info,
    places: &'g Gazetteer,
) -> Option<&'g super::gazetteer::Place> {
    info.areas.iter().find_map(|area| {
        (&area.geocode)
            .into_iter()
            .find_map(|(scheme, code)| places.by_geocode(scheme, code))
            .or_else(|| places.by_name(&area.description))
    })
}

/// `oasiscap`'s error type for `str::parse`, named without depending on `xml_serde`.
mod xml_error {
    pub type Error = <oasiscap::Alert as std::str::FromStr>::Err;
}

/// The parser's messages name elements as `{urn:...cap:1.2;}cap:sender`: keep `sender`.
fn plain_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find("}cap:") else {
            break;
        };
        out.push_str(&rest[..start]);
        rest = &rest[start + end + "}cap:".len()..];
    }
    out.push_str(rest);
    out
}

fn cap_key(sender: &str, identifier: &str) -> String {
    format!("{sender},{identifier}")
}

fn cap_time_ms(time: &oasiscap::DateTime) -> Option<i64> {
    super::decode::parse_rfc3339_ms(&time.to_string())
}

/// (lon, lat, radius in metres) of an info block's first circle, else first polygon.
fn cap_location(info: &v1dot2::Info) -> Option<(f64, f64, Option<f64>)> {
    let circle = info.areas.iter().flat_map(|a| a.circles.iter()).next();
    if let Some(c) = circle {
        let radius = (c.radius > 0.0).then_some(c.radius * 1000.0);
        return Some((c.center.longitude(), c.center.latitude(), radius));
    }
    info.areas
        .iter()
        .flat_map(|a| a.polygons.iter())
        .find_map(|polygon| {
            let ring: Vec<(f64, f64)> = polygon
                .iter()
                .map(|p| (p.longitude(), p.latitude()))
                .collect();
            let polygon = geo::Polygon::new(geo::LineString::from(ring), Vec::new());
            polygon.centroid().map(|c| (c.x(), c.y(), None))
        })
}

/// Refuses what is not a CAP document before the CAP parser gives a less clear error.
/// The root element's local name and its whole start tag, past the prologue
/// (declaration, comments); a DOCTYPE is refused.
pub fn root_element(xml: &str) -> Result<(&str, &str), AlertError> {
    let mut rest = xml.trim_start_matches('\u{feff}').trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("<?") {
            rest = skip_past(after, "?>")?;
        } else if let Some(after) = rest.strip_prefix("<!--") {
            rest = skip_past(after, "-->")?;
        } else if rest.starts_with("<!DOCTYPE") || rest.starts_with("<!doctype") {
            // CAP needs none; an internal subset declares entities, which are refused.
            return Err(AlertError::Malformed(
                "the document has a DOCTYPE: CAP messages carry none, and entity declarations are not read".into(),
            ));
        } else if let Some(after) = rest.strip_prefix("<!") {
            rest = skip_past(after, ">")?;
        } else {
            break;
        }
        rest = rest.trim_start();
    }
    if rest.is_empty() {
        return Err(AlertError::Malformed("the document is empty".into()));
    }
    let Some(tag) = rest.strip_prefix('<') else {
        let start: String = rest.chars().take(20).collect();
        return Err(AlertError::Malformed(format!(
            "expected an XML element, found {start:?}"
        )));
    };
    let end = tag
        .find('>')
        .ok_or_else(|| AlertError::Malformed("the root element's tag is not closed".into()))?;
    let tag = &tag[..end];
    let name = tag
        .split(|c: char| c.is_whitespace() || c == '/')
        .next()
        .unwrap_or("");
    let local = name.rsplit(':').next().unwrap_or(name);
    Ok((local, tag))
}

fn check_root(xml: &str) -> Result<(), AlertError> {
    let (local, tag) = root_element(xml)?;
    let name = tag
        .split(|c: char| c.is_whitespace() || c == '/')
        .next()
        .unwrap_or("");
    let namespace = CAP_NAMESPACES.iter().find(|ns| tag.contains(*ns));
    if local == "alert" && namespace.is_some() {
        return Ok(());
    }
    let declared = tag
        .split("xmlns")
        .nth(1)
        .and_then(|s| s.split(['"', '\'']).nth(1))
        .map(|ns| format!(" in namespace {ns:?}"))
        .unwrap_or_else(|| " without a namespace".into());
    Err(AlertError::NotCap {
        root: name.to_owned(),
        namespace: declared,
    })
}

/// Deepest element nesting read (real CAP is about five deep): deeper documents are
/// refused before the parser, whose time grows with the square of the depth.
pub const MAX_CAP_DEPTH: usize = 64;

/// The CAP (1.0 to 1.2) elements that hold elements only. Text directly inside one,
/// which CAP never has, sent the parser round in circles; it is refused first.
const CAP_CONTAINERS: [&str; 7] = [
    "alert",
    "info",
    "eventCode",
    "parameter",
    "resource",
    "area",
    "geocode",
];

/// Refuses, before the parser, documents nested too deep and text directly inside an
/// element that holds elements only.
fn check_structure(xml: &str) -> Result<(), AlertError> {
    let bytes = xml.as_bytes();
    // The local names of the elements open here.
    let mut open: Vec<&str> = Vec::new();
    let text_allowed = |open: &[&str], text: &str| match open.last() {
        Some(name)
            if CAP_CONTAINERS.contains(name)
                && !text
                    .bytes()
                    .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) =>
        {
            let start: String = text.trim().chars().take(20).collect();
            Err(AlertError::Malformed(format!(
                "text directly inside <{name}> ({start:?}): CAP has elements only there"
            )))
        }
        _ => Ok(()),
    };
    let mut at = 0;
    while let Some(offset) = bytes[at..].iter().position(|&b| b == b'<') {
        let start = at + offset;
        text_allowed(&open, &xml[at..start])?;
        let rest = &xml[start..];
        let skip_to = |end: &str| rest.find(end).map(|i| start + i + end.len());
        let next = if rest.starts_with("<!--") {
            skip_to("-->")
        } else if rest.starts_with("<![CDATA[") {
            let end = skip_to("]]>");
            let inside = &xml[start + "<![CDATA[".len()..end.map_or(xml.len(), |e| e - 3)];
            text_allowed(&open, inside)?;
            end
        } else if rest.starts_with("</") {
            open.pop();
            skip_to(">")
        } else if rest.starts_with("<?") || rest.starts_with("<!") {
            skip_to(">")
        } else {
            let end = skip_to(">");
            let self_closing = end.is_some_and(|e| e >= 2 && bytes[e - 2] == b'/');
            if !self_closing {
                let name = rest[1..]
                    .split(|c: char| c.is_whitespace() || c == '/' || c == '>')
                    .next()
                    .unwrap_or("");
                open.push(name.rsplit(':').next().unwrap_or(name));
                if open.len() > MAX_CAP_DEPTH {
                    return Err(AlertError::Malformed(format!(
                        "elements nested deeper than {MAX_CAP_DEPTH} (CAP is about 5 deep)"
                    )));
                }
            }
            end
        };
        match next {
            Some(next) => at = next,
            None => break,
        }
    }
    Ok(())
}

/// `xml` with any character beyond ASCII (or character reference) in `<addresses>`
/// and `<incidents>` replaced by `?`. The CAP parser splits these space-separated lists counting characters as bytes
/// and panics on anything else (found by `bench fuzz`); Zhongshu reads neither list,
/// so the rest of the message is read as sent.
fn ascii_lists(xml: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    for (start, _) in xml.match_indices('<') {
        if start < copied {
            continue;
        }
        let tag = &xml[start + 1..];
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .next()
            .unwrap_or("");
        if !matches!(name.rsplit(':').next(), Some("addresses" | "incidents")) {
            continue;
        }
        let Some(open_end) = tag.find('>').map(|i| start + 1 + i + 1) else {
            break;
        };
        let close = xml[open_end..]
            .find("</")
            .map_or(xml.len(), |i| open_end + i);
        let list = &xml[open_end..close];
        if list.is_ascii() && !list.contains("&#") {
            continue;
        }
        out.push_str(&xml[copied..open_end]);
        // Character references too: they may stand for any character.
        let mut rest = list;
        while let Some(c) = rest.chars().next() {
            let reference = rest
                .strip_prefix("&#")
                .and_then(|r| r.find(';'))
                .map(|end| end + 3);
            match reference {
                Some(len) => {
                    out.push('?');
                    rest = &rest[len..];
                }
                None => {
                    out.push(if c.is_ascii() { c } else { '?' });
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        copied = close;
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(xml);
    }
    out.push_str(&xml[copied..]);
    std::borrow::Cow::Owned(out)
}

fn skip_past<'a>(text: &'a str, end: &str) -> Result<&'a str, AlertError> {
    text.find(end)
        .map(|at| &text[at + end.len()..])
        .ok_or_else(|| AlertError::Malformed(format!("unterminated markup (no {end:?})")))
}

/// The incident kind of an event or category text: snake case (`carAccident` →
/// `car_accident`, `Flood warning` → `flood_warning`), then folded so different
/// sources name one thing alike:
///
/// | contains | kind |
/// |---|---|
/// | `flood`, `waterlog`, `inundat`, 内涝, 积水 | `waterlogging` |
/// | `wildfire`, `forest_fire`, `grass_fire`, 森林火 | `wildfire` |
/// | `accident`/`crash`/`collision` with a road word, or alone; 交通事故 | `traffic_accident` |
/// | exactly `fire`, or `building`/`structure`/`house`/`residential`/`apartment` + `fire`; 火灾 | `building_fire` |
///
/// Anything else stays in snake case; an empty text is `alert`.
pub fn incident_kind(text: &str) -> String {
    let s = snake_case(text);
    let has = |w: &str| s.contains(w);
    let any = |ws: &[&str]| ws.iter().any(|w| s.contains(w));
    if any(&["flood", "waterlog", "inundat", "内涝", "积水"]) {
        "waterlogging".into()
    } else if any(&[
        "wildfire",
        "wild_fire",
        "forest_fire",
        "grass_fire",
        "森林火",
    ]) {
        "wildfire".into()
    } else if has("交通事故")
        || (any(&["accident", "crash", "collision"])
            && (any(&[
                "car",
                "vehicle",
                "traffic",
                "road",
                "bus",
                "tram",
                "crash",
                "collision",
            ]) || s == "accident"))
    {
        "traffic_accident".into()
    } else if s == "fire"
        || has("火灾")
        || (has("fire") && any(&["building", "structure", "house", "residential", "apartment"]))
    {
        "building_fire".into()
    } else if s.is_empty() {
        "alert".into()
    } else {
        s
    }
}

fn snake_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    let mut after_lower = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && after_lower {
                out.push('_');
            }
            out.extend(c.to_lowercase());
            after_lower = c.is_lowercase() || c.is_ascii_digit();
        } else {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            after_lower = false;
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// CAP category → domain: Fire/Rescue/Safety/Security/CBRNE → safety, Met/Env/Geo →
/// ecology, Health → health, Transport → traffic, Infra → utilities, Other → urban.
pub(crate) fn domain_for_cap_category(category: v1dot2::Category) -> Domain {
    use v1dot2::Category as C;
    match category {
        C::Fire | C::Rescue | C::Safety | C::Security | C::CBRNE => Domain::Safety,
        C::Met | C::Env | C::Geo => Domain::Ecology,
        C::Health => Domain::Health,
        C::Transport => Domain::Traffic,
        C::Infra => Domain::Utilities,
        C::Other => Domain::Urban,
    }
}

/// NGSI-LD / Smart Data Models `Alert.category` (and our domain names) → domain.
pub fn domain_for_ngsi_category(category: &str) -> Option<Domain> {
    let c = category.trim().to_ascii_lowercase();
    let domain = match c.as_str() {
        "traffic" | "transport" | "transportation" | "mobility" => Domain::Traffic,
        "security" | "safety" | "fire" | "rescue" | "cbrne" => Domain::Safety,
        "weather" | "environment" | "naturaldisaster" | "met" | "env" | "geo" | "ecology"
        | "agriculture" => Domain::Ecology,
        "health" => Domain::Health,
        "utilities" | "utility" | "infra" | "infrastructure" | "energy" | "water" => {
            Domain::Utilities
        }
        "urban" | "other" => Domain::Urban,
        "economy" => Domain::Economy,
        _ => return None,
    };
    Some(domain)
}

pub fn domain_for_kind(kind: &str) -> Domain {
    match kind {
        "building_fire" => Domain::Safety,
        "traffic_accident" => Domain::Traffic,
        "waterlogging" | "wildfire" => Domain::Ecology,
        _ => Domain::Urban,
    }
}

/// CAP's severity in ours: `Unknown` counts as `Moderate`, like a missing one.
fn severity_from_cap(severity: v1dot2::Severity) -> Severity {
    match severity {
        v1dot2::Severity::Extreme => Severity::Extreme,
        v1dot2::Severity::Severe => Severity::Severe,
        v1dot2::Severity::Moderate | v1dot2::Severity::Unknown => Severity::Moderate,
        v1dot2::Severity::Minor => Severity::Minor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::config::parse_areas;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cap");
        std::fs::read(dir.join(name)).unwrap()
    }

    /// Knows Helsinki (the city) only.
    fn helsinki() -> Gazetteer {
        Gazetteer::city_only("Helsinki", 24.944, 60.171)
    }

    /// Helsinki plus the feeds file's `[[area]]` entries in `toml`.
    fn with_areas(toml: &str) -> Gazetteer {
        let mut g = helsinki();
        for area in parse_areas(toml).unwrap() {
            g.add_area(&area);
        }
        g
    }

    fn one(name: &str, places: &Gazetteer) -> (EntityUpdate, Decoded) {
        let decoded = decode_cap(&fixture(name), places).unwrap();
        assert_eq!(decoded.updates.len(), 1, "{name}: {decoded:?}");
        (decoded.updates[0].clone(), decoded)
    }

    fn description(update: &EntityUpdate) -> &str {
        match &update.kind {
            EntityKind::Alert { description, .. } => description.as_deref().unwrap_or(""),
            other => panic!("not an alert: {other:?}"),
        }
    }

    fn text<'a>(update: &'a EntityUpdate, field: &str) -> Option<&'a str> {
        update.fields.get(field).and_then(FieldValue::as_str)
    }

    #[test]
    fn a_geocode_only_alert_lands_city_wide_and_says_where_in_words() {
        let (update, decoded) = one("nws-flash-flood-watch-ugc.xml", &helsinki());
        assert!(decoded.withheld.is_empty());
        assert_eq!(update.position, Some([24.944, 60.171]));
        assert_eq!(text(&update, CITYWIDE_FIELD), Some(CITYWIDE));
        assert_eq!(
            text(&update, "areaDesc"),
            Some("Williamson; Travis; Bastrop; Hays")
        );
        let headline = description(&update);
        assert!(
            headline.contains("city-wide (Williamson; Travis; Bastrop; Hays)"),
            "{headline}"
        );
        // Nowhere to put it at all (no city): a clear error, as before.
        let err = decode_cap(
            &fixture("nws-flash-flood-watch-ugc.xml"),
            &Gazetteer::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no location"), "{err}");
    }

    #[test]
    fn the_gazetteer_locates_an_alert_by_geocode_and_by_area_name() {
        // A UGC zone the feeds file knows, as a polygon.
        let travis = with_areas(
            "[[area]]\nname = 'Travis County'\nscheme = 'UGC'\ncodes = ['TXZ192', 'TXC453']\n\
             polygon = [[-98.0, 30.0], [-97.4, 30.0], [-97.4, 30.6], [-98.0, 30.6]]\n",
        );
        let (update, _) = one("nws-flash-flood-watch-ugc.xml", &travis);
        let [lon, lat] = update.position.unwrap();
        assert!(
            (lon + 97.7).abs() < 1e-6 && (lat - 30.3).abs() < 1e-6,
            "{lon} {lat}"
        );
        assert_eq!(text(&update, CITYWIDE_FIELD), None);
        assert!(description(&update).ends_with("— Travis County"));
        // The same code under another scheme is another code.
        let other_scheme = with_areas(
            "[[area]]\nname = 'Elsewhere'\nscheme = 'FIPS6'\ncodes = ['TXZ192']\ncenter = [1.0, 2.0]\n",
        );
        let (update, _) = one("nws-flash-flood-watch-ugc.xml", &other_scheme);
        assert_eq!(text(&update, CITYWIDE_FIELD), Some(CITYWIDE));

        // A district named in a geocode (valueName "district"), known by name.
        let kallio = with_areas("[[area]]\nname = 'Kallio'\ncenter = [24.9495, 60.1841]\n");
        let (update, _) = one("geocode-district.xml", &kallio);
        assert_eq!(update.position, Some([24.9495, 60.1841]));
        assert!(
            description(&update).ends_with("— Kallio"),
            "{}",
            description(&update)
        );
        // Only an <areaDesc> ("Helsinki, Kallio district"): found by its part.
        let (update, _) = one("area-desc-only.xml", &kallio);
        assert_eq!(update.position, Some([24.9495, 60.1841]));
        // The headline already names Kallio: not named twice.
        assert_eq!(
            description(&update),
            "Water main burst in Kallio: Helsinginkatu closed to traffic"
        );
        // Unknown to the gazetteer: city-wide, with its words.
        let (update, _) = one("area-desc-only.xml", &helsinki());
        assert_eq!(text(&update, CITYWIDE_FIELD), Some(CITYWIDE));
        assert!(description(&update).contains("city-wide (Helsinki, Kallio"));
    }

    #[test]
    fn a_shape_beats_an_unknown_code_in_an_earlier_area() {
        let (update, _) = one("multi-area-mixed.xml", &helsinki());
        let [lon, lat] = update.position.unwrap();
        assert!((lon - 24.9515).abs() < 1e-4 && (lat - 60.16725).abs() < 1e-4);
        assert_eq!(text(&update, CITYWIDE_FIELD), None);
    }

    #[test]
    fn messages_in_iso_8859_1_and_gbk_read_as_they_were_written() {
        let (storm, _) = one("iso-8859-1-storm.xml", &helsinki());
        assert_eq!(
            description(&storm),
            "Storm gusts up to 25 m/s on the Helsinki coast: secure café terraces"
        );
        let (rain, _) = one("gbk-rainstorm.xml", &helsinki());
        assert_eq!(description(&rain), "暴雨蓝色预警");
        // 喆 is GBK but not GB2312: read as GBK, the superset.
        assert!(
            xml_text(&fixture("gbk-rainstorm.xml"))
                .unwrap()
                .contains("王喆")
        );
        let (typhoon, _) = one("gb2312-typhoon.xml", &helsinki());
        assert_eq!(description(&typhoon), "台风蓝色预警");
        assert_eq!(
            typhoon.fields.get("radiusM"),
            Some(&FieldValue::Number(15_000.0))
        );

        // Declared Latin-1 text whose bytes say otherwise still reads (Latin-1 has
        // no invalid bytes); declared UTF-8 with Latin-1 bytes is refused, by name.
        let latin1 = fixture("iso-8859-1-storm.xml");
        let lying = String::from_utf8_lossy(&latin1[..60]).replace("ISO-8859-1", "UTF-8");
        let mut bytes = lying.into_bytes();
        bytes.extend_from_slice(&latin1[60..]);
        let err = decode_cap(&bytes, &helsinki()).unwrap_err().to_string();
        assert!(
            err.contains("\"UTF-8\"") && err.contains("not valid"),
            "{err}"
        );
        let unknown = String::from_utf8(fixture("helsinki-flood-alert.xml"))
            .unwrap()
            .replacen("UTF-8", "X-KLINGON", 1);
        let err = decode_cap(unknown.as_bytes(), &helsinki())
            .unwrap_err()
            .to_string();
        assert!(err.contains("X-KLINGON"), "{err}");
    }

    #[test]
    fn tests_exercises_system_messages_and_drafts_are_counted_shown_never_raised() {
        for (name, why, status, shown) in [
            ("test-status.xml", "test", "Test", true),
            ("exercise-status.xml", "exercise", "Exercise", true),
            ("system-status.xml", "system", "System", true),
            ("draft-status.xml", "draft", "Draft", true),
        ] {
            let decoded = decode_cap(&fixture(name), &helsinki()).unwrap();
            assert_eq!(decoded.withheld.len(), 1, "{name}");
            assert_eq!(decoded.withheld[0].0, why, "{name}");
            assert!(decoded.withheld[0].1.contains(','), "{name}");
            assert_eq!(decoded.updates.len(), usize::from(shown), "{name}");
            for update in &decoded.updates {
                assert_eq!(text(update, STATUS_FIELD), Some(status), "{name}");
                assert_eq!(crate::dispatch::alerts::from_cap_feed(update, "cap"), None);
            }
            assert!(
                from_cap(&String::from_utf8(fixture(name)).unwrap())
                    .unwrap()
                    .is_empty()
            );
        }
        // An Actual message raises, and carries no status field.
        let (fire, decoded) = one("kallio-building-fire.xml", &helsinki());
        assert!(decoded.withheld.is_empty());
        assert_eq!(text(&fire, STATUS_FIELD), None);
        assert!(crate::dispatch::alerts::from_cap_feed(&fire, "cap").is_some());
    }

    /// `decode_cap` on a thread of its own: its answer, or `None` after 5 s.
    fn decode_within_5_s(xml: String) -> Option<Result<Decoded, String>> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(decode_cap(xml.as_bytes(), &helsinki()).map_err(|e| e.to_string()));
        });
        rx.recv_timeout(std::time::Duration::from_secs(5)).ok()
    }

    #[test]
    fn text_between_elements_is_refused_at_once() {
        // CAP has no text directly inside <alert>, <info>, <area>, ...: the parser went
        // round in circles on it (found by `bench fuzz`).
        let fire = String::from_utf8(fixture("kallio-building-fire.xml")).unwrap();
        for (before, after) in [
            ("</instruction>", "</instruction>\\ud800\\udc00"),
            ("<identifier>", "x<identifier>"),
            ("<areaDesc>", "<![CDATA[x]]><areaDesc>"),
            ("</scope>", "</scope>\u{3000}"),
            ("</polygon>", "</polygon>&amp;"),
        ] {
            let xml = fire.replacen(before, after, 1);
            assert_ne!(xml, fire);
            let err = decode_within_5_s(xml)
                .unwrap_or_else(|| panic!("{after:?}: no answer in 5 s"))
                .unwrap_err();
            assert!(err.contains("text directly inside <"), "{after:?}: {err}");
        }
        // Whitespace, comments and text inside text elements are what CAP has.
        let spaced = fire.replacen("</scope>", "</scope>\r\n\t <!-- note -->\n", 1);
        let decoded = decode_within_5_s(spaced).expect("an answer").unwrap();
        assert_eq!(decoded.updates.len(), 1);
    }

    #[test]
    fn incidents_and_addresses_in_chinese_do_not_stop_a_message() {
        // The CAP parser panicked on them (found by `bench fuzz`).
        let fire = String::from_utf8(fixture("kallio-building-fire.xml")).unwrap();
        let xml = fire.replacen(
            "<scope>Public</scope>",
            "<scope>Public</scope><addresses>\"消防 支队\" 城管 &#x4E2D;&#xD800;</addresses>\
             <incidents><![CDATA[城市大脑-火灾-0417 预警]]></incidents>",
            1,
        );
        assert_ne!(xml, fire);
        let decoded = decode_within_5_s(xml).expect("an answer").unwrap();
        assert_eq!(decoded.updates.len(), 1);
        let plain = decode_within_5_s(fire).expect("an answer").unwrap();
        assert_eq!(decoded.updates[0].id, plain.updates[0].id);
    }

    #[test]
    fn deep_nesting_a_doctype_and_utf16_without_a_bom() {
        let fire = String::from_utf8(fixture("kallio-building-fire.xml")).unwrap();
        // 100,000 nested elements in <note>: refused at once, not parsed for seconds.
        let deep = fire.replacen(
            "</sent>",
            &format!(
                "</sent><note>{}{}</note>",
                "<a>".repeat(100_000),
                "</a>".repeat(100_000)
            ),
            1,
        );
        let started = std::time::Instant::now();
        let err = decode_cap(deep.as_bytes(), &helsinki())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nested deeper than 64"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // The real message, with comments and CDATA, is not too deep.
        let with_cdata = fire.replacen(
            "</sent>",
            "</sent><!-- <a><a><a> --><note><![CDATA[<b><b><b> x < y]]></note>",
            1,
        );
        assert_eq!(
            decode_cap(with_cdata.as_bytes(), &helsinki())
                .unwrap()
                .updates
                .len(),
            1
        );
        // A DOCTYPE (entity declarations) is named, not misread.
        let doctype = fire.replacen(
            "<alert",
            "<!DOCTYPE alert [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]>\n<alert",
            1,
        );
        let err = decode_cap(doctype.as_bytes(), &helsinki())
            .unwrap_err()
            .to_string();
        assert!(err.contains("DOCTYPE"), "{err}");
        // UTF-16 (either order) declared without a byte-order mark.
        let declared = fire.replacen("UTF-8", "UTF-16", 1);
        let le: Vec<u8> = declared.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = declared.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for bytes in [le, be] {
            assert_eq!(decode_cap(&bytes, &helsinki()).unwrap().updates.len(), 1);
        }
    }

    #[test]
    fn city_wide_alerts_of_one_kind_are_not_merged_by_place() {
        use crate::dispatch::alerts::{AlertDedup, Decision, from_cap_feed};
        let (a, _) = one("nws-flash-flood-watch-ugc.xml", &helsinki());
        let mut b = a.clone();
        b.id = "another,message".into();
        let (a, b) = (
            from_cap_feed(&a, "nws").unwrap(),
            from_cap_feed(&b, "other-agency").unwrap(),
        );
        assert!(a.citywide && b.citywide);
        assert_eq!(a.area.as_deref(), Some("Williamson; Travis; Bastrop; Hays"));
        let mut dedup = AlertDedup::new();
        assert_eq!(dedup.observe(&a), Decision::New);
        assert_eq!(dedup.observe(&b), Decision::New);
    }
}
