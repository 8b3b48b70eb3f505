//! What each fuzz target does with one input, shared by the targets in fuzz_targets/
//! (run by scripts/fuzz) and by tests/fuzz_regressions.rs, which replays every input
//! that once crashed a target in the normal `cargo test`. Each function must return
//! for every input: a panic, an abort or a hang is the bug. Results are thrown away
//! except where a property must hold (a parsed reference's normal form parses back to
//! the same reference).

use imgfs::digest::Digest;
use imgfs::fs::Fs;
use imgfs::image::{self, Compression, ImageConfig, ManifestKind, Platform};
use imgfs::layer::build;
use imgfs::layer::spans::SpanCache;
use imgfs::layer::toc::{self, write::DataIndex, Toc};
use imgfs::layer::{block_sums::BlockSums, Kind, LayerData};
use imgfs::reference::{familiar_ref, Reference};
use imgfs::template::{align_table, Template};
use imgfs::tree::{DirAttrs, LayerSource, SourceError, Tree, ROOT};
use serde_json::json;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

/// An image reference as a user types it, and the other small parsers of user input.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(r) = Reference::parse(s) {
        let normal = r.to_string();
        let again = Reference::parse(&normal).unwrap_or_else(|e| panic!("{s:?} parses, its normal form does not: {e}"));
        assert_eq!(again, r, "{s:?} and its normal form {normal:?} differ");
        let _ = (r.familiar(), r.manifest_reference(), familiar_ref(&normal));
    }
    let _ = familiar_ref(s);
    let _ = s.parse::<Digest>();
    let _ = Platform::parse(s);
}

/// A manifest, index or config body as a registry sends it. The first byte picks the
/// Content-Type the registry claims.
pub fn manifest(data: &[u8]) {
    const TYPES: [&str; 6] =
        [image::OCI_MANIFEST, image::OCI_INDEX, image::DOCKER_MANIFEST, image::DOCKER_LIST, "application/json", ""];
    let Some((&pick, body)) = data.split_first() else { return };
    match image::parse_manifest(TYPES[pick as usize % TYPES.len()], body) {
        Ok(ManifestKind::Image(m)) => {
            for l in &m.layers {
                let _ = Compression::of_media_type(&l.media_type);
            }
            let _ = serde_json::to_vec(&m);
        }
        Ok(ManifestKind::Index(idx)) => {
            for p in ["linux/amd64", "linux/arm64", "linux/arm/v7", "windows/amd64"] {
                let _ = image::select_platform(&idx.manifests, &Platform::parse(p).unwrap());
            }
            let _ = serde_json::to_vec(&idx);
        }
        Err(_) => {}
    }
    if let Ok(config) = serde_json::from_slice::<ImageConfig>(body) {
        let _ = (config.created_at(), config.labels(), serde_json::to_vec(&config));
    }
}

/// A `--format` template, parsed and rendered against records shaped as `ls` and
/// `inspect` give them, strict and lax, header and table alignment included.
pub fn template(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let Ok(t) = Template::parse(src) else { return };
    let row = json!({
        "Containers": "N/A", "CreatedAt": "2024-01-02 03:04:05 +0000 UTC", "CreatedSince": "2 hours ago",
        "Digest": "sha256:0123", "ID": "0123456789ab", "Repository": "127.0.0.1:5000/app", "SharedSize": "N/A",
        "Size": "1.23MB", "Tag": "v1", "UniqueSize": "N/A", "VirtualSize": "1.23MB",
    });
    let inspect = json!({
        "Id": "sha256:abc", "RepoTags": ["app:1", "app:2"], "RepoDigests": [], "Size": 1234567,
        "Created": "2024-01-02T03:04:05Z", "Ratio": 1.5, "Nothing": null,
        "Config": {"Env": ["A=1", "B=2"], "Cmd": ["/bin/sh"], "Labels": {"a": "1", "b": ""}, "User": ""},
        "RootFS": {"Type": "layers", "Layers": ["sha256:1", "sha256:2"]},
    });
    for data in [&row, &inspect] {
        if let Ok(out) = t.render(data) {
            let _ = align_table(&out);
        }
    }
    let _ = t.render_header(&row);
    let _ = Template::parse(src).map(|t| t.missing_key_error().render(&row));
}

/// One or two layer blobs, indexed as a pull indexes them and stacked into the union
/// a mount serves, which is then walked: every directory listed, every name looked up,
/// every node stat'ed, every link read and every file read. The first byte picks the
/// compression of each layer and whether there are two; the next two where the bytes
/// split between them.
pub fn layer(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else { return };
    let blobs: Vec<&[u8]> = if pick & 0x80 != 0 && rest.len() >= 2 {
        let at = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let rest = &rest[2..];
        let at = at.min(rest.len());
        vec![&rest[..at], &rest[at..]]
    } else {
        vec![rest]
    };
    let mut layers = Layers { files: Vec::new(), tocs: Vec::new(), data: Vec::new() };
    let spans = Arc::new(SpanCache::new(4 << 20));
    for (i, blob) in blobs.iter().enumerate() {
        let compression = [Compression::None, Compression::Gzip, Compression::Zstd][(pick >> (2 * i)) as usize % 3];
        let scratch = std::env::temp_dir();
        let Ok(built) = build::index_layer(*blob, compression, None, None, &scratch) else { return };
        let file = TempFile::new(blob);
        let sums = BlockSums::of(*blob).expect("bytes in memory");
        let index = match &built.checkpoints {
            Some(c) => DataIndex::Checkpoints(c),
            None => DataIndex::Plain,
        };
        let toc = toc::open_parts(built.toc, &scratch, "sha256:fuzz", index, &sums).expect("a TOC of what was indexed");
        let data = match built.checkpoints {
            Some(c) => LayerData::compressed(&file.0, c, spans.clone()),
            None => LayerData::tar(&file.0),
        };
        layers.tocs.push(Arc::new(toc));
        layers.data.push(Arc::new(data.expect("the layer file was just written")));
        layers.files.push(file);
    }
    let fs = Fs::new(Tree::new(Arc::new(layers), DirAttrs::Exact), 0);
    let mut budget = 10_000;
    walk(&fs, ROOT, &mut budget);
}

/// A layer's TOC as the reader meets it. With the first byte even, the rest is a tar
/// (its last 8 bytes aside): its TOC is written as a pull writes one, then changed
/// where those 8 bytes say; with it odd, the rest is taken as a TOC file. Either way
/// its checksums are recomputed (as a hostile publisher would make them hold), and it
/// is opened and read whole: a TOC that is not what `build` makes must give errors.
pub fn toc(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let scratch = std::env::temp_dir();
    let mut bytes = if mode % 2 == 0 {
        let (tar, edits) = rest.split_at(rest.len().saturating_sub(8));
        let Ok(built) = build::index_layer(tar, Compression::None, None, None, &scratch) else { return };
        let sums = BlockSums::of(tar).expect("bytes in memory");
        let mut file = toc::scratch_file(&scratch).expect("a scratch file");
        toc::write::write(&mut file, "sha256:fuzz", built.toc, DataIndex::Plain, &sums)
            .expect("a TOC of what was indexed");
        let mut bytes = Vec::new();
        use std::io::{Read, Seek};
        file.seek(std::io::SeekFrom::Start(0)).expect("rewind");
        file.read_to_end(&mut bytes).expect("read back");
        for e in edits.chunks(4) {
            if let [a, b, c, x] = *e {
                let at = u32::from_le_bytes([a, b, c, 0]) as usize;
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] ^= x;
                }
            }
        }
        bytes
    } else {
        rest.to_vec()
    };
    toc::reseal(&mut bytes);
    let file = TempFile::new(&bytes);
    let Ok(toc) = Toc::open(&file.0, "sha256:fuzz") else { return };
    let _ = toc.verify();
    let _ = toc.to_contents();
    for path in [&b""[..], b"a", b"a/b/c", b"\xff", b"d/f"] {
        if let Ok(Some(node)) = toc.lookup(path) {
            let _ = toc.path_of(node);
            let _ = toc.lower_bound(node, b"m");
        }
    }
}

fn walk(fs: &Fs, dir: u64, budget: &mut usize) {
    let Ok(entries) = fs.readdir(dir) else { return };
    for odd in [&b""[..], b".", b"..", b"a/b", b"\xff"] {
        let _ = fs.lookup(dir, OsStr::from_bytes(odd));
    }
    for e in entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        if e.name == b"." || e.name == b".." {
            continue;
        }
        let _ = fs.lookup(dir, OsStr::from_bytes(&e.name));
        let Ok(info) = fs.getattr(e.ino) else { continue };
        let _ = fs.listxattr(e.ino);
        for (name, _) in &info.xattrs {
            let _ = fs.getxattr(e.ino, OsStr::from_bytes(name));
        }
        match info.kind {
            Kind::Dir => walk(fs, e.ino, budget),
            Kind::Symlink => drop(fs.readlink(e.ino)),
            Kind::File => {
                let _ = fs.read(e.ino, 0, 4096);
                let _ = fs.read(e.ino, info.size.saturating_sub(1), 4096);
            }
            _ => {}
        }
    }
}

struct Layers {
    files: Vec<TempFile>,
    tocs: Vec<Arc<Toc>>,
    data: Vec<Arc<LayerData>>,
}

impl LayerSource for Layers {
    fn layer_count(&self) -> usize {
        self.tocs.len()
    }
    fn toc(&self, i: usize) -> Result<Arc<Toc>, SourceError> {
        Ok(self.tocs[i].clone())
    }
    fn data(&self, i: usize) -> Result<Arc<LayerData>, SourceError> {
        Ok(self.data[i].clone())
    }
    fn is_local(&self, _: usize) -> bool {
        true
    }
}

/// A layer blob on disk (layer data is read from a file), removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(bytes: &[u8]) -> TempFile {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("imgfs-fuzz-{}-{n}", std::process::id()));
        std::fs::write(&path, bytes).expect("write a temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A gzip stream decoded by the parallel decoder (in chunks of a few KiB, so even small
/// inputs have several) must give what the one-core decoder gives: the same bytes and
/// checkpoints, or an error for both. The first byte picks the chunk size and whether
/// the rest is the blob itself or data gzipped here in members (seeds of every block
/// kind), with its bytes then flipped where the input's tail says.
pub fn gzip(data: &[u8]) {
    use imgfs::layer::arriving::Arriving;
    use imgfs::layer::checkpoints::Format;
    use imgfs::layer::indexing::IndexingDecoder;
    use imgfs::layer::pargz::ParallelGzip;
    use imgfs::layer::workers;
    use std::io::{Read, Write};

    let Some((&pick, rest)) = data.split_first() else { return };
    let chunk = 512u64 << (pick & 3);
    let blob = if pick & 4 == 0 {
        rest.to_vec()
    } else {
        // Members of the input's first half at levels 0-9, then flips from its second half.
        let (plain, flips) = rest.split_at(rest.len() / 2);
        let mut blob = Vec::new();
        for (k, part) in plain.chunks(plain.len() / 3 + 1).enumerate() {
            let level = (u32::from(pick >> 3) + k as u32) % 10;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(part).unwrap();
            blob.extend(e.finish().unwrap());
        }
        for f in flips.chunks(3).take(4) {
            if f.len() == 3 && !blob.is_empty() {
                let at = usize::from(u16::from_le_bytes([f[0], f[1]])) % blob.len();
                blob[at] ^= 1 << (f[2] & 7);
            }
        }
        blob
    };
    let span = 1024;
    let mut seq = IndexingDecoder::new(&blob[..], Format::Gzip, span).unwrap();
    let mut expected = Vec::new();
    let sequential =
        seq.read_to_end(&mut expected).map_err(|e| e.to_string()).and_then(|_| seq.finish().map_err(|e| e.to_string()));

    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&blob).unwrap();
    let blob_at = std::sync::Arc::new(Arriving::whole(file).unwrap());
    let mut par = ParallelGzip::new(blob_at, span, chunk, workers::global()).unwrap();
    let mut out = Vec::new();
    let parallel =
        par.read_to_end(&mut out).map_err(|e| e.to_string()).and_then(|_| par.finish().map_err(|e| e.to_string()));
    match (sequential, parallel) {
        (Ok(a), Ok(b)) => {
            assert!(out == expected, "the parallel decoder gave other bytes");
            assert_eq!(a, b, "the parallel decoder gave other checkpoints");
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => panic!("the parallel decoder refused a stream the one-core decoder takes: {e}"),
        (Err(e), Ok(_)) => panic!("the parallel decoder took a stream the one-core decoder refuses: {e}"),
    }
}
