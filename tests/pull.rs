//! `imgfs pull` against the real test registry (Debian's docker-registry, started by
//! scripts/test with images pushed by umoci and skopeo): tags, digests, all tags,
//! platforms, layer sharing proven from the registry's own request log, dangling
//! images, concurrent pulls, and bad input that must leave nothing in the store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "outcome/mod.rs"]
mod outcome;
#[path = "pty/mod.rs"]
mod pty;
use outcome::{fails, ok};

#[path = "faultproxy/mod.rs"]
mod faultproxy;

struct Env {
    dir: PathBuf,
    addr: String,
}

/// The registry's request log is shared: tests that count requests, and tests that
/// pull the same images, must not overlap. Each test holds this for its duration.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn env() -> (Env, std::sync::MutexGuard<'static, ()>) {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    (env_only(), guard)
}

fn env_only() -> Env {
    let dir = outcome::env_dir();
    let addr = std::fs::read_to_string(dir.join("registry.addr")).expect("registry.addr").trim().to_string();
    Env { dir, addr }
}

impl Env {
    /// Wait until the registry has logged every request answered so far: it writes a
    /// request's line right after answering, so once a request of ours made now is
    /// in the log, the earlier ones are too.
    fn sync_log(&self) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = format!("/v2/imgfs-log-sync-{}-{n}/tags/list", std::process::id());
        let _ = reqwest::blocking::get(format!("http://{}{path}", self.addr));
        for _ in 0..100 {
            let log = std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
            if log.contains(&path) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the registry never logged {path}");
    }

    fn log_len(&self) -> usize {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default().lines().count()
    }

    /// GET requests for `/v2/*/blobs/DIGEST` logged after line `since`, from the
    /// registry's access-log lines (`"GET /v2/app/blobs/sha256:… HTTP/1.1" 200 …`).
    fn blob_gets_since(&self, since: usize, digest: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.join("registry.log")).unwrap();
        let needle = format!("/blobs/{digest} HTTP/");
        log.lines().skip(since).filter(|l| l.contains("\"GET /v2/") && l.contains(&needle)).count()
    }

    /// Bytes the registry sent for each GET of `/v2/*/blobs/DIGEST` logged after line
    /// `since` (the access log's byte count: `"GET … HTTP/1.1" 200 BYTES …`).
    fn blob_bytes_since(&self, since: usize, digest: &str) -> Vec<u64> {
        let log = std::fs::read_to_string(self.dir.join("registry.log")).unwrap();
        let needle = format!("/blobs/{digest} HTTP/");
        log.lines()
            .skip(since)
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&needle))
            .map(|l| {
                let after = l.split(&needle).nth(1).and_then(|r| r.split_once("\" ")).map(|(_, r)| r).unwrap_or("");
                let bytes = after.split_whitespace().nth(1).and_then(|b| b.parse().ok());
                bytes.unwrap_or_else(|| panic!("no byte count in {l}"))
            })
            .collect()
    }
}

fn imgfs(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgfs")).arg("--root").arg(root).args(args).output().unwrap()
}

/// `imgfs pull` on a terminal (a pty from script(1)), where it shows docker's status
/// lines: what the terminal got, stdout and stderr together, escape codes and all.
fn pull_on_a_terminal(root: &Path, args: &[&str]) -> String {
    let mut cmd = format!("{} --root {} pull", env!("CARGO_BIN_EXE_imgfs"), root.display());
    for a in args {
        cmd = format!("{cmd} {a}");
    }
    let out = Command::new("script").args(["-qefc", &cmd, "/dev/null"]).output().expect("script");
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{cmd}: {screen}");
    screen
}

fn db(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join("images.json")).unwrap()).unwrap()
}

fn blob_names(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("blobs/sha256"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn tmp_files(root: &Path) -> usize {
    std::fs::read_dir(root.join("tmp")).map(|d| d.count()).unwrap_or(0)
}

/// Every stored blob's content hashes to its name.
fn assert_blobs_verified(root: &Path) {
    for name in blob_names(root) {
        let (d, _) =
            imgfs::digest::digest_reader(std::fs::File::open(root.join("blobs/sha256").join(&name)).unwrap()).unwrap();
        assert_eq!(d.hex(), name);
    }
}

fn layers_of(root: &Path, id: &str) -> Vec<String> {
    db(root)["images"][id]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn tag_target(root: &Path, tag: &str) -> Option<String> {
    db(root)["tags"][tag].as_str().map(String::from)
}

#[test]
fn a_second_image_fetches_only_the_layers_the_store_lacks() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let before = e.log_len();
    let status = pull_on_a_terminal(r, &[&format!("{}/base:1", e.addr)]);
    assert!(status.contains("Pull complete"), "{status}");
    let base_id = tag_target(r, &format!("{}/base:1", e.addr)).unwrap();
    let base_layer = layers_of(r, &base_id)[0].clone();
    assert_eq!(e.blob_gets_since(before, &base_layer), 1);

    let before = e.log_len();
    let status = pull_on_a_terminal(r, &[&format!("{}/app:1", e.addr)]);
    assert!(status.contains(&format!("{}: Already exists", &base_layer[7..19])), "{status}");
    let app_id = tag_target(r, &format!("{}/app:1", e.addr)).unwrap();
    let app_layers = layers_of(r, &app_id);
    assert_eq!(app_layers[0], base_layer, "the test images share their base layer");
    assert_eq!(e.blob_gets_since(before, &base_layer), 0, "shared layer fetched again");
    for l in &app_layers[1..] {
        assert_eq!(e.blob_gets_since(before, l), 1, "layer {l}");
    }
    assert!(status.trim_end().ends_with(&format!("{}/app:1", e.addr)), "{status}");
    // Pulling again fetches no layer at all and says the image is up to date.
    let before = e.log_len();
    let status = pull_on_a_terminal(r, &[&format!("{}/app:1", e.addr)]);
    assert!(status.contains("Status: Image is up to date"), "{status}");
    assert!(app_layers.iter().all(|l| e.blob_gets_since(before, l) == 0));
    assert_blobs_verified(r);
    assert_eq!(tmp_files(r), 0);

    // A layer the store lost (removed by hand here) is fetched again, and the status
    // line says so: a pull that downloaded layers did not find the image up to date.
    let lost = &app_layers[1];
    std::fs::remove_file(r.join("blobs/sha256").join(&lost[7..])).unwrap();
    let before = e.log_len();
    let status = pull_on_a_terminal(r, &[&format!("{}/app:1", e.addr)]);
    assert_eq!(e.blob_gets_since(before, lost), 1);
    assert!(status.contains("Status: Downloaded newer image"), "{status}");
}

#[test]
fn pull_by_digest_pins_the_image_and_a_wrong_digest_stores_nothing() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let root = tempfile::tempdir().unwrap();
    let status = pull_on_a_terminal(root.path(), &[&format!("{}/app:2", e.addr)]);
    let digest = status.split("Digest: ").nth(1).and_then(|s| s.get(..71)).expect("a Digest line").to_string();

    let fresh = tempfile::tempdir().unwrap();
    let r = fresh.path();
    let by_digest = format!("{}/app@{digest}", e.addr);
    let out = ok(&imgfs(r, &["pull", "-q", &by_digest]));
    assert_eq!(out.trim(), by_digest);
    let d = db(r);
    let img = d["images"].as_object().unwrap().values().next().unwrap();
    assert_eq!(img["pinned"][0], by_digest.as_str(), "a digest pull is a reference of its own");
    assert!(d["tags"].as_object().unwrap().is_empty());

    let wrong = format!("{}/app@sha256:{}", e.addr, "0".repeat(64));
    let empty = tempfile::tempdir().unwrap();
    let err = fails(&imgfs(empty.path(), &["pull", &wrong]));
    assert!(err.contains("app") && err.contains("not found"), "{err}");
    assert!(blob_names(empty.path()).is_empty());
}

#[test]
fn all_tags_pulls_every_tag_of_the_repository() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let root = tempfile::tempdir().unwrap();
    let out = ok(&imgfs(root.path(), &["pull", "-a", "-q", &format!("{}/app", e.addr)]));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(tag_target(root.path(), &format!("{}/app:1", e.addr)).is_some());
    assert!(tag_target(root.path(), &format!("{}/app:2", e.addr)).is_some());
    let err = fails(&imgfs(root.path(), &["pull", "-a", &format!("{}/app:1", e.addr)]));
    assert!(err.contains("--all-tags"), "{err}");
}

#[test]
fn platform_choice_from_oci_and_docker_indexes() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    for repo in ["multi", "multi-docker"] {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        ok(&imgfs(r, &["pull", "--platform", "linux/arm64", &format!("{}/{repo}:1", e.addr)]));
        let arm = tag_target(r, &format!("{}/{repo}:1", e.addr)).unwrap();
        ok(&imgfs(r, &["pull", "--platform", "linux/amd64", &format!("{}/{repo}:1", e.addr)]));
        let amd = tag_target(r, &format!("{}/{repo}:1", e.addr)).unwrap();
        assert_ne!(arm, amd);
        let config = |id: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(r.join("blobs/sha256").join(&id[7..])).unwrap()).unwrap()
        };
        assert_eq!(config(&arm)["architecture"], "arm64");
        assert_eq!(config(&amd)["architecture"], "amd64");
        // The arm64 image lost its tag to the amd64 one: it is dangling now.
        assert!(db(r)["images"][&arm].is_object());
        assert!(db(r)["tags"].as_object().unwrap().values().all(|v| v != arm.as_str()));

        let err = fails(&imgfs(r, &["pull", "--platform", "linux/s390x", &format!("{}/{repo}:1", e.addr)]));
        assert!(err.contains("linux/s390x") && err.contains("linux/amd64") && err.contains("linux/arm64/v8"), "{err}");
    }
}

/// `DOCKER_DEFAULT_PLATFORM` picks the platform when `--platform` is not given, and
/// `--platform` wins over it, as in docker.
#[test]
fn docker_default_platform_picks_the_platform_and_the_flag_wins() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let reference = format!("{}/multi:1", e.addr);
    let arch = |id: &str| -> serde_json::Value {
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(r.join("blobs/sha256").join(&id[7..])).unwrap()).unwrap();
        config["architecture"].clone()
    };
    let with_default = |platform: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_imgfs"))
            .arg("--root")
            .arg(r)
            .args(args)
            .env("DOCKER_DEFAULT_PLATFORM", platform)
            .output()
            .unwrap()
    };
    // Both platforms, so the test proves the variable is read whatever the host is.
    for (platform, want) in [("linux/arm64", "arm64"), ("linux/amd64", "amd64")] {
        ok(&with_default(platform, &["pull", &reference]));
        assert_eq!(arch(&tag_target(r, &reference).unwrap()), want, "DOCKER_DEFAULT_PLATFORM={platform}");
    }
    ok(&with_default("linux/arm64", &["pull", "--platform", "linux/amd64", &reference]));
    assert_eq!(arch(&tag_target(r, &reference).unwrap()), "amd64");
    // Set but empty is unset: the host's platform, as without the variable.
    ok(&with_default("", &["pull", &reference]));
    let host = tag_target(r, &reference).unwrap();
    ok(&imgfs(r, &["pull", &reference]));
    assert_eq!(tag_target(r, &reference).unwrap(), host);
    let err = fails(&with_default("linux/s390x", &["pull", &reference]));
    assert!(err.contains("linux/s390x"), "{err}");
    // mount reads it too: the platform the index lacks is refused before anything mounts.
    let dir = r.join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let out = with_default("linux/s390x", &["mount", &reference, dir.to_str().unwrap()]);
    if out.status.success() {
        // Ignoring the variable mounted the host's image: take it down before failing.
        let _ = imgfs(r, &["umount", dir.to_str().unwrap()]);
    }
    let err = fails(&out);
    assert!(err.contains("linux/s390x"), "{err}");
}

#[test]
fn docker_v2s2_zstd_and_uncompressed_layers_pull_and_index() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for image in ["v2s2:1", "zstd:1", "plain:1"] {
        ok(&imgfs(r, &["pull", &format!("{}/{image}", e.addr)]));
        let id = tag_target(r, &format!("{}/{image}", e.addr)).unwrap();
        for l in layers_of(r, &id) {
            assert!(r.join("toc/sha256").join(format!("{}.toc", &l[7..])).is_file(), "{image}: {l} indexed");
            // Nothing next to a layer but its index, except a zstd layer in one big
            // frame, re-encoded in frames: never an uncompressed copy.
            let tar = r.join("layers/sha256").join(format!("{}.tar", &l[7..]));
            assert!(!tar.exists(), "{image}: an uncompressed copy of {l}");
            let zst = r.join("layers/sha256").join(format!("{}.zst", &l[7..]));
            assert!(image == "zstd:1" || !zst.exists(), "{image}: {l} re-encoded");
        }
    }
    // Store on disk against the blobs: checkpoints and indexes are a few percent.
    let size = |dir: &str| -> u64 {
        std::fs::read_dir(r.join(dir)).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
    };
    let (blobs, derived) = (size("blobs/sha256"), size("toc/sha256") + size("layers/sha256"));
    assert!(derived * 4 < blobs, "indexes and re-encoded layers take {derived} bytes next to {blobs} of blobs");
    assert_blobs_verified(r);
}

/// `ls` SIZE and `inspect` Size are the unpacked size, as podman counts it: the
/// layers' uncompressed tars (here decompressed by the test itself, with gzip and zstd
/// decoders, from the blobs the registry served) plus the config; not the compressed
/// blobs' sizes.
#[test]
fn sizes_are_the_unpacked_size_of_the_layers() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for image in ["app:1", "zstd:1", "plain:1"] {
        let name = format!("{}/{image}", e.addr);
        ok(&imgfs(r, &["pull", "-q", &name]));
        let id = tag_target(r, &name).unwrap();
        let record = &db(r)["images"][&id];
        let (mut unpacked, mut compressed) = (record["config"]["size"].as_u64().unwrap(), 0);
        let mut per_layer = String::new();
        for l in record["layers"].as_array().unwrap() {
            let blob = std::fs::read(r.join("blobs/sha256").join(&l["digest"].as_str().unwrap()[7..])).unwrap();
            let media_type = l["mediaType"].as_str().unwrap();
            let mut tar = Vec::new();
            use std::io::Read;
            if media_type.ends_with("gzip") {
                flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut tar).unwrap();
            } else if media_type.ends_with("zstd") {
                zstd::stream::read::Decoder::new(&blob[..]).unwrap().read_to_end(&mut tar).unwrap();
            } else {
                tar = blob.clone();
            }
            assert!(tar.len() >= blob.len() || !media_type.ends_with("gzip"), "{image}: {media_type}");
            unpacked += tar.len() as u64;
            compressed += blob.len() as u64;
            per_layer.push_str(&format!("{} ", tar.len()));
        }
        let inspect = |f: &str| ok(&imgfs(r, &["inspect", "--format", f, &name])).trim_end().to_string();
        assert_eq!(inspect("{{.Size}}"), unpacked.to_string(), "{image}: compressed layers take {compressed}");
        assert_eq!(inspect("{{range .Layers}}{{.UncompressedSize}} {{end}}"), per_layer.trim_end(), "{image}");
        // `ls` prints it as docker does, to 3 significant digits.
        let shown = ok(&imgfs(r, &["ls", "--format", "{{.Size}}", &name])).trim_end().to_string();
        let (number, unit) = shown.split_at(shown.find(|c: char| c.is_ascii_alphabetic()).unwrap());
        let scale = match unit {
            "B" => 1.0,
            "kB" => 1e3,
            "MB" => 1e6,
            other => panic!("{image}: unit {other} in {shown}"),
        };
        let value = number.parse::<f64>().unwrap() * scale;
        assert!((value - unpacked as f64).abs() <= unpacked as f64 * 0.005, "{image}: ls says {shown} for {unpacked}");
    }
}

#[test]
fn a_moved_tag_leaves_the_old_image_dangling() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let skopeo = |from: &str, to: &str| {
        let st = Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"])
            .arg(format!("docker://{}/{from}", e.addr))
            .arg(format!("docker://{}/{to}", e.addr))
            .status()
            .unwrap();
        assert!(st.success(), "skopeo copy {from} {to}");
    };
    skopeo("retag:old", "dangle:latest");
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    ok(&imgfs(r, &["pull", &format!("{}/dangle", e.addr)]));
    let tag = format!("{}/dangle:latest", e.addr);
    let first = tag_target(r, &tag).unwrap();
    skopeo("app:2", "dangle:latest");
    ok(&imgfs(r, &["pull", &format!("{}/dangle", e.addr)]));
    let second = tag_target(r, &tag).unwrap();
    assert_ne!(first, second);
    let d = db(r);
    assert!(d["images"][&first].is_object(), "the old image stays");
    assert!(d["tags"].as_object().unwrap().values().all(|v| v != first.as_str()), "…with no tag");
}

#[test]
fn concurrent_pulls_of_images_sharing_layers_both_succeed() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let spawn = |image: &str| {
        Command::new(env!("CARGO_BIN_EXE_imgfs"))
            .arg("--root")
            .arg(r)
            .args(["pull", "-q", &format!("{}/{image}", e.addr)])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn("app:1").unwrap());
        let b = s.spawn(|| spawn("app:2").unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    ok(&a);
    ok(&b);
    assert!(tag_target(r, &format!("{}/app:1", e.addr)).is_some());
    assert!(tag_target(r, &format!("{}/app:2", e.addr)).is_some());
    assert_blobs_verified(r);
    assert_eq!(tmp_files(r), 0);
}

#[test]
fn bad_references_and_unreachable_registries_fail_with_one_line() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let err = fails(&imgfs(r, &["pull", &format!("{}/app:nope", e.addr)]));
    assert!(err.contains("app") && err.contains("nope"), "{err}");
    let err = fails(&imgfs(r, &["pull", &format!("{}/no-such-repo:1", e.addr)]));
    assert!(err.contains("no-such-repo"), "{err}");
    // Port 1 on loopback: nothing listens there.
    let err = fails(&imgfs(r, &["pull", "127.0.0.1:1/app:1"]));
    assert!(err.contains("127.0.0.1:1"), "{err}");
    let err = fails(&imgfs(r, &["pull", "Not/A:Valid:Ref"]));
    assert!(err.contains("invalid reference"), "{err}");
    let err = fails(&imgfs(r, &["pull", "--platform", "linux", &format!("{}/multi:1", e.addr)]));
    assert!(err.contains("invalid platform"), "{err}");
    assert!(blob_names(r).is_empty());
    assert_eq!(tmp_files(r), 0);
}

/// A layer whose bytes in the registry's storage no longer match its digest (the
/// registry serves what is on its disk): the pull fails naming the mismatch and no
/// trace of the layer is left in the store.
#[test]
fn a_corrupt_layer_is_refused_and_nothing_of_it_is_kept() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let client = reqwest::blocking::Client::new();
    let base = format!("http://{}/v2/corrupt", e.addr);
    let push_blob = |bytes: &[u8]| -> String {
        let d = imgfs::digest::Digest::of(bytes).to_string();
        let resp = client.post(format!("{base}/blobs/uploads/")).send().unwrap();
        let loc = resp.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with("http") { loc } else { format!("http://{}{loc}", e.addr) };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = client.put(format!("{loc}{sep}digest={d}")).body(bytes.to_vec()).send().unwrap();
        assert!(put.status().is_success(), "{:?}", put.status());
        d
    };
    // A unique layer, so corrupting it touches no other image.
    let stamp = format!("{:?}", std::time::SystemTime::now());
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(stamp.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, "stamp", stamp.as_bytes()).unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = imgfs::digest::Digest::of(&tar).to_string();
    let layer = push_blob(&tar);
    let config =
        serde_json::json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[diff_id]}});
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = push_blob(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest":config_digest,"size":config.len()},
        "layers": [{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":layer,"size":tar.len()}]
    });
    let put = client
        .put(format!("{base}/manifests/1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .unwrap();
    assert!(put.status().is_success());
    // Flip the bytes on the registry's disk, keeping the length.
    let hex = &layer[7..];
    let data = e.dir.join(format!("registry-data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    let mut bytes = std::fs::read(&data).unwrap();
    for b in bytes.iter_mut().take(512) {
        *b ^= 0xff;
    }
    std::fs::write(&data, &bytes).unwrap();

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let err = fails(&imgfs(r, &["pull", &format!("{}/corrupt:1", e.addr)]));
    assert!(err.contains("digest mismatch") && err.contains(&layer), "{err}");
    assert!(!blob_names(r).contains(&hex.to_string()), "the corrupt layer must not be stored");
    assert_eq!(tmp_files(r), 0, "no partial download left behind");
    assert!(!r.join("images.json").exists() || db(r)["images"].as_object().unwrap().is_empty());
}

/// A layer refused within its first megabyte (over IMGFS_MAX_LAYER_ENTRIES) stops its
/// download there: of a 64 MiB blob the registry sends a small part (what the sockets
/// on the way hold), not the rest, which could not change the answer.
#[test]
fn a_layer_refused_early_stops_its_download() {
    use std::io::Write;
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let client = reqwest::blocking::Client::new();
    let base = format!("http://{}/v2/refused-early", e.addr);
    let push_blob = |bytes: &[u8]| -> String {
        let d = imgfs::digest::Digest::of(bytes).to_string();
        let resp = client.post(format!("{base}/blobs/uploads/")).send().unwrap();
        let loc = resp.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with("http") { loc } else { format!("http://{}{loc}", e.addr) };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = client.put(format!("{loc}{sep}digest={d}")).body(bytes.to_vec()).send().unwrap();
        assert!(put.status().is_success(), "{:?}", put.status());
        d
    };
    // 2000 empty files, then 64 MiB that deflate can't shrink, in stored blocks.
    let mut tar = tar::Builder::new(Vec::new());
    for i in 0..2000 {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        tar.append_data(&mut h, format!("f{i}"), &[][..]).unwrap();
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..64 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut h = tar::Header::new_gnu();
    h.set_size(noise.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, "noise", &noise[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(&tar).unwrap();
    let blob = gz.finish().unwrap();
    let diff_id = imgfs::digest::Digest::of(&tar).to_string();
    let layer = push_blob(&blob);
    let config =
        serde_json::json!({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[diff_id]}});
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = push_blob(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest":config_digest,"size":config.len()},
        "layers": [{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":layer,"size":blob.len()}]
    });
    let put = client
        .put(format!("{base}/manifests/1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .unwrap();
    assert!(put.status().is_success());

    let root = tempfile::tempdir().unwrap();
    e.sync_log();
    let since = e.log_len();
    let out = Command::new(env!("CARGO_BIN_EXE_imgfs"))
        .arg("--root")
        .arg(root.path())
        .args(["pull", "-q", &format!("{}/refused-early:1", e.addr)])
        .env("IMGFS_MAX_LAYER_ENTRIES", "1000")
        .output()
        .unwrap();
    let err = fails(&out);
    assert!(err.contains("more than 1000 entries") && err.contains(&layer), "{err}");
    e.sync_log();
    let sent = e.blob_bytes_since(since, &layer);
    assert!(!sent.is_empty(), "no GET of the layer logged");
    let total: u64 = sent.iter().sum();
    assert!(total < blob.len() as u64 / 2, "{total} of the layer's {} bytes were sent: {sent:?}", blob.len());
    assert!(!blob_names(root.path()).contains(&layer[7..].to_string()), "the refused layer was kept");
}

/// A panic while a layer downloads (here in a progress callback) goes on to the caller:
/// the indexer, reading the layer as it arrives, is told to stop rather than left
/// waiting for bytes that will never come, which would hang the fetch for good.
#[test]
fn a_panic_while_a_layer_downloads_ends_the_fetch() {
    use imgfs::layer::ingest::{self, BlobSource, LayerProgress};
    let Some(_) = outcome::test_env() else { return };
    let e = env_only();
    let http = reqwest::blocking::Client::new();
    let get = |path: String| {
        let body = http
            .get(format!("http://{}{path}", e.addr))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    let manifest = get("/v2/big/manifests/1".into());
    let config = get(format!("/v2/big/blobs/{}", manifest["config"]["digest"].as_str().unwrap()));
    let layer: imgfs::image::Descriptor = serde_json::from_value(manifest["layers"][0].clone()).unwrap();
    let diff_id: imgfs::digest::Digest = config["rootfs"]["diff_ids"][0].as_str().unwrap().parse().unwrap();

    struct Panics;
    impl LayerProgress for Panics {
        fn downloading(&self, done: u64, _total: u64) {
            assert!(done == 0, "a progress callback fails");
        }
    }
    let root = tempfile::tempdir().unwrap();
    let store = imgfs::store::Store::open(root.path()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = e.addr.clone();
    std::thread::spawn(move || {
        let client = imgfs::registry::LazyClient::new(imgfs::registry::ClientOptions {
            docker_config_dir: Some(PathBuf::from("/nonexistent/imgfs-test-docker-config")),
            ..Default::default()
        });
        let from = BlobSource::Registry { client: &client, registry: &addr, repository: "big" };
        let fetch = || ingest::prepare(&store, &layer, &diff_id, &from, &Panics);
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(fetch)).is_err());
    });
    let panicked = rx.recv_timeout(std::time::Duration::from_secs(120)).expect("the fetch hangs after the panic");
    assert!(panicked, "the panic reaches the caller");
}

#[test]
fn search_lists_matching_repositories_of_a_registry_catalog() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let root = tempfile::tempdir().unwrap();
    let out = ok(&imgfs(root.path(), &["search", "--registry", &e.addr, "multi"]));
    let names: Vec<&str> = out.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, vec![format!("{}/multi", e.addr), format!("{}/multi-docker", e.addr)]);
    let out = ok(&imgfs(root.path(), &["search", "-q", "--limit", "1", "--registry", &e.addr, "multi"]));
    assert_eq!(out.lines().count(), 1);
    let err = fails(&imgfs(root.path(), &["search", "--registry", "127.0.0.1:1", "x"]));
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

/// Four pulls of one image into one store at once: every layer blob is downloaded
/// once (the others wait for the first, through the store's fetch lock) and all four
/// succeed with a verified store and no copies: a gzip layer is read from its blob.
#[test]
fn concurrent_pulls_of_one_image_fetch_each_blob_once() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let since = e.log_len();
    let image = format!("{}/app:1", e.addr);
    let outs: Vec<Output> = std::thread::scope(|s| {
        let pulls: Vec<_> = (0..4).map(|_| s.spawn(|| imgfs(r, &["pull", "-q", &image]))).collect();
        pulls.into_iter().map(|p| p.join().unwrap()).collect()
    });
    for o in &outs {
        ok(o);
    }
    let id = tag_target(r, &format!("{}/app:1", e.addr)).expect("app:1 is tagged");
    let layers = layers_of(r, &id);
    assert!(layers.len() >= 2, "app:1 has {} layers", layers.len());
    e.sync_log();
    let counts: Vec<usize> = layers.iter().map(|l| e.blob_gets_since(since, l)).collect();
    assert_eq!(counts, vec![1; layers.len()], "GETs per layer blob for 4 concurrent pulls");
    assert_blobs_verified(r);
    assert_eq!(tmp_files(r), 0);
    let copies = std::fs::read_dir(r.join("layers/sha256")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(copies, 0, "no uncompressed copies of gzip layers");
    for l in &layers {
        assert!(r.join("toc/sha256").join(format!("{}.toc", &l[7..])).is_file(), "layer {l} has no index");
    }
}

/// Captured output (pipes) gets no progress and no escape codes: stderr stays empty
/// and stdout holds the reference alone, so `imgfs pull X | xargs …` works and a failed
/// pull's stderr is its one error line. `-q` on a terminal prints only the reference.
#[test]
fn pull_to_pipes_prints_the_reference_alone_and_no_progress() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/big:1", e.addr);
    let out = imgfs(root.path(), &["pull", &image]);
    assert_eq!(ok(&out), format!("{image}\n"), "stdout carries the result only");
    assert!(out.stderr.is_empty(), "progress on a pipe: {:?}", String::from_utf8_lossy(&out.stderr));
    let fresh = tempfile::tempdir().unwrap();
    let screen = pull_on_a_terminal(fresh.path(), &["-q", &image]);
    assert_eq!(screen.trim_end(), image, "-q on a terminal: {screen:?}");
}

/// On a terminal pull draws live layer lines with indicatif (escape codes to redraw
/// them) and ends with each layer's final state and docker's closing lines.
#[test]
fn pull_on_a_terminal_draws_progress() {
    let Some(_) = outcome::test_env() else { return };
    let (e, _serial) = env();
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/big:1", e.addr);
    let screen = pull_on_a_terminal(root.path(), &[&image]);
    assert!(screen.contains('\x1b'), "no terminal drawing: {screen:?}");
    assert!(screen.contains(": Pull complete"), "{screen:?}");
    assert!(screen.contains("Status: Downloaded newer image"), "{screen:?}");
}

/// What a terminal shows last: the text after the last escape sequence (a CSI:
/// `ESC [`, parameters, one final byte) in what was written to it.
fn after_last_escape(screen: &str) -> &str {
    let Some(esc) = screen.rfind('\x1b') else { return screen };
    let rest = &screen[esc + 1..];
    let Some(csi) = rest.strip_prefix('[') else { return rest };
    match csi.find(|c: char| ('\x40'..='\x7e').contains(&c)) {
        Some(end) => &csi[end + 1..],
        None => "",
    }
}

/// Ctrl-C on the terminal while a layer downloads (its GET stalls in a fault proxy):
/// the layer lines end as plain lines, the unfinished one `Interrupted`, the last one
/// ending its line and none padded to the terminal's width (indicatif pads its last
/// line, and a pull killed mid-draw would leave the cursor after that padding); exit 130.
/// A pty of the test's own, 100 columns wide, as its controlling terminal: the ^C is
/// the terminal's, sent by writing it to the pty.
#[test]
fn ctrl_c_during_a_pull_ends_the_progress_lines_cleanly() {
    use faultproxy::{Fault, FaultProxy, Rule};
    use std::io::{Read, Write};
    use std::os::unix::process::ExitStatusExt;
    let Some(_) = outcome::test_env() else { return };
    let e = env_only();
    let proxy = FaultProxy::start(&e.addr);
    let body = reqwest::blocking::Client::new()
        .get(format!("http://{}/v2/big/manifests/1", e.addr))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    proxy.add(Rule::new(&layer, Fault::Stall));

    let root = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgfs"));
    cmd.arg("--root").arg(root.path()).args(["pull", &format!("{}/big:1", proxy.addr)]);
    let (mut child, mut master) = pty::spawn(cmd, Some(100));
    let waiting = format!("{}: Waiting", &layer[7..19]);
    let mut screen = String::new();
    let mut buf = [0u8; 4096];
    while !screen.contains(&waiting) {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => panic!("the pull ended before its layer line showed: {screen:?}"),
            Ok(n) => screen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    master.write_all(b"\x03").unwrap();
    // To EOF (EIO): the pull is the pty's last holder.
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        screen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?} (signal {:?}): {screen:?}", status.signal());
    let last = after_last_escape(&screen);
    assert!(last.contains(&format!("{}: Interrupted\r\n", &layer[7..19])), "{last:?}");
    assert!(last.ends_with("\r\n"), "the last line is not ended: {last:?}");
    assert!(!last.lines().any(|l| l.trim_end_matches('\r').ends_with(' ')), "a padded line: {last:?}");
}
