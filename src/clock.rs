//! Time: the one reading of the system clock ([`unix_ms_now`]), the machine form of a
//! time (RFC 3339 in UTC, [`rfc3339_from_unix_ms`]) and the city's local time
//! ([`CityTime`]: its IANA time zone and the texts a person reads). Core logic never
//! reads the clock; callers pass times in (Unix milliseconds).
//!
//! Calendars, offsets and daylight-saving rules are `jiff`'s, with its bundled copy
//! of the IANA database, so a machine without `/usr/share/zoneinfo` reads the same.

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Wall-clock Unix milliseconds (the edge of the system; the core takes time as input).
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Seconds as a short age: `0.4 s`, `12 s`, `3 min`, `5 h`, `3 d`.
pub fn age_words(secs: f64) -> String {
    if secs < 10.0 {
        format!("{secs:.1} s")
    } else if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 2.0 * 3600.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 2.0 * 86_400.0 {
        format!("{:.0} h", secs / 3600.0)
    } else {
        format!("{:.0} d", secs / 86_400.0)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a Unix time in milliseconds: the machine form (JSON,
/// logs, audit), always UTC whatever the city's zone. Times beyond years ±9999 are
/// written as the nearest end of that range.
pub fn rfc3339_from_unix_ms(unix_ms: i64) -> String {
    timestamp(unix_ms)
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Unix milliseconds below this, written as a number, are taken for a mistake (Unix
/// seconds): 10^11 ms is 1973-03-03.
const SMALLEST_PLAUSIBLE_UNIX_MS: i64 = 100_000_000_000;

/// A time given by a person on the command line (`--since`, `--until`): RFC 3339 with
/// its offset (`2026-11-29T08:00:00Z`, `2026-11-29T16:00:00+08:00`) or Unix
/// milliseconds (`1795939200000`). A time without an offset is refused rather than
/// guessed at (UTC or the city's?), and so is a number that looks like Unix seconds.
pub fn parse_instant_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = text
            .parse()
            .map_err(|_| format!("{text:?} is too large for Unix milliseconds"))?;
        if ms != 0 && ms.unsigned_abs() < SMALLEST_PLAUSIBLE_UNIX_MS as u64 {
            return Err(format!(
                "{text:?} looks like Unix seconds: give Unix milliseconds ({text}000) or RFC 3339"
            ));
        }
        // Years ±9999, as every time is written: beyond, two instants would read alike.
        if Timestamp::from_millisecond(ms).is_err() {
            return Err(format!(
                "{text:?} is beyond the years -9999 to 9999 that times are written in"
            ));
        }
        return Ok(ms);
    }
    match text.parse::<Timestamp>() {
        Ok(at) => Ok(at.as_millisecond()),
        Err(_) if text.parse::<jiff::civil::DateTime>().is_ok() => Err(format!(
            "{text:?} has no offset: add Z for UTC or the city's offset (e.g. +08:00)"
        )),
        Err(e) => Err(format!(
            "{text:?} is not a time: give RFC 3339 with an offset (2026-11-29T08:00:00Z) or Unix milliseconds ({e})"
        )),
    }
}

/// The instant of a Unix time in milliseconds, held to jiff's range (years ±9999).
fn timestamp(unix_ms: i64) -> Timestamp {
    Timestamp::from_millisecond(unix_ms).unwrap_or(if unix_ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// Where the city's time zone came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneSource {
    /// `--timezone NAME`.
    Flag,
    /// Looked up from the map's position.
    Map,
    /// Nothing better was known: UTC (the reason is in [`CityTime::note`]).
    Default,
}

impl ZoneSource {
    /// `"flag"`, `"map"` or `"default"`, as `map-info` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flag => "flag",
            Self::Map => "map",
            Self::Default => "default",
        }
    }
}

/// A time zone name that the IANA database does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{name:?} is not a time zone of the IANA database (names such as Asia/Shanghai, Europe/Helsinki or UTC)"
)]
pub struct UnknownZone {
    pub name: String,
}

/// The city's time zone and where it came from: every time a person reads is written
/// in it (the clock, the desk's timelines, an entity's "observed"). Cheap to clone.
#[derive(Clone, Debug)]
pub struct CityTime {
    zone: TimeZone,
    name: String,
    source: ZoneSource,
    note: Option<String>,
}

impl CityTime {
    /// UTC, for want of anything better; `note` says why.
    pub fn utc(note: impl Into<String>) -> Self {
        Self {
            zone: TimeZone::UTC,
            name: "UTC".into(),
            source: ZoneSource::Default,
            note: Some(note.into()),
        }
    }

    /// The zone named on the command line (an IANA name, any letter case).
    pub fn from_flag(name: &str) -> Result<Self, UnknownZone> {
        // Zone names are short ("America/Argentina/ComodRivadavia" is among the
        // longest): a long argument is echoed cut, never whole.
        let unknown = || UnknownZone {
            name: match name.char_indices().nth(64) {
                Some((at, _)) => format!("{}…", &name[..at]),
                None => name.to_owned(),
            },
        };
        // jiff also reads a POSIX TZ string or a path; only a name of the database
        // is a city's zone.
        if name.is_empty() || name.starts_with(['/', ':', '.']) {
            return Err(unknown());
        }
        let zone = TimeZone::get(name).map_err(|_| unknown())?;
        Ok(Self {
            name: zone.iana_name().unwrap_or(name).to_owned(),
            zone,
            source: ZoneSource::Flag,
            note: None,
        })
    }

    /// The zone at a position (WGS84 degrees), from the zone boundaries bundled with
    /// `tzf-rs`. At sea, or where no zone is known, UTC with the reason.
    pub fn at_position(lon: f64, lat: f64) -> Self {
        let on_earth = lon.is_finite()
            && lat.is_finite()
            && (-180.0..=180.0).contains(&lon)
            && (-90.0..=90.0).contains(&lat);
        if !on_earth {
            return Self::utc(format!(
                "the map's position ({lon}, {lat}) is no place on Earth: times in UTC (give --timezone)"
            ));
        }
        let finder = tzf_rs::EmbeddedFinder::new();
        let name = finder.get_tz_name(lon, lat);
        if name.is_empty() {
            return Self::utc(format!(
                "no time zone is known at the map's position ({lon:.4}, {lat:.4}): times in UTC (give --timezone)"
            ));
        }
        // The boundaries give the open sea nautical zones (Etc/GMT-8); a hall keeps
        // its own land's time, which the sea does not tell.
        if name.starts_with("Etc/") {
            return Self::utc(format!(
                "the map's position ({lon:.4}, {lat:.4}) is at sea ({name}): times in UTC (give --timezone)"
            ));
        }
        match TimeZone::get(name) {
            Ok(zone) => Self {
                zone,
                name: name.to_owned(),
                source: ZoneSource::Map,
                note: None,
            },
            Err(_) => Self::utc(format!(
                "the map's position ({lon:.4}, {lat:.4}) is in {name}, which this build's time zone database lacks: times in UTC (give --timezone)"
            )),
        }
    }

    /// `--timezone` when given, else the zone at the map's position.
    pub fn resolve(flag: Option<Self>, lon: f64, lat: f64) -> Self {
        flag.unwrap_or_else(|| Self::at_position(lon, lat))
    }

    /// The IANA name (`Asia/Shanghai`; `UTC` by default).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn source(&self) -> ZoneSource {
        self.source
    }

    /// Why the zone is UTC by default, when it is.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// `{"name": "Asia/Shanghai", "source": "map"}`, with `"note"` when there is one.
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "name": self.name,
            "source": self.source.as_str(),
        });
        if let Some(note) = &self.note {
            json["note"] = note.as_str().into();
        }
        json
    }

    /// `2026-11-29 09:30:45 CST`: a date and time in the city, with the zone's
    /// abbreviation (or offset, where the database has none, e.g. `+04`).
    pub fn text(&self, unix_ms: i64) -> String {
        self.format(unix_ms, "%Y-%m-%d %H:%M:%S %Z")
    }

    /// `09:30:45`: the time of day in the city.
    pub fn time_of_day(&self, unix_ms: i64) -> String {
        self.format(unix_ms, "%H:%M:%S")
    }

    /// `Asia/Shanghai, UTC+08:00`: the zone and its offset at that time, with where
    /// the zone came from (a tooltip's text).
    pub fn describe(&self, unix_ms: i64) -> String {
        let offset = self.format(unix_ms, "UTC%:z");
        let from = match self.source {
            ZoneSource::Flag => "from --timezone".to_owned(),
            ZoneSource::Map => "from the map's position".to_owned(),
            ZoneSource::Default => self.note.clone().unwrap_or_else(|| "by default".into()),
        };
        format!("{}, {offset} ({from})", self.name)
    }

    fn format(&self, unix_ms: i64, format: &str) -> String {
        timestamp(unix_ms)
            .to_zoned_datetime(self.zone.clone())
            .strftime(format)
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-29T01:30:45Z.
    const NOV_29_MS: i64 = 1_795_915_845_000;

    fn zone(name: &str) -> CityTime {
        CityTime::from_flag(name).expect("a zone of the database")
    }

    #[test]
    fn a_long_unknown_zone_is_echoed_cut() {
        let long = "Europe/".to_string() + &"x".repeat(5000);
        let e = CityTime::from_flag(&long).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
        assert!(e.contains("Europe/xxx"), "{e}");
        let e = CityTime::from_flag("Mars/Olympus_Mons")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Olympus_Mons"), "{e}");
    }

    #[test]
    fn machine_output_stays_utc_rfc3339() {
        assert_eq!(
            rfc3339_from_unix_ms(1_714_557_600_123),
            "2024-05-01T10:00:00.123Z"
        );
        assert_eq!(rfc3339_from_unix_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_from_unix_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            rfc3339_from_unix_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(rfc3339_from_unix_ms(NOV_29_MS), "2026-11-29T01:30:45.000Z");
    }

    #[test]
    fn times_on_the_command_line_are_rfc3339_with_an_offset_or_unix_ms() {
        for (text, want) in [
            ("2026-11-29T01:30:45Z", NOV_29_MS),
            ("2026-11-29T09:30:45+08:00", NOV_29_MS),
            ("2026-11-29T01:30:45.250Z", NOV_29_MS + 250),
            ("1795915845000", NOV_29_MS),
            (" 1795915845000 ", NOV_29_MS),
            ("0", 0),
        ] {
            assert_eq!(parse_instant_ms(text), Ok(want), "{text}");
        }
        for (text, why) in [
            ("2026-11-29T09:30:45", "no offset"),
            ("1795915845", "Unix seconds"),
            ("yesterday", "not a time"),
            ("", "not a time"),
            ("99999999999999999999", "too large"),
        ] {
            let error = parse_instant_ms(text).expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn shanghai_reads_eight_hours_ahead() {
        let shanghai = zone("Asia/Shanghai");
        assert_eq!(shanghai.text(NOV_29_MS), "2026-11-29 09:30:45 CST");
        assert_eq!(shanghai.time_of_day(NOV_29_MS), "09:30:45");
        // Past midnight in the city, the day before in UTC.
        assert_eq!(
            shanghai.text(1_795_968_000_000),
            "2026-11-30 00:00:00 CST",
            "2026-11-29T16:00:00Z"
        );
        assert_eq!(
            shanghai.describe(NOV_29_MS),
            "Asia/Shanghai, UTC+08:00 (from --timezone)"
        );
    }

    #[test]
    fn helsinki_follows_daylight_saving_both_ways() {
        let helsinki = zone("Europe/Helsinki");
        let at = |unix_s: i64| helsinki.text(unix_s * 1000);
        // Spring forward: 03:00 EET is 04:00 EEST (2026-03-29T01:00:00Z).
        assert_eq!(at(1_774_745_999), "2026-03-29 02:59:59 EET");
        assert_eq!(at(1_774_746_000), "2026-03-29 04:00:00 EEST");
        // Fall back: 04:00 EEST is 03:00 EET again (2026-10-25T01:00:00Z).
        assert_eq!(at(1_792_889_999), "2026-10-25 03:59:59 EEST");
        assert_eq!(at(1_792_890_000), "2026-10-25 03:00:00 EET");
        assert_eq!(
            helsinki.describe(1_782_896_400_000),
            "Europe/Helsinki, UTC+03:00 (from --timezone)"
        );
        assert_eq!(
            helsinki.describe(NOV_29_MS),
            "Europe/Helsinki, UTC+02:00 (from --timezone)"
        );
    }

    #[test]
    fn utc_by_default_says_so() {
        let utc = CityTime::utc("no map");
        assert_eq!(utc.text(NOV_29_MS), "2026-11-29 01:30:45 UTC");
        assert_eq!(utc.source(), ZoneSource::Default);
        assert_eq!(utc.describe(NOV_29_MS), "UTC, UTC+00:00 (no map)");
    }

    #[test]
    fn a_flag_names_a_zone_of_the_database_or_is_refused() {
        let shanghai = zone("asia/shanghai");
        assert_eq!(shanghai.name(), "Asia/Shanghai");
        assert_eq!(shanghai.source(), ZoneSource::Flag);
        assert_eq!(zone("UTC").text(NOV_29_MS), "2026-11-29 01:30:45 UTC");
        for bad in ["Mars/Olympus_Mons", "", "CST-8", "/etc/localtime", "Asia/"] {
            let error = CityTime::from_flag(bad).expect_err(bad);
            assert_eq!(error.name, bad);
            assert!(error.to_string().contains("IANA"), "{error}");
        }
    }

    #[test]
    fn a_position_finds_its_zone() {
        // The Bund, Shanghai; Senate Square, Helsinki; Beijing; Tokyo; New York.
        let cases = [
            (121.4903, 31.2400, "Asia/Shanghai"),
            (24.9525, 60.1692, "Europe/Helsinki"),
            (116.3883, 39.9289, "Asia/Shanghai"),
            (139.6917, 35.6895, "Asia/Tokyo"),
            (-74.0060, 40.7128, "America/New_York"),
        ];
        for (lon, lat, name) in cases {
            let found = CityTime::at_position(lon, lat);
            assert_eq!(found.name(), name, "{lon},{lat}");
            assert_eq!(found.source(), ZoneSource::Map);
            assert_eq!(found.note(), None);
        }
    }

    #[test]
    fn at_sea_or_nowhere_the_city_reads_utc_with_the_reason() {
        // The middle of the Pacific; no place at all.
        for (lon, lat) in [(-140.0, 0.0), (f64::NAN, 10.0), (200.0, 10.0)] {
            let found = CityTime::at_position(lon, lat);
            assert_eq!(found.name(), "UTC", "{lon},{lat}");
            assert_eq!(found.source(), ZoneSource::Default);
            let note = found.note().expect("a reason");
            assert!(note.contains("--timezone"), "{note}");
        }
        assert!(
            CityTime::at_position(-140.0, 0.0)
                .note()
                .is_some_and(|n| n.contains("at sea")),
        );
    }

    #[test]
    fn the_flag_wins_over_the_position() {
        let chosen = CityTime::resolve(Some(zone("Asia/Shanghai")), 24.9525, 60.1692);
        assert_eq!(chosen.name(), "Asia/Shanghai");
        let found = CityTime::resolve(None, 24.9525, 60.1692);
        assert_eq!(found.name(), "Europe/Helsinki");
        assert_eq!(
            found.to_json(),
            serde_json::json!({"name": "Europe/Helsinki", "source": "map"})
        );
    }
}
