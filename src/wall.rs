//! The video wall, as plain data: its layout file (screens, each a grid of tiles),
//! checked whole before any window opens so that an error names the file, the screen
//! and the tile; and what its tiles show, decided without a window: the incident a
//! hotspot tile follows, a tour's stops, the trends of the city's vital signs, and
//! when a tile's data has stopped.
//!
//! A layout file (TOML):
//!
//! ```toml
//! [[bookmark]]
//! name = "Harbour"
//! lon = 24.956
//! lat = 60.168
//! distance = 1500   # metres from the ground point
//! yaw = 30          # degrees, heading
//! pitch = 45        # degrees above the horizon
//!
//! [[screen]]
//! name = "left"
//! monitor = 0       # or a monitor's name, or position = [x, y] with size = [w, h]
//! columns = 3
//! rows = 2
//!
//! [[screen.tile]]
//! kind = "map"      # map, hotspot, kpi, incidents, orders, trends, feeds, tour
//! at = [0, 0]       # column, row of its top-left cell
//! span = [2, 2]     # columns, rows it covers
//! bookmark = "Harbour"
//! domains = ["traffic", "safety"]
//! layers = ["buildings", "roads"]
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::dispatch::book::{Book, Incident};
use crate::governance::quality::Freshness;
use crate::model::Domain;

/// Screens one wall process drives at most.
pub const MAX_SCREENS: usize = 16;
/// Columns or rows of one screen's grid at most.
pub const MAX_GRID: u32 = 12;
/// A window's side at most, pixels: the texture limit of GPUs (and of lavapipe).
pub const MAX_WINDOW_PX: u32 = 16_384;
/// Map tiles on one screen at most: each is a camera drawing the whole scene.
pub const MAX_MAP_TILES: usize = 16;
/// A tour shows each stop at least this long.
pub const MIN_TOUR_SECS: f64 = 2.0;
/// The name of the built-in view of the whole city.
pub const CITY_VIEW: &str = "city";

/// What a tile shows.
#[derive(Clone, Debug, PartialEq)]
pub enum TileKind {
    /// The 3D map from its own camera, with its own layers and sub-brains.
    Map(MapTile),
    /// The map, flown to the most urgent open incident and to each new one.
    Hotspot(MapTile),
    /// The city's vital signs (城市运行体征) in large type, with trend arrows.
    Kpi,
    /// Open incidents, most urgent first (read-only).
    Incidents,
    /// Open orders, overdue first, then by deadline (read-only).
    Orders,
    /// Vital signs and open incidents over the last hours.
    Trends,
    /// Each feed's data health: fresh, late, stale, quarantined.
    Feeds,
    /// The map cycling through stops: bookmarks, then the open incidents.
    Tour {
        map: MapTile,
        every_s: f64,
        stops: Vec<TourStop>,
    },
    /// A briefing slide's text (made by the briefing, not a layout file's kind).
    Slide {
        lines: Vec<String>,
        details: Vec<String>,
        notes: Vec<String>,
    },
    /// A presented briefing's presenter view (made by the briefing): where the talk
    /// is, the notes, what comes next.
    Presenter(Box<PresenterView>),
    /// A briefing slide's charts, one above the other (made by the briefing).
    Charts(Vec<Chart>),
}

/// A chart: a bar per name, or a value over time.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub title: String,
    pub tone: Tone,
    pub kind: ChartKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ChartKind {
    /// A bar per name, with the value's text (e.g. "83%", "12 min").
    Bars(Vec<Bar>),
    /// Values over time: (Unix ms, value), in time order, drawn over `span` (the
    /// period, Unix ms), whatever part of it has values.
    Line {
        points: Vec<(i64, f64)>,
        span: (i64, i64),
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub name: String,
    pub value: f64,
    pub text: String,
}

/// What a chart's colour says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Neutral,
    Good,
    Warn,
    Alarm,
}

/// What the presenter sees beside the slide shown.
#[derive(Clone, Debug, PartialEq)]
pub struct PresenterView {
    /// The slide shown, from 0.
    pub index: usize,
    pub count: usize,
    pub title: String,
    pub notes: Vec<String>,
    /// The next slide's title; `None` on the last.
    pub next: Option<String>,
    /// Every slide's title, in order.
    pub outline: Vec<String>,
}

impl TileKind {
    pub const NAMES: [&'static str; 8] = [
        "map",
        "hotspot",
        "kpi",
        "incidents",
        "orders",
        "trends",
        "feeds",
        "tour",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Map(_) => "map",
            Self::Hotspot(_) => "hotspot",
            Self::Kpi => "kpi",
            Self::Incidents => "incidents",
            Self::Orders => "orders",
            Self::Trends => "trends",
            Self::Feeds => "feeds",
            Self::Tour { .. } => "tour",
            Self::Slide { .. } => "slide",
            Self::Presenter(_) => "presenter",
            Self::Charts(_) => "charts",
        }
    }

    /// The map part of a tile that draws the map.
    pub fn map(&self) -> Option<&MapTile> {
        match self {
            Self::Map(m) | Self::Hotspot(m) | Self::Tour { map: m, .. } => Some(m),
            _ => None,
        }
    }

    /// The tile's heading on the wall, English and Chinese.
    pub fn heading(&self) -> &'static str {
        match self {
            Self::Map(_) => "Map 地图",
            Self::Hotspot(_) => "Hotspot 热点",
            Self::Kpi => "Vital signs 城市运行体征",
            Self::Incidents => "Incidents 事件",
            Self::Orders => "Orders 指令",
            Self::Trends => "Trends 趋势",
            Self::Feeds => "Data health 数据健康",
            Self::Tour { .. } => "Tour 巡视",
            Self::Slide { .. } => "Briefing 简报",
            Self::Presenter(_) => "Presenter 演讲者视图",
            Self::Charts(_) => "Charts 图表",
        }
    }
}

/// A map tile's camera, layers and sub-brains.
#[derive(Clone, Debug, PartialEq)]
pub struct MapTile {
    /// Where its camera looks (a hotspot or tour: when it has nothing to show).
    pub view: View,
    /// The view's name (a bookmark's), for the tile's heading.
    pub view_name: String,
    /// Base-map layers drawn (by `MapLayer` name); `None`: all.
    pub layers: Option<BTreeSet<String>>,
    /// Sub-brains whose live layers are drawn; `None`: all.
    pub domains: Option<BTreeSet<Domain>>,
    /// An incident shown ringed whatever its status (a briefing slide's).
    pub focus: Option<String>,
}

impl MapTile {
    /// The tile shows this sub-brain's live layers.
    pub fn shows_domain(&self, d: Domain) -> bool {
        self.domains.as_ref().is_none_or(|set| set.contains(&d))
    }
}

/// A camera's view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum View {
    /// The whole city, framed in the tile.
    City,
    /// Looking at a WGS84 point from `distance_m` away, heading `yaw_deg` (0: looking
    /// north), `pitch_deg` above the horizon.
    At {
        lon: f64,
        lat: f64,
        distance_m: f64,
        yaw_deg: f64,
        pitch_deg: f64,
    },
}

/// One stop of a tour.
#[derive(Clone, Debug, PartialEq)]
pub struct TourStop {
    pub name: String,
    pub view: View,
}

/// Where a screen's window goes.
#[derive(Clone, Debug, PartialEq)]
pub enum Placement {
    /// Borderless fullscreen on a monitor, by its index among the detected ones.
    MonitorIndex(usize),
    /// Borderless fullscreen on the monitor of this name.
    MonitorName(String),
    /// A borderless window at this position and size (physical pixels), e.g. one
    /// window spanning a canvas of several panels.
    Area { position: [i32; 2], size: [u32; 2] },
}

/// One tile: what, and which cells of the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    pub kind: TileKind,
    /// Column and row of the top-left cell.
    pub at: [u32; 2],
    /// Columns and rows covered.
    pub span: [u32; 2],
    /// A heading of its own (default: the kind's).
    pub title: Option<String>,
}

impl Tile {
    pub fn heading(&self) -> String {
        self.title
            .clone()
            .unwrap_or_else(|| self.kind.heading().to_string())
    }
}

/// One screen of the wall: a window, and its grid of tiles.
#[derive(Clone, Debug, PartialEq)]
pub struct Screen {
    pub name: String,
    pub placement: Placement,
    pub columns: u32,
    pub rows: u32,
    pub tiles: Vec<Tile>,
}

/// A tile's rectangle on its screen: `[x, y, width, height]` in the screen's pixels.
pub type TileRect = [f32; 4];

impl Screen {
    /// Where `tile` lies on a screen `size` pixels wide and tall, a thin gap around it.
    pub fn tile_rect(&self, tile: &Tile, size: [f32; 2]) -> TileRect {
        let gap = (size[1] * 0.004).round().max(2.0);
        let cell_w = size[0] / self.columns as f32;
        let cell_h = size[1] / self.rows as f32;
        let x = tile.at[0] as f32 * cell_w + gap * 0.5;
        let y = tile.at[1] as f32 * cell_h + gap * 0.5;
        [
            x,
            y,
            (tile.span[0] as f32 * cell_w - gap).max(1.0),
            (tile.span[1] as f32 * cell_h - gap).max(1.0),
        ]
    }
}

/// The wall: its screens, and the views its tiles may name.
#[derive(Clone, Debug, PartialEq)]
pub struct WallLayout {
    /// The file it was read from (for messages); `None`: the default layout.
    pub source: Option<PathBuf>,
    pub screens: Vec<Screen>,
    pub bookmarks: Vec<TourStop>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayout {
    #[serde(default)]
    bookmark: Vec<RawBookmark>,
    #[serde(default)]
    screen: Vec<RawScreen>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBookmark {
    name: String,
    lon: f64,
    lat: f64,
    distance: Option<f64>,
    yaw: Option<f64>,
    pitch: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawMonitor {
    Index(i64),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScreen {
    name: Option<String>,
    monitor: Option<RawMonitor>,
    position: Option<[i32; 2]>,
    size: Option<[u32; 2]>,
    #[serde(default = "default_columns")]
    columns: u32,
    #[serde(default = "default_rows")]
    rows: u32,
    #[serde(default)]
    tile: Vec<RawTile>,
}

fn default_columns() -> u32 {
    3
}
fn default_rows() -> u32 {
    2
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTile {
    kind: String,
    at: [u32; 2],
    span: Option<[u32; 2]>,
    title: Option<String>,
    bookmark: Option<String>,
    lon: Option<f64>,
    lat: Option<f64>,
    distance: Option<f64>,
    yaw: Option<f64>,
    pitch: Option<f64>,
    layers: Option<Vec<String>>,
    domains: Option<Vec<String>>,
    every_s: Option<f64>,
    stops: Option<Vec<String>>,
}

/// Base-map layers a map tile may name.
pub const LAYER_NAMES: [&str; 5] = ["buildings", "roads", "water", "green", "districts"];

const DEFAULT_DISTANCE_M: f64 = 1200.0;
const DEFAULT_PITCH_DEG: f64 = 45.0;

fn view_at(
    lon: f64,
    lat: f64,
    distance: Option<f64>,
    yaw: Option<f64>,
    pitch: Option<f64>,
) -> Result<View, String> {
    if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
        return Err(format!(
            "lon {lon}, lat {lat} is not a WGS84 position (lon −180…180, lat −90…90)"
        ));
    }
    let distance_m = distance.unwrap_or(DEFAULT_DISTANCE_M);
    if !(distance_m.is_finite() && (40.0..=500_000.0).contains(&distance_m)) {
        return Err(format!("distance {distance_m}: metres from 40 to 500000"));
    }
    let pitch_deg = pitch.unwrap_or(DEFAULT_PITCH_DEG);
    if !(pitch_deg.is_finite() && (7.0..=87.0).contains(&pitch_deg)) {
        return Err(format!(
            "pitch {pitch_deg}: degrees above the horizon from 7 to 87"
        ));
    }
    let yaw_deg = yaw.unwrap_or(0.0);
    if !yaw_deg.is_finite() {
        return Err(format!("yaw {yaw_deg}: degrees"));
    }
    Ok(View::At {
        lon,
        lat,
        distance_m,
        yaw_deg,
        pitch_deg,
    })
}

impl WallLayout {
    /// Reads and checks a layout file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("wall layout {}: {e}", path.display()))?;
        Self::parse(&text, Some(path))
    }

    /// Checks a layout's text; messages start with the file's name.
    pub fn parse(text: &str, source: Option<&Path>) -> Result<Self, String> {
        let file = source.map_or_else(|| "wall layout".to_string(), |p| p.display().to_string());
        let raw: RawLayout = toml::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        let mut bookmarks = Vec::new();
        for (i, b) in raw.bookmark.iter().enumerate() {
            let name = b.name.trim();
            if name.is_empty() || name == CITY_VIEW {
                return Err(format!(
                    "{file}: bookmark {}: a name other than \"\" and \"{CITY_VIEW}\" (the whole city)",
                    i + 1
                ));
            }
            if bookmarks.iter().any(|s: &TourStop| s.name == name) {
                return Err(format!("{file}: bookmark \"{name}\" is given twice"));
            }
            let view = view_at(b.lon, b.lat, b.distance, b.yaw, b.pitch)
                .map_err(|e| format!("{file}: bookmark \"{name}\": {e}"))?;
            bookmarks.push(TourStop {
                name: name.to_string(),
                view,
            });
        }
        if raw.screen.is_empty() {
            return Err(format!(
                "{file}: no [[screen]]: a wall needs at least one screen"
            ));
        }
        if raw.screen.len() > MAX_SCREENS {
            return Err(format!(
                "{file}: {} screens; one wall process drives at most {MAX_SCREENS}",
                raw.screen.len()
            ));
        }
        let mut screens = Vec::new();
        for (si, s) in raw.screen.iter().enumerate() {
            let name = s
                .name
                .clone()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("screen {}", si + 1));
            let at_screen = format!("{file}: screen \"{name}\"");
            if screens.iter().any(|x: &Screen| x.name == name) {
                return Err(format!("{at_screen}: the name is given to two screens"));
            }
            let placement = match (&s.monitor, s.position, s.size) {
                (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                    return Err(format!(
                        "{at_screen}: give monitor, or position with size, not both"
                    ));
                }
                (Some(RawMonitor::Index(i)), None, None) => {
                    if *i < 0 {
                        return Err(format!("{at_screen}: monitor {i}: an index from 0"));
                    }
                    Placement::MonitorIndex(*i as usize)
                }
                (Some(RawMonitor::Name(n)), None, None) => Placement::MonitorName(n.clone()),
                (None, Some(position), Some(size)) => {
                    if size[0] < 64
                        || size[1] < 64
                        || size[0] > MAX_WINDOW_PX
                        || size[1] > MAX_WINDOW_PX
                    {
                        return Err(format!(
                            "{at_screen}: size {}x{}: from 64 to {MAX_WINDOW_PX} pixels a side (the most a GPU draws in one window; give a wider canvas as several screens)",
                            size[0], size[1]
                        ));
                    }
                    Placement::Area { position, size }
                }
                (None, Some(_), None) | (None, None, Some(_)) => {
                    return Err(format!("{at_screen}: position and size go together"));
                }
                (None, None, None) => Placement::MonitorIndex(si),
            };
            for (what, n) in [("columns", s.columns), ("rows", s.rows)] {
                if n == 0 || n > MAX_GRID {
                    return Err(format!("{at_screen}: {what} {n}: from 1 to {MAX_GRID}"));
                }
            }
            let mut taken: BTreeMap<(u32, u32), usize> = BTreeMap::new();
            let mut tiles = Vec::new();
            for (ti, t) in s.tile.iter().enumerate() {
                let at_tile = format!(
                    "{at_screen}, tile {} ({} at [{}, {}])",
                    ti + 1,
                    t.kind,
                    t.at[0],
                    t.at[1]
                );
                let tile = tile_from_raw(t, &bookmarks).map_err(|e| format!("{at_tile}: {e}"))?;
                let [c, r] = tile.at;
                let [w, h] = tile.span;
                if w == 0 || h == 0 {
                    return Err(format!("{at_tile}: span [{w}, {h}]: at least one cell"));
                }
                // (In u64: a cell number near u32::MAX plus a span never wraps.)
                if c as u64 + w as u64 > s.columns as u64 || r as u64 + h as u64 > s.rows as u64 {
                    return Err(format!(
                        "{at_tile}: off the grid: it covers columns {c}–{} and rows {r}–{}; the screen has columns 0–{} and rows 0–{}",
                        c as u64 + w as u64 - 1,
                        r as u64 + h as u64 - 1,
                        s.columns - 1,
                        s.rows - 1
                    ));
                }
                for cc in c..c + w {
                    for rr in r..r + h {
                        if let Some(other) = taken.insert((cc, rr), ti) {
                            return Err(format!(
                                "{at_tile}: overlaps tile {} ({}) at cell [{cc}, {rr}]",
                                other + 1,
                                s.tile[other].kind
                            ));
                        }
                    }
                }
                tiles.push(tile);
            }
            if tiles.is_empty() {
                return Err(format!("{at_screen}: no [[screen.tile]]"));
            }
            let maps = tiles.iter().filter(|t| t.kind.map().is_some()).count();
            if maps > MAX_MAP_TILES {
                return Err(format!(
                    "{at_screen}: {maps} map tiles; a screen draws at most {MAX_MAP_TILES} (each is a camera drawing the whole city)"
                ));
            }
            screens.push(Screen {
                name,
                placement,
                columns: s.columns,
                rows: s.rows,
                tiles,
            });
        }
        Ok(Self {
            source: source.map(Path::to_path_buf),
            screens,
            bookmarks,
        })
    }

    /// The wall without a layout file: one screen per monitor (at least one). The
    /// first shows the city with the vital signs and the incidents beside it; a
    /// second, the hotspot, the orders, the trends and the data health; more, tours.
    pub fn default_for(monitors: usize) -> Self {
        let city = |domains: Option<BTreeSet<Domain>>| MapTile {
            view: View::City,
            view_name: CITY_VIEW.into(),
            layers: None,
            domains,
            focus: None,
        };
        let tile = |kind, at, span| Tile {
            kind,
            at,
            span,
            title: None,
        };
        let mut screens = vec![Screen {
            name: "main".into(),
            placement: Placement::MonitorIndex(0),
            columns: 3,
            rows: 3,
            tiles: vec![
                tile(TileKind::Map(city(None)), [0, 0], [2, 3]),
                tile(TileKind::Kpi, [2, 0], [1, 1]),
                tile(TileKind::Incidents, [2, 1], [1, 2]),
            ],
        }];
        if monitors >= 2 {
            screens.push(Screen {
                name: "operations".into(),
                placement: Placement::MonitorIndex(1),
                columns: 3,
                rows: 2,
                tiles: vec![
                    tile(TileKind::Hotspot(city(None)), [0, 0], [2, 1]),
                    tile(TileKind::Orders, [2, 0], [1, 2]),
                    tile(TileKind::Trends, [0, 1], [1, 1]),
                    tile(TileKind::Feeds, [1, 1], [1, 1]),
                ],
            });
        }
        for i in 2..monitors.min(MAX_SCREENS) {
            screens.push(Screen {
                name: format!("tour {}", i - 1),
                placement: Placement::MonitorIndex(i),
                columns: 1,
                rows: 1,
                tiles: vec![tile(
                    TileKind::Tour {
                        map: city(None),
                        every_s: 20.0,
                        stops: Vec::new(),
                    },
                    [0, 0],
                    [1, 1],
                )],
            });
        }
        Self {
            source: None,
            screens,
            bookmarks: Vec::new(),
        }
    }

    /// Where the layout came from, for messages.
    pub fn describe(&self) -> String {
        match &self.source {
            Some(p) => p.display().to_string(),
            None => "the default layout".into(),
        }
    }
}

fn tile_from_raw(t: &RawTile, bookmarks: &[TourStop]) -> Result<Tile, String> {
    let kind = t.kind.trim();
    if !TileKind::NAMES.contains(&kind) {
        return Err(format!(
            "unknown kind \"{kind}\"; a tile is one of {}",
            TileKind::NAMES.join(", ")
        ));
    }
    let is_map = matches!(kind, "map" | "hotspot" | "tour");
    let mut given = Vec::new();
    for (name, set) in [
        ("bookmark", t.bookmark.is_some()),
        ("lon", t.lon.is_some()),
        ("lat", t.lat.is_some()),
        ("distance", t.distance.is_some()),
        ("yaw", t.yaw.is_some()),
        ("pitch", t.pitch.is_some()),
        ("layers", t.layers.is_some()),
        ("domains", t.domains.is_some()),
    ] {
        if set {
            given.push(name);
        }
    }
    if !is_map && let Some(first) = given.first() {
        return Err(format!(
            "`{first}` is for the map tiles (map, hotspot, tour), not a {kind} tile"
        ));
    }
    if kind != "tour" {
        for (name, set) in [
            ("every_s", t.every_s.is_some()),
            ("stops", t.stops.is_some()),
        ] {
            if set {
                return Err(format!("`{name}` is for a tour tile, not a {kind} tile"));
            }
        }
    }
    let find = |name: &str| -> Result<TourStop, String> {
        if name == CITY_VIEW {
            return Ok(TourStop {
                name: CITY_VIEW.into(),
                view: View::City,
            });
        }
        bookmarks
            .iter()
            .find(|b| b.name == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = std::iter::once(CITY_VIEW)
                    .chain(bookmarks.iter().map(|b| b.name.as_str()))
                    .collect();
                format!(
                    "unknown bookmark \"{name}\"; the layout's bookmarks are {}",
                    known.join(", ")
                )
            })
    };
    let tile = |kind| Tile {
        kind,
        at: t.at,
        span: t.span.unwrap_or([1, 1]),
        title: t.title.clone().filter(|s| !s.trim().is_empty()),
    };
    if !is_map {
        return Ok(tile(match kind {
            "kpi" => TileKind::Kpi,
            "incidents" => TileKind::Incidents,
            "orders" => TileKind::Orders,
            "trends" => TileKind::Trends,
            _ => TileKind::Feeds,
        }));
    }
    let (view, view_name) = match (&t.bookmark, t.lon, t.lat) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err("give a bookmark or lon and lat, not both".into());
        }
        (Some(name), None, None) => {
            if t.distance.is_some() || t.yaw.is_some() || t.pitch.is_some() {
                return Err(
                    "distance, yaw and pitch go with lon and lat; a bookmark has its own".into(),
                );
            }
            let stop = find(name.trim())?;
            (stop.view, stop.name)
        }
        (None, Some(lon), Some(lat)) => (
            view_at(lon, lat, t.distance, t.yaw, t.pitch)?,
            format!("{lat:.4}, {lon:.4}"),
        ),
        (None, Some(_), None) | (None, None, Some(_)) => {
            return Err("lon and lat go together".into());
        }
        (None, None, None) => {
            if t.distance.is_some() || t.yaw.is_some() || t.pitch.is_some() {
                return Err("distance, yaw and pitch go with lon and lat".into());
            }
            (View::City, CITY_VIEW.to_string())
        }
    };
    let layers = match &t.layers {
        None => None,
        Some(list) => {
            let mut set = BTreeSet::new();
            for l in list {
                let l = l.trim().to_ascii_lowercase();
                if !LAYER_NAMES.contains(&l.as_str()) {
                    return Err(format!(
                        "unknown layer \"{l}\"; layers are {}",
                        LAYER_NAMES.join(", ")
                    ));
                }
                set.insert(l);
            }
            Some(set)
        }
    };
    let domains = match &t.domains {
        None => None,
        Some(list) => {
            let mut set = BTreeSet::new();
            for d in list {
                let name = d.trim().to_ascii_lowercase();
                let Some(domain) = Domain::ALL.into_iter().find(|x| x.as_str() == name) else {
                    let names: Vec<&str> = Domain::ALL.iter().map(|d| d.as_str()).collect();
                    return Err(format!(
                        "unknown sub-brain \"{name}\"; domains are {}",
                        names.join(", ")
                    ));
                };
                set.insert(domain);
            }
            Some(set)
        }
    };
    let map = MapTile {
        view,
        view_name,
        layers,
        domains,
        focus: None,
    };
    Ok(tile(match kind {
        "map" => TileKind::Map(map),
        "hotspot" => TileKind::Hotspot(map),
        _ => {
            let every_s = t.every_s.unwrap_or(20.0);
            if !(every_s.is_finite() && every_s >= MIN_TOUR_SECS) {
                return Err(format!(
                    "every_s {every_s}: a stop shows at least {MIN_TOUR_SECS} s"
                ));
            }
            let stops = match &t.stops {
                Some(names) => names
                    .iter()
                    .map(|n| find(n.trim()))
                    .collect::<Result<Vec<_>, _>>()?,
                None => bookmarks.to_vec(),
            };
            TileKind::Tour {
                map,
                every_s,
                stops,
            }
        }
    }))
}

/// Watches a layout file and reads it again when it changes.
pub struct LayoutWatch {
    pub path: PathBuf,
    stamp: Option<(std::time::SystemTime, u64)>,
}

impl LayoutWatch {
    /// A watch of `path`, whose current version is the one already loaded.
    pub fn new(path: PathBuf) -> Self {
        let stamp = Self::stamp_of(&path);
        Self { path, stamp }
    }

    fn stamp_of(path: &Path) -> Option<(std::time::SystemTime, u64)> {
        let m = std::fs::metadata(path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    /// The layout again when the file changed since the last look: `Ok` to apply,
    /// `Err` to say (the wall keeps the layout it has).
    pub fn changed(&mut self) -> Option<Result<WallLayout, String>> {
        let stamp = Self::stamp_of(&self.path);
        if stamp == self.stamp {
            return None;
        }
        self.stamp = stamp;
        Some(WallLayout::load(&self.path))
    }
}

/// Most urgent first: extreme before minor, then the newest.
pub fn urgency_order(a: &Incident, b: &Incident) -> std::cmp::Ordering {
    b.severity
        .cmp(&a.severity)
        .then(b.reported_ms.cmp(&a.reported_ms))
        .then(a.id.cmp(&b.id))
}

/// Open incidents, most urgent first.
pub fn open_incidents(book: &Book) -> Vec<&Incident> {
    let mut open: Vec<&Incident> = book.incidents.iter().filter(|i| i.is_open()).collect();
    open.sort_by(|a, b| urgency_order(a, b));
    open
}

/// Past its deadline at `now_ms` and not finished (whether or not the deadline clock
/// has marked it yet).
pub fn is_overdue(o: &crate::dispatch::book::Order, now_ms: i64) -> bool {
    o.status.is_open() && (o.overdue_ms.is_some() || o.deadline_ms < now_ms)
}

/// Open orders at `now_ms`, overdue first, then by deadline.
pub fn open_orders(book: &Book, now_ms: i64) -> Vec<&crate::dispatch::book::Order> {
    let mut open: Vec<_> = book.orders.iter().filter(|o| o.status.is_open()).collect();
    open.sort_by(|a, b| {
        let key = |o: &crate::dispatch::book::Order| (!is_overdue(o, now_ms), o.deadline_ms);
        key(a).cmp(&key(b)).then(a.id.cmp(&b.id))
    });
    open
}

/// What a hotspot tile follows: the most urgent open incident, and each new one as it
/// is raised (a new incident is shown even when an older one is more severe, for as
/// long as it is the newest one raised).
#[derive(Debug, Default)]
pub struct HotspotFollower {
    seen: BTreeSet<String>,
    /// The incident shown.
    pub current: Option<String>,
    started: bool,
}

impl HotspotFollower {
    /// The incident to show now, given the book; `None`: no open incident.
    pub fn follow<'a>(&mut self, book: &'a Book) -> Option<&'a Incident> {
        let open = open_incidents(book);
        // Incidents open when the wall started are not "new".
        let fresh: Vec<&Incident> = if self.started {
            open.iter()
                .filter(|i| !self.seen.contains(&i.id))
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        self.started = true;
        for i in &open {
            self.seen.insert(i.id.clone());
        }
        let newest = fresh
            .iter()
            .max_by_key(|i| (i.reported_ms, i.severity))
            .copied();
        let pick = match newest {
            Some(n) => Some(n),
            None => self
                .current
                .as_ref()
                .and_then(|id| open.iter().find(|i| &i.id == id).copied())
                .or_else(|| open.first().copied()),
        };
        self.current = pick.map(|i| i.id.clone());
        pick
    }
}

/// The stops a tour shows: its own stops, then the open incidents, most urgent first.
pub fn tour_stops(stops: &[TourStop], book: Option<&Book>, distance_m: f64) -> Vec<TourStop> {
    let mut all = stops.to_vec();
    if let Some(book) = book {
        for i in open_incidents(book).into_iter().take(20) {
            all.push(TourStop {
                name: format!("{} · {}", i.id, i.title),
                view: View::At {
                    lon: i.lon,
                    lat: i.lat,
                    distance_m,
                    yaw_deg: 20.0,
                    pitch_deg: 50.0,
                },
            });
        }
    }
    if all.is_empty() {
        all.push(TourStop {
            name: CITY_VIEW.into(),
            view: View::City,
        });
    }
    all
}

/// The stop a tour shows at `now_ms`, each for `every_s`: the same on every screen
/// and after a restart.
pub fn tour_index(now_ms: i64, every_s: f64, stops: usize) -> usize {
    if stops == 0 {
        return 0;
    }
    let step = (every_s * 1000.0).max(1.0) as i64;
    (now_ms.div_euclid(step) as usize) % stops
}

/// Which way a vital sign went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trend {
    Up,
    Down,
    Flat,
}

impl Trend {
    pub fn arrow(self) -> &'static str {
        match self {
            Self::Up => "▲",
            Self::Down => "▼",
            Self::Flat => "▶",
        }
    }
}

/// The vital signs a wall keeps over time.
pub const SIGNS: [&str; 6] = [
    "road_speed_kmh",
    "congestion_pct",
    "mean_aqi",
    "open_alerts",
    "hospital_load_pct",
    "units",
];

/// The value of each of [`SIGNS`] in figures (`NaN` when unknown).
fn sign_values(k: &crate::state::kpi::CityKpis) -> [f64; 6] {
    let v = |x: Option<f64>| x.unwrap_or(f64::NAN);
    [
        v(k.mean_road_speed_kmh),
        v(k.congestion_index.map(|c| c * 100.0)),
        v(k.mean_aqi),
        k.open_alerts as f64,
        v(k.hospital_load.map(|h| h * 100.0)),
        k.vehicles as f64,
    ]
}

/// Vital signs sampled over the last hours, for trend arrows and charts.
#[derive(Debug, Default)]
pub struct SignHistory {
    /// (Unix ms, one value per [`SIGNS`], `NaN` when unknown).
    samples: VecDeque<(i64, [f64; 6])>,
}

/// A sample at most this often.
pub const SAMPLE_EVERY_MS: i64 = 10_000;
/// Kept this long.
pub const KEEP_MS: i64 = 4 * 3_600_000;
/// A trend compares with the value this long before.
pub const TREND_OVER_MS: i64 = 10 * 60_000;

impl SignHistory {
    /// Takes a sample at `at_ms` (once per [`SAMPLE_EVERY_MS`]); true when taken.
    pub fn sample(&mut self, at_ms: i64, k: &crate::state::kpi::CityKpis) -> bool {
        if let Some((last, _)) = self.samples.back()
            && at_ms - last < SAMPLE_EVERY_MS
            && at_ms >= *last
        {
            return false;
        }
        // A clock set back starts the record again.
        if self.samples.back().is_some_and(|(last, _)| at_ms < *last) {
            self.samples.clear();
        }
        self.samples.push_back((at_ms, sign_values(k)));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at_ms - t > KEEP_MS)
        {
            self.samples.pop_front();
        }
        true
    }

    /// Samples from before the wall started (read from the recorded history, in time
    /// order) put ahead of those taken since: only those older than the first taken,
    /// within [`KEEP_MS`] of the newest. Returns how many were put in.
    pub fn seed(&mut self, past: &[(i64, crate::state::kpi::CityKpis)]) -> usize {
        let newest = self.samples.back().map(|(t, _)| *t);
        let Some(newest) = newest.or(past.last().map(|(t, _)| *t)) else {
            return 0;
        };
        let mut put = 0;
        for (at_ms, k) in past.iter().rev() {
            // Newest first, each before the front: older than all there is.
            if self.samples.front().is_some_and(|(t, _)| *at_ms >= *t) || newest - at_ms > KEEP_MS {
                continue;
            }
            self.samples.push_front((*at_ms, sign_values(k)));
            put += 1;
        }
        put
    }

    /// The series of sign `i` (of [`SIGNS`]): (Unix ms, value), unknowns left out.
    pub fn series(&self, i: usize) -> Vec<(i64, f64)> {
        self.samples
            .iter()
            .filter(|(_, v)| v[i].is_finite())
            .map(|(t, v)| (*t, v[i]))
            .collect()
    }

    /// How sign `i` went over the last [`TREND_OVER_MS`] (from the oldest sample in
    /// that span): a change under 2 % (or under one unit of a count) is flat.
    pub fn trend(&self, i: usize) -> Option<Trend> {
        // None when the sign is not known now (an arrow beside "—" would say
        // nothing true).
        if !self.samples.back()?.1[i].is_finite() {
            return None;
        }
        let series = self.series(i);
        let (t_last, last) = *series.last()?;
        let (_, before) = *series.iter().find(|(t, _)| t_last - t <= TREND_OVER_MS)?;
        let threshold = (before.abs() * 0.02).max(if i == 3 || i == 5 { 0.5 } else { 1e-9 });
        Some(if last - before > threshold {
            Trend::Up
        } else if before - last > threshold {
            Trend::Down
        } else {
            Trend::Flat
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// A screen made by the program (the default layout, a slide) checked as a layout
/// file is: every tile on the grid, none overlapping.
pub fn check_screen(screen: &Screen) -> Result<(), String> {
    let mut taken = BTreeSet::new();
    for (k, t) in screen.tiles.iter().enumerate() {
        let [c, r] = t.at;
        let [w, h] = t.span;
        if w == 0
            || h == 0
            || c as u64 + w as u64 > screen.columns as u64
            || r as u64 + h as u64 > screen.rows as u64
        {
            return Err(format!("{}: tile {} is off the grid", screen.name, k + 1));
        }
        for cc in c..c + w {
            for rr in r..r + h {
                if !taken.insert((cc, rr)) {
                    return Err(format!(
                        "{}: tile {} overlaps another at [{cc}, {rr}]",
                        screen.name,
                        k + 1
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Open incidents at each of `at_ms`, from the book (raised by then, not yet finished).
pub fn open_incidents_at(book: &Book, at_ms: &[i64]) -> Vec<usize> {
    at_ms
        .iter()
        .map(|&t| {
            book.incidents
                .iter()
                .filter(|i| i.reported_ms <= t && i.finished_ms.is_none_or(|f| f > t))
                .count()
        })
        .collect()
}

/// One feed's state, as a tile judges its data.
#[derive(Clone, Debug)]
pub struct FeedState {
    pub name: String,
    pub domain: Domain,
    pub freshness: Freshness,
    /// Age of its newest data, seconds.
    pub data_age_s: Option<f64>,
    pub quarantined: bool,
    /// It has polled and failed, and never had data: stopped, not still to come.
    pub failing: bool,
}

/// What the tiles' data is, for their banners.
#[derive(Clone, Debug, Default)]
pub struct DataState {
    pub feeds: Vec<FeedState>,
    /// Seconds since the dispatch log was last read; `None`: never read.
    pub book_age_s: Option<f64>,
    /// Why the dispatch log cannot be read.
    pub book_trouble: Option<String>,
    /// Seconds since the wall started: no banner for data not yet come.
    pub uptime_s: f64,
}

/// A tile's data is missing this long after start before it says so.
pub const GRACE_S: f64 = 20.0;
/// The dispatch log not read again for this long is stale (it is read every 2 s).
pub const BOOK_STALE_S: f64 = 15.0;

/// The banner a tile shows when its data has stopped: `None` while it flows.
pub fn tile_banner(kind: &TileKind, data: &DataState) -> Option<String> {
    let book = || -> Option<String> {
        if let Some(why) = &data.book_trouble {
            // A log that fails its check is not a lost connection.
            let failed_check = ["chain", "seal", "witness", "tamper"]
                .iter()
                .any(|w| why.contains(w));
            return Some(if failed_check {
                format!("LOG FAILED ITS CHECK 日志校验未通过 · {why}")
            } else {
                format!("DISCONNECTED 连接中断 · dispatch log: {why}")
            });
        }
        match data.book_age_s {
            None if data.uptime_s >= GRACE_S => {
                Some("NO DATA 无数据 · the dispatch log has not been read".into())
            }
            Some(age) if age >= BOOK_STALE_S => Some(format!(
                "STALE 数据过期 · dispatch log last read {} ago",
                crate::clock::age_words(age)
            )),
            _ => None,
        }
    };
    let feeds = |domains: Option<&BTreeSet<Domain>>| -> Option<String> {
        let relevant: Vec<&FeedState> = data
            .feeds
            .iter()
            .filter(|f| domains.is_none_or(|d| d.contains(&f.domain)))
            .collect();
        if relevant.is_empty() {
            // A tile of sub-brains no feed reports: it would stay empty unexplained.
            return match domains {
                Some(d) if !data.feeds.is_empty() => {
                    let names: Vec<&str> = d.iter().map(|d| d.as_str()).collect();
                    Some(format!(
                        "NO FEED 无数据源 · no feed reports {}",
                        names.join(", ")
                    ))
                }
                _ => None,
            };
        }
        // A feed with nothing yet is stopped once it failed, or after the grace.
        let stopped = |f: &&FeedState| match f.freshness {
            _ if f.quarantined => true,
            Freshness::Stale => true,
            Freshness::Never => f.failing || data.uptime_s >= GRACE_S,
            Freshness::Fresh | Freshness::Late => false,
        };
        if !relevant.iter().all(stopped) {
            return None;
        }
        let newest = relevant
            .iter()
            .filter_map(|f| f.data_age_s)
            .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.min(a))));
        let names: Vec<&str> = relevant.iter().map(|f| f.name.as_str()).take(3).collect();
        let more = relevant.len().saturating_sub(3);
        let names = if more > 0 {
            format!("{} and {more} more", names.join(", "))
        } else {
            names.join(", ")
        };
        Some(match newest {
            Some(age) => format!(
                "STALE 数据过期 · {names}: newest data {} old",
                crate::clock::age_words(age)
            ),
            None => format!("NO DATA 无数据 · {names}: nothing received"),
        })
    };
    match kind {
        TileKind::Map(m) => feeds(m.domains.as_ref()),
        TileKind::Hotspot(m) | TileKind::Tour { map: m, .. } => {
            book().or_else(|| feeds(m.domains.as_ref()))
        }
        TileKind::Kpi | TileKind::Trends => feeds(None),
        TileKind::Incidents | TileKind::Orders => book(),
        // The data health shows every feed's state itself; a slide is of the record.
        TileKind::Feeds | TileKind::Slide { .. } | TileKind::Presenter(_) | TileKind::Charts(_) => {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::book::{Book, Incident};
    use crate::dispatch::config::DispatchConfig;

    const TWO_SCREENS: &str = r#"
[[bookmark]]
name = "Harbour"
lon = 24.956
lat = 60.168
distance = 1500
yaw = 30
pitch = 45

[[screen]]
name = "left"
columns = 3
rows = 2

[[screen.tile]]
kind = "map"
at = [0, 0]
span = [2, 2]
bookmark = "Harbour"
domains = ["traffic", "safety"]

[[screen.tile]]
kind = "kpi"
at = [2, 0]

[[screen.tile]]
kind = "incidents"
at = [2, 1]

[[screen]]
name = "right"
monitor = "HDMI-2"
columns = 2
rows = 2

[[screen.tile]]
kind = "hotspot"
at = [0, 0]

[[screen.tile]]
kind = "orders"
at = [1, 0]
span = [1, 2]

[[screen.tile]]
kind = "feeds"
at = [0, 1]
"#;

    fn parse(text: &str) -> Result<WallLayout, String> {
        WallLayout::parse(text, Some(Path::new("hall.toml")))
    }

    #[test]
    fn a_two_screen_layout_reads_with_its_tiles_views_and_filters() {
        let wall = parse(TWO_SCREENS).unwrap();
        assert_eq!(wall.screens.len(), 2);
        let left = &wall.screens[0];
        assert_eq!(left.placement, Placement::MonitorIndex(0));
        assert_eq!(left.tiles.len(), 3);
        let TileKind::Map(map) = &left.tiles[0].kind else {
            panic!("{:?}", left.tiles[0].kind)
        };
        assert_eq!(map.view_name, "Harbour");
        assert!(
            matches!(map.view, View::At { distance_m, yaw_deg, .. } if distance_m == 1500.0 && yaw_deg == 30.0)
        );
        assert!(map.shows_domain(Domain::Safety) && !map.shows_domain(Domain::Ecology));
        assert_eq!(left.tiles[0].span, [2, 2]);
        assert_eq!(
            wall.screens[1].placement,
            Placement::MonitorName("HDMI-2".into())
        );
        assert_eq!(
            wall.screens[1]
                .tiles
                .iter()
                .map(|t| t.kind.name())
                .collect::<Vec<_>>(),
            ["hotspot", "orders", "feeds"]
        );
        // Six tiles over two screens; the tiles' rectangles stay on their screen and
        // never overlap.
        let size = [1920.0, 1080.0];
        for s in &wall.screens {
            let rects: Vec<TileRect> = s.tiles.iter().map(|t| s.tile_rect(t, size)).collect();
            for (i, a) in rects.iter().enumerate() {
                assert!(a[0] >= 0.0 && a[1] >= 0.0);
                assert!(a[0] + a[2] <= size[0] && a[1] + a[3] <= size[1], "{a:?}");
                for b in &rects[i + 1..] {
                    let apart = a[0] + a[2] <= b[0]
                        || b[0] + b[2] <= a[0]
                        || a[1] + a[3] <= b[1]
                        || b[1] + b[3] <= a[1];
                    assert!(apart, "{a:?} {b:?}");
                }
            }
        }
    }

    #[test]
    fn layout_errors_name_the_file_the_screen_and_the_tile() {
        let cases: [(&str, &str, &[&str]); 8] = [
            (
                "kind = \"kpi\"",
                "kind = \"kpis\"",
                &[
                    "hall.toml",
                    "screen \"left\"",
                    "tile 2",
                    "unknown kind \"kpis\"",
                ],
            ),
            (
                "kind = \"incidents\"\nat = [2, 1]",
                "kind = \"incidents\"\nat = [1, 1]",
                &[
                    "screen \"left\"",
                    "tile 3 (incidents at [1, 1])",
                    "overlaps tile 1 (map)",
                ],
            ),
            (
                "kind = \"incidents\"\nat = [2, 1]",
                "kind = \"incidents\"\nat = [3, 1]",
                &["screen \"left\"", "tile 3", "off the grid", "columns 0–2"],
            ),
            (
                "bookmark = \"Harbour\"\ndomains",
                "bookmark = \"Harbor\"\ndomains",
                &[
                    "screen \"left\"",
                    "tile 1 (map at [0, 0])",
                    "unknown bookmark \"Harbor\"",
                    "Harbour",
                ],
            ),
            (
                "domains = [\"traffic\", \"safety\"]",
                "domains = [\"trafic\"]",
                &["tile 1", "unknown sub-brain \"trafic\""],
            ),
            (
                "kind = \"feeds\"\nat = [0, 1]",
                "kind = \"feeds\"\nat = [0, 1]\nbookmark = \"Harbour\"",
                &[
                    "screen \"right\"",
                    "tile 3 (feeds at [0, 1])",
                    "`bookmark` is for the map tiles",
                ],
            ),
            (
                "monitor = \"HDMI-2\"",
                "monitor = \"HDMI-2\"\nposition = [0, 0]",
                &["screen \"right\"", "not both"],
            ),
            (
                "kind = \"orders\"\nat = [1, 0]\nspan = [1, 2]",
                "kind = \"orders\"\nat = [1, 0]\nspan = [1, 3]",
                &[
                    "screen \"right\"",
                    "tile 2 (orders at [1, 0])",
                    "off the grid",
                ],
            ),
        ];
        for (from, to, wanted) in cases {
            assert!(TWO_SCREENS.contains(from), "{from}");
            let text = TWO_SCREENS.replacen(from, to, 1);
            let e = parse(&text).unwrap_err();
            for w in wanted {
                assert!(e.contains(w), "{e}\n(wanted {w})");
            }
        }
        // Cell numbers near u32::MAX are off the grid, not an overflow.
        for (from, to) in [
            (
                "kind = \"kpi\"\nat = [2, 0]",
                "kind = \"kpi\"\nat = [4294967295, 0]",
            ),
            (
                "kind = \"kpi\"\nat = [2, 0]",
                "kind = \"kpi\"\nat = [2, 0]\nspan = [4294967295, 4294967295]",
            ),
        ] {
            assert!(TWO_SCREENS.contains(from));
            let e = parse(&TWO_SCREENS.replacen(from, to, 1)).unwrap_err();
            assert!(e.contains("tile 2") && e.contains("off the grid"), "{e}");
        }
        // A canvas wider than a GPU draws is refused, naming the screen.
        let e = parse(&TWO_SCREENS.replacen(
            "monitor = \"HDMI-2\"",
            "position = [0, 0]\nsize = [32768, 2160]",
            1,
        ))
        .unwrap_err();
        assert!(e.contains("screen \"right\"") && e.contains("16384"), "{e}");
        // An unknown key is a TOML error naming the file and the line.
        let e = parse(&TWO_SCREENS.replacen("span = [2, 2]", "spam = [2, 2]", 1)).unwrap_err();
        assert!(e.starts_with("hall.toml") && e.contains("spam"), "{e}");
        let e = parse("").unwrap_err();
        assert!(e.contains("no [[screen]]"), "{e}");
        let e = WallLayout::load(Path::new("/nonexistent/wall.toml")).unwrap_err();
        assert!(e.contains("/nonexistent/wall.toml"), "{e}");
    }

    #[test]
    fn a_changed_layout_file_is_read_again_and_a_broken_one_is_said() {
        let dir = std::env::temp_dir().join(format!("wall-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wall.toml");
        std::fs::write(&path, TWO_SCREENS).unwrap();
        let first = WallLayout::load(&path).unwrap();
        let mut watch = LayoutWatch::new(path.clone());
        assert!(watch.changed().is_none());
        // One screen less (and a different length, whatever the clock's resolution).
        let one = &TWO_SCREENS[..TWO_SCREENS.find("[[screen]]\nname = \"right\"").unwrap()];
        std::fs::write(&path, one).unwrap();
        let second = watch.changed().unwrap().unwrap();
        assert_eq!((first.screens.len(), second.screens.len()), (2, 1));
        assert!(watch.changed().is_none());
        std::fs::write(
            &path,
            format!("{one}\n[[screen.tile]]\nkind = \"radar\"\nat = [0, 0]\n"),
        )
        .unwrap();
        let e = watch.changed().unwrap().unwrap_err();
        assert!(e.contains("wall.toml") && e.contains("radar"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_default_layout_has_a_screen_per_monitor_and_checks_out() {
        for n in [0, 1, 2, 3] {
            let wall = WallLayout::default_for(n);
            assert_eq!(wall.screens.len(), n.max(1));
            for s in &wall.screens {
                let mut cells = BTreeSet::new();
                for t in &s.tiles {
                    for c in t.at[0]..t.at[0] + t.span[0] {
                        for r in t.at[1]..t.at[1] + t.span[1] {
                            assert!(c < s.columns && r < s.rows);
                            assert!(cells.insert((c, r)), "overlap on {}", s.name);
                        }
                    }
                }
            }
        }
        assert_eq!(WallLayout::default_for(2).screens[1].tiles.len(), 4);
    }

    fn incident(id: &str, severity: crate::model::Severity, reported_ms: i64) -> Incident {
        Incident {
            id: id.into(),
            kind: "building_fire".into(),
            title: format!("fire {id}"),
            domain: Domain::Safety,
            severity,
            lon: 24.95,
            lat: 60.17,
            source: "desk".into(),
            key: None,
            status: crate::dispatch::IncidentStatus::Reported,
            reported_ms,
            updated_ms: reported_ms,
            timeline: Vec::new(),
            orders: Vec::new(),
            withdrawn: false,
            finished_ms: None,
        }
    }

    #[test]
    fn the_hotspot_follows_the_most_urgent_and_flies_to_each_new_incident() {
        use crate::model::Severity::*;
        let mut book = Book::new(DispatchConfig::default_config());
        // A wall that started on an empty log: the newest raised since.
        let mut since_empty = HotspotFollower::default();
        assert!(since_empty.follow(&book).is_none());
        book.incidents.push(incident("INC-1", Moderate, 1_000));
        book.incidents.push(incident("INC-2", Extreme, 500));
        assert_eq!(since_empty.follow(&book).unwrap().id, "INC-1");
        // At start: the most urgent, not the newest.
        let mut follower = HotspotFollower::default();
        assert_eq!(follower.follow(&book).unwrap().id, "INC-2");
        // A new, minor one is raised: the wall flies to it.
        book.incidents.push(incident("INC-3", Minor, 2_000));
        assert_eq!(follower.follow(&book).unwrap().id, "INC-3");
        assert_eq!(follower.follow(&book).unwrap().id, "INC-3");
        // It is closed: back to the most urgent.
        book.incidents[2].status = crate::dispatch::IncidentStatus::Closed;
        assert_eq!(follower.follow(&book).unwrap().id, "INC-2");
        book.incidents[1].status = crate::dispatch::IncidentStatus::Resolved;
        assert_eq!(follower.follow(&book).unwrap().id, "INC-1");
        book.incidents[0].status = crate::dispatch::IncidentStatus::Closed;
        assert!(follower.follow(&book).is_none());
    }

    #[test]
    fn a_tour_shows_its_bookmarks_then_the_open_incidents_in_turn() {
        use crate::model::Severity::*;
        let wall = parse(&TWO_SCREENS.replacen(
            "kind = \"hotspot\"",
            "kind = \"tour\"\nevery_s = 15\nstops = [\"city\", \"Harbour\"]",
            1,
        ))
        .unwrap();
        let TileKind::Tour { every_s, stops, .. } = &wall.screens[1].tiles[0].kind else {
            panic!()
        };
        assert_eq!(*every_s, 15.0);
        let mut book = Book::new(DispatchConfig::default_config());
        book.incidents.push(incident("INC-7", Severe, 1_000));
        let all = tour_stops(stops, Some(&book), 800.0);
        assert_eq!(
            all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["city", "Harbour", "INC-7 · fire INC-7"]
        );
        let shown: Vec<usize> = (0..4)
            .map(|k| tour_index(k * 15_000 + 7, 15.0, 3))
            .collect();
        assert_eq!(shown, [0, 1, 2, 0]);
        assert_eq!(tour_stops(&[], None, 800.0)[0].view, View::City);
    }

    #[test]
    fn trend_arrows_compare_with_ten_minutes_before() {
        let mut h = SignHistory::default();
        let mut k = crate::state::kpi::CityKpis::default();
        for minute in 0..=20 {
            k.congestion_index = Some(0.10 + minute as f64 * 0.01);
            k.mean_aqi = Some(50.0);
            k.open_alerts = 3;
            assert!(h.sample(minute * 60_000, &k));
            // Not twice within the sampling interval.
            assert!(!h.sample(minute * 60_000 + 1, &k));
        }
        assert_eq!(h.trend(1), Some(Trend::Up));
        assert_eq!(h.trend(2), Some(Trend::Flat));
        assert_eq!(h.trend(3), Some(Trend::Flat));
        // Unknown values are left out, not drawn as zero.
        assert_eq!(h.trend(0), None);
        assert!(h.series(0).is_empty());
        k.open_alerts = 1;
        h.sample(21 * 60_000, &k);
        assert_eq!(h.trend(3), Some(Trend::Down));
        // Four hours are kept.
        h.sample(22 * 60_000 + KEEP_MS, &k);
        assert_eq!(h.len(), 1);
    }

    /// The recorded past goes ahead of what the wall sampled since it started: only
    /// what is older, within the hours kept; a trend reads across the two.
    #[test]
    fn the_recorded_past_goes_ahead_of_the_samples_taken_since() {
        let k = |aqi: f64| crate::state::kpi::CityKpis {
            mean_aqi: Some(aqi),
            ..Default::default()
        };
        const MIN: i64 = 60_000;
        let t0 = 1_800_000_000_000;
        let mut h = SignHistory::default();
        assert!(h.sample(t0, &k(80.0)));
        // Every 5 minutes over the 5 hours before, and one after the first sample.
        let past: Vec<(i64, crate::state::kpi::CityKpis)> = (0..=60)
            .map(|n| (t0 - 300 * MIN + n * 5 * MIN, k(20.0 + n as f64)))
            .chain([(t0 + MIN, k(99.0))])
            .collect();
        let put = h.seed(&past);
        // 4 h back from the newest (t0) holds 48 five-minute steps before it; t0
        // itself and the one after were taken live.
        assert_eq!(put, 48);
        let series = h.series(2);
        assert_eq!(series.len(), 49);
        assert_eq!(series[0], (t0 - KEEP_MS, 32.0));
        assert_eq!(series[47], (t0 - 5 * MIN, 79.0));
        assert_eq!(series[48], (t0, 80.0));
        assert!(series.windows(2).all(|w| w[0].0 < w[1].0));
        // Ten minutes before t0 (recorded) the AQI was 78: up by more than 2 %.
        assert_eq!(h.trend(2), Some(Trend::Up));
        // The AQI no longer known: no arrow, whatever it did before.
        h.sample(t0 + 10 * MIN, &crate::state::kpi::CityKpis::default());
        assert_eq!(h.trend(2), None);
        // A wall with nothing sampled yet takes the past as it is, the hours kept
        // back from its newest.
        let mut fresh = SignHistory::default();
        assert_eq!(fresh.seed(&past[12..]), 49);
        assert_eq!(fresh.series(2).last(), Some(&(t0 + MIN, 99.0)));
    }

    #[test]
    fn a_tile_says_when_its_data_stops_and_only_its_own() {
        let feed = |name: &str, domain, freshness, age| FeedState {
            name: name.into(),
            domain,
            freshness,
            data_age_s: age,
            quarantined: false,
            failing: false,
        };
        let wall = parse(TWO_SCREENS).unwrap();
        let map = &wall.screens[0].tiles[0].kind; // traffic and safety
        let mut data = DataState {
            feeds: vec![
                feed("traffic", Domain::Traffic, Freshness::Stale, Some(300.0)),
                feed("alerts", Domain::Safety, Freshness::Fresh, Some(2.0)),
                feed("air", Domain::Ecology, Freshness::Fresh, Some(2.0)),
            ],
            book_age_s: Some(1.0),
            book_trouble: None,
            uptime_s: 60.0,
        };
        assert_eq!(tile_banner(map, &data), None);
        data.feeds[1].freshness = Freshness::Stale;
        data.feeds[1].data_age_s = Some(90.0);
        let b = tile_banner(map, &data).unwrap();
        assert!(b.contains("STALE") && b.contains("traffic, alerts"), "{b}");
        // The air feed goes on: the KPIs are not all stopped.
        assert_eq!(tile_banner(&TileKind::Kpi, &data), None);
        assert_eq!(tile_banner(&TileKind::Incidents, &data), None);
        // The log out of reach: the boards say so, the feeds tile never.
        data.book_trouble = Some("connection refused".into());
        let b = tile_banner(&TileKind::Orders, &data).unwrap();
        assert!(
            b.contains("DISCONNECTED") && b.contains("connection refused"),
            "{b}"
        );
        assert_eq!(tile_banner(&TileKind::Feeds, &data), None);
        // A log that fails its check says so, not "disconnected".
        data.book_trouble = Some("events.db: its chain does not hold: event 2".into());
        let b = tile_banner(&TileKind::Incidents, &data).unwrap();
        assert!(
            b.contains("FAILED ITS CHECK") && !b.contains("DISCONNECTED"),
            "{b}"
        );
        // A tile of a sub-brain no feed reports says so.
        let health = parse(&TWO_SCREENS.replacen(
            "domains = [\"traffic\", \"safety\"]",
            "domains = [\"health\"]",
            1,
        ))
        .unwrap();
        let b = tile_banner(&health.screens[0].tiles[0].kind, &data).unwrap();
        assert!(b.contains("NO FEED") && b.contains("health"), "{b}");
        data.book_trouble = None;
        data.book_age_s = Some(40.0);
        assert!(
            tile_banner(&TileKind::Incidents, &data)
                .unwrap()
                .contains("STALE")
        );
        // Nothing said before the grace period of what has not come yet...
        data.uptime_s = 5.0;
        data.book_age_s = None;
        assert_eq!(tile_banner(&TileKind::Incidents, &data), None);
        for f in &mut data.feeds {
            f.freshness = Freshness::Never;
            f.data_age_s = None;
        }
        assert_eq!(tile_banner(map, &data), None);
        // ...but a feed that failed has stopped.
        data.feeds[0].failing = true;
        data.feeds[1].failing = true;
        let b = tile_banner(map, &data).unwrap();
        assert!(
            b.contains("NO DATA") && b.contains("nothing received"),
            "{b}"
        );
        // Stale data is said at once.
        data.feeds[0].failing = false;
        data.feeds[0].freshness = Freshness::Stale;
        data.feeds[0].data_age_s = Some(600.0);
        let b = tile_banner(map, &data).unwrap();
        assert!(b.contains("10 min old"), "{b}");
    }
}
