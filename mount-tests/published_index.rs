//! Mounting with an index published next to the image (`imgfs index push`): no layer
//! blob is downloaded, lookups and listings come from the index heads, reads fetch
//! spans by HTTP Range into a bounded disk cache, and a span that fails its published
//! digest is an EIO for that read alone.
//!
//! Each test copies its image into a repository of its own (with skopeo, digests
//! preserved) before publishing there, so the shared test images keep having no index
//! and the other tests' counts stay as they are. Requests are counted from the
//! registry's log through a private proxy (see main.rs): status 206 is a Range GET,
//! 200 a whole blob, and `http.response.written` the bytes sent.

use super::*;
use imgfs::digest::Digest;
use imgfs::image::Descriptor;
use imgfs::index_artifact::{Expected, IndexArtifact, Spans};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::os::unix::fs::FileExt;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A fresh repository holding a copy of test image `src` as tag 1, with an index
/// published for it. Returns the repository and the index manifest's digest.
pub(crate) fn publish_copy(src: &str, name: &str) -> (String, String) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let repo = format!("ranged-{name}-{}-{nanos}", std::process::id());
    let addr = &env().addr;
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests", "-q"])
        .arg(format!("docker://{addr}/{src}"))
        .arg(format!("docker://{addr}/{repo}:1"))
        .output()
        .expect("cannot run skopeo");
    assert!(out.status.success(), "skopeo copy {src}: {}", show(&out));
    let pusher = Store::new();
    let digest = imgfs_ok(pusher.root(), &["index", "push", &format!("{addr}/{repo}:1")]).trim().to_string();
    (repo, digest)
}

/// Requests for blob `digest` of `repo` through `via` since `mark`: (status, bytes sent).
pub(super) fn blob_requests(mark: u64, via: &str, repo: &str, digest: &str) -> Vec<(u16, u64)> {
    sync_registry_log();
    let uri = format!("/v2/{repo}/blobs/{digest}");
    let field = |l: &str, k: &str| -> Option<u64> { l.split(k).nth(1)?.split(' ').next()?.parse().ok() };
    log_since(mark)
        .lines()
        .filter(|l| {
            l.contains("msg=\"response completed")
                && l.contains("http.request.method=GET ")
                && l.contains(&format!("\"{uri}\""))
                && l.contains(&format!("http.request.host=\"{via}\""))
        })
        .map(|l| {
            (field(l, "http.response.status=").unwrap_or(0) as u16, field(l, "http.response.written=").unwrap_or(0))
        })
        .collect()
}

/// Every entry of `dir` with what a listing shows (type, mode, owner, size, link
/// target, xattr names), read by metadata calls alone: no file content.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let link = if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            let size = if m.is_dir() { 0 } else { m.len() };
            let mut xattrs = listxattr(&p);
            xattrs.sort();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            out.push(format!("{rel} {:o} {}:{} {size} {link} {xattrs:?}", m.mode(), m.uid(), m.gid()));
            if m.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A mount of app:1 (three gzip layers, whiteouts) with a published index lists the
/// whole tree as the reference unpack has it without one layer blob GET; then every
/// file's content equals the reference, fetched by Range GETs only.
#[test]
fn an_indexed_image_lists_without_layer_gets_and_reads_by_range_only() {
    let Some(_) = outcome::test_env() else { return };
    let (repo, _) = publish_copy("app:1", "list");
    let layers = layer_digests("app:1");
    let proxy = FaultProxy::start(&env().addr);
    let store = Store::new();
    let mark = log_mark();
    let m = mount(store.root(), &format!("{}/{repo}:1", proxy.addr), &[]);
    let reference = unpack_of("app:1").join("rootfs");
    assert_eq!(listing(&m.dir), listing(&reference), "the listing differs from the reference unpack");
    for l in &layers {
        let got = blob_requests(mark, &proxy.addr, &repo, l);
        assert!(got.is_empty(), "listing the tree fetched layer {l}: {got:?}");
        assert!(!blob_file(store.root(), l).exists(), "layer {l} is in the store");
    }

    let diffs = treecmp(&m.dir, &reference, &["--no-dir-mtime"]);
    assert!(diffs.is_empty(), "contents differ from the reference:\n{}", diffs.join("\n"));
    for l in &layers {
        let got = blob_requests(mark, &proxy.addr, &repo, l);
        assert!(got.iter().all(|(s, _)| *s == 206), "layer {l}: not only Range GETs: {got:?}");
        assert!(!blob_file(store.root(), l).exists(), "layer {l} was downloaded into the store");
    }
    assert!(server_logs(store.root()).contains("using published index"), "{}", server_logs(store.root()));
}

/// Reading one small file of big:1 (one 13 MB gzip layer) fetches only Range GETs of
/// that layer, adding up to a small part of it; `--no-index` downloads it whole.
#[test]
fn reading_one_file_fetches_a_span_not_the_layer() {
    let Some(_) = outcome::test_env() else { return };
    let (repo, _) = publish_copy("big:1", "one-file");
    let layer = manifest("big:1")["layers"][0].clone();
    let (digest, size) = (layer["digest"].as_str().unwrap().to_string(), layer["size"].as_u64().unwrap());
    let proxy = FaultProxy::start(&env().addr);
    let store = Store::new();
    let mark = log_mark();
    let m = mount(store.root(), &format!("{}/{repo}:1", proxy.addr), &[]);
    assert_eq!(fs::read(m.path("data/small.txt")).unwrap(), reference_file("big:1", "data/small.txt"));
    let got = blob_requests(mark, &proxy.addr, &repo, &digest);
    assert!(!got.is_empty() && got.iter().all(|(s, _)| *s == 206), "want Range GETs only: {got:?}");
    let bytes: u64 = got.iter().map(|(_, n)| n).sum();
    assert!(bytes * 4 < size, "reading one small file fetched {bytes} bytes of a {size}-byte layer");
    drop(m);

    let plain = Store::new();
    let mark = log_mark();
    let m = mount(plain.root(), &format!("{}/{repo}:1", proxy.addr), &["--no-index"]);
    assert_eq!(fs::read(m.path("data/small.txt")).unwrap(), reference_file("big:1", "data/small.txt"));
    let got = blob_requests(mark, &proxy.addr, &repo, &digest);
    assert_eq!(got.iter().filter(|(s, _)| *s == 200).count(), 1, "--no-index downloads the layer: {got:?}");
}

/// An index whose digest for one span is not that of the registry's bytes (what a
/// tampered blob would look like): a read in that span is EIO, logged; reads in other
/// spans serve the reference's bytes.
#[test]
fn a_span_that_fails_its_published_digest_is_eio_and_the_rest_serves() {
    let Some(_) = outcome::test_env() else { return };
    let (repo, good) = publish_copy("big:1", "tampered");
    let addr = &env().addr;
    let http = Client::new();
    let get = |url: String, accept: &str| -> Vec<u8> {
        let r = http.get(&url).header("accept", accept).send().unwrap();
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        r.bytes().unwrap().to_vec()
    };
    let image: Value =
        serde_json::from_slice(&get(format!("http://{addr}/v2/{repo}/manifests/1"), OCI_MANIFEST)).unwrap();
    let layer: Descriptor = serde_json::from_value(image["layers"][0].clone()).unwrap();
    let config: Value = serde_json::from_slice(&get(
        format!("http://{addr}/v2/{repo}/blobs/{}", image["config"]["digest"].as_str().unwrap()),
        "*/*",
    ))
    .unwrap();
    let diff_id: Digest = config["rootfs"]["diff_ids"][0].as_str().unwrap().parse().unwrap();
    let mut artifact_manifest: Value =
        serde_json::from_slice(&get(format!("http://{addr}/v2/{repo}/manifests/{good}"), OCI_MANIFEST)).unwrap();
    let blob_digest = artifact_manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let blob = get(format!("http://{addr}/v2/{repo}/blobs/{blob_digest}"), "*/*");
    let mut a = IndexArtifact::decode(&blob, &Expected { layer: &layer, diff_id: &diff_id }).unwrap();

    // The span holding data/small.txt is the bad one; big.bin's first bytes lie elsewhere.
    let contents = a.contents().unwrap();
    let entry = |p: &str| contents.entries.iter().find(|e| e.path == p.as_bytes()).unwrap().offset;
    let Spans::Checkpoints(c) = &a.spans else { panic!("big:1 is gzip") };
    let (bad, good_span) = (c.span_of(entry("data/small.txt")), c.span_of(entry("data/big.bin")));
    assert_ne!(bad, good_span, "the test needs the two files in different spans");
    a.span_digests[bad][0] ^= 1;
    let tampered = a.encode().unwrap();
    let head = IndexArtifact::head(&tampered).unwrap();
    let d = &mut artifact_manifest["layers"][0];
    d["digest"] = json!(pushing::push_blob(&http, addr, &repo, &tampered));
    d["size"] = json!(tampered.len());
    d["annotations"]["io.imgfs.index.head"] = json!(format!("{} {}", head.len(), Digest::of(head)));
    let body = serde_json::to_vec(&artifact_manifest).unwrap();
    let subject = Digest::of(&get(format!("http://{addr}/v2/{repo}/manifests/1"), OCI_MANIFEST));
    pushing::push_index_referrer(&http, addr, &repo, &subject, &body);

    let store = Store::new();
    let m = mount(store.root(), &format!("{addr}/{repo}:1"), &[]);
    let errno = errno_of("read data/small.txt", fs::read(m.path("data/small.txt")));
    assert_eq!(errno, libc::EIO, "a span failing its digest must be EIO");
    let mut head = vec![0u8; 65536];
    fs::File::open(m.path("data/big.bin")).unwrap().read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, reference_file("big:1", "data/big.bin")[..65536]);
    let logs = server_logs(store.root());
    assert!(logs.contains("does not match the digest its published index gives"), "not logged:\n{logs}");
    // Nothing failing its digest was kept in the cache: the second read fetches the
    // span again (a second mismatch logged) and finds no cache entry to refuse.
    let again = errno_of("read data/small.txt again", fs::read(m.path("data/small.txt")));
    assert_eq!(again, libc::EIO);
    let logs = server_logs(store.root());
    let mismatches = logs.matches("does not match the digest its published index gives").count();
    assert!(mismatches >= 2, "the second read did not fetch the span again:\n{logs}");
    assert!(!logs.contains("fails its digest; fetching it again"), "a bad span was cached:\n{logs}");
}

/// With a 2 MiB cache, big:1's 24 MiB file (a 13 MB layer) reads whole and equal to the
/// reference, the cache never holding more than its bound. A second mount of the same
/// store (so that the kernel's page cache can't answer) finds the entries left, damaged
/// on disk here: they are refused and fetched again, never served, and the spans
/// evicted are fetched again by Range. `imgfs prune` empties the cache.
#[test]
fn a_small_cache_serves_a_large_file_within_its_bound_and_prune_empties_it() {
    let Some(_) = outcome::test_env() else { return };
    let (repo, _) = publish_copy("big:1", "small-cache");
    let digest = layer_digests("big:1")[0].clone();
    let proxy = FaultProxy::start(&env().addr);
    let store = Store::new();
    let mark = log_mark();
    let bound = 2u64 << 20;
    let image = format!("{}/{repo}:1", proxy.addr);
    // A decoded-span memory of 1 MiB: spans come from the disk cache or the registry.
    let flags = ["--cache-size", "2M", "--read-cache", "1"];
    let cache = store.root().join("cache");
    let cached =
        || -> u64 { fs::read_dir(&cache).unwrap().map(|e| e.unwrap().metadata().map_or(0, |m| m.len())).sum() };
    let want = reference_file("big:1", "data/big.bin");
    let most = std::cell::Cell::new(0);
    // Reads `want[from..]` in 1 MiB pieces, checking each and the cache's size.
    let read_from = |m: &Mount, from: usize| {
        let f = fs::File::open(m.path("data/big.bin")).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = from;
        while at < want.len() {
            let n = (want.len() - at).min(buf.len());
            f.read_exact_at(&mut buf[..n], at as u64).unwrap();
            assert!(buf[..n] == want[at..at + n], "bytes {at}..{} differ", at + n);
            at += n;
            most.set(most.get().max(cached()));
        }
    };
    let gets = || blob_requests(mark, &proxy.addr, &repo, &digest);

    let m = mount(store.root(), &image, &flags);
    read_from(&m, 0);
    drop(m);
    let first = gets();
    assert!(first.iter().all(|(s, _)| *s == 206), "want Range GETs only: {first:?}");

    // Entries only: a read-ahead still writing when the server exited leaves its temp
    // file (`.tmp-…`, swept by the next command that opens the store).
    let entries: Vec<PathBuf> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(!entries.is_empty(), "nothing was cached");
    for e in &entries {
        let mut bytes = fs::read(e).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        fs::write(e, bytes).unwrap();
    }
    let most = most.get();
    assert!(most > 0 && most <= bound, "the cache held up to {most} bytes, bound {bound}");
    // Remounted with room for the whole layer, so nothing is evicted before it is read:
    // reading every file meets every damaged entry (which ones LRU kept varies).
    let m = mount(store.root(), &image, &["--cache-size", "64M", "--read-cache", "1"]);
    read_from(&m, 0);
    for f in ["data/1m.bin", "data/small.txt"] {
        assert_eq!(fs::read(m.path(f)).unwrap(), reference_file("big:1", f), "{f}");
    }
    let logs = server_logs(store.root());
    assert!(logs.contains("fails its digest; fetching it again"), "damaged entries not noticed:\n{logs}");
    let second = gets();
    assert!(second.iter().all(|(s, _)| *s == 206), "want Range GETs only: {second:?}");
    // The layer's spans among them (the rest are pages of the index's TOC and its
    // digests, fetched again from the index blob, not the layer's).
    let spans = entries.iter().filter(|e| e.file_name().unwrap().to_string_lossy().contains("-span-")).count();
    assert!(
        second.len() - first.len() > spans,
        "evicted spans were not fetched again: {} GETs, then {}",
        first.len(),
        second.len()
    );
    assert!(!blob_file(store.root(), &digest).exists(), "the layer was downloaded into the store");

    imgfs_ok(store.root(), &["prune", "-f"]);
    assert_eq!(cached(), 0, "prune left the cache non-empty");
    assert_eq!(fs::read(m.path("data/small.txt")).unwrap(), reference_file("big:1", "data/small.txt"));
}

/// A layer whose published TOC can't be fetched when first needed (the index blob
/// answers 404 for a while): that access fails with EIO; the next, once the blob is back,
/// reads the layer through its index again, by Range, rather than downloading it whole.
#[test]
fn a_published_toc_that_fails_once_is_tried_again_not_downloaded() {
    let Some(_) = outcome::test_env() else { return };
    let (repo, index) = publish_copy("big:1", "blip");
    let addr = &env().addr;
    let artifact = Client::new()
        .get(format!("http://{addr}/v2/{repo}/manifests/{index}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let artifact: Value = serde_json::from_slice(&artifact).unwrap();
    let artifact_blob = artifact["layers"][0]["digest"].as_str().unwrap().to_string();
    let layer = layer_digests("big:1")[0].clone();
    let proxy = FaultProxy::start(addr);
    let store = Store::new();
    let mark = log_mark();
    let m = mount(store.root(), &format!("{}/{repo}:1", proxy.addr), &[]);
    proxy.add(Rule::new(&artifact_blob, Fault::Status(404, None)));
    assert_eq!(errno_of("read while the index is away", fs::read(m.path("data/small.txt"))), libc::EIO);
    proxy.clear();
    assert_eq!(fs::read(m.path("data/small.txt")).unwrap(), reference_file("big:1", "data/small.txt"));
    let got = blob_requests(mark, &proxy.addr, &repo, &layer);
    assert!(!got.is_empty() && got.iter().all(|(s, _)| *s == 206), "want Range GETs only: {got:?}");
    assert!(!blob_file(store.root(), &layer).exists(), "the layer was downloaded into the store");
}
