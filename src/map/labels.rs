//! Names on the map: which there are to show (districts, main roads, landmarks), and
//! where they fit on the screen without covering each other or the selected item.
//!
//! [`candidates`] is worked out once per map. Each frame the shell projects the
//! candidates near enough to be read ([`LabelKind::max_distance_m`]) to the screen and
//! [`place`] keeps, by priority (districts, then main roads, then landmarks; within a
//! kind the biggest first), those that fit inside the view, clear of every name kept
//! before them and of the keep-out areas (the selected building).

use std::collections::HashMap;

use geo::{Area, BoundingRect, Centroid};

use super::{CityMap, RoadClass};

/// What a name names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LabelKind {
    District,
    Road,
    Landmark,
}

impl LabelKind {
    /// Kept first when names collide: higher first.
    pub fn priority(self) -> u8 {
        match self {
            LabelKind::District => 3,
            LabelKind::Road => 2,
            LabelKind::Landmark => 1,
        }
    }

    /// Shown while the camera is at most this far from what it looks at: district
    /// names from afar, a landmark's only close enough to tell it.
    pub fn max_distance_m(self) -> f32 {
        match self {
            LabelKind::District => 20_000.0,
            LabelKind::Road => 3_000.0,
            LabelKind::Landmark => 1_600.0,
        }
    }

    /// Type height as a share of the view's height: legible from the back of a hall
    /// on a wall, as on a desk.
    pub fn size_share(self) -> f32 {
        match self {
            LabelKind::District => 0.026,
            LabelKind::Road => 0.018,
            LabelKind::Landmark => 0.017,
        }
    }
}

/// A name that may be shown.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelCandidate {
    pub text: String,
    pub kind: LabelKind,
    /// Where it is: east and north in local metres, and the height it stands at.
    pub anchor: [f64; 3],
    /// Within its kind, bigger first (area, length, height × footprint).
    pub rank: f32,
    /// For a landmark: the building's index in [`CityMap::buildings`].
    pub building: Option<usize>,
}

/// Landmarks kept as candidates at most, the biggest.
pub const MAX_LANDMARKS: usize = 4_000;

/// Road classes whose names are shown.
fn named_class(class: RoadClass) -> Option<f32> {
    Some(match class {
        RoadClass::Motorway | RoadClass::Trunk => 4.0,
        RoadClass::Primary => 3.0,
        RoadClass::Secondary => 2.0,
        RoadClass::Tertiary => 1.0,
        _ => return None,
    })
}

/// Every name there is to show on `map`: each named district once, each main road's
/// name once (on the middle of its longest piece), and the named buildings (the
/// biggest [`MAX_LANDMARKS`]).
pub fn candidates(map: &CityMap) -> Vec<LabelCandidate> {
    let mut out = Vec::new();
    for d in &map.districts {
        let Some(name) = d.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) else {
            continue;
        };
        let (mut min, mut max) = ([f64::MAX; 2], [f64::MIN; 2]);
        for c in d.boundary.iter().flat_map(|l| l.0.iter()) {
            min = [min[0].min(c.x), min[1].min(c.y)];
            max = [max[0].max(c.x), max[1].max(c.y)];
        }
        if min[0] > max[0] {
            continue;
        }
        // Bigger districts (a lower admin level) first.
        let level = f32::from(d.admin_level.unwrap_or(10));
        let area = ((max[0] - min[0]) * (max[1] - min[1])) as f32;
        out.push(LabelCandidate {
            text: name.to_string(),
            kind: LabelKind::District,
            anchor: [(min[0] + max[0]) / 2.0, (min[1] + max[1]) / 2.0, 0.0],
            rank: area / level.max(1.0),
            building: None,
        });
    }
    // A road's name once: on the middle of its longest piece, ranked by class and
    // the length of all its pieces.
    let mut roads: HashMap<&str, (f32, f64, [f64; 2])> = HashMap::new();
    for r in &map.roads {
        let (Some(name), Some(weight)) = (r.name.as_deref(), named_class(r.class)) else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let length: f64 = r
            .line
            .0
            .windows(2)
            .map(|w| (w[1] - w[0]).x.hypot((w[1] - w[0]).y))
            .sum();
        let Some(middle) = point_along(&r.line.0, length / 2.0) else {
            continue;
        };
        let entry = roads.entry(name).or_insert((0.0, 0.0, middle));
        entry.0 = entry.0.max(weight);
        if length > entry.1 {
            entry.1 = length;
            entry.2 = middle;
        }
        entry.0 += (length / 1e6) as f32; // ties: the longer road
    }
    let mut roads: Vec<_> = roads.into_iter().collect();
    roads.sort_by(|a, b| a.0.cmp(b.0));
    for (name, (rank, _, [e, n])) in roads {
        out.push(LabelCandidate {
            text: name.to_string(),
            kind: LabelKind::Road,
            anchor: [e, n, 0.0],
            rank,
            building: None,
        });
    }
    let mut landmarks: Vec<LabelCandidate> = map
        .buildings
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.is_part)
        .filter_map(|(i, b)| {
            let name = b.name.as_deref()?.trim();
            if name.is_empty() {
                return None;
            }
            let c = b.footprint.centroid()?;
            let area = b.footprint.unsigned_area();
            b.footprint.bounding_rect()?;
            Some(LabelCandidate {
                text: name.to_string(),
                kind: LabelKind::Landmark,
                anchor: [c.x(), c.y(), f64::from(b.extent.height_m)],
                rank: b.extent.height_m * (area as f32).sqrt(),
                building: Some(i),
            })
        })
        .collect();
    landmarks.sort_by(|a, b| b.rank.total_cmp(&a.rank));
    landmarks.truncate(MAX_LANDMARKS);
    out.extend(landmarks);
    out
}

/// The point `at` metres along a polyline.
fn point_along(line: &[geo::Coord<f64>], at: f64) -> Option<[f64; 2]> {
    let mut left = at;
    for w in line.windows(2) {
        let d = (w[1] - w[0]).x.hypot((w[1] - w[0]).y);
        if d >= left && d > 0.0 {
            let t = left / d;
            return Some([
                w[0].x + (w[1].x - w[0].x) * t,
                w[0].y + (w[1].y - w[0].y) * t,
            ]);
        }
        left -= d;
    }
    line.last().map(|c| [c.x, c.y])
}

/// A candidate on the screen, to place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScreenLabel {
    /// The candidate's index (in whatever list the caller keeps).
    pub index: usize,
    /// Centre of the text, pixels.
    pub centre: [f32; 2],
    /// Width and height of the text, pixels.
    pub size: [f32; 2],
    pub priority: u8,
    pub rank: f32,
}

impl ScreenLabel {
    /// `[min_x, min_y, max_x, max_y]`, grown by `margin` on every side.
    pub fn rect(&self, margin: f32) -> [f32; 4] {
        let [w, h] = [self.size[0] / 2.0 + margin, self.size[1] / 2.0 + margin];
        [
            self.centre[0] - w,
            self.centre[1] - h,
            self.centre[0] + w,
            self.centre[1] + h,
        ]
    }
}

/// The size of `text` in type `font_px` tall: CJK and other wide characters a full em,
/// the rest about half (close enough to place by; the shell draws with a halo).
pub fn text_size(text: &str, font_px: f32) -> [f32; 2] {
    let ems: f32 = text
        .chars()
        .map(|c| if (c as u32) >= 0x2E80 { 1.0 } else { 0.56 })
        .sum();
    [ems * font_px + font_px * 0.4, font_px * 1.3]
}

fn overlaps(a: [f32; 4], b: [f32; 4]) -> bool {
    a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
}

/// Grid cells of the placement's index, pixels.
const CELL_PX: f32 = 64.0;

/// Which of `labels` to show: by priority, then rank, each one wholly inside `view`
/// (`[min_x, min_y, max_x, max_y]`), `margin` pixels clear of every one kept before it,
/// and clear of `keep_out` (the selected item). Returns positions in `labels`, in the
/// order kept. Linear in the labels (a grid of kept rectangles).
pub fn place(
    labels: &[ScreenLabel],
    view: [f32; 4],
    keep_out: &[[f32; 4]],
    margin: f32,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (&labels[a], &labels[b]);
        b.priority.cmp(&a.priority).then(b.rank.total_cmp(&a.rank))
    });
    let columns = (((view[2] - view[0]) / CELL_PX).ceil() as usize).clamp(1, 1024);
    let rows = (((view[3] - view[1]) / CELL_PX).ceil() as usize).clamp(1, 1024);
    let mut grid: Vec<Vec<[f32; 4]>> = vec![Vec::new(); columns * rows];
    let cell = |x: f32, y: f32| {
        (
            (((x - view[0]) / CELL_PX) as usize).min(columns - 1),
            (((y - view[1]) / CELL_PX) as usize).min(rows - 1),
        )
    };
    let mut kept = Vec::new();
    for i in order {
        let label = &labels[i];
        let r = label.rect(0.0);
        if !(r[0] >= view[0] && r[1] >= view[1] && r[2] <= view[2] && r[3] <= view[3]) {
            continue;
        }
        if keep_out.iter().any(|k| overlaps(r, *k)) {
            continue;
        }
        let grown = label.rect(margin);
        let (c0, r0) = cell(grown[0].max(view[0]), grown[1].max(view[1]));
        let (c1, r1) = cell(grown[2].min(view[2]), grown[3].min(view[3]));
        let clear = (r0..=r1).all(|row| {
            (c0..=c1).all(|col| {
                grid[row * columns + col]
                    .iter()
                    .all(|k| !overlaps(grown, *k))
            })
        });
        if !clear {
            continue;
        }
        for row in r0..=r1 {
            for col in c0..=c1 {
                grid[row * columns + col].push(r);
            }
        }
        kept.push(i);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(index: usize, x: f32, y: f32, w: f32, priority: u8, rank: f32) -> ScreenLabel {
        ScreenLabel {
            index,
            centre: [x, y],
            size: [w, 20.0],
            priority,
            rank,
        }
    }

    #[test]
    fn names_never_overlap_and_the_more_important_wins() {
        let view = [0.0, 0.0, 800.0, 600.0];
        let labels = vec![
            label(0, 100.0, 100.0, 120.0, 1, 50.0), // a landmark
            label(1, 120.0, 105.0, 160.0, 3, 1.0),  // a district over it: wins
            label(2, 400.0, 300.0, 100.0, 2, 5.0),
            label(3, 410.0, 300.0, 100.0, 2, 9.0), // the bigger road wins
            label(4, 790.0, 300.0, 100.0, 3, 9.0), // off the edge
            label(5, 600.0, 500.0, 80.0, 1, 1.0),  // under the selection
            label(6, 700.0, 100.0, 80.0, 1, 1.0),
        ];
        let kept = place(&labels, view, &[[560.0, 460.0, 640.0, 540.0]], 4.0);
        assert_eq!(kept, vec![1, 3, 6]);
        for (n, &a) in kept.iter().enumerate() {
            for &b in &kept[n + 1..] {
                assert!(!overlaps(labels[a].rect(0.0), labels[b].rect(0.0)));
            }
        }
    }

    #[test]
    fn five_thousand_candidates_are_placed_without_overlap() {
        let view = [0.0, 0.0, 1920.0, 1080.0];
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as f32 / (1u64 << 31) as f32
        };
        let labels: Vec<ScreenLabel> = (0..5_000)
            .map(|i| {
                label(
                    i,
                    next() * 1920.0,
                    next() * 1080.0,
                    40.0 + next() * 160.0,
                    1 + (i % 3) as u8,
                    next(),
                )
            })
            .collect();
        let kept = place(&labels, view, &[], 3.0);
        assert!(kept.len() > 100, "{}", kept.len());
        let rects: Vec<[f32; 4]> = kept.iter().map(|&i| labels[i].rect(0.0)).collect();
        for (n, a) in rects.iter().enumerate() {
            for b in &rects[n + 1..] {
                assert!(!overlaps(*a, *b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn wide_characters_take_a_full_em() {
        let [cjk, _] = text_size("中山路", 20.0);
        let [latin, _] = text_size("abc", 20.0);
        assert!(cjk > latin * 1.5);
    }

    #[test]
    fn the_default_city_has_district_road_and_landmark_names_each_once() {
        let map = crate::map::load_default().unwrap();
        let all = candidates(&map);
        let count = |k: LabelKind| all.iter().filter(|c| c.kind == k).count();
        assert!(count(LabelKind::District) >= 1, "{all:?}");
        assert!(count(LabelKind::Road) >= 10);
        assert!(count(LabelKind::Landmark) >= 10);
        let mut roads: Vec<&str> = all
            .iter()
            .filter(|c| c.kind == LabelKind::Road)
            .map(|c| c.text.as_str())
            .collect();
        let n = roads.len();
        roads.sort();
        roads.dedup();
        assert_eq!(roads.len(), n, "a road's name once");
        // Every anchor is in the city.
        let [w, s, e, nn] = map.local_bounds();
        for c in &all {
            let [x, y, _] = c.anchor;
            assert!(
                x >= w - 1.0 && x <= e + 1.0 && y >= s - 1.0 && y <= nn + 1.0,
                "{c:?}"
            );
        }
    }
}
