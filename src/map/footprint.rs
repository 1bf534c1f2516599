//! Footprint rules: how tall a building is, from whatever its tags say.
//!
//! Order of precedence (the usual OSM 3D-building convention):
//! `height` → `building:levels` × [`METRES_PER_LEVEL`] → a default by building type.
//! The base is `min_height`, else `building:min_level` × [`METRES_PER_LEVEL`], else 0.

use serde::Serialize;

/// Storey height used to turn level counts into metres.
pub const METRES_PER_LEVEL: f32 = 3.2;
/// No building on Earth is taller; a larger tagged height is a typo, not a skyscraper.
const MAX_PLAUSIBLE_HEIGHT_M: f32 = 1000.0;

/// Where a building's height came from, shown in the inspector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeightSource {
    /// A `height` tag.
    Tagged,
    /// `building:levels` × storey height.
    Levels,
    /// Nothing usable was tagged: a default for the building type.
    Default,
}

/// Vertical extent of a building or building part.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Extent {
    pub min_height_m: f32,
    pub height_m: f32,
    pub source: HeightSource,
}

/// Parses an OSM length such as `23.5`, `12 m`, `12m`, `12,5`, `12 metres`, `12 M`,
/// `~20`, `40 ft`, `40 feet`, `40'` or `12'6"` to metres. Returns `None` for anything
/// that is not a plausible, non-negative length.
pub fn parse_length_m(text: &str) -> Option<f32> {
    let text = text.trim();
    // "~20", "ca. 20", "approx. 20": an approximate value is still the best we have.
    let lower = text.to_ascii_lowercase();
    let text = ["~", "ca.", "ca ", "approx.", "approx ", "about "]
        .iter()
        .find_map(|p| lower.strip_prefix(p))
        .unwrap_or(&lower)
        .trim();
    // Feet and inches: 12'6"
    if let Some((feet, inches)) = text.split_once('\'')
        && let Some(inches) = inches.trim().strip_suffix('"')
    {
        let feet: f32 = feet.trim().parse().ok()?;
        let inches: f32 = inches.trim().parse().ok()?;
        return plausible((feet * 12.0 + inches) * 0.0254);
    }
    const UNITS: [(&str, f32); 10] = [
        ("metres", 1.0),
        ("meters", 1.0),
        ("metre", 1.0),
        ("meter", 1.0),
        ("feet", 0.3048),
        ("foot", 0.3048),
        ("ft", 0.3048),
        ("'", 0.3048),
        ("m", 1.0),
        ("", 1.0),
    ];
    let (number, factor) = UNITS
        .iter()
        .find_map(|(unit, f)| text.strip_suffix(unit).map(|n| (n, *f)))
        .unwrap_or((text, 1.0));
    let number = number.trim().replace(',', ".");
    let value: f32 = number.parse().ok()?;
    plausible(value * factor)
}

fn plausible(metres: f32) -> Option<f32> {
    (metres.is_finite() && (0.0..=MAX_PLAUSIBLE_HEIGHT_M).contains(&metres)).then_some(metres)
}

/// Parses a level count such as `5` or `5.5`; negative, absurd or non-numeric is `None`.
pub fn parse_levels(text: &str) -> Option<f32> {
    let value: f32 = text.trim().replace(',', ".").parse().ok()?;
    (value.is_finite() && (0.0..=300.0).contains(&value)).then_some(value)
}

/// Typical height for a building type when nothing better is tagged.
pub fn default_height_m(building_type: &str) -> f32 {
    match building_type {
        "shed" | "garage" | "garages" | "carport" | "kiosk" | "hut" | "roof" | "toilets" => 3.0,
        "house" | "detached" | "semidetached_house" | "bungalow" | "farm_auxiliary" | "cabin" => {
            7.0
        }
        "terrace" | "industrial" | "warehouse" | "retail" | "service" | "supermarket" => 9.0,
        "church" | "cathedral" | "train_station" | "transportation" | "sports_hall" => 16.0,
        "apartments" | "residential" | "dormitory" | "hotel" | "hospital" => 18.0,
        "office" | "commercial" | "government" | "public" | "civic" | "university" | "school"
        | "college" => 16.0,
        _ => 12.0,
    }
}

/// The vertical extent of a building from its tags, looked up through `tag`.
pub fn building_extent<'a>(building_type: &str, tag: impl Fn(&str) -> Option<&'a str>) -> Extent {
    let min_height_m = tag("min_height")
        .and_then(parse_length_m)
        .or_else(|| {
            tag("building:min_level")
                .and_then(parse_levels)
                .map(|l| l * METRES_PER_LEVEL)
        })
        .unwrap_or(0.0);
    let (height_m, source) = if let Some(h) = tag("height").and_then(parse_length_m) {
        (h, HeightSource::Tagged)
    } else if let Some(levels) = tag("building:levels").and_then(parse_levels) {
        // Levels count from the ground: a part starting at level 3 with 5 levels is 5 tall.
        let roof_levels = tag("roof:levels").and_then(parse_levels).unwrap_or(0.0);
        (
            (levels + roof_levels * 0.5) * METRES_PER_LEVEL,
            HeightSource::Levels,
        )
    } else {
        (
            (min_height_m + default_height_m(building_type)).max(default_height_m(building_type)),
            HeightSource::Default,
        )
    };
    // A base at or above the top is contradictory tagging; keep a visible slab rather than
    // an inverted or invisible building.
    let height_m = if height_m <= min_height_m {
        min_height_m + METRES_PER_LEVEL
    } else {
        height_m.max(0.5)
    };
    Extent {
        min_height_m,
        height_m,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(kind: &str, tags: &[(&str, &str)]) -> Extent {
        building_extent(kind, |k| {
            tags.iter().find(|(key, _)| *key == k).map(|(_, v)| *v)
        })
    }

    #[test]
    fn lengths_in_every_common_spelling() {
        assert_eq!(parse_length_m("23.5"), Some(23.5));
        assert_eq!(parse_length_m("12 m"), Some(12.0));
        assert_eq!(parse_length_m("12m"), Some(12.0));
        assert_eq!(parse_length_m(" 12,5 "), Some(12.5));
        assert!((parse_length_m("40 ft").unwrap() - 12.192).abs() < 1e-3);
        assert!((parse_length_m("40'").unwrap() - 12.192).abs() < 1e-3);
    }

    #[test]
    fn lengths_with_words_approximations_and_capitals() {
        assert_eq!(parse_length_m("~20"), Some(20.0));
        assert_eq!(parse_length_m("ca. 15"), Some(15.0));
        assert_eq!(parse_length_m("12 metres"), Some(12.0));
        assert_eq!(parse_length_m("12 meters"), Some(12.0));
        assert_eq!(parse_length_m("12 M"), Some(12.0));
        assert!((parse_length_m("40 feet").unwrap() - 12.192).abs() < 1e-3);
        assert!((parse_length_m("12'6\"").unwrap() - 3.81).abs() < 1e-3);
        assert_eq!(
            extent("yes", &[("height", "~20")]).source,
            HeightSource::Tagged
        );
    }

    #[test]
    fn implausible_lengths_are_rejected() {
        for bad in ["", "tall", "-3", "NaN", "inf", "1e9", "5000", "12 storeys"] {
            assert_eq!(parse_length_m(bad), None, "{bad}");
        }
    }

    #[test]
    fn height_tag_wins_over_levels() {
        let e = extent("yes", &[("height", "23.5"), ("building:levels", "3")]);
        assert_eq!(e.height_m, 23.5);
        assert_eq!(e.source, HeightSource::Tagged);
    }

    #[test]
    fn levels_times_storey_height() {
        let e = extent("apartments", &[("building:levels", "5")]);
        assert!((e.height_m - 16.0).abs() < 1e-4);
        assert_eq!(e.source, HeightSource::Levels);
    }

    #[test]
    fn min_height_and_min_level_lift_the_base() {
        let e = extent("yes", &[("height", "30"), ("min_height", "12 m")]);
        assert_eq!((e.min_height_m, e.height_m), (12.0, 30.0));
        let e = extent(
            "yes",
            &[("building:levels", "6"), ("building:min_level", "2")],
        );
        assert!((e.min_height_m - 6.4).abs() < 1e-4);
        assert!((e.height_m - 19.2).abs() < 1e-4);
    }

    #[test]
    fn default_by_type_when_untagged() {
        assert_eq!(extent("house", &[]).height_m, 7.0);
        assert_eq!(extent("garage", &[]).height_m, 3.0);
        assert_eq!(extent("apartments", &[]).height_m, 18.0);
        assert_eq!(extent("yes", &[]).source, HeightSource::Default);
        // A garbage height falls through to the default rather than failing the building.
        assert_eq!(extent("house", &[("height", "very")]).height_m, 7.0);
    }

    #[test]
    fn base_above_top_keeps_a_visible_slab() {
        let e = extent("yes", &[("height", "10"), ("min_height", "15")]);
        assert!(e.height_m > e.min_height_m);
    }
}
