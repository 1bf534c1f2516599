//! Writer of small `.osm.pbf` files, so loader tests can state their OSM data (nodes,
//! ways, relations) in a few lines and read it back through the real reader; the
//! fuzzer's OSM seeds are written with it too.
//!
//! Writes uncompressed (`raw`) blobs with plain (non-dense) nodes: valid PBF that every
//! reader accepts, with no compression library involved.

/// An OSM data set under construction. Coordinates are `[lon, lat]` degrees.
#[derive(Default)]
pub struct Osm {
    nodes: Vec<(i64, [f64; 2])>,
    ways: Vec<(i64, Vec<i64>, Tags)>,
    relations: Vec<(i64, Vec<Member>, Tags)>,
}

use super::Tags;

/// A relation member: `('n' | 'w' | 'r', id, role)`; any other letter writes a member
/// type PBF does not have (corrupt data).
pub type Member = (char, i64, String);

fn owned(tags: &[(&str, &str)]) -> Tags {
    tags.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Osm {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn node(&mut self, id: i64, lon: f64, lat: f64) -> &mut Self {
        self.nodes.push((id, [lon, lat]));
        self
    }

    pub fn way(&mut self, id: i64, refs: &[i64], tags: &[(&str, &str)]) -> &mut Self {
        self.ways.push((id, refs.to_vec(), owned(tags)));
        self
    }

    pub fn relation(
        &mut self,
        id: i64,
        members: &[(char, i64, &str)],
        tags: &[(&str, &str)],
    ) -> &mut Self {
        let members = members
            .iter()
            .map(|&(t, id, role)| (t, id, role.to_string()))
            .collect();
        self.relations.push((id, members, owned(tags)));
        self
    }

    /// The data set as `.osm.pbf` bytes.
    pub fn to_pbf(&self) -> Vec<u8> {
        let mut strings = StringTable::default();
        strings.id(""); // index 0 is reserved
        let mut group = Vec::new();
        for (id, [lon, lat]) in &self.nodes {
            let mut m = Vec::new();
            sint_field(&mut m, 1, *id);
            sint_field(&mut m, 8, (lat * 1e7).round() as i64);
            sint_field(&mut m, 9, (lon * 1e7).round() as i64);
            bytes_field(&mut group, 1, &m);
        }
        for (id, refs, tags) in &self.ways {
            let mut m = Vec::new();
            uint_field(&mut m, 1, *id as u64);
            let (keys, vals) = strings.tags(tags);
            packed_uint(&mut m, 2, &keys);
            packed_uint(&mut m, 3, &vals);
            packed_sint(&mut m, 8, &deltas(refs));
            bytes_field(&mut group, 3, &m);
        }
        for (id, members, tags) in &self.relations {
            let mut m = Vec::new();
            uint_field(&mut m, 1, *id as u64);
            let (keys, vals) = strings.tags(tags);
            packed_uint(&mut m, 2, &keys);
            packed_uint(&mut m, 3, &vals);
            let roles: Vec<u64> = members.iter().map(|(_, _, r)| strings.id(r)).collect();
            packed_uint(&mut m, 8, &roles);
            let ids: Vec<i64> = members.iter().map(|(_, id, _)| *id).collect();
            packed_sint(&mut m, 9, &deltas(&ids));
            let types: Vec<u64> = members
                .iter()
                .map(|(t, _, _)| match t {
                    'n' => 0,
                    'w' => 1,
                    'r' => 2,
                    _ => 7,
                })
                .collect();
            packed_uint(&mut m, 10, &types);
            bytes_field(&mut group, 4, &m);
        }
        let mut table = Vec::new();
        for s in &strings.list {
            bytes_field(&mut table, 1, s.as_bytes());
        }
        let mut block = Vec::new();
        bytes_field(&mut block, 1, &table);
        bytes_field(&mut block, 2, &group);

        let mut header = Vec::new();
        bytes_field(&mut header, 4, b"OsmSchema-V0.6");
        let mut out = Vec::new();
        blob(&mut out, "OSMHeader", &header);
        blob(&mut out, "OSMData", &block);
        out
    }
}

#[derive(Default)]
struct StringTable {
    list: Vec<String>,
}

impl StringTable {
    fn id(&mut self, s: &str) -> u64 {
        if let Some(i) = self.list.iter().position(|x| x == s) {
            return i as u64;
        }
        self.list.push(s.to_string());
        (self.list.len() - 1) as u64
    }
    fn tags(&mut self, tags: &[(String, String)]) -> (Vec<u64>, Vec<u64>) {
        tags.iter().map(|(k, v)| (self.id(k), self.id(v))).unzip()
    }
}

fn deltas(values: &[i64]) -> Vec<i64> {
    let mut last = 0;
    values
        .iter()
        .map(|&v| {
            let d = v - last;
            last = v;
            d
        })
        .collect()
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn uint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    varint(out, (field as u64) << 3);
    varint(out, v);
}

fn sint_field(out: &mut Vec<u8>, field: u32, v: i64) {
    uint_field(out, field, zigzag(v));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, ((field as u64) << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn packed_uint(out: &mut Vec<u8>, field: u32, values: &[u64]) {
    if values.is_empty() {
        return;
    }
    let mut body = Vec::new();
    values.iter().for_each(|&v| varint(&mut body, v));
    bytes_field(out, field, &body);
}

fn packed_sint(out: &mut Vec<u8>, field: u32, values: &[i64]) {
    let zz: Vec<u64> = values.iter().map(|&v| zigzag(v)).collect();
    packed_uint(out, field, &zz);
}

fn blob(out: &mut Vec<u8>, kind: &str, data: &[u8]) {
    let mut blob = Vec::new();
    bytes_field(&mut blob, 1, data);
    uint_field(&mut blob, 2, data.len() as u64);
    let mut header = Vec::new();
    bytes_field(&mut header, 1, kind.as_bytes());
    uint_field(&mut header, 3, blob.len() as u64);
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&blob);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{MapFormat, load_bytes};

    #[test]
    fn a_written_fixture_reads_back_through_the_real_loader() {
        let mut osm = Osm::new();
        osm.node(1, 24.94, 60.17)
            .node(2, 24.941, 60.17)
            .node(3, 24.942, 60.171)
            .way(
                10,
                &[1, 2, 3],
                &[("highway", "residential"), ("name", "Testikatu")],
            );
        osm.node(4, 24.94, 60.171)
            .way(11, &[1, 2, 3, 4, 1], &[])
            .relation(
                20,
                &[('w', 11, "outer")],
                &[("type", "multipolygon"), ("leisure", "park")],
            );
        let map = load_bytes(&osm.to_pbf(), MapFormat::OsmPbf, "t", "t.pbf").unwrap();
        assert_eq!(map.areas.len(), 1);
        assert_eq!(map.areas[0].id, "relation/20");
        assert_eq!(map.roads.len(), 1);
        assert_eq!(map.roads[0].id, "way/10");
        assert_eq!(map.roads[0].line.0.len(), 3);
        assert_eq!(map.roads[0].name.as_deref(), Some("Testikatu"));
    }
}
