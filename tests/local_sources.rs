//! `pull` and `inspect` of `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` and
//! `docker-archive:FILE[:REF]`, with layouts and archives written by the real tools:
//! skopeo copies the test registry's images into them (and podman saves them, both
//! formats). Files are written under a temp dir per test, never committed. Also the
//! names podman gives such images, and bad input that must leave nothing in the store.

use std::path::Path;
use std::process::{Command, Output};

#[path = "outcome/mod.rs"]
mod outcome;
use outcome::{fails, ok, registry_addr as addr};

fn imgfs(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgfs")).arg("--root").arg(root).args(args).output().unwrap()
}

/// `imgfs` run in `dir`, for a layout named by a relative path (as podman names the
/// image after the path as typed, a temp dir's mixed-case name would be no valid one).
fn imgfs_in(dir: &Path, root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgfs")).current_dir(dir).arg("--root").arg(root).args(args).output().unwrap()
}

/// `skopeo copy` an image of the test registry to `dest` (a transport string).
fn skopeo_copy(repo_tag: &str, dest: &str, extra: &[&str]) {
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"])
        .args(extra)
        .arg(format!("docker://{}/{repo_tag}", addr()))
        .arg(dest)
        .output()
        .expect("cannot run skopeo");
    assert!(out.status.success(), "skopeo copy {repo_tag} {dest}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The config digest (image ID) skopeo sees at `source`.
fn skopeo_config_digest(source: &str) -> String {
    let out = Command::new("skopeo").args(["inspect", "--raw", "--config"]).arg(source).output().unwrap();
    assert!(out.status.success(), "skopeo inspect {source}: {}", String::from_utf8_lossy(&out.stderr));
    imgfs::digest::Digest::of(&out.stdout).to_string()
}

fn ls(root: &Path) -> String {
    ok(&imgfs(root, &["ls", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]))
}

fn inspect(root: &Path, what: &str, format: &str) -> String {
    ok(&imgfs(root, &["inspect", "--format", format, what])).trim_end().to_string()
}

fn blob_names(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("blobs/sha256"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn layer_digests(root: &Path, what: &str) -> Vec<String> {
    inspect(root, what, "{{range .Layers}}{{.Digest}} {{end}}").split_whitespace().map(String::from).collect()
}

#[test]
fn pull_an_oci_layout_by_tag_and_name_it_as_podman_does() {
    let Some(_) = outcome::test_env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("lay");
    let oci = |tag: &str| format!("oci:{}:{tag}", layout.display());
    skopeo_copy("app:1", &oci("one"), &[]);
    skopeo_copy("base:1", &oci("two"), &[]);
    let root = tmp.path().join("store");
    let id = skopeo_config_digest(&oci("one"));

    // inspect reads the layout without storing anything.
    assert_eq!(inspect(&root, &oci("one"), "{{.Id}} {{.Source}}"), format!("{id} oci:{}", layout.display()));
    assert!(blob_names(&root).is_empty(), "inspect stored blobs");

    let out = ok(&imgfs_in(tmp.path(), &root, &["pull", "oci:lay:one"]));
    // podman 4 names an image pulled from a layout after the layout's path as typed.
    let name = "localhost/lay:latest";
    assert_eq!(out.lines().last(), Some(name), "{out}");
    assert!(ls(&root).contains(&format!("localhost/lay:latest {}", &id[7..19])), "{}", ls(&root));
    assert_eq!(inspect(&root, name, "{{.Id}} {{.Os}} {{.Source}}"), format!("{id} linux oci:{}", layout.display()));
    // Every layer was copied into the store, verified (its name is its content's digest).
    for d in layer_digests(&root, name) {
        let file = root.join("blobs/sha256").join(&d[7..]);
        let (got, _) = imgfs::digest::digest_reader(std::fs::File::open(&file).unwrap()).unwrap();
        assert_eq!(got.to_string(), d);
    }

    // Two images in the layout: without a tag the error names both.
    let err = fails(&imgfs(&root, &["pull", &format!("oci:{}", layout.display())]));
    assert!(err.contains("holds 2 images") && err.contains("one") && err.contains("two"), "{err}");
    let err = fails(&imgfs(&root, &["pull", &oci("three")]));
    assert!(err.contains("no image tagged \"three\"") && err.contains("one, two"), "{err}");
}

#[test]
fn pull_a_multi_arch_layout_picks_the_platform() {
    let Some(_) = outcome::test_env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    skopeo_copy("multi:1", &format!("oci:{}:m", tmp.path().join("multi").display()), &["--all"]);
    let root = tmp.path().join("store");
    ok(&imgfs_in(tmp.path(), &root, &["pull", "--platform", "linux/arm64", "oci:multi:m"]));
    assert_eq!(inspect(&root, "localhost/multi", "{{.Architecture}}"), "arm64");
    let err = fails(&imgfs_in(tmp.path(), &root, &["pull", "--platform", "linux/s390x", "oci:multi:m"]));
    assert!(err.contains("no image for platform linux/s390x") && err.contains("linux/arm64"), "{err}");
}

#[test]
fn pull_oci_and_docker_archives_written_by_skopeo() {
    let Some(_) = outcome::test_env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let oa = tmp.path().join("app.oci.tar");
    skopeo_copy("app:1", &format!("oci-archive:{}:v1", oa.display()), &[]);
    let id = skopeo_config_digest(&format!("oci-archive:{}", oa.display()));
    let out = ok(&imgfs(&root, &["pull", &format!("oci-archive:{}", oa.display())]));
    // The archive's ref.name annotation is `v1`: podman makes that `localhost/v1:latest`.
    assert_eq!(out.lines().last(), Some("localhost/v1:latest"), "{out}");
    assert_eq!(inspect(&root, "localhost/v1", "{{.Id}} {{.Source}}"), format!("{id} oci-archive:{}", oa.display()));

    // Two images in one docker archive (skopeo writes uncompressed layers, no digests).
    let da = tmp.path().join("two.docker.tar");
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"])
        .args(["--additional-tag", "example.com/other:2"])
        .arg(format!("docker://{}/lazy:1", addr()))
        .arg(format!("docker-archive:{}:mine/lazy:7", da.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lazy_id = skopeo_config_digest(&format!("docker-archive:{}", da.display()));
    let out = ok(&imgfs(&root, &["pull", &format!("docker-archive:{}", da.display())]));
    assert_eq!(out.lines().last(), Some("mine/lazy:7"), "{out}");
    let listed = ls(&root);
    assert!(listed.contains(&format!("mine/lazy:7 {}", &lazy_id[7..19])), "{listed}");
    assert!(listed.contains(&format!("example.com/other:2 {}", &lazy_id[7..19])), "{listed}");
    assert_eq!(
        inspect(&root, "mine/lazy:7", "{{.Id}} {{.Source}} {{len .RootFS.Layers}}"),
        format!("{lazy_id} docker-archive:{} 3", da.display())
    );
    // Uncompressed layers: each layer's digest is its diff_id.
    assert_eq!(
        inspect(&root, "mine/lazy:7", "{{range .Layers}}{{.Digest}} {{end}}"),
        inspect(&root, "mine/lazy:7", "{{range .RootFS.Layers}}{{.}} {{end}}")
    );
    let err = fails(&imgfs(&root, &["pull", &format!("docker-archive:{}:nope:1", da.display())]));
    assert!(err.contains("no image nope:1 in the archive") && err.contains("docker.io/mine/lazy:7"), "{err}");
}

/// podman pulls from the test registry into a store of its own and saves the image in
/// both formats; imgfs pulls both and gets podman's image ID and name.
#[test]
fn pull_archives_written_by_podman_save() {
    let Some(_) = outcome::test_env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| {
        let out = Command::new("podman")
            .arg("--root")
            .arg(tmp.path().join("podman-root"))
            .arg("--runroot")
            .arg(tmp.path().join("podman-run"))
            .args(args)
            .output()
            .expect("cannot run podman");
        assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let image = format!("{}/app:2", addr());
    podman(&["pull", "-q", "--tls-verify=false", &image]);
    let id = format!("sha256:{}", podman(&["image", "inspect", "--format", "{{.Id}}", &image]).trim());
    let root = tmp.path().join("store");
    for format in ["docker-archive", "oci-archive"] {
        let file = tmp.path().join(format!("{format}.tar"));
        podman(&["save", "-q", "--format", format, "-o", file.to_str().unwrap(), &image]);
        let out = ok(&imgfs(&root, &["pull", &format!("{format}:{}", file.display())]));
        // docker-archive keeps podman's RepoTags; oci-archive's ref.name is the same name.
        assert_eq!(out.lines().last(), Some(image.as_str()), "{format}: {out}");
        assert_eq!(inspect(&root, &image, "{{.Id}}"), id, "{format}");
    }
}

#[test]
fn bad_local_sources_fail_in_one_line_and_store_nothing() {
    let Some(_) = outcome::test_env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let missing = tmp.path().join("missing");
    let err = fails(&imgfs(&root, &["pull", &format!("oci:{}", missing.display())]));
    assert!(err.contains(&missing.display().to_string()), "{err}");
    let err = fails(&imgfs(&root, &["pull", &format!("oci:{}", tmp.path().display())]));
    assert!(err.contains("not an OCI image layout"), "{err}");
    let not_tar = tmp.path().join("not.tar");
    std::fs::write(&not_tar, "hello").unwrap();
    let err = fails(&imgfs(&root, &["pull", &format!("docker-archive:{}", not_tar.display())]));
    assert!(err.contains("not a tar archive"), "{err}");
    let err = fails(&imgfs(&root, &["pull", "--all-tags", "oci:/x"]));
    assert!(err.contains("--all-tags"), "{err}");

    // A layout whose largest layer blob was damaged after skopeo wrote it.
    let layout = tmp.path().join("lay");
    skopeo_copy("app:1", &format!("oci:{}:t", layout.display()), &[]);
    let blobs = layout.join("blobs/sha256");
    let biggest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&biggest, bytes).unwrap();
    let hex = biggest.file_name().unwrap().to_str().unwrap().to_string();
    let err = fails(&imgfs(&root, &["pull", &format!("oci:{}:t", layout.display())]));
    assert!(err.contains(&hex[..12]), "the error names the damaged blob: {err}");
    assert!(!blob_names(&root).contains(&hex), "the damaged blob was stored");
    assert_eq!(ls(&root), "", "a failed pull left an image");
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0, "temp files left");
}

/// The shape `docker save` writes since docker 25: an OCI layout inside, and
/// `manifest.json` naming the layers as `HEX/layer.tar` symlinks into `blobs/sha256/`
/// (and, with the containerd image store, gzip layers as they came). Docker itself
/// does not run here: the archive is put together from a layout skopeo wrote, the way
/// docker lays it out.
#[test]
fn pull_a_docker_25_archive_with_symlinked_gzip_layers() {
    let Some(_) = outcome::test_env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("lay");
    skopeo_copy("app:1", &format!("oci:{}:t", layout.display()), &[]);
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| layout.join("blobs/sha256").join(&d[7..]);
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(manifest_digest)).unwrap()).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let layers: Vec<String> =
        manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();

    let archive = tmp.path().join("docker25.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    let add_file = |tar: &mut tar::Builder<std::fs::File>, name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, bytes).unwrap();
    };
    for d in layers.iter().chain([&config]) {
        add_file(&mut tar, &format!("blobs/sha256/{}", &d[7..]), &std::fs::read(blob(d)).unwrap());
    }
    let mut legacy = Vec::new();
    for d in &layers {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        tar.append_link(&mut h, format!("{}/layer.tar", &d[7..]), format!("../blobs/sha256/{}", &d[7..])).unwrap();
        legacy.push(format!("{}/layer.tar", &d[7..]));
    }
    let list = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", &config[7..]),
        "RepoTags": ["docker25/app:1"],
        "Layers": legacy,
    }]);
    add_file(&mut tar, "manifest.json", list.to_string().as_bytes());
    tar.finish().unwrap();
    drop(tar);

    let root = tmp.path().join("store");
    let out = ok(&imgfs(&root, &["pull", &format!("docker-archive:{}", archive.display())]));
    assert_eq!(out.lines().last(), Some("docker25/app:1"), "{out}");
    assert_eq!(inspect(&root, "docker25/app:1", "{{.Id}}"), config);
    // The gzip layers kept their digests (the made-up manifest names them as they are).
    assert_eq!(layer_digests(&root, "docker25/app:1"), layers);
    assert!(
        inspect(&root, "docker25/app:1", "{{range .Layers}}{{.MediaType}} {{end}}").contains("tar+gzip"),
        "gzip layers not recognised"
    );
}
