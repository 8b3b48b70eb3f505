//! What each layer of an image changes, read from the layer's own table of contents
//! rather than from the union: the entries it has (path, type, size), the names it
//! whites out and the directories it makes opaque. This is the one place the
//! mount-free commands look inside a single layer (`diff` for the paths the layers two
//! images don't share touch, `layers` for dive's figures); everything else goes
//! through the union (`fs`, `tree`).

use crate::layer::toc::Toc;
use crate::layer::{join, Kind};
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
    let toc = source.toc(i)?;
    Ok(changes(&toc)?)
}

/// Every path of a TOC with what the layer does to it, in the TOC's node order (each
/// directory's children together, sorted by name). Each read fetches the page it needs
/// when the TOC is read by Range (`Toc::fetching`): a walk of the whole table reads
/// every page once.
fn changes(toc: &Toc) -> crate::layer::Result<LayerChanges> {
    // A node's path, by node: a node's parent comes before it, so its path is known.
    let mut paths: Vec<Vec<u8>> = vec![Vec::new()];
    let mut out = LayerChanges::default();
    for id in 0..toc.node_count() {
        let r = toc.fetching(|t| t.record(id))?;
        // A damaged or hostile table can have a record no directory lists.
        let Some(path) = paths.get(id as usize).cloned() else {
            return Err(crate::layer::Error::Invalid(format!(
                "the TOC {} has record {id} in no directory",
                toc.path().display()
            )));
        };
        let children = toc.fetching(|t| t.children(id))?;
        for child in children {
            if child as usize != paths.len() {
                return Err(crate::layer::Error::Invalid(format!(
                    "the TOC {} has the children of record {id} out of place",
                    toc.path().display()
                )));
            }
            let name = toc.fetching(|t| Ok(t.name(&t.record(child)?)?.to_vec()))?;
            paths.push(join(&path, &name));
        }
        if r.is_whiteout() {
            out.whiteouts.push(path.clone());
        }
        if r.is_opaque() {
            out.opaque.push(path.clone());
        }
        // Nodes hold the entry that finally has their path; the entries a later one
        // replaced come after the nodes and are not changes.
        if let (Some(kind), false) = (r.kind(), path.is_empty()) {
            out.entries.push(Change { path: path.clone(), kind, size: r.size() });
        }
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::changes;
    use crate::layer::block_sums::BlockSums;
    use crate::layer::toc::{reseal, write, Toc, TocWriter};
    use crate::layer::{Entry, Kind};

    fn entry(path: &[u8], kind: Kind) -> Entry {
        Entry {
            path: path.to_vec(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 1_600_000_000,
            link: None,
            link_entry: None,
            rdev: (0, 0),
            xattrs: Vec::new(),
            offset: 0,
        }
    }

    /// A table whose checksums all hold (as a publisher could make one) but whose root
    /// lists no children: its other records are in no directory. An error, not a panic.
    #[test]
    fn a_record_in_no_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toc");
        let mut w = TocWriter::new(dir.path()).unwrap();
        w.entry(&entry(b"a", Kind::Dir)).unwrap();
        w.entry(&entry(b"b", Kind::File)).unwrap();
        let sums = BlockSums::of(&b"some layer data"[..]).unwrap();
        let mut f = std::fs::File::create(&path).unwrap();
        write::write(&mut f, "sha256:aa", w.finish().unwrap(), write::DataIndex::Plain, &sums).unwrap();
        drop(f);
        let good = changes(&Toc::open(&path, "sha256:aa").unwrap()).unwrap();
        let paths: Vec<&[u8]> = good.entries.iter().map(|c| c.path.as_slice()).collect();
        assert_eq!(paths, [b"a".as_slice(), b"b"]);

        // The records start right after the header, whose length is at 12..16; a
        // record's first child is at 8..12. The root's children now start where the
        // nodes end (root, a, b): it has none.
        let mut bytes = std::fs::read(&path).unwrap();
        let records = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        bytes[records + 8..records + 12].copy_from_slice(&3u32.to_le_bytes());
        reseal(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let e = changes(&Toc::open(&path, "sha256:aa").unwrap()).unwrap_err().to_string();
        assert!(e.contains("has record 1 in no directory"), "{e}");
    }
}
