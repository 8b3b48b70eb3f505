//! Hostile input through the real `imgfs` binary: what a user types (`--format`
//! templates, `--filter` patterns, references) and what a registry serves (manifests
//! and configs that are malformed, truncated or inconsistent, pushed to the real test
//! registry through its HTTP API, since umoci and skopeo cannot make broken images).
//! Each must end in one clear `imgfs: error:` line and a non-zero exit, never a panic
//! or a hang, and a failed pull or mount records nothing in the store.

use imgfs::digest::Digest;
use imgfs::image::{Descriptor, OCI_INDEX, OCI_MANIFEST};
use imgfs::store::db::ImageRecord;
use imgfs::store::Store;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output};

#[path = "outcome/mod.rs"]
mod outcome;
use outcome::fails;

#[path = "pushing/mod.rs"]
mod pushing;

fn imgfs(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgfs"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("IMGFS_ROOT")
        .output()
        .unwrap()
}

/// A store holding one image tagged `app:1`, made through the library as a pull would
/// leave it, for the commands that render it.
fn store_with_an_image() -> tempfile::TempDir {
    store_with_layer_sizes(&[])
}

/// The same, its record naming layers of these sizes (as a mount records an image
/// before fetching its layers, trusting the manifest's sizes).
fn store_with_layer_sizes(sizes: &[u64]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
        "config": {"Labels": {"a": "1"}}, "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let id = Digest::of(&config);
    store.put_blob_bytes(&id, &config).unwrap();
    let config_desc = Descriptor {
        media_type: "application/vnd.oci.image.config.v1+json".into(),
        digest: id.clone(),
        size: config.len() as u64,
        platform: None,
        annotations: None,
    };
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": [],
    }))
    .unwrap();
    let manifest_digest = Digest::of(&manifest);
    store.put_blob_bytes(&manifest_digest, &manifest).unwrap();
    let record = ImageRecord {
        id: id.clone(),
        manifest: manifest_digest.clone(),
        manifest_media_type: OCI_MANIFEST.into(),
        index: None,
        config: config_desc,
        layers: sizes
            .iter()
            .map(|&size| Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                digest: Digest::of(&size.to_le_bytes()),
                size,
                platform: None,
                annotations: None,
            })
            .collect(),
        source: "docker.io/library/app".into(),
        repo_digests: vec![format!("docker.io/library/app@{manifest_digest}")],
        pinned: Vec::new(),
        added: 1_700_000_000,
        other_manifests: Vec::new(),
    };
    store
        .update_db(|db| {
            db.images.insert(id.clone(), record);
            db.set_tag("docker.io/library/app:1", &id);
            Ok::<_, imgfs::store::Error>(())
        })
        .unwrap();
    dir
}

#[test]
fn huge_template_widths_and_ranges_are_errors_not_crashes() {
    let dir = store_with_an_image();
    let root = dir.path();
    for (format, want) in [
        ("{{pad .ID 99999999999 0}}", "pad: result longer than 16 MiB"),
        ("{{pad .ID 9223372036854775807 9223372036854775807}}", "pad: result longer than 16 MiB"),
        ("{{range 1000000000000}}{{end}}", "evaluation stopped after 1000000 steps"),
        (r#"{{$x := "ab"}}{{range 60}}{{$x = print $x $x}}{{end}}"#, "print: result longer than 16 MiB"),
    ] {
        let err = fails(&imgfs(root, &["ls", "--format", format]));
        assert!(err.contains("invalid --format: template: ") && err.contains(want), "{format}: {err}");
        let err = fails(&imgfs(root, &["inspect", "--format", format, "app:1"]));
        assert!(err.contains(want), "inspect {format}: {err}");
    }
    let deep = format!("{}.ID{}", "{{if 1}}".repeat(5_000), "{{end}}".repeat(5_000));
    let err = fails(&imgfs(root, &["ls", "--format", &deep]));
    assert!(err.contains("nested more than 100 levels deep"), "{err}");
    let deep = format!("{{{{{}.ID{}}}}}", "(".repeat(30_000), ")".repeat(30_000));
    assert!(fails(&imgfs(root, &["ls", "--format", &deep])).contains("nested more than 100 levels deep"));
    // (An argument is at most 128 KiB.) A table of very many columns is aligned, not a stack overflow.
    let wide = format!("table {}", "{{.Tag}}\\t".repeat(8_000));
    let out = imgfs(root, &["ls", "--format", &wide]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().starts_with("1         1         "));
}

#[test]
fn declared_sizes_that_overflow_a_total_are_listed() {
    let dir = store_with_layer_sizes(&[i64::MAX as u64, i64::MAX as u64, i64::MAX as u64]);
    let out = imgfs(dir.path(), &["ls", "--format", "{{.Size}}"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "18.4EB\n");
    let out = imgfs(dir.path(), &["inspect", "--format", "{{.Size}}", "app:1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn hostile_reference_filters_are_answered_quickly_or_refused() {
    let dir = store_with_an_image();
    let root = dir.path();
    // Exponential for a backtracking matcher; Go's algorithm is linear in the pattern.
    let stars = format!("reference={}b", "*a".repeat(20));
    let out = imgfs(root, &["ls", "-q", "--filter", &stars]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    // A very long pattern (one stack frame per character before).
    let long = format!("reference={}", "*".repeat(100_000));
    let out = imgfs(root, &["ls", "-q", "--filter", &long]);
    assert!(out.status.success() && !out.stdout.is_empty(), "{out:?}");
    for (filter, want) in [
        ("reference=[", "invalid reference filter \"[\": malformed character class"),
        ("dangling=maybe", "invalid dangling filter value \"maybe\""),
        ("before=nosuch", "invalid before filter"),
        ("since=", "invalid since filter"),
        ("label==", "bad label filter"),
        ("=x", "bad filter \"=x\""),
    ] {
        let err = fails(&imgfs(root, &["ls", "--filter", filter]));
        assert!(err.contains(want), "{filter}: {err}");
    }
}

#[test]
fn over_long_repository_names_are_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) is never asked: the name is refused first.
    let long = format!("127.0.0.1:9/{}:1", "a".repeat(300));
    for cmd in ["pull", "inspect", "rm"] {
        let err = fails(&imgfs(dir.path(), &[cmd, &long]));
        assert!(err.contains("repository name is 312 characters, more than 255"), "{cmd}: {err}");
    }
    let err = fails(&imgfs(dir.path(), &["pull", "h?x.io/app"]));
    assert!(err.contains("invalid registry host"), "{err}");
}

// ---- hostile images from the real registry --------------------------------------------

struct Registry {
    addr: String,
    http: reqwest::blocking::Client,
}

fn registry() -> Registry {
    Registry { addr: outcome::registry_addr(), http: reqwest::blocking::Client::new() }
}

const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

impl Registry {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        pushing::push_blob(&self.http, &self.addr, repo, data)
    }

    /// Push a manifest whose config and layers are these blobs, with `edit` applied to
    /// its JSON first; returns `addr/repo:tag` to pull.
    fn push_image(
        &self,
        repo: &str,
        tag: &str,
        config: &[u8],
        layers: &[&[u8]],
        edit: impl Fn(&mut serde_json::Value),
    ) -> String {
        let config_digest = self.push_blob(repo, config);
        let layers: Vec<_> = layers
            .iter()
            .map(|l| json!({"mediaType": LAYER_TYPE, "digest": self.push_blob(repo, l), "size": l.len()}))
            .collect();
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
            "layers": layers,
        });
        edit(&mut manifest);
        pushing::push_manifest(
            &self.http,
            &self.addr,
            repo,
            tag,
            OCI_MANIFEST,
            &serde_json::to_vec(&manifest).unwrap(),
        );
        format!("{}/{repo}:{tag}", self.addr)
    }
}

impl Registry {
    /// Push an OCI index whose one entry, for linux/amd64, is the manifest `target`
    /// names (a tag in `repo`); returns `addr/repo:tag` to pull.
    fn push_index(&self, repo: &str, tag: &str, target: &str, platform: serde_json::Value) -> String {
        let r = self
            .http
            .get(self.url(&format!("/v2/{repo}/manifests/{target}")))
            .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "getting {repo}:{target}");
        let media_type = r.headers()["content-type"].to_str().unwrap().to_string();
        let body = r.bytes().unwrap();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": media_type, "digest": Digest::of(&body), "size": body.len(), "platform": platform}],
        });
        pushing::push_manifest(&self.http, &self.addr, repo, tag, OCI_INDEX, &serde_json::to_vec(&index).unwrap());
        format!("{}/{repo}:{tag}", self.addr)
    }
}

/// A one-file layer as an uncompressed tar.
fn layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    b.append_data(&mut h, "f", &b"hi"[..]).unwrap();
    b.into_inner().unwrap()
}

fn config_for(layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    serde_json::to_vec(
        &json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}),
    )
    .unwrap()
}

/// Pull `reference` and mount it: both must fail with one line containing `want`, and
/// leave no image, tag, blob or temp file behind.
fn refused(reference: &str, want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let err = fails(&imgfs(root, &["pull", reference]));
    assert!(err.contains(want), "pull {reference}: expected {want:?} in: {err}");
    let mnt = tempfile::tempdir().unwrap();
    let out = imgfs(root, &["mount", reference, mnt.path().to_str().unwrap()]);
    if out.status.success() {
        // It must not have, but a mount left behind would outlive the test.
        let _ = imgfs(root, &["umount", mnt.path().to_str().unwrap()]);
    }
    let err = fails(&out);
    assert!(err.contains(want), "mount {reference}: expected {want:?} in: {err}");
    let ls = imgfs(root, &["ls", "-q"]);
    assert!(ls.status.success() && ls.stdout.is_empty(), "an image was recorded: {ls:?}");
    let tmp = std::fs::read_dir(root.join("tmp")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(tmp, 0, "temp files left in the store");
    // Not even the verified manifest or config: a refused image stores no blob.
    let blobs: Vec<_> = std::fs::read_dir(root.join("blobs/sha256"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(blobs.is_empty(), "blobs left in the store: {blobs:?}");
}

#[test]
fn a_negative_layer_size_is_refused_naming_it() {
    let Some(_) = outcome::test_env() else { return };
    let reg = registry();
    let l = layer();
    let r = reg.push_image("hostile/negsize", "1", &config_for(&[&l]), &[&l], |m| m["layers"][0]["size"] = json!(-1));
    refused(&r, "bad image manifest: descriptor size -1 is not a whole number of bytes");
}

#[test]
fn a_config_listing_too_few_diff_ids_is_refused() {
    let Some(_) = outcome::test_env() else { return };
    let reg = registry();
    let l = layer();
    let r = reg.push_image("hostile/diffids", "1", &config_for(&[]), &[&l], |_| {});
    refused(&r, "config lists 0 diff_ids for 1 layers");
}

#[test]
fn malformed_and_truncated_configs_are_refused_naming_the_config() {
    let Some(_) = outcome::test_env() else { return };
    let reg = registry();
    let l = layer();
    let whole = config_for(&[&l]);
    let cases: [(&str, Vec<u8>); 4] = [
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("notjson", b"\x00\x01 not json".to_vec()),
        ("wrongtypes", br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":5}}"#.to_vec()),
        ("norootfs", br#"{"architecture":"amd64","os":"linux"}"#.to_vec()),
    ];
    for (tag, config) in cases {
        let r = reg.push_image("hostile/config", tag, &config, &[&l], |_| {});
        refused(&r, &format!("image config {} is not valid", Digest::of(&config)));
    }
}

#[test]
fn an_index_pointing_at_an_index_or_lacking_the_platform_is_refused() {
    let Some(_) = outcome::test_env() else { return };
    let reg = registry();
    let l = layer();
    reg.push_image("hostile/index", "image", &config_for(&[&l]), &[&l], |_| {});
    let amd64 = json!({"os": "linux", "architecture": "amd64"});
    reg.push_index("hostile/index", "inner", "image", amd64.clone());
    let r = reg.push_index("hostile/index", "nested", "inner", amd64);
    refused(&r, "the index for linux/amd64 points at another index");
    let r = reg.push_index("hostile/index", "s390x", "image", json!({"os": "linux", "architecture": "s390x"}));
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&imgfs(dir.path(), &["pull", "--platform", "linux/amd64", &r]));
    assert!(err.contains("no image for platform linux/amd64 in the index; it has: linux/s390x"), "{err}");
}
