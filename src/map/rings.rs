//! Ring hygiene: closing, de-duplicating, orienting and validating polygon rings, and
//! assembling OSM multipolygon rings from member ways.

use std::collections::HashMap;

use super::SkipReason;

/// A ring or line in local metres (east, north).
pub type Ring = Vec<[f64; 2]>;

/// Signed area (positive when counter-clockwise in east/north).
pub fn signed_area(ring: &[[f64; 2]]) -> f64 {
    let n = ring.len();
    if n < 3 {
        return 0.0;
    }
    let mut sum = 0.0;
    for i in 0..n {
        let [x0, y0] = ring[i];
        let [x1, y1] = ring[(i + 1) % n];
        sum += x0 * y1 - x1 * y0;
    }
    sum * 0.5
}

/// Normalises a ring to *open* form (last point ≠ first) with no repeated consecutive
/// points, oriented counter-clockwise when `ccw`, and checks it can be a polygon
/// boundary: at least three distinct points, a real area, no self-intersection.
pub fn clean_ring(mut ring: Ring, ccw: bool) -> Result<Ring, SkipReason> {
    ring.dedup_by(|a, b| (a[0] - b[0]).abs() < 1e-6 && (a[1] - b[1]).abs() < 1e-6);
    while ring.len() > 1 && close(ring[0], ring[ring.len() - 1]) {
        ring.pop();
    }
    if ring.len() < 3 {
        return Err(SkipReason::TooFewPoints);
    }
    // Self-intersection first: a symmetric bow tie also has zero net area.
    if self_intersects(&ring) {
        return Err(SkipReason::SelfIntersecting);
    }
    let area = signed_area(&ring);
    if !area.is_finite() || area.abs() < 0.01 {
        return Err(SkipReason::ZeroArea);
    }
    if (area > 0.0) != ccw {
        ring.reverse();
    }
    Ok(ring)
}

fn close(a: [f64; 2], b: [f64; 2]) -> bool {
    (a[0] - b[0]).abs() < 1e-6 && (a[1] - b[1]).abs() < 1e-6
}

/// True when two non-adjacent edges of the (open) ring touch or cross.
///
/// Edges are sorted by their west end and only compared while their x-ranges overlap,
/// which keeps the usual building ring (a handful of edges) trivially cheap and large
/// boundaries far below quadratic in practice.
pub fn self_intersects(ring: &[[f64; 2]]) -> bool {
    let n = ring.len();
    if n < 4 {
        return false; // a triangle with distinct points cannot self-intersect
    }
    let mut edges: Vec<(f64, f64, usize)> = (0..n)
        .map(|i| {
            let a = ring[i];
            let b = ring[(i + 1) % n];
            (a[0].min(b[0]), a[0].max(b[0]), i)
        })
        .collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (k, &(_, max_x, i)) in edges.iter().enumerate() {
        for &(min_x2, _, j) in &edges[k + 1..] {
            if min_x2 > max_x {
                break;
            }
            let adjacent = (i + 1) % n == j || (j + 1) % n == i;
            if adjacent {
                continue;
            }
            if segments_touch(ring[i], ring[(i + 1) % n], ring[j], ring[(j + 1) % n]) {
                return true;
            }
        }
    }
    false
}

fn orient(a: [f64; 2], b: [f64; 2], c: [f64; 2]) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

fn on_segment(a: [f64; 2], b: [f64; 2], p: [f64; 2]) -> bool {
    p[0] >= a[0].min(b[0])
        && p[0] <= a[0].max(b[0])
        && p[1] >= a[1].min(b[1])
        && p[1] <= a[1].max(b[1])
}

fn segments_touch(p1: [f64; 2], p2: [f64; 2], q1: [f64; 2], q2: [f64; 2]) -> bool {
    let d1 = orient(q1, q2, p1);
    let d2 = orient(q1, q2, p2);
    let d3 = orient(p1, p2, q1);
    let d4 = orient(p1, p2, q2);
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
    {
        return true;
    }
    (d1 == 0.0 && on_segment(q1, q2, p1))
        || (d2 == 0.0 && on_segment(q1, q2, p2))
        || (d3 == 0.0 && on_segment(p1, p2, q1))
        || (d4 == 0.0 && on_segment(p1, p2, q2))
}

/// Point-in-ring test (even-odd), for assigning holes to outers.
pub fn ring_contains(ring: &[[f64; 2]], p: [f64; 2]) -> bool {
    let mut inside = false;
    let n = ring.len();
    let mut j = n.wrapping_sub(1);
    for i in 0..n {
        let [xi, yi] = ring[i];
        let [xj, yj] = ring[j];
        if (yi > p[1]) != (yj > p[1]) && p[0] < (xj - xi) * (p[1] - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Whether `inner` lies inside `outer`, for assigning holes: tested at the first vertex
/// of `inner` that is not also a vertex of `outer` (a hole may touch its outer at a
/// node, where a point-in-ring test is a coin toss), else at the mean of its vertices.
pub fn ring_inside(inner: &[[f64; 2]], outer: &[[f64; 2]]) -> bool {
    let on_outer = |p: &[f64; 2]| outer.iter().any(|q| q == p);
    match inner.iter().find(|p| !on_outer(p)) {
        Some(&p) => ring_contains(outer, p),
        None => {
            let n = inner.len().max(1) as f64;
            let x = inner.iter().map(|p| p[0]).sum::<f64>() / n;
            let y = inner.iter().map(|p| p[1]).sum::<f64>() / n;
            ring_contains(outer, [x, y])
        }
    }
}

/// Joins way segments (each a list of node ids) end to end into closed rings, the way
/// OSM multipolygon members are drawn. Where a chain comes back to a node it already
/// passed (two rings touching at a node, or one way drawn as a figure eight), the loop
/// is cut off there as a ring of its own, so every ring is simple at its nodes.
/// Returns the rings (closed: first == last) and the number of segments that could
/// not be closed into any ring. Linear in the number of nodes.
pub fn assemble_rings(mut segments: Vec<Vec<i64>>) -> (Vec<Vec<i64>>, usize) {
    segments.retain(|s| s.len() >= 2);
    let mut by_end: HashMap<i64, Vec<usize>> = HashMap::new();
    for (k, s) in segments.iter().enumerate() {
        by_end.entry(s[0]).or_default().push(k);
        by_end.entry(s[s.len() - 1]).or_default().push(k);
    }
    let mut used = vec![false; segments.len()];
    let mut rings = Vec::new();
    let mut unclosed = 0;
    for start in 0..segments.len() {
        if used[start] {
            continue;
        }
        used[start] = true;
        let mut chain: Vec<i64> = Vec::new();
        let mut at: HashMap<i64, usize> = HashMap::new();
        let mut pieces = 1;
        let mut push = |chain: &mut Vec<i64>, at: &mut HashMap<i64, usize>, node: i64| {
            if let Some(&p) = at.get(&node) {
                // Back at a node of the chain: the loop since then is a ring.
                let mut ring = chain.split_off(p);
                for n in &ring[1..] {
                    at.remove(n);
                }
                chain.push(ring[0]);
                ring.push(node);
                if ring.len() >= 4 {
                    rings.push(ring);
                }
                true
            } else {
                at.insert(node, chain.len());
                chain.push(node);
                false
            }
        };
        for &n in &segments[start] {
            if push(&mut chain, &mut at, n) && chain.len() == 1 {
                pieces = 0;
            }
        }
        // Carry on from the chain's end while a segment leaves it (also after the
        // chain closed: more rings may touch at that node).
        loop {
            let end = *chain.last().expect("a chain keeps its last node");
            let next = by_end
                .get(&end)
                .and_then(|ks| ks.iter().copied().find(|&k| !used[k]));
            let Some(k) = next else { break };
            used[k] = true;
            pieces += 1;
            let seg = &segments[k];
            let nodes: Vec<i64> = if seg[0] == end {
                seg[1..].to_vec()
            } else {
                seg[..seg.len() - 1].iter().rev().copied().collect()
            };
            for n in nodes {
                if push(&mut chain, &mut at, n) && chain.len() == 1 {
                    pieces = 0;
                }
            }
        }
        if chain.len() > 1 {
            unclosed += pieces.max(1);
        }
    }
    (rings, unclosed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(size: f64) -> Ring {
        vec![
            [0.0, 0.0],
            [size, 0.0],
            [size, size],
            [0.0, size],
            [0.0, 0.0],
        ]
    }

    #[test]
    fn closes_dedups_and_orients() {
        let mut cw = square(10.0);
        cw.reverse();
        cw.insert(1, cw[1]);
        let ring = clean_ring(cw, true).unwrap();
        assert_eq!(ring.len(), 4);
        assert!(signed_area(&ring) > 0.0);
        let hole = clean_ring(square(2.0), false).unwrap();
        assert!(signed_area(&hole) < 0.0);
    }

    #[test]
    fn too_few_points_and_zero_area() {
        assert_eq!(
            clean_ring(vec![[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]], true),
            Err(SkipReason::TooFewPoints)
        );
        assert_eq!(
            clean_ring(vec![[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.0]], true),
            Err(SkipReason::ZeroArea)
        );
    }

    #[test]
    fn bow_tie_is_self_intersecting() {
        let bow = vec![
            [0.0, 0.0],
            [10.0, 10.0],
            [10.0, 0.0],
            [0.0, 10.0],
            [0.0, 0.0],
        ];
        assert_eq!(clean_ring(bow, true), Err(SkipReason::SelfIntersecting));
        // A ring that touches itself at a vertex is not a simple polygon either.
        let pinched = vec![
            [0.0, 0.0],
            [4.0, 0.0],
            [2.0, 2.0],
            [4.0, 4.0],
            [0.0, 4.0],
            [2.0, 2.0],
        ];
        assert_eq!(clean_ring(pinched, true), Err(SkipReason::SelfIntersecting));
    }

    #[test]
    fn assembles_rings_from_split_and_reversed_ways() {
        let (rings, unclosed) = assemble_rings(vec![vec![1, 2, 3], vec![1, 4, 3], vec![10, 11]]);
        assert_eq!(rings, vec![vec![1, 2, 3, 4, 1]]);
        assert_eq!(unclosed, 1);
    }

    #[test]
    fn point_in_ring() {
        let sq = square(10.0);
        assert!(ring_contains(&sq, [5.0, 5.0]));
        assert!(!ring_contains(&sq, [15.0, 5.0]));
    }
}
