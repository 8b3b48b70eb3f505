//! eStargz layers (stargz-snapshotter's format) mounted with no index artifact: the
//! layer is listed from its footer and TOC alone, fetched by Range, and a read fetches
//! only the gzip members of its file's chunks, each checked against the TOC's
//! `chunkDigest`. The layers are written here by `Writer`, which follows the published
//! format (docs/estargz.md of containerd/stargz-snapshotter), pushed with a hand-written
//! manifest carrying the layer annotations; the reference tree is the same blob
//! extracted by plain `tar -xzf`, which is the format's point: it is an ordinary gzip.

use super::published_index::blob_requests;
use super::*;
use flate2::write::GzEncoder;
use imgfs::digest::Digest;
use reqwest::blocking::Client;
use serde_json::json;
use std::io::{Read, Write};

const CHUNK: usize = 64 << 10;

/// tar headers go in the current gzip member, each chunk of file data starts a member
/// of its own, the TOC is the last tar entry in a member of its own, then the 51-byte
/// footer (an empty gzip member whose `SG` extra field gives the TOC offset).
#[derive(Default)]
struct Writer {
    out: Vec<u8>,
    member: Vec<u8>,
    toc: Vec<serde_json::Value>,
    /// Members of file data, in blob order: (start, end).
    members: Vec<(u64, u64)>,
}

impl Writer {
    fn close_member(&mut self) {
        if !self.member.is_empty() {
            let start = self.out.len() as u64;
            let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&std::mem::take(&mut self.member)).unwrap();
            self.out.extend(gz.finish().unwrap());
            self.members.push((start, self.out.len() as u64));
        }
    }

    fn header(&mut self, name: &str, kind: tar::EntryType, size: u64, link: &str, mode: u32, dev: (u32, u32)) {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(100);
        h.set_mtime(1_700_000_000);
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        if kind == tar::EntryType::Char {
            h.set_device_major(dev.0).unwrap();
            h.set_device_minor(dev.1).unwrap();
        }
        h.set_cksum();
        self.member.extend_from_slice(h.as_bytes());
    }

    /// Add an entry; `bad_chunk` gives that chunk of the file a digest its bytes don't have.
    fn add(&mut self, name: &str, kind: &str, data: &[u8], link: &str, bad_chunk: Option<usize>) {
        let (tk, mode, dev) = match kind {
            "dir" => (tar::EntryType::Directory, 0o755, (0, 0)),
            "reg" => (tar::EntryType::Regular, 0o640, (0, 0)),
            "symlink" => (tar::EntryType::Symlink, 0o777, (0, 0)),
            "hardlink" => (tar::EntryType::Link, 0o640, (0, 0)),
            "char" => (tar::EntryType::Char, 0o600, (1, 3)),
            _ => unreachable!(),
        };
        self.header(name, tk, data.len() as u64, link, mode, dev);
        let mut entry = json!({"name": name, "type": kind, "mode": mode, "uid": 1000, "gid": 100,
            "modtime": "2023-11-14T22:13:20Z", "linkName": link, "devMajor": dev.0, "devMinor": dev.1});
        if data.is_empty() {
            self.toc.push(entry);
            return;
        }
        entry["size"] = json!(data.len());
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            self.close_member();
            let mut e = if i == 0 { entry.clone() } else { json!({"name": name, "type": "chunk"}) };
            e["offset"] = json!(self.out.len());
            e["chunkOffset"] = json!(i * CHUNK);
            e["chunkSize"] = json!(chunk.len());
            let digest = if bad_chunk == Some(i) { Digest::of(b"other bytes") } else { Digest::of(chunk) };
            e["chunkDigest"] = json!(digest.as_str());
            self.toc.push(e);
            self.member.extend_from_slice(chunk);
        }
        self.member.resize(self.member.len().next_multiple_of(512), 0);
    }

    /// The blob, its TOC's digest and the TOC member's offset.
    fn finish(mut self) -> (Vec<u8>, Digest, u64, Vec<(u64, u64)>) {
        self.close_member();
        let toc_offset = self.out.len() as u64;
        let json = serde_json::to_vec(&json!({"version": 1, "entries": self.toc})).unwrap();
        self.header("stargz.index.json", tar::EntryType::Regular, json.len() as u64, "", 0o644, (0, 0));
        self.member.extend_from_slice(&json);
        self.member.resize(self.member.len().next_multiple_of(512) + 1024, 0);
        self.close_member();
        let mut footer = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0];
        footer.extend(format!("{toc_offset:016x}STARGZ").bytes());
        footer.extend([1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        self.out.extend(footer);
        (self.out, Digest::of(&json), toc_offset, self.members)
    }
}

fn big() -> Vec<u8> {
    // Not compressible to nothing, so chunks have members of some size.
    (0..50_000u32).flat_map(|i| (i.wrapping_mul(2_654_435_761)).to_le_bytes()).collect()
}

struct Pushed {
    repo: String,
    layer: Digest,
    blob: Vec<u8>,
    toc_offset: u64,
    /// (start, end) of the member holding etc/hello.
    hello: (u64, u64),
}

/// Write an eStargz layer (with `bad_chunk` for data/big), push it as the one layer of
/// an image in a fresh repository, its TOC digest annotation `toc_digest` or the true one.
fn push_estargz(name: &str, bad_chunk: Option<usize>, toc_digest: Option<Digest>) -> Pushed {
    let mut w = Writer::default();
    w.add("./", "dir", b"", "", None);
    w.add("etc/", "dir", b"", "", None);
    w.add("etc/hello", "reg", b"hello from an estargz layer\n", "", None);
    w.add("etc/link", "symlink", b"", "hello", None);
    w.add("etc/hard", "hardlink", b"", "etc/hello", None);
    w.add("data/", "dir", b"", "", None);
    w.add("data/big", "reg", &big(), "", bad_chunk);
    w.add("data/empty", "reg", b"", "", None);
    w.add("dev/", "dir", b"", "", None);
    w.add("dev/null", "char", b"", "", None);
    let (blob, toc, toc_offset, members) = w.finish();
    let hello = members[1]; // [0] holds the headers before it
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut tar).unwrap();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let repo = format!("estargz-{name}-{}-{nanos}", std::process::id());
    let (http, addr) = (Client::new(), &env().addr);
    let layer = pushing::push_blob(&http, addr, &repo, &blob);
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&tar)]}}))
    .unwrap();
    let config_digest = pushing::push_blob(&http, addr, &repo, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": blob.len(),
            "annotations": {
                "containerd.io/snapshot/stargz/toc.digest": toc_digest.unwrap_or(toc).as_str(),
                "io.containers.estargz.uncompressed-size": tar.len().to_string(),
            }}],
    }))
    .unwrap();
    pushing::push_manifest(&http, addr, &repo, "1", "application/vnd.oci.image.manifest.v1+json", &manifest);
    Pushed { repo, layer, blob, toc_offset, hello }
}

/// The blob extracted by plain gzip and tar: the reference tree.
fn extracted(blob: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.tar.gz");
    fs::write(&path, blob).unwrap();
    let root = dir.path().join("rootfs");
    fs::create_dir(&root).unwrap();
    let out = Command::new("tar")
        .args(["-xzf", path.to_str().unwrap(), "--same-owner", "-p", "-C", root.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "plain tar -xzf cannot read the eStargz blob: {}", show(&out));
    fs::remove_file(root.join("stargz.index.json")).unwrap();
    // Removing the TOC touched the root; give it back the mtime its tar entry has.
    let out = Command::new("touch").args(["-d", "@1700000000"]).arg(&root).output().unwrap();
    assert!(out.status.success(), "touch: {}", show(&out));
    dir
}

/// Walk `dir` by metadata calls alone (what `ls -lR` does): no file content.
fn walk(dir: &Path) -> usize {
    let mut n = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            n += 1;
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                todo.push(p);
            }
        }
    }
    n
}

/// Listing fetches the footer and the TOC by Range and nothing else; reading one file
/// fetches its chunk's member alone; the whole tree then equals the blob extracted by
/// plain tar -xzf, with no layer GET but Range GETs and nothing in the store.
#[test]
fn an_estargz_layer_lists_from_its_toc_and_reads_chunks_by_range() {
    let Some(_) = outcome::test_env() else { return };
    let p = push_estargz("tree", None, None);
    let proxy = FaultProxy::start(&env().addr);
    let store = Store::new();
    let mark = log_mark();
    let m = mount(store.root(), &format!("{}/{}:1", proxy.addr, p.repo), &[]);
    assert_eq!(walk(&m.dir), 9);
    let listed = blob_requests(mark, &proxy.addr, &p.repo, p.layer.as_str());
    let tail = p.blob.len() as u64 - p.toc_offset;
    assert!(listed.iter().all(|(s, _)| *s == 206), "listing: not only Range GETs: {listed:?}");
    let bytes: u64 = listed.iter().map(|(_, n)| n).sum();
    assert!(bytes <= tail, "listing fetched {bytes} bytes, more than the footer and TOC ({tail}): {listed:?}");

    assert_eq!(fs::read(m.path("etc/hello")).unwrap(), b"hello from an estargz layer\n");
    let all = blob_requests(mark, &proxy.addr, &p.repo, p.layer.as_str());
    assert_eq!(all[listed.len()..], [(206, p.hello.1 - p.hello.0)], "reading etc/hello: {all:?}");

    let reference = extracted(&p.blob);
    let diffs = treecmp(&m.dir, &reference.path().join("rootfs"), &[]);
    assert!(diffs.is_empty(), "contents differ from the plain extraction:\n{}", diffs.join("\n"));
    let all = blob_requests(mark, &proxy.addr, &p.repo, p.layer.as_str());
    assert!(all.iter().all(|(s, _)| *s == 206), "not only Range GETs: {all:?}");
    assert!(!blob_file(store.root(), p.layer.as_str()).exists(), "the layer was downloaded into the store");
    assert!(server_logs(store.root()).contains("is eStargz"), "{}", server_logs(store.root()));
}

/// A TOC whose digest is not the one its layer annotation gives is not used: the layer
/// is downloaded whole (it is valid gzip) and served as any gzip layer, as the log says.
#[test]
fn a_toc_that_does_not_match_its_annotation_falls_back_to_the_whole_layer() {
    let Some(_) = outcome::test_env() else { return };
    let p = push_estargz("badtoc", None, Some(Digest::of(b"another TOC")));
    let proxy = FaultProxy::start(&env().addr);
    let store = Store::new();
    let mark = log_mark();
    let m = mount(store.root(), &format!("{}/{}:1", proxy.addr, p.repo), &[]);
    assert_eq!(fs::read(m.path("etc/hello")).unwrap(), b"hello from an estargz layer\n");
    let got = blob_requests(mark, &proxy.addr, &p.repo, p.layer.as_str());
    assert_eq!(got.iter().filter(|(s, _)| *s == 200).count(), 1, "want one whole download: {got:?}");
    let logs = server_logs(store.root());
    assert!(logs.contains("not the sha256:") && logs.contains("downloading it whole instead"), "{logs}");
}

/// A chunk whose bytes don't match its chunkDigest is EIO for reads that need it, logged;
/// the file's other chunks and other files still read.
#[test]
fn a_chunk_that_does_not_match_its_digest_is_eio() {
    let Some(_) = outcome::test_env() else { return };
    let p = push_estargz("badchunk", Some(1), None);
    let store = Store::new();
    let m = mount(store.root(), &format!("{}/{}:1", env().addr, p.repo), &[]);
    let f = fs::File::open(m.path("data/big")).unwrap();
    let mut first = vec![0; 100];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut first, 0).unwrap();
    assert_eq!(first, big()[..100]);
    let mut second = vec![0; 100];
    let r = std::os::unix::fs::FileExt::read_exact_at(&f, &mut second, CHUNK as u64 + 10);
    assert_eq!(errno_of("reading the bad chunk", r), libc::EIO);
    assert_eq!(fs::read(m.path("etc/hello")).unwrap(), b"hello from an estargz layer\n");
    let logs = server_logs(store.root());
    assert!(logs.contains("does not match the digest its eStargz TOC gives"), "{logs}");
}
