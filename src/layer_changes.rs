//! What each layer of an image changes, read from the layer's own table of contents
//! rather than from the union: the entries it has (path, type, size), the names it
//! whites out and the directories it makes opaque. This is the one place the
//! mount-free commands look inside a single layer (`diff` for the paths the layers two
//! images don't share touch, `layers` for dive's figures); everything else goes
//! through the union (`fs`, `tree`).

use crate::layer::Kind;
use crate::tree::{LayerSource, SourceError};

/// One entry a layer holds for a path (the last one, when the tar names it twice).
#[derive(Clone, Debug)]
pub struct Change {
    /// Relative to the image's root, no `./`, no trailing `/`; never the root itself.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// The tar header's size: the data's length for a regular file, 0 for the rest.
    pub size: u64,
}

/// The changes of one layer.
#[derive(Clone, Debug, Default)]
pub struct LayerChanges {
    pub entries: Vec<Change>,
    /// Paths `.wh.NAME` markers hide in lower layers.
    pub whiteouts: Vec<Vec<u8>>,
    /// Directories whose lower-layer children `.wh..wh..opq` markers hide.
    pub opaque: Vec<Vec<u8>>,
}

/// Layer `i`'s changes, loading its table of contents (a fetch, if it is not local).
pub fn read(source: &dyn LayerSource, i: usize) -> Result<LayerChanges, SourceError> {
    let index = source.index(i)?;
    let c = &index.contents;
    let entries = (0..c.entries.len() as u32)
        .filter_map(|e| {
            let entry = index.entry(e);
            let path = index.final_path(e).filter(|p| !p.is_empty())?;
            let size = if entry.kind == Kind::File { entry.size } else { 0 };
            Some(Change { path, kind: entry.kind, size })
        })
        .collect();
    Ok(LayerChanges { entries, whiteouts: c.whiteouts.clone(), opaque: c.opaque.clone() })
}

/// The changes of each of `layers`, loaded a few at a time (a listing of what they
/// change needs them all, so their fetches go together), in the order asked.
pub fn read_all(source: &dyn LayerSource, layers: &[usize]) -> Result<Vec<LayerChanges>, SourceError> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8).min(layers.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<LayerChanges, SourceError>>>> =
        layers.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&i) = layers.get(k) else { break };
                let r = read(source, i);
                let failed = r.is_err();
                *results[k].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                if failed {
                    // The others need not be fetched any more.
                    next.store(layers.len(), std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    // A layer left unread comes after one that failed, whose error is returned first.
    let mut out = Vec::with_capacity(layers.len());
    for r in results.into_iter().filter_map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner())) {
        out.push(r?);
    }
    Ok(out)
}
