//! `imgfs pull` through a fault-injecting proxy (tests/faultproxy) in front of the real
//! test registry: connections cut mid-manifest, mid-config and mid-layer, a link that
//! drops every megabyte, bytes flipped in flight, a registry that stalls, 5xx and 429
//! answers with Retry-After, a manifest whose bytes do not match the registry's
//! Docker-Content-Digest, and layer sizes in a manifest that the bytes do not bear out.

#[path = "faultproxy/mod.rs"]
mod faultproxy;

use faultproxy::{Fault, FaultProxy, Rule};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "outcome/mod.rs"]
mod outcome;
use outcome::registry_addr;

fn imgfs(root: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgfs"))
        .arg("--root")
        .arg(root)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "imgfs failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fails(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// The manifest of an image in the test registry, straight from the registry.
fn manifest_of(repo_tag: &str) -> serde_json::Value {
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let body = reqwest::blocking::Client::new()
        .get(format!("http://{}/v2/{repo}/manifests/{tag}", registry_addr()))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// The layer digests of an image in the test registry, from its manifest.
fn layers_of(repo_tag: &str) -> Vec<String> {
    let m = manifest_of(repo_tag);
    m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

/// Every file under the store's blobs/ and tmp/ directories (what a failed pull must
/// not leave behind).
fn stored_files(root: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join("blobs"), &mut out);
    walk(&root.join("tmp"), &mut out);
    out
}

#[test]
fn a_layer_cut_midway_resumes_with_range() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&registry_addr());
    let layer = layers_of("big:1").remove(0);
    proxy.add(Rule::new(&layer, Fault::DropAfter(300_000)).times(1));
    let root = tempfile::tempdir().unwrap();
    ok(&imgfs(root.path(), &["pull", &format!("{}/big:1", proxy.addr)], &[]));
    let gets = proxy.seen_for(&layer);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[1].range.as_deref(), Some("bytes=300000-"));
    ok(&imgfs(root.path(), &["inspect", &format!("{}/big:1", proxy.addr)], &[]));
}

#[test]
fn a_manifest_cut_midway_is_fetched_again() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&registry_addr());
    proxy.add(Rule::new("/manifests/1", Fault::DropAfter(40)).times(2));
    let root = tempfile::tempdir().unwrap();
    ok(&imgfs(root.path(), &["pull", &format!("{}/app:1", proxy.addr)], &[]));
    assert_eq!(proxy.seen_for("/manifests/1").len(), 3);
}

#[test]
fn a_config_whose_connection_closes_unanswered_is_fetched_again() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&registry_addr());
    let m = manifest_of("app:1");
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    proxy.add(Rule::new(&config, Fault::Close).times(2));
    let root = tempfile::tempdir().unwrap();
    ok(&imgfs(root.path(), &["pull", &format!("{}/app:1", proxy.addr)], &[]));
    assert_eq!(proxy.seen_for(&config).len(), 3);
}

/// 13 MB through a link that breaks after every megabyte: far more breaks than the
/// retry budget (5), but each attempt gets further, so the budget is renewed.
#[test]
fn a_link_that_drops_every_megabyte_still_fetches_a_large_layer() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&registry_addr());
    let layer = layers_of("big:1").remove(0);
    proxy.add(Rule::new(&layer, Fault::DropAfter(1 << 20)));
    let root = tempfile::tempdir().unwrap();
    ok(&imgfs(root.path(), &["pull", &format!("{}/big:1", proxy.addr)], &[]));
    let gets = proxy.seen_for(&layer).len();
    assert!(gets > 10, "only {gets} requests: the cut never happened?");
}

#[test]
fn bytes_flipped_in_flight_are_rejected_and_nothing_is_stored() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&registry_addr());
    let layer = layers_of("lazy:1").remove(1);
    proxy.add(Rule::new(&layer, Fault::FlipByte(20)).times(1));
    let root = tempfile::tempdir().unwrap();
    let reference = format!("{}/lazy:1", proxy.addr);
    let err = fails(&imgfs(root.path(), &["pull", &reference], &[]));
    assert!(err.contains("digest mismatch") && err.contains(&layer), "{err}");
    let left: Vec<_> =
        stored_files(root.path()).into_iter().filter(|p| p.to_string_lossy().contains(&layer[7..])).collect();
    assert!(left.is_empty(), "a corrupt blob was kept: {left:?}");
    assert!(std::fs::read_dir(root.path().join("tmp")).map(|d| d.count()).unwrap_or(0) == 0, "temp files left");
    // Through a clean link the same pull completes.
    ok(&imgfs(root.path(), &["pull", &reference], &[]));
}

#[test]
fn a_stalled_registry_times_out_with_a_clear_error() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&registry_addr());
    proxy.add(Rule::new("/manifests/", Fault::Stall));
    let root = tempfile::tempdir().unwrap();
    let reference = format!("{}/app:1", proxy.addr);
    let err = fails(&imgfs(root.path(), &["pull", &reference], &[("IMGFS_TIMEOUT", "1")]));
    assert!(err.contains("timed out") && err.contains("app") && err.contains("IMGFS_TIMEOUT"), "{err}");
}

/// `--timeout` is the budget of a whole request, retries included: a request that
/// stalls spends it and is not tried again; the next command starts afresh.
#[test]
fn a_request_that_stalls_spends_the_timeout_and_is_not_tried_again() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&registry_addr());
    proxy.add(Rule::new("/manifests/1", Fault::Stall).times(1));
    let root = tempfile::tempdir().unwrap();
    let err = fails(&imgfs(root.path(), &["--timeout", "1", "pull", &format!("{}/app:1", proxy.addr)], &[]));
    assert!(err.contains("timed out (limit 1 s: --timeout, IMGFS_TIMEOUT)"), "{err}");
    assert_eq!(proxy.seen_for("/manifests/1").len(), 1);
    ok(&imgfs(root.path(), &["--timeout", "1", "pull", &format!("{}/app:1", proxy.addr)], &[]));
    assert_eq!(proxy.seen_for("/manifests/1").len(), 2);
}

/// A port that accepts connections and never says a word: `--timeout 2` gives up after
/// the one attempt that waited those 2 s, not after more tries of 2 s each. Counted by
/// the listener, not timed.
#[test]
fn a_silent_registry_is_given_up_on_after_one_timeout() {
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new(); // open and silent until the test ends
        for conn in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    let root = tempfile::tempdir().unwrap();
    let err = fails(&imgfs(root.path(), &["--timeout", "2", "pull", &format!("{addr}/app:1")], &[]));
    assert!(err.contains(&format!("cannot reach registry {addr}")), "{err}");
    assert!(err.contains("timed out (limit 2 s: --timeout, IMGFS_TIMEOUT)"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one attempt, no retries past the budget: {err}");
}

#[test]
fn server_errors_and_429_are_retried_honouring_retry_after() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&registry_addr());
    let layer = layers_of("lazy:1").remove(0);
    proxy.add(Rule::new("/manifests/1", Fault::Status(503, None)).times(2));
    proxy.add(Rule::new(&layer, Fault::Status(429, Some(2))).times(1));
    let root = tempfile::tempdir().unwrap();
    ok(&imgfs(root.path(), &["pull", &format!("{}/lazy:1", proxy.addr)], &[]));
    assert_eq!(proxy.seen_for("/manifests/1").len(), 3);
    let gets = proxy.seen_for(&layer);
    assert_eq!(gets.len(), 2);
    // Not before the registry said it would take requests again.
    assert!(gets[1].at.duration_since(gets[0].at) >= std::time::Duration::from_secs(2));
}

#[test]
fn a_registry_that_keeps_failing_is_a_clear_error() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&registry_addr());
    proxy.add(Rule::new("/manifests/1", Fault::Status(503, None)));
    let root = tempfile::tempdir().unwrap();
    let err = fails(&imgfs(root.path(), &["pull", &format!("{}/app:1", proxy.addr)], &[]));
    assert!(err.contains("503") && err.contains("app"), "{err}");
}

#[test]
fn a_tag_manifest_that_does_not_match_docker_content_digest_is_refused() {
    let Some(_) = outcome::test_env() else { return };
    let proxy = FaultProxy::start(&registry_addr());
    let expected = reqwest::blocking::Client::new()
        .get(format!("http://{}/v2/app/manifests/1", registry_addr()))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    // Inside the config digest's hex: still a valid manifest, of another image.
    proxy.add(Rule::new("/manifests/1", Fault::FlipByte(150)));
    let root = tempfile::tempdir().unwrap();
    let err = fails(&imgfs(root.path(), &["pull", &format!("{}/app:1", proxy.addr)], &[]));
    assert!(err.contains("digest mismatch") && err.contains(&expected), "{err}");
    assert!(stored_files(root.path()).is_empty(), "{:?}", stored_files(root.path()));
}

/// A manifest that claims a layer size the registry's bytes do not have: 10^15 (a
/// pull must not reserve or wait for a petabyte) and -1 (not a size at all).
#[test]
fn layer_sizes_the_bytes_do_not_bear_out_are_refused() {
    let Some(_) = outcome::test_env() else { return };
    let addr = registry_addr();
    let http = reqwest::blocking::Client::new();
    let push_blob = |data: &[u8]| -> String {
        let digest = format!("sha256:{}", sha256_hex(data));
        let r = http.post(format!("http://{addr}/v2/faults-size/blobs/uploads/")).send().unwrap();
        assert_eq!(r.status(), 202);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let mut url = reqwest::Url::parse(&format!("http://{addr}/")).unwrap().join(&loc).unwrap();
        url.query_pairs_mut().append_pair("digest", &digest);
        let r = http.put(url).header("content-type", "application/octet-stream").body(data.to_vec()).send().unwrap();
        assert_eq!(r.status(), 201);
        digest
    };
    let layer = b"not really a tar, never read this far".to_vec();
    let layer_digest = push_blob(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    );
    let config_digest = push_blob(config.as_bytes());
    for (tag, size) in [("huge", "1000000000000000"), ("negative", "-1")] {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{size}}}]}}"#,
            config.len()
        );
        let r = http
            .put(format!("http://{addr}/v2/faults-size/manifests/{tag}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text());
    }
    let root = tempfile::tempdir().unwrap();
    let err = fails(&imgfs(root.path(), &["pull", &format!("{addr}/faults-size:huge")], &[]));
    assert!(
        err.contains("size mismatch") && err.contains(&layer_digest) && err.contains(&layer.len().to_string()),
        "{err}"
    );
    let err = fails(&imgfs(root.path(), &["pull", &format!("{addr}/faults-size:negative")], &[]));
    assert!(err.contains("size") && err.contains("-1"), "{err}");
    let blobs: Vec<_> =
        stored_files(root.path()).into_iter().filter(|p| p.to_string_lossy().contains(&layer_digest[7..])).collect();
    assert!(blobs.is_empty(), "{blobs:?}");
    assert!(std::fs::read_dir(root.path().join("tmp")).map(|d| d.count()).unwrap_or(0) == 0, "temp files left");
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}
