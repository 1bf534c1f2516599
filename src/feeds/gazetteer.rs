//! Where an alert is when it names its area instead of drawing it: CAP `<geocode>`
//! codes (UGC, SAME, FIPS6, ISO 3166-2, national codes) and `<areaDesc>` names,
//! looked up in the map's districts and the feeds file's `[[area]]` table.

use std::collections::HashMap;

use geo::{Area, Centroid, LineString, Polygon};

use super::config::AreaConfig;
use crate::map::CityMap;

/// A place a name or code stands for.
#[derive(Clone, Debug, PartialEq)]
pub struct Place {
    /// How operators call it (the district's or area's name, else its code).
    pub name: String,
    /// WGS84 centre.
    pub lon: f64,
    pub lat: f64,
    /// The outline, WGS84 `[lon, lat]`, when known.
    pub ring: Option<Vec<[f64; 2]>>,
}

/// Names and codes → places, and the city itself for what only says "here".
#[derive(Clone, Debug, Default)]
pub struct Gazetteer {
    places: Vec<Place>,
    /// (scheme in lower case, code) → place; scheme `""` matches any scheme.
    by_code: HashMap<(String, String), usize>,
    /// Name folded (lower case, single spaces) → place.
    by_name: HashMap<String, usize>,
    city: Option<Place>,
}

/// Words that often follow a place's name in `<areaDesc>` and are not part of it.
const NAME_SUFFIXES: [&str; 8] = [
    " district",
    " county",
    " municipality",
    " city",
    " region",
    "区",
    "街道",
    "市",
];

impl Gazetteer {
    /// The map's named districts (matched by name), the city (its extent's centre,
    /// for alerts located nowhere more precise) and the `[[area]]` entries.
    pub fn new(map: &CityMap, areas: &[AreaConfig]) -> Gazetteer {
        let [w, s, e, n] = map.bbox_wgs84;
        let mut g = Gazetteer {
            city: (w <= e && s <= n).then(|| Place {
                name: map.name.clone(),
                lon: (w + e) / 2.0,
                lat: (s + n) / 2.0,
                ring: None,
            }),
            ..Gazetteer::default()
        };
        for district in &map.districts {
            let Some(name) = district.name.as_deref().filter(|n| !n.trim().is_empty()) else {
                continue;
            };
            // The largest ring is the district (others are exclaves or clipped bits).
            let Some(ring) = district
                .boundary
                .iter()
                .filter(|r| r.0.len() >= 3)
                .max_by(|a, b| ring_area(a).total_cmp(&ring_area(b)))
            else {
                continue;
            };
            let Some(centre) = Polygon::new(ring.clone(), Vec::new()).centroid() else {
                continue;
            };
            let [lon, lat] = map.frame.wgs84_from_local(centre.x(), centre.y());
            let outline = ring
                .0
                .iter()
                .map(|c| map.frame.wgs84_from_local(c.x, c.y))
                .collect();
            g.add(
                Place {
                    name: name.trim().to_owned(),
                    lon,
                    lat,
                    ring: Some(outline),
                },
                None,
                &[],
            );
        }
        for area in areas {
            g.add_area(area);
        }
        g
    }

    /// Adds one `[[area]]` (already validated by the feeds file's parser); a later
    /// entry with the same name or code takes its place.
    pub fn add_area(&mut self, area: &AreaConfig) {
        let (lon, lat, ring) = match (&area.polygon, area.center) {
            (Some(ring), _) => {
                let line = LineString::from(ring.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>());
                let Some(c) = Polygon::new(line, Vec::new()).centroid() else {
                    return;
                };
                (c.x(), c.y(), Some(ring.clone()))
            }
            (None, Some([lon, lat])) => (lon, lat, None),
            (None, None) => return,
        };
        let name = area
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .or_else(|| area.codes.first().cloned())
            .unwrap_or_default();
        self.add(
            Place {
                name: name.trim().to_owned(),
                lon,
                lat,
                ring,
            },
            area.scheme.as_deref(),
            &area.codes,
        );
    }

    fn add(&mut self, place: Place, scheme: Option<&str>, codes: &[String]) {
        let index = self.places.len();
        let scheme = scheme.map(fold).unwrap_or_default();
        for code in codes.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
            self.by_code
                .insert((scheme.clone(), code.to_owned()), index);
        }
        if !place.name.is_empty() {
            self.by_name.insert(fold(&place.name), index);
        }
        self.places.push(place);
    }

    /// The place of a `<geocode>`: its `valueName` (scheme) and `value`. A code listed
    /// under no scheme matches any. A `valueName` that names a level rather than a
    /// code list (`district`, `name`, `county`...) is also tried as a name.
    pub fn by_geocode(&self, scheme: &str, code: &str) -> Option<&Place> {
        let code = code.trim();
        if code.is_empty() {
            return None;
        }
        self.by_code
            .get(&(fold(scheme), code.to_owned()))
            .or_else(|| self.by_code.get(&(String::new(), code.to_owned())))
            .map(|&i| &self.places[i])
            .or_else(|| self.by_name(code))
    }

    /// The place an `<areaDesc>` names: the whole text, else the first of its parts
    /// (split at `;` and `,`) that names a known place, with or without a trailing
    /// "district", "county"... word.
    pub fn by_name(&self, words: &str) -> Option<&Place> {
        let lookup = |text: &str| {
            let folded = fold(text);
            if folded.is_empty() {
                return None;
            }
            self.by_name.get(&folded).or_else(|| {
                NAME_SUFFIXES
                    .iter()
                    .find_map(|s| folded.strip_suffix(s))
                    .and_then(|stem| self.by_name.get(stem.trim()))
            })
        };
        lookup(words)
            .or_else(|| words.split([';', ',', '，', '；', '、']).find_map(lookup))
            .map(|&i| &self.places[i])
    }

    /// The city as a whole: where an alert that says only where in words is put.
    pub fn city(&self) -> Option<&Place> {
        self.city.as_ref()
    }

    /// A gazetteer that knows nothing but the city at `lon`, `lat` (tests).
    #[cfg(test)]
    pub(crate) fn city_only(name: &str, lon: f64, lat: f64) -> Gazetteer {
        Gazetteer {
            city: Some(Place {
                name: name.to_owned(),
                lon,
                lat,
                ring: None,
            }),
            ..Gazetteer::default()
        }
    }
}

fn ring_area(ring: &LineString<f64>) -> f64 {
    Polygon::new(ring.clone(), Vec::new()).unsigned_area()
}

/// Lower case, whitespace runs as one space, trimmed.
fn fold(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}
