//! What `imgfs layers` reports of an image, from each layer's changes
//! (`layer_changes`): per layer the entries it adds, changes and removes, the bytes its
//! files hold, and the bytes of its files that later layers overwrite or remove; for the
//! image, the efficiency score, wasted bytes and wasted share that dive's CI mode
//! reports, computed as dive (wagoodman/dive, `filetree.Efficiency`) computes them:
//!
//! - every layer's leaf paths count (a path with nothing below it in that layer, a
//!   whiteout included; dive leaves opaque markers out);
//! - a leaf's size is its tar size; a whiteout's is the total size of what the layers
//!   below hold under it when that is a directory, and 0 when it is a file (as dive);
//! - per path, over the layers: the sum of those sizes and the smallest of them;
//! - efficiency = Σ smallest / Σ sum (1 when nothing has a size); wasted bytes = Σ sum
//!   over the paths that more than one layer names; wasted share = wasted bytes / the
//!   bytes of every layer but the first.

use crate::layer::Kind;
use crate::layer_changes::LayerChanges;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One layer's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerFigures {
    /// Entries for paths the layers below don't have.
    pub added: u64,
    /// Entries for paths the layers below have (a directory listed again included).
    pub changed: u64,
    /// Paths of the layers below that its whiteouts and opaque markers hide (each path
    /// of a hidden subtree counts).
    pub removed: u64,
    /// The size of its files (dive's layer size: the sum of its tar entries' sizes).
    pub bytes: u64,
    /// Bytes of its files that later layers overwrite or remove.
    pub wasted: u64,
}

/// The image's figures, as dive's CI mode gives them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageFigures {
    pub layers: Vec<LayerFigures>,
    pub efficiency: f64,
    pub wasted_bytes: u64,
    /// Sum of the layers' bytes.
    pub size_bytes: u64,
    /// Sum of the bytes of every layer but the first.
    pub user_size_bytes: u64,
    /// `wasted_bytes / user_size_bytes` (0 when the latter is).
    pub wasted_user_share: f64,
}

/// A path visible after some layers, as the figures need it.
#[derive(Clone, Copy)]
struct Visible {
    layer: usize,
    kind: Kind,
    size: u64,
}

/// Per path over the layers: (sum of sizes, smallest size, how many layers name it).
#[derive(Default)]
struct Seen {
    cumulative: u64,
    min: Option<u64>,
    count: u32,
}

pub fn figures(layers: &[LayerChanges]) -> ImageFigures {
    let mut visible: BTreeMap<Vec<u8>, Visible> = BTreeMap::new();
    let mut out: Vec<LayerFigures> = vec![LayerFigures::default(); layers.len()];
    let mut seen: HashMap<Vec<u8>, Seen> = HashMap::new();
    for (l, changes) in layers.iter().enumerate() {
        out[l].bytes = total(changes.entries.iter().map(|c| c.size));
        // dive's leaves: paths of this layer with nothing of this layer below them.
        let mut ancestors: HashSet<&[u8]> = HashSet::new();
        for p in changes.entries.iter().map(|c| &c.path[..]).chain(changes.whiteouts.iter().map(|p| &p[..])) {
            let mut p = p;
            while let Some(i) = p.iter().rposition(|&b| b == b'/') {
                p = &p[..i];
                if !ancestors.insert(p) {
                    break;
                }
            }
        }
        let mut note = |path: &[u8], size: u64| {
            let s = seen.entry(path.to_vec()).or_default();
            s.cumulative = s.cumulative.saturating_add(size);
            s.min = Some(s.min.map_or(size, |m| m.min(size)));
            s.count += 1;
        };
        for p in &changes.whiteouts {
            if ancestors.contains(&p[..]) {
                continue;
            }
            let size = match visible.get(p) {
                Some(v) if v.kind == Kind::Dir => total(below(&visible, p).map(|(_, v)| v.size)),
                _ => 0,
            };
            note(p, size);
        }
        for c in &changes.entries {
            if !ancestors.contains(&c.path[..]) {
                note(&c.path, c.size);
            }
        }
        // The layer's own markers apply before its entries (OCI), whatever the tar order.
        for p in &changes.opaque {
            let hidden: Vec<Vec<u8>> = below(&visible, p).map(|(k, _)| k.clone()).collect();
            remove(&mut visible, &mut out, l, hidden);
        }
        for p in &changes.whiteouts {
            let mut hidden: Vec<Vec<u8>> = below(&visible, p).map(|(k, _)| k.clone()).collect();
            if visible.contains_key(p) {
                hidden.push(p.clone());
            }
            remove(&mut visible, &mut out, l, hidden);
        }
        let mut entries: Vec<_> = changes.entries.iter().collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        for c in entries {
            match visible.get(&c.path).copied() {
                Some(old) if old.layer < l => {
                    out[l].changed += 1;
                    out[old.layer].wasted = out[old.layer].wasted.saturating_add(old.size);
                    if old.kind == Kind::Dir && c.kind != Kind::Dir {
                        let hidden: Vec<Vec<u8>> = below(&visible, &c.path).map(|(k, _)| k.clone()).collect();
                        remove(&mut visible, &mut out, l, hidden);
                    }
                }
                Some(_) => {}
                None => out[l].added += 1,
            }
            // Parents the tar left out are directories from here on.
            let mut p = &c.path[..];
            while let Some(i) = p.iter().rposition(|&b| b == b'/') {
                p = &p[..i];
                match visible.get(p) {
                    Some(v) if v.kind == Kind::Dir => break,
                    Some(v) => {
                        out[v.layer].wasted = out[v.layer].wasted.saturating_add(v.size);
                        visible.insert(p.to_vec(), Visible { layer: l, kind: Kind::Dir, size: 0 });
                    }
                    None => {
                        visible.insert(p.to_vec(), Visible { layer: l, kind: Kind::Dir, size: 0 });
                    }
                }
            }
            visible.insert(c.path.clone(), Visible { layer: l, kind: c.kind, size: c.size });
        }
    }
    let (mut min_sum, mut cumulative_sum, mut wasted) = (0u64, 0u64, 0u64);
    for s in seen.values() {
        min_sum = min_sum.saturating_add(s.min.unwrap_or(0));
        cumulative_sum = cumulative_sum.saturating_add(s.cumulative);
        if s.count > 1 {
            wasted = wasted.saturating_add(s.cumulative);
        }
    }
    let size_bytes = total(out.iter().map(|l| l.bytes));
    let user_size_bytes = total(out.iter().skip(1).map(|l| l.bytes));
    ImageFigures {
        efficiency: if cumulative_sum == 0 { 1.0 } else { min_sum as f64 / cumulative_sum as f64 },
        wasted_bytes: wasted,
        size_bytes,
        user_size_bytes,
        wasted_user_share: if user_size_bytes == 0 { 0.0 } else { wasted as f64 / user_size_bytes as f64 },
        layers: out,
    }
}

/// A sum of sizes from a table of contents, which (published by anyone) can claim
/// sizes that add up past `u64`: it stops at `u64::MAX` rather than wrap or panic.
fn total(sizes: impl Iterator<Item = u64>) -> u64 {
    sizes.fold(0, u64::saturating_add)
}

/// The visible paths strictly below directory `dir` (`""` is the root).
fn below<'a>(visible: &'a BTreeMap<Vec<u8>, Visible>, dir: &[u8]) -> impl Iterator<Item = (&'a Vec<u8>, &'a Visible)> {
    let mut start = dir.to_vec();
    if !start.is_empty() {
        start.push(b'/');
    }
    let prefix = start.clone();
    visible.range(start..).take_while(move |(k, _)| k.starts_with(&prefix))
}

/// Hide `paths` as layer `l` does: each counts as removed by `l`, and its bytes as
/// wasted by the layer that wrote it.
fn remove(visible: &mut BTreeMap<Vec<u8>, Visible>, out: &mut [LayerFigures], l: usize, paths: Vec<Vec<u8>>) {
    for p in paths {
        if let Some(v) = visible.remove(&p) {
            out[l].removed += 1;
            out[v.layer].wasted = out[v.layer].wasted.saturating_add(v.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer_changes::Change;

    fn file(path: &str, size: u64) -> Change {
        Change { path: path.as_bytes().to_vec(), kind: Kind::File, size }
    }
    fn dir(path: &str) -> Change {
        Change { path: path.as_bytes().to_vec(), kind: Kind::Dir, size: 0 }
    }

    #[test]
    fn overwritten_and_removed_files_are_wasted_and_lower_the_score() {
        let base = LayerChanges {
            entries: vec![dir("etc"), file("etc/a", 100), file("etc/b", 50), dir("usr"), file("usr/x", 1000)],
            ..Default::default()
        };
        let upper = LayerChanges {
            entries: vec![dir("etc"), file("etc/a", 300)],
            whiteouts: vec![b"etc/b".to_vec(), b"usr".to_vec()],
            opaque: vec![],
        };
        let f = figures(&[base, upper]);
        assert_eq!(f.layers[0], LayerFigures { added: 5, changed: 0, removed: 0, bytes: 1150, wasted: 1150 });
        assert_eq!(f.layers[1], LayerFigures { added: 0, changed: 2, removed: 3, bytes: 300, wasted: 0 });
        // Leaves: etc/a 100+300 (min 100), etc/b 50+0 (a whited-out file counts 0, min 0),
        // usr/x 1000 alone, usr (the whiteout of a directory: what was below it) 1000
        // alone; dirs are not leaves where the layer has something below them.
        assert_eq!(f.wasted_bytes, 400 + 50);
        // Smallest sizes: etc/a 100, etc/b 0, usr/x 1000, usr 1000.
        let score = (100 + 1000 + 1000) as f64 / (400 + 50 + 1000 + 1000) as f64;
        assert!((f.efficiency - score).abs() < 1e-12, "{} != {score}", f.efficiency);
        assert_eq!(f.user_size_bytes, 300);
    }

    /// Sizes claimed by a published table of contents need not be true: sums past
    /// `u64` stop at its largest value.
    #[test]
    fn sizes_that_add_up_past_u64_saturate() {
        let huge = |path: &str| LayerChanges { entries: vec![file(path, u64::MAX - 1)], ..Default::default() };
        let f = figures(&[huge("a"), huge("a"), huge("b")]);
        assert_eq!(f.size_bytes, u64::MAX);
        assert_eq!(f.wasted_bytes, u64::MAX);
        assert_eq!(f.layers[0].wasted, u64::MAX - 1);
    }
}
