//! `imgfs index push` and `imgfs index inspect` against the real test registry
//! (Debian's docker-registry, distribution 2.8: no referrers API, so the referrers tag
//! scheme is what finds the index). Each test copies a test image into a repository
//! of its own, so that the referrers tags of tests running at once never meet.
//!
//! What is checked against the real thing: the published table of contents against
//! GNU tar's listing of the layer, and every span digest against the bytes the registry
//! serves for that span by HTTP Range.

#[path = "pushing/mod.rs"]
mod pushing;

use imgfs::digest::Digest;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

#[path = "outcome/mod.rs"]
mod outcome;
use outcome::{fails, ok, registry_addr as addr};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn imgfs(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgfs")).arg("--root").arg(root).args(args).output().unwrap()
}

fn get(http: &Client, url: &str, accept: &str) -> reqwest::blocking::Response {
    let r = http.get(url).header("accept", accept).send().unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r
}

/// Copy `src` (repo:tag) into repository `dst` as tag 1, blob by blob. Returns the
/// manifest's digest and its JSON.
fn copy_image(http: &Client, addr: &str, src: &str, dst: &str) -> (Digest, Value) {
    let (repo, tag) = src.split_once(':').unwrap();
    let accept = format!("{OCI_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json");
    let resp = get(http, &format!("http://{addr}/v2/{repo}/manifests/{tag}"), &accept);
    let media_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let body = resp.bytes().unwrap().to_vec();
    let manifest: Value = serde_json::from_slice(&body).unwrap();
    let blobs = std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap());
    for d in blobs {
        let digest = d["digest"].as_str().unwrap();
        let bytes = get(http, &format!("http://{addr}/v2/{repo}/blobs/{digest}"), "*/*").bytes().unwrap();
        pushing::push_blob(http, addr, dst, &bytes);
    }
    pushing::push_manifest(http, addr, dst, "1", &media_type, &body);
    (Digest::of(&body), manifest)
}

/// A repository name for one test, fresh on every run. Not named after the image it
/// copies: other tests search the shared registry's catalog for `app` and `multi`.
fn repo(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("referrers-{}-{}-{nanos}", Digest::of(name.as_bytes()).short(), std::process::id())
}

/// GNU tar's listing of a layer blob, names normalised as image tools do (no `./`,
/// no trailing `/`; the root is ``).
fn tar_listing(blob: &[u8], media_type: &str) -> Vec<String> {
    let tar: Vec<u8> = if media_type.ends_with("gzip") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(blob).read_to_end(&mut out).unwrap();
        out
    } else if media_type.ends_with("zstd") {
        zstd::decode_all(blob).unwrap()
    } else {
        blob.to_vec()
    };
    let mut child = Command::new("tar")
        .args(["-tf", "-", "--quoting-style=literal"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&tar));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "tar -t failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let l = l.trim_start_matches("./").trim_start_matches('/').trim_end_matches('/');
            if l == "." { "" } else { l }.to_string()
        })
        .collect()
}

/// Push an index for `src` (copied into a repository of its own) with one store, find
/// it with another, fresh one, and check every layer's table of contents against its
/// tar listing and every span against the registry's Range reads of the blob.
fn published_index_matches_the_layers(src: &str, kinds: &[&str]) {
    let addr = addr();
    let http = Client::new();
    let repo = repo(&src.replace(':', "-"));
    let (manifest_digest, manifest) = copy_image(&http, &addr, src, &repo);
    let image = format!("{addr}/{repo}:1");
    let pusher = tempfile::tempdir().unwrap();
    let pushed = ok(&imgfs(pusher.path(), &["index", "push", &image])).trim().to_string();
    assert!(pushed.starts_with("sha256:"), "the artifact digest alone on stdout: {pushed}");

    let fresh = tempfile::tempdir().unwrap();
    let found: Value =
        serde_json::from_str(&ok(&imgfs(fresh.path(), &["index", "inspect", "--json", &image]))).unwrap();
    assert_eq!(found["index"], pushed.as_str());
    assert_eq!(found["subject"], manifest_digest.as_str());
    let layers = manifest["layers"].as_array().unwrap();
    let published = found["layers"].as_array().unwrap();
    assert_eq!(published.len(), layers.len());
    let mut seen_kinds = Vec::new();
    for (l, p) in layers.iter().zip(published) {
        let digest = l["digest"].as_str().unwrap();
        let media_type = l["mediaType"].as_str().unwrap();
        assert_eq!(p["layer"], digest);
        seen_kinds.push(p["span_kind"].as_str().unwrap().to_string());
        let blob_url = format!("http://{addr}/v2/{repo}/blobs/{digest}");
        let blob = get(&http, &blob_url, "*/*").bytes().unwrap();

        // The table of contents: the tar's names, in order, whiteout markers apart.
        let (mut markers, names): (Vec<String>, Vec<String>) =
            tar_listing(&blob, media_type).into_iter().partition(|n| n.rsplit('/').next().unwrap().starts_with(".wh."));
        let entries: Vec<String> =
            p["entries"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().into()).collect();
        assert_eq!(entries, names, "entries of layer {digest}");
        let mut hidden: Vec<String> = p["whiteouts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let w = w.as_str().unwrap();
                match w.rsplit_once('/') {
                    Some((dir, name)) => format!("{dir}/.wh.{name}"),
                    None => format!(".wh.{w}"),
                }
            })
            .chain(p["opaque"].as_array().unwrap().iter().map(|d| match d.as_str().unwrap() {
                "" => ".wh..wh..opq".to_string(),
                d => format!("{d}/.wh..wh..opq"),
            }))
            .collect();
        hidden.sort();
        markers.sort();
        assert_eq!(hidden, markers, "whiteouts of layer {digest}");

        // The spans: a layer a mount downloads whole (an uncompressed tar, a zstd layer
        // in one frame) has none; a layer with checkpoints has spans that cover the
        // blob, and each digest is that of the bytes the registry serves for its range.
        let spans = p["spans"].as_array().unwrap();
        if ["plain", "stream"].contains(&p["span_kind"].as_str().unwrap()) {
            assert!(spans.is_empty(), "spans published for {digest}, which is read whole");
            continue;
        }
        assert!(!spans.is_empty());
        let range = |s: &Value| (s["start"].as_u64().unwrap(), s["end"].as_u64().unwrap());
        // A gzip blob's first span starts after the member header (the first
        // checkpoint is at the start of the deflate data); every other kind at 0.
        let first = range(&spans[0]).0;
        if p["span_kind"] == "gzip" {
            assert!((10..64).contains(&first), "first span of {digest} at {first}");
        } else {
            assert_eq!(first, 0, "first span of {digest}");
        }
        assert_eq!(range(spans.last().unwrap()).1, blob.len() as u64);
        for w in spans.windows(2) {
            assert!(range(&w[1]).0 <= range(&w[0]).1, "spans leave a gap in {digest}");
        }
        for s in spans {
            let (start, end) = range(s);
            let resp = http.get(&blob_url).header("range", format!("bytes={start}-{}", end - 1)).send().unwrap();
            assert_eq!(resp.status(), 206, "a Range read of {digest}");
            let bytes = resp.bytes().unwrap();
            assert_eq!(bytes.len() as u64, end - start);
            assert_eq!(s["sha256"], Digest::of(&bytes).hex(), "span {start}..{end} of {digest}");
        }
    }
    assert_eq!(seen_kinds, kinds);
}

#[test]
fn a_gzip_index_is_found_from_a_fresh_store_and_matches_the_layer_and_its_ranges() {
    let Some(_) = outcome::test_env() else { return };
    // big:1: one gzip layer of 13 MB, so many checkpoints and spans.
    published_index_matches_the_layers("big:1", &["gzip"]);
}

#[test]
fn gzip_zstd_and_plain_tar_layers_are_indexed_each_their_way() {
    let Some(_) = outcome::test_env() else { return };
    // edge:1: a gzip, a zstd and an uncompressed tar layer, with PAX and GNU names.
    published_index_matches_the_layers("edge:1", &["gzip", "zstd", "plain"]);
    // app:1: whiteouts and an opaque directory made by umoci.
    published_index_matches_the_layers("app:1", &["gzip", "gzip", "gzip"]);
}

/// The referrers index under `sha256-<hex>`.
fn referrers_tag(http: &Client, addr: &str, repo: &str, subject: &Digest) -> Value {
    let url = format!("http://{addr}/v2/{repo}/manifests/sha256-{}", subject.hex());
    serde_json::from_slice(&get(http, &url, OCI_INDEX).bytes().unwrap()).unwrap()
}

#[test]
fn pushing_twice_is_idempotent_and_keeps_a_foreign_referrer() {
    let Some(_) = outcome::test_env() else { return };
    let addr = addr();
    let http = Client::new();
    let repo = repo("twice");
    let (subject, _) = copy_image(&http, &addr, "app:2", &repo);
    let subject_size = get(&http, &format!("http://{addr}/v2/{repo}/manifests/1"), OCI_MANIFEST).bytes().unwrap().len();
    // Another tool's referrer (say an SBOM), listed under the tag as the OCI spec's
    // tag scheme has it, before imgfs comes.
    let empty = pushing::push_blob(&http, &addr, &repo, b"{}");
    let sbom = pushing::push_blob(&http, &addr, &repo, b"{\"sbom\":true}");
    let foreign = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [{ "mediaType": "application/json", "digest": sbom, "size": 13 }],
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size },
    }))
    .unwrap();
    let foreign_digest = Digest::of(&foreign);
    pushing::push_manifest(&http, &addr, &repo, foreign_digest.as_str(), OCI_MANIFEST, &foreign);
    let tag_index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": foreign_digest, "size": foreign.len(),
            "artifactType": "application/vnd.example.sbom.v1",
        }],
    }))
    .unwrap();
    pushing::push_manifest(&http, &addr, &repo, &format!("sha256-{}", subject.hex()), OCI_INDEX, &tag_index);

    let image = format!("{addr}/{repo}:1");
    let root = tempfile::tempdir().unwrap();
    let first = ok(&imgfs(root.path(), &["index", "push", &image]));
    let second = ok(&imgfs(root.path(), &["index", "push", &image]));
    assert_eq!(first, second, "the same artifact both times");
    let listed = referrers_tag(&http, &addr, &repo, &subject);
    let digests: Vec<&str> =
        listed["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert_eq!(digests, [foreign_digest.as_str(), first.trim()], "foreign first, ours once: {listed}");
    let ours = &listed["manifests"][1];
    assert_eq!(ours["artifactType"], "application/vnd.imgfs.index.v1");
    assert_eq!(ours["mediaType"], OCI_MANIFEST);
    // And the foreign entry came through untouched, its artifactType included.
    assert_eq!(listed["manifests"][0]["artifactType"], "application/vnd.example.sbom.v1");
    // The artifact manifest is what the OCI 1.1 spec asks of one.
    let url = format!("http://{addr}/v2/{repo}/manifests/{}", first.trim());
    let artifact: Value = serde_json::from_slice(&get(&http, &url, OCI_MANIFEST).bytes().unwrap()).unwrap();
    assert_eq!(artifact["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
    assert_eq!(artifact["subject"]["digest"], subject.as_str());
    assert_eq!(artifact["subject"]["size"], subject_size);
    // The image was pulled into the store on the way: push builds from it.
    ok(&imgfs(root.path(), &["inspect", &image]));
}

#[test]
fn no_index_and_tampered_indexes_are_refused_with_one_line() {
    let Some(_) = outcome::test_env() else { return };
    let addr = addr();
    let http = Client::new();
    let repo = repo("tampered");
    let (subject, manifest) = copy_image(&http, &addr, "app:2", &repo);
    let image = format!("{addr}/{repo}:1");
    let fresh = tempfile::tempdir().unwrap();
    let err = fails(&imgfs(fresh.path(), &["index", "inspect", &image]));
    assert!(err.contains("no imgfs index is published for"), "{err}");

    let pusher = tempfile::tempdir().unwrap();
    let good = ok(&imgfs(pusher.path(), &["index", "push", &image])).trim().to_string();
    let url = format!("http://{addr}/v2/{repo}/manifests/{good}");
    let good: Value = serde_json::from_slice(&get(&http, &url, OCI_MANIFEST).bytes().unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let top = layers[1]["digest"].as_str().unwrap();

    // Whoever can push to the repository publishes a bad index, and the referrers tag
    // lists only it: each must be refused, naming the layer, never served.
    let flipped = {
        let d = good["layers"][1]["digest"].as_str().unwrap();
        let mut blob = get(&http, &format!("http://{addr}/v2/{repo}/blobs/{d}"), "*/*").bytes().unwrap().to_vec();
        let mid = blob.len() / 2;
        blob[mid] ^= 0x20;
        let mut m = good.clone();
        m["layers"][1]["digest"] = json!(pushing::push_blob(&http, &addr, &repo, &blob));
        m
    };
    let swapped = {
        let mut m = good.clone();
        let a = m["layers"][0]["annotations"].clone();
        m["layers"][0]["annotations"] = m["layers"][1]["annotations"].clone();
        m["layers"][1]["annotations"] = a;
        m
    };
    let truncated = {
        let d = good["layers"][1]["digest"].as_str().unwrap();
        let blob = get(&http, &format!("http://{addr}/v2/{repo}/blobs/{d}"), "*/*").bytes().unwrap().to_vec();
        let mut m = good.clone();
        m["layers"][1]["digest"] = json!(pushing::push_blob(&http, &addr, &repo, &blob[..blob.len() - 7]));
        m["layers"][1]["size"] = json!(blob.len() - 7);
        m
    };
    let wrong_head = {
        let mut m = good.clone();
        m["layers"][1]["annotations"]["io.imgfs.index.head"] = json!(format!("40 {}", Digest::of(b"x")));
        m
    };
    for (what, bad, expect) in [
        ("a head annotation that names other bytes", wrong_head, "io.imgfs.index.head".to_string()),
        ("a flipped byte", flipped, top.to_string()),
        ("indexes swapped between layers", swapped, "is the index of layer".to_string()),
        ("a truncated blob", truncated, top.to_string()),
    ] {
        let body = serde_json::to_vec(&bad).unwrap();
        pushing::push_index_referrer(&http, &addr, &repo, &subject, &body);
        let err = fails(&imgfs(fresh.path(), &["index", "inspect", &image]));
        assert!(err.contains("is not usable") && err.contains(&expect), "{what}: {err}");
    }
}
