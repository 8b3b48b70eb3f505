//! A mount whose registry goes away before or in the middle of a lazy layer fetch
//! (through the fault proxy of tests/faultproxy): the operation that needed the layer
//! fails with EIO (and the server logs why), the mount stays up and serves what it
//! already has, nothing half-fetched is kept, and the same operation succeeds once the
//! registry is back. A manifest whose layer sizes lie is not trusted either.

use super::*;

#[test]
fn registry_gone_midway_through_a_lazy_fetch_gives_eio_then_recovers() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&env().addr);
    let layer = layer_digests("big:1").remove(0);
    let store = Store::new();
    let m = mount(store.root(), &format!("{}/big:1", proxy.addr), &[]);
    let pid = m.server();

    // The first megabyte of the 13 MB layer arrives, then the registry is gone.
    proxy.add(Rule::new(&layer, Fault::DieAfter(1 << 20)).times(1));
    let e = errno_of("read data/1m.bin with the registry gone midway", fs::read(m.path("data/1m.bin")));
    assert_eq!(e, libc::EIO, "errno {e}, want EIO");
    assert_eq!(proxy.seen_for(&layer)[0].range, None);
    assert!(!pid_gone(pid), "the server died");
    assert!(mountinfo(&m.dir).is_some(), "the mount went away");
    assert!(!blob_file(store.root(), &layer).exists(), "a half-fetched layer was kept");

    proxy.set_down(false);
    let got = fs::read(m.path("data/1m.bin")).expect("read data/1m.bin once the registry is back");
    assert!(got == reference_file("big:1", "data/1m.bin"), "data/1m.bin differs from the reference");
    assert!(blob_file(store.root(), &layer).exists());
}

/// Push `data` as a blob of `repo` in the test registry; its digest.
fn push_blob(repo: &str, data: &[u8]) -> String {
    use sha2::Digest as _;
    let digest =
        format!("sha256:{}", sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>());
    let http = reqwest::blocking::Client::new();
    let r = http.post(format!("http://{}/v2/{repo}/blobs/uploads/", env().addr)).send().unwrap();
    assert_eq!(r.status(), 202, "starting an upload to {repo}");
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let mut url = reqwest::Url::parse(&format!("http://{}/", env().addr)).unwrap().join(&loc).unwrap();
    url.query_pairs_mut().append_pair("digest", &digest);
    let r = http.put(url).header("content-type", "application/octet-stream").body(data.to_vec()).send().unwrap();
    assert_eq!(r.status(), 201, "uploading {digest}");
    digest
}

/// A manifest may claim any layer size up to the registry's limit (2^63-1); three such
/// layers add up past 2^64. The image mounts (lazily, nothing fetched), `ls` and
/// `inspect` show it, a listing that needs the layers fails with EIO (the bytes are not
/// what the manifest says), and nothing panics.
#[test]
fn layer_sizes_that_add_up_past_u64_are_not_trusted() {
    let Some(_) = outcome::test_env() else { return };
    let repo = "faults-huge-sizes";
    let layers: Vec<String> = (0..3).map(|i| push_blob(repo, format!("layer {i}").as_bytes())).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": layers},
    }))
    .unwrap();
    let config_digest = push_blob(repo, &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": i64::MAX}
        )).collect::<Vec<_>>(),
    });
    let r = reqwest::blocking::Client::new()
        .put(format!("http://{}/v2/{repo}/manifests/max", env().addr))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "pushing the manifest: {:?}", r.text());

    let store = Store::new();
    let reference = format!("{}/{repo}:max", env().addr);
    let m = mount(store.root(), &reference, &[]);
    let pid = m.server();
    imgfs_ok(store.root(), &["ls", "-a"]);
    imgfs_ok(store.root(), &["inspect", &reference]);
    let e = errno_of(
        "list the root of an image whose layer sizes lie",
        fs::read_dir(&m.dir).and_then(|d| d.collect::<Result<Vec<_>, _>>()),
    );
    assert_eq!(e, libc::EIO, "errno {e}, want EIO");
    assert!(!pid_gone(pid), "the server died");
    for l in &layers {
        assert!(!blob_file(store.root(), l).exists(), "layer {l} was kept");
    }
}

/// With the registry unreachable, reading a file whose layer is not fetched yet fails
/// with EIO (after the client's retries) while what is already known still reads; the
/// server logs why and stays up; once the registry is back, the same read succeeds.
#[test]
fn registry_outage_gives_eio_and_recovers() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&env().addr);
    let store = Store::new();
    let m = mount(store.root(), &format!("{}/lazy:1", proxy.addr), &[]);
    let pid = m.server();
    // Something known before the outage: top/c.txt, from the top layer only.
    let c = reference_file("lazy:1", "top/c.txt");
    assert_eq!(fs::read(m.path("top/c.txt")).unwrap(), c);

    proxy.set_offline(true);
    // bottom/ is in the bottom layer, which no lookup has needed so far.
    let e = errno_of("read bottom/a.txt with the registry down", fs::read(m.path("bottom/a.txt")));
    assert_eq!(e, libc::EIO, "errno {e}, want EIO");
    assert!(!pid_gone(pid), "the server died");
    assert!(mountinfo(&m.dir).is_some(), "the mount went away");
    assert!(fs::metadata(&m.dir).unwrap().is_dir(), "stat of the mount root fails");
    assert_eq!(fs::read(m.path("top/c.txt")).expect("top/c.txt during the outage"), c);

    let log = newest_log(store.root());
    let text = fs::read_to_string(&log).unwrap();
    let eio = text.lines().find(|l| l.contains("EIO"));
    let eio = eio.unwrap_or_else(|| panic!("no EIO line in {}:\n{text}", log.display()));
    let reason = eio.split_once("EIO").unwrap().1.trim_start_matches([':', ' ']);
    assert!(reason.len() > 10, "EIO logged without a reason: {eio}");

    proxy.set_offline(false);
    let a = fs::read(m.path("bottom/a.txt")).expect("read bottom/a.txt once the registry is back");
    assert_eq!(a, reference_file("lazy:1", "bottom/a.txt"));
    let mut names: Vec<String> =
        fs::read_dir(&m.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["bottom", "middle", "top"]);
}

fn newest_log(root: &Path) -> PathBuf {
    let logs = fs::read_dir(root.join("logs")).expect("logs dir");
    logs.map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("no server log")
}
