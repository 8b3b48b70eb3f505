//! The fleet set-up: one origin registry holding an image with a published index, a
//! pull-through mirror (a real `docker-registry` with `proxy.remoteurl` = the origin)
//! in front of it, and several hosts, simulated as stores and mounts of their own on
//! this machine, each pointed at the mirror by a registries.conf. Every host reads the
//! whole image and gets the reference's bytes; the origin's access log shows what the
//! fleet cost it.
//!
//! What distribution 2.8's proxy (`proxyblobstore.go`) does with a GET, Range or not,
//! for a blob it lacks, as its log shows here: it answers with the whole blob (200),
//! streamed from the origin by one GET, while a second GET of the origin fills its own
//! store; once stored, the blob is served from there (Range honoured) and the origin
//! is not asked again. So the origin sees whole-blob GETs, at most two per blob on the
//! first host's miss, and none for any later host: the fleet's cost to the origin does
//! not grow with the number of hosts.

use super::published_index::publish_copy;
use super::registries::Registry;
use super::*;

const HOSTS: usize = 3;

/// Requests for `path_part` that reached the origin through `via` since `mark`.
fn origin_requests(mark: u64, via: &str, path_part: &str) -> Vec<String> {
    sync_registry_log();
    log_since(mark)
        .lines()
        .filter(|l| {
            l.contains("msg=\"response completed")
                && l.contains(path_part)
                && l.contains(&format!("http.request.host=\"{via}\""))
        })
        .map(str::to_string)
        .collect()
}

/// Three hosts mount app:1 (three gzip layers, index published) through a pull-through
/// mirror: each reads every file equal to the reference, by the index (no layer in any
/// store); the origin serves each blob to the first host's mirror miss (at most the
/// two GETs above) and nothing to the later hosts, and sees no referrers lookup: that,
/// like the tag fallback, goes to the mirror.
#[test]
fn a_fleet_behind_a_pull_through_mirror_costs_the_origin_the_first_hosts_misses_alone() {
    let Some(_) = outcome::test_env() else { return };
    let (repo, index) = publish_copy("app:1", "fleet");
    let layers = layer_digests("app:1");
    // The origin as the fleet sees it: the shared registry behind a private proxy, so
    // that its log names requests from this test's mirror and hosts by Host header.
    let origin = FaultProxy::start(&env().addr);
    let mirror =
        Registry::start(tempfile::tempdir().unwrap(), &format!("proxy:\n  remoteurl: http://{}\n", origin.addr), "");
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("registries.conf");
    fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            origin.addr, mirror.addr
        ),
    )
    .unwrap();
    let env = [("CONTAINERS_REGISTRIES_CONF", conf.to_str().unwrap())];
    let reference = unpack_of("app:1").join("rootfs");
    let image = format!("{}/{repo}:1", origin.addr);

    let start = log_mark();
    for host in 0..HOSTS {
        let mark = log_mark();
        let store = Store::new();
        let m = Mount::empty();
        let out = imgfs_env(store.root(), &env, &["mount", &image, m.arg()]);
        assert!(out.status.success(), "host {host}: mount: {}", show(&out));
        let diffs = treecmp(&m.dir, &reference, &["--no-dir-mtime"]);
        assert!(diffs.is_empty(), "host {host}: contents differ from the reference:\n{}", diffs.join("\n"));
        let logs = server_logs(store.root());
        assert!(logs.contains(&format!("using published index {index}")), "host {host}: no index used:\n{logs}");
        for l in &layers {
            assert!(!blob_file(store.root(), l).exists(), "host {host}: layer {l} was downloaded whole");
        }
        let per_blob = origin_blob_gets(mark, &origin.addr, &repo);
        if host == 0 {
            // The layers did come through the origin (the mirror had none of them).
            for l in &layers {
                let n = per_blob.get(l).copied().unwrap_or(0);
                assert!((1..=2).contains(&n), "layer {l}: {n} origin GETs for the first host: {per_blob:#?}");
            }
            assert!(per_blob.values().all(|n| *n <= 2), "the first host cost more than 2 GETs a blob: {per_blob:#?}");
        } else {
            assert!(per_blob.is_empty(), "host {host}: blobs fetched from the origin again: {per_blob:#?}");
        }
        // The mirror stores a blob after answering; the next host comes once it has all
        // the first host read (a sync point: the test asserts no time).
        for d in per_blob.keys() {
            let hex = d.trim_start_matches("sha256:");
            let data = mirror.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
            assert!(wait_until(Duration::from_secs(60), || data.exists()), "the mirror never stored {d}");
        }
    }

    // An unrouted path (distribution 2.8 has no referrers API) is in the access log
    // alone, which names no Host; the repository is this test's own.
    sync_registry_log();
    let asked = format!("\"GET /v2/{repo}/referrers/");
    let referrers = log_since(start).lines().filter(|l| l.contains(&asked)).map(str::to_string).collect::<Vec<_>>();
    assert!(referrers.is_empty(), "the referrers lookup went to the origin, not the mirror:\n{}", referrers.join("\n"));
    let mirror_log = mirror.log();
    assert!(mirror_log.contains(&format!("/v2/{repo}/referrers/")), "no referrers lookup at the mirror:\n{mirror_log}");
}

/// Blob GETs of `repo` the origin answered through `via` since `mark`, per digest.
fn origin_blob_gets(mark: u64, via: &str, repo: &str) -> std::collections::BTreeMap<String, usize> {
    let prefix = format!("/v2/{repo}/blobs/");
    let mut per_blob = std::collections::BTreeMap::new();
    for l in origin_requests(mark, via, &prefix) {
        if !l.contains("http.request.method=GET ") {
            continue;
        }
        let uri = l.split("http.request.uri=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("");
        *per_blob.entry(uri.trim_start_matches(&prefix).to_string()).or_default() += 1;
    }
    per_blob
}
