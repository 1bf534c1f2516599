//! CAP 1.0–1.2 messages (OASIS Common Alerting Protocol) decoded into alerts and live
//! `Alert` entities, beside the NGSI-LD and GeoJSON decoders; and the words alerts of
//! every source share (incident kinds, domains of categories).

use geo::Centroid;
use oasiscap::v1dot2;

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
    #[error("CAP message {key}: no location (no <area> with a <circle> or <polygon>)")]
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

/// A feed payload of one CAP message, decoded for the feeds pipeline.
pub fn decode_cap(body: &[u8]) -> Result<Decoded, PayloadError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| PayloadError::WrongShape(format!("CAP is not UTF-8: {e}")))?;
    let alerts = from_cap(text).map_err(|e| PayloadError::WrongShape(e.to_string()))?;
    Ok(Decoded {
        updates: alerts.iter().map(to_entity_update).collect(),
        rejects: Vec::new(),
    })
}

/// The namespaces of the CAP versions `oasiscap` reads.
const CAP_NAMESPACES: [&str; 3] = [
    "urn:oasis:names:tc:emergency:cap:1.2",
    "urn:oasis:names:tc:emergency:cap:1.1",
    "http://www.incident.com/cap/1.0",
];

/// The alerts of one CAP message (1.0, 1.1 or 1.2).
///
/// One [`AlertIn`] per *message*, not per `<info>`: senders publish one `<info>` per
/// language (Finnish, Swedish, English...), which are the same alert. The English one
/// (else the first) gives kind, headline and category; severity is the highest of all;
/// the location is the first circle's centre, else the first polygon's centroid.
///
/// Gives no alerts (an empty list) for messages that must not raise incidents:
/// status other than `Actual` (exercises, tests, drafts, system messages) and message
/// types `Ack` and `Error`. An Update or Cancel takes the key of the earliest message in
/// its `<references>`, so it updates or cancels that incident instead of adding one.
pub fn from_cap(xml: &str) -> Result<Vec<AlertIn>, AlertError> {
    check_root(xml)?;
    let alert: oasiscap::Alert = xml
        .parse()
        .map_err(|e: xml_error::Error| AlertError::Malformed(plain_names(&e.to_string())))?;
    let alert = alert.into_latest();
    let own_key = cap_key(alert.sender.as_str(), alert.identifier.as_str());
    let actual = matches!(alert.status, v1dot2::Status::Actual);
    let (update, cancel) = match alert.message_type {
        v1dot2::MessageType::Alert => (false, false),
        v1dot2::MessageType::Update => (true, false),
        v1dot2::MessageType::Cancel => (true, true),
        v1dot2::MessageType::Ack | v1dot2::MessageType::Error => return Ok(Vec::new()),
    };
    if !actual {
        return Ok(Vec::new());
    }
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
            return Ok(vec![AlertIn {
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
            }]);
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
    let located = std::iter::once(info)
        .chain(alert.info.iter())
        .find_map(cap_location);
    let (lon, lat, radius_m) = match located {
        Some(place) => place,
        None if cancel => (0.0, 0.0, None),
        None => return Err(AlertError::NoLocation { key: own_key }),
    };
    let headline = info
        .headline
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .unwrap_or(info.event.trim())
        .to_owned();
    Ok(vec![AlertIn {
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
    }])
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
fn check_root(xml: &str) -> Result<(), AlertError> {
    let mut rest = xml.trim_start_matches('\u{feff}').trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("<?") {
            rest = skip_past(after, "?>")?;
        } else if let Some(after) = rest.strip_prefix("<!--") {
            rest = skip_past(after, "-->")?;
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
