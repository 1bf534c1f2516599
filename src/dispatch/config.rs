//! Departments (the chain of command) and playbooks, from a TOML file. The defaults
//! in `config/dispatch.toml` are embedded so the demo city dispatches out of the box.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::feeds::Domain;

/// The embedded default configuration.
pub const DEFAULT_DISPATCH_TOML: &str = include_str!("../../config/dispatch.toml");

/// The longest `escalate_after_min` accepted: 7 days.
pub const MAX_ESCALATE_AFTER_MIN: f64 = 7.0 * 24.0 * 60.0;
/// The longest playbook `deadline_min` accepted: 30 days (the book refuses later
/// deadlines too).
pub const MAX_DEADLINE_MIN: f64 = 30.0 * 24.0 * 60.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    City,
    District,
    Street,
}

/// Where a department's orders go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Recorded by hand by the dispatcher (phone, radio).
    Manual,
    /// The department simulator Zhongshu starts itself.
    Simulated,
    /// The department's order-intake base URL.
    Url(String),
    /// A department of another hall (`endpoint = "hall:NAME"`): its orders go to
    /// that hall's log over the link between halls, and their progress comes back.
    Hall(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Department {
    pub id: String,
    pub name: String,
    pub domain: Domain,
    pub level: Level,
    pub superior: Option<String>,
    pub endpoint: Endpoint,
    /// Bearer token the department uses for status reports.
    pub token: Option<String>,
    /// Unit kinds (vehicle types) the department runs.
    pub units: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlaybookOrder {
    pub department: String,
    pub instruction: String,
    pub deadline_min: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Playbook {
    pub kind: String,
    pub title: String,
    #[serde(default)]
    pub units: Vec<String>,
    pub orders: Vec<PlaybookOrder>,
}

/// A service target (`[[sla]]`): how soon orders to a department, or for incidents
/// of a kind, or both, are to be signed for and done. `zhongshu ops-report` lists
/// the orders that missed one. An order is held to the most specific target that
/// matches it: department and kind, then department, then kind, then one with
/// neither (every order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// An incident kind, whatever its spelling ([`normalise_kind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Minutes from issue to sign-for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_for_min: Option<f64>,
    /// Minutes from issue to done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_min: Option<f64>,
}

impl ServiceTarget {
    /// How closely the target names an order: 3 department and kind, 2 department,
    /// 1 kind, 0 neither; `None` when it does not match.
    fn specificity(&self, department: &str, normalised_kind: &str) -> Option<u8> {
        let department_matches = self.department.as_deref().map(|d| d == department);
        let kind_matches = self
            .kind
            .as_deref()
            .map(|k| normalise_kind(k) == normalised_kind);
        match (department_matches, kind_matches) {
            (Some(false), _) | (_, Some(false)) => None,
            (Some(true), Some(true)) => Some(3),
            (Some(true), None) => Some(2),
            (None, Some(true)) => Some(1),
            (None, None) => Some(0),
        }
    }

    /// [`ServiceTarget::sign_for_min`] in milliseconds.
    pub fn sign_for_ms(&self) -> Option<i64> {
        self.sign_for_min.map(minutes_ms)
    }

    /// [`ServiceTarget::done_min`] in milliseconds.
    pub fn done_ms(&self) -> Option<i64> {
        self.done_min.map(minutes_ms)
    }
}

fn minutes_ms(min: f64) -> i64 {
    (min.clamp(0.0, MAX_DEADLINE_MIN) * 60_000.0).round() as i64
}

#[derive(Clone, Debug, PartialEq)]
pub struct DispatchConfig {
    pub departments: Vec<Department>,
    pub playbooks: Vec<Playbook>,
    /// Minutes an overdue order may stay unsigned before it is escalated.
    pub escalate_after_min: f64,
    /// Service targets (`[[sla]]`), for the operating figures.
    pub sla: Vec<ServiceTarget>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The reason is in the message and not also a source, which an error chain
    // would print a second time.
    #[error("cannot read dispatch config {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("dispatch config {origin}: {message}")]
    Invalid { origin: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_escalate_after")]
    escalate_after_min: f64,
    #[serde(default, rename = "department")]
    departments: Vec<RawDepartment>,
    #[serde(default, rename = "playbook")]
    playbooks: Vec<Playbook>,
    #[serde(default)]
    sla: Vec<ServiceTarget>,
}

fn default_escalate_after() -> f64 {
    5.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDepartment {
    id: String,
    name: String,
    domain: Domain,
    level: Level,
    superior: Option<String>,
    endpoint: Option<String>,
    token: Option<String>,
    #[serde(default)]
    units: Vec<String>,
}

/// One spelling for a kind: "gasLeak", "gas_leak" and "Gas leak" are the same.
pub fn normalise_kind(kind: &str) -> String {
    kind.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

impl DispatchConfig {
    /// The embedded defaults.
    pub fn default_config() -> Self {
        Self::parse(DEFAULT_DISPATCH_TOML, "config/dispatch.toml (embedded)")
            .expect("the embedded dispatch config is valid")
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if !(raw.escalate_after_min.is_finite()
            && (0.0..=MAX_ESCALATE_AFTER_MIN).contains(&raw.escalate_after_min))
        {
            return Err(invalid(format!(
                "escalate_after_min must be a number of minutes from 0 to {MAX_ESCALATE_AFTER_MIN} (7 days), got {}",
                raw.escalate_after_min
            )));
        }
        let mut departments = Vec::new();
        let mut ids = HashSet::new();
        for d in raw.departments {
            if d.id.trim().is_empty() {
                return Err(invalid("a department has an empty id".into()));
            }
            if !ids.insert(d.id.clone()) {
                return Err(invalid(format!("department \"{}\" is defined twice", d.id)));
            }
            let endpoint = match d.endpoint.as_deref().map(str::trim) {
                None | Some("") | Some("manual") => Endpoint::Manual,
                Some("simulated") => Endpoint::Simulated,
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                    Endpoint::Url(url.trim_end_matches('/').to_string())
                }
                Some(hall) if hall.starts_with("hall:") => {
                    let name = hall["hall:".len()..].trim();
                    crate::nats::check_hall_name(name).map_err(|e| {
                        invalid(format!("department \"{}\": endpoint \"{hall}\": {e}", d.id))
                    })?;
                    Endpoint::Hall(name.to_string())
                }
                Some(other) => {
                    return Err(invalid(format!(
                        "department \"{}\": endpoint \"{other}\" is not an http(s) URL, \"hall:NAME\", \"simulated\" or \"manual\"",
                        d.id
                    )));
                }
            };
            let reports_itself = matches!(endpoint, Endpoint::Url(_) | Endpoint::Simulated);
            if reports_itself && d.token.as_deref().unwrap_or("").is_empty() {
                return Err(invalid(format!(
                    "department \"{}\" has an endpoint but no token for its status reports",
                    d.id
                )));
            }
            departments.push(Department {
                id: d.id,
                name: d.name,
                domain: d.domain,
                level: d.level,
                superior: d.superior,
                endpoint,
                token: d.token,
                units: d.units,
            });
        }
        let by_id: HashMap<&str, &Department> =
            departments.iter().map(|d| (d.id.as_str(), d)).collect();
        for d in &departments {
            if let Some(s) = &d.superior
                && !by_id.contains_key(s.as_str())
            {
                return Err(invalid(format!(
                    "department \"{}\": superior \"{s}\" is not a department",
                    d.id
                )));
            }
            // The chain of command must end: no department is its own superior.
            let mut seen = HashSet::new();
            let mut at = Some(d);
            while let Some(x) = at {
                if !seen.insert(x.id.as_str()) {
                    return Err(invalid(format!(
                        "department \"{}\": the chain of superiors loops",
                        d.id
                    )));
                }
                at = x.superior.as_deref().and_then(|s| by_id.get(s).copied());
            }
        }
        let mut kinds = HashSet::new();
        for p in &raw.playbooks {
            if !kinds.insert(normalise_kind(&p.kind)) {
                return Err(invalid(format!("playbook \"{}\" is defined twice", p.kind)));
            }
            if p.orders.is_empty() {
                return Err(invalid(format!("playbook \"{}\" has no orders", p.kind)));
            }
            for o in &p.orders {
                if !by_id.contains_key(o.department.as_str()) {
                    return Err(invalid(format!(
                        "playbook \"{}\": department \"{}\" is not defined",
                        p.kind, o.department
                    )));
                }
                if !(o.deadline_min.is_finite()
                    && o.deadline_min > 0.0
                    && o.deadline_min <= MAX_DEADLINE_MIN)
                {
                    return Err(invalid(format!(
                        "playbook \"{}\": deadline_min for \"{}\" must be > 0 and at most {MAX_DEADLINE_MIN} (30 days)",
                        p.kind, o.department
                    )));
                }
            }
        }
        let mut targets = HashSet::new();
        for t in &raw.sla {
            let named = match (&t.department, &t.kind) {
                (Some(d), Some(k)) => format!("department \"{d}\", kind \"{k}\""),
                (Some(d), None) => format!("department \"{d}\""),
                (None, Some(k)) => format!("kind \"{k}\""),
                (None, None) => "for every order".to_string(),
            };
            let named = format!("[[sla]] {named}");
            if let Some(d) = &t.department
                && !by_id.contains_key(d.as_str())
            {
                return Err(invalid(format!(
                    "{named}: department \"{d}\" is not defined"
                )));
            }
            if t.kind
                .as_deref()
                .is_some_and(|k| normalise_kind(k).is_empty())
            {
                return Err(invalid(format!("{named}: an empty kind")));
            }
            if t.sign_for_min.is_none() && t.done_min.is_none() {
                return Err(invalid(format!(
                    "{named}: give sign_for_min, done_min or both"
                )));
            }
            for (name, min) in [("sign_for_min", t.sign_for_min), ("done_min", t.done_min)] {
                if let Some(min) = min
                    && !(min.is_finite() && min > 0.0 && min <= MAX_DEADLINE_MIN)
                {
                    return Err(invalid(format!(
                        "{named}: {name} must be > 0 and at most {MAX_DEADLINE_MIN} (30 days), got {min}"
                    )));
                }
            }
            if let (Some(sign_for), Some(done)) = (t.sign_for_min, t.done_min)
                && sign_for > done
            {
                return Err(invalid(format!(
                    "{named}: sign_for_min ({sign_for}) is later than done_min ({done})"
                )));
            }
            let key = (t.department.clone(), t.kind.as_deref().map(normalise_kind));
            if !targets.insert(key) {
                return Err(invalid(format!("{named} is defined twice")));
            }
        }
        Ok(Self {
            departments,
            playbooks: raw.playbooks,
            escalate_after_min: raw.escalate_after_min,
            sla: raw.sla,
        })
    }

    /// The service target an order to `department` for an incident of `kind` is held
    /// to: the most specific that matches ([`ServiceTarget`]), if any.
    pub fn target_for(&self, department: &str, kind: &str) -> Option<&ServiceTarget> {
        let kind = normalise_kind(kind);
        self.sla
            .iter()
            .filter_map(|t| t.specificity(department, &kind).map(|s| (s, t)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, t)| t)
    }

    /// [`DispatchConfig::escalate_after_min`] in milliseconds (validated on load; a
    /// value set in code is clamped to the same range).
    pub fn escalate_after_ms(&self) -> i64 {
        let min = if self.escalate_after_min.is_finite() {
            self.escalate_after_min.clamp(0.0, MAX_ESCALATE_AFTER_MIN)
        } else {
            MAX_ESCALATE_AFTER_MIN
        };
        (min * 60_000.0).round() as i64
    }

    pub fn department(&self, id: &str) -> Option<&Department> {
        self.departments.iter().find(|d| d.id == id)
    }

    /// The playbook for an incident kind, whatever its spelling.
    pub fn playbook(&self, kind: &str) -> Option<&Playbook> {
        let k = normalise_kind(kind);
        self.playbooks.iter().find(|p| normalise_kind(&p.kind) == k)
    }

    /// The department a bearer token belongs to; every token is compared, digest
    /// against digest, without stopping at the first difference.
    pub fn department_for_token(&self, token: &str) -> Option<&Department> {
        let presented = crate::http::token_digest(token);
        let mut found = None;
        for d in &self.departments {
            if let Some(t) = &d.token
                && crate::http::digests_equal(&crate::http::token_digest(t), &presented)
            {
                found = Some(d);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_defaults_are_valid_and_cover_the_simulated_alerts() {
        let c = DispatchConfig::default_config();
        assert!(c.departments.len() >= 8);
        let fire = c.playbook("Building fire").expect("building fire playbook");
        let departments: Vec<_> = fire.orders.iter().map(|o| o.department.as_str()).collect();
        assert_eq!(departments, ["fire", "ems", "traffic_police", "power"]);
        for kind in [
            "gasLeak",
            "powerOutage",
            "waterOutage",
            "crowdGathering",
            "roadDamage",
            "illegalParking",
            "garbageOverflow",
            "streetLightFailure",
            "illegalConstruction",
            "waterlogging",
            "traffic_accident",
        ] {
            assert!(c.playbook(kind).is_some(), "no playbook for {kind}");
        }
        // Every chain of command ends at the emergency bureau.
        for d in &c.departments {
            let mut at = d;
            while let Some(s) = &at.superior {
                at = c.department(s).unwrap();
            }
            assert_eq!(at.id, "emergency", "{}", d.id);
        }
        assert_eq!(
            c.department("central_district").unwrap().endpoint,
            Endpoint::Manual
        );
        assert_eq!(c.department_for_token("demo-fire").unwrap().id, "fire");
    }

    #[test]
    fn a_department_of_another_hall_needs_no_token_and_a_valid_hall_name() {
        let text = |endpoint: &str| {
            format!(
                "[[department]]\nid = \"city_fire\"\nname = \"City fire\"\ndomain = \"safety\"\nlevel = \"city\"\nendpoint = \"{endpoint}\"\n"
            )
        };
        let c = DispatchConfig::parse(&text("hall:city"), "t").unwrap();
        assert_eq!(
            c.department("city_fire").unwrap().endpoint,
            Endpoint::Hall("city".into())
        );
        let e = DispatchConfig::parse(&text("hall:the city"), "t").unwrap_err();
        assert!(e.to_string().contains("hall name"), "{e}");
        let e = DispatchConfig::parse(&text("ftp://x"), "t").unwrap_err();
        assert!(e.to_string().contains("hall:NAME"), "{e}");
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let cases = [
            (
                "[[department]]\nid='a'\nname='A'\ndomain='urban'\nlevel='city'\nsuperior='b'",
                "superior \"b\" is not a department",
            ),
            (
                "[[department]]\nid='a'\nname='A'\ndomain='urban'\nlevel='city'\nsuperior='a'",
                "loops",
            ),
            (
                "[[department]]\nid='a'\nname='A'\ndomain='urban'\nlevel='city'\nendpoint='ftp://x'",
                "not an http(s) URL",
            ),
            (
                "[[department]]\nid='a'\nname='A'\ndomain='urban'\nlevel='city'\nendpoint='http://x'",
                "no token",
            ),
            (
                "[[playbook]]\nkind='fire'\ntitle='F'\norders=[{department='nobody', instruction='x', deadline_min=5}]",
                "department \"nobody\" is not defined",
            ),
            (
                "[[department]]\nid='a'\nname='A'\ndomain='urban'\nlevel='town'",
                "level",
            ),
            // Minutes that would overflow the clock's arithmetic are refused.
            ("escalate_after_min = 1e300", "escalate_after_min must be"),
            ("escalate_after_min = 20000", "7 days"),
            (
                "[[department]]\nid='a'\nname='A'\ndomain='urban'\nlevel='city'\n[[playbook]]\nkind='fire'\ntitle='F'\norders=[{department='a', instruction='x', deadline_min=1e18}]",
                "30 days",
            ),
        ];
        for (text, expected) in cases {
            let err = DispatchConfig::parse(text, "test.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
            assert!(err.contains("test.toml"), "{err}");
        }
    }

    #[test]
    fn service_targets_are_read_checked_and_the_most_specific_one_applies() {
        let text = format!(
            "{DEFAULT_DISPATCH_TOML}
[[sla]]
department = \"fire\"
sign_for_min = 5
done_min = 60

[[sla]]
department = \"fire\"
kind = \"gas leak\"
done_min = 30

[[sla]]
kind = \"waterlogging\"
sign_for_min = 10

[[sla]]
done_min = 240
"
        );
        let c = DispatchConfig::parse(&text, "sla.toml").unwrap();
        assert_eq!(c.sla.len(), 4);
        let fire = c.target_for("fire", "building_fire").unwrap();
        assert_eq!(
            (fire.sign_for_ms(), fire.done_ms()),
            (Some(300_000), Some(3_600_000))
        );
        // Department and kind wins over the department alone, whatever the spelling.
        let gas = c.target_for("fire", "gasLeak").unwrap();
        assert_eq!((gas.sign_for_ms(), gas.done_ms()), (None, Some(1_800_000)));
        assert_eq!(
            c.target_for("drainage", "Waterlogging")
                .unwrap()
                .sign_for_min,
            Some(10.0)
        );
        // The catch-all for everything else.
        assert_eq!(
            c.target_for("ems", "building_fire").unwrap().done_min,
            Some(240.0)
        );
        // The embedded defaults set none.
        assert!(
            DispatchConfig::default_config()
                .target_for("fire", "x")
                .is_none()
        );

        let fire_dept = "[[department]]\nid='fire'\nname='F'\ndomain='safety'\nlevel='city'\n";
        for (sla, expected) in [
            (
                "department='fire'\nsign_for_mins=5",
                "unknown field `sign_for_mins`",
            ),
            (
                "department='police'\nsign_for_min=5",
                "department \"police\" is not defined",
            ),
            ("department='fire'", "give sign_for_min, done_min or both"),
            (
                "department='fire'\nsign_for_min=0",
                "sign_for_min must be > 0",
            ),
            ("department='fire'\ndone_min=1e300", "30 days"),
            ("kind=' _ '\ndone_min=5", "an empty kind"),
            (
                "department='fire'\nsign_for_min=30\ndone_min=10",
                "later than done_min",
            ),
            (
                "kind='gas_leak'\ndone_min=5\n[[sla]]\nkind='Gas leak'\ndone_min=9",
                "[[sla]] kind \"Gas leak\" is defined twice",
            ),
        ] {
            let text = format!("{fire_dept}[[sla]]\n{sla}\n");
            let err = DispatchConfig::parse(&text, "sla.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{sla}: {err}");
            assert!(err.contains("sla.toml"), "{err}");
        }
    }

    #[test]
    fn kinds_match_whatever_the_spelling() {
        assert_eq!(normalise_kind("gasLeak"), normalise_kind("gas_leak"));
        assert_eq!(normalise_kind("Gas leak"), "gasleak");
    }
}
