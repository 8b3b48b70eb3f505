//! Mounts of local sources written by skopeo from the test registry's images: an
//! `oci:` layout is served from its own blobs (no layer blob is copied into the
//! store), `oci-archive:` and `docker-archive:` from blobs copied in; each mount's
//! tree equals the image's reference unpack.

use super::*;

fn skopeo_copy(repo_tag: &str, dest: &str) {
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{}/{repo_tag}", env().addr))
        .arg(dest)
        .output()
        .expect("cannot run skopeo");
    assert!(out.status.success(), "skopeo copy {repo_tag} {dest}: {}", show(&out));
}

#[test]
fn mounts_of_layouts_and_archives_match_the_reference_unpack() {
    let Some(_) = outcome::test_env() else { return };
    let files = tempfile::tempdir().unwrap();
    let store = Store::new();
    let layout = files.path().join("lay");
    let sources = [
        ("app:1", format!("oci:{}:app", layout.display())),
        ("layered:1", format!("oci-archive:{}:l", files.path().join("layered.tar").display())),
        ("v2s2:1", format!("docker-archive:{}:v2s2:1", files.path().join("v2s2.tar").display())),
    ];
    for (repo_tag, source) in &sources {
        skopeo_copy(repo_tag, source);
        let m = mount(store.root(), source, &[]);
        read_all(&m.dir);
        let diffs = treecmp(&m.dir, &unpack_of(repo_tag).join("rootfs"), &["--no-dir-mtime"]);
        assert!(diffs.is_empty(), "{source} differs from {repo_tag}'s unpack:\n{}", diffs.join("\n"));
    }
    // The layout's layers were read in place: indexed into the store, never copied.
    let layers = layer_digests("app:1");
    for d in &layers {
        assert!(layout.join("blobs/sha256").join(&d[7..]).is_file(), "skopeo kept {d} as it is");
        assert!(!blob_file(store.root(), d).exists(), "the mount of the layout copied layer {d} into the store");
        assert!(store.root().join("toc/sha256").join(format!("{}.toc", &d[7..])).is_file(), "{d} not indexed");
    }
    // Those indexes are no damage to `imgfs check`, though the store lacks their blobs.
    let out = imgfs(store.root(), &["check"]);
    assert!(out.status.success(), "check finds damage: {}", show(&out));
    // The archives' layers were copied in.
    let present = imgfs_ok(store.root(), &["inspect", "--format", "{{range .Layers}}{{.Present}} {{end}}", "v2s2:1"]);
    assert!(!present.contains("false"), "v2s2:1 layers not all stored: {present}");
}
