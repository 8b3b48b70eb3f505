//! Hostile images, pushed to the real test registry by scripts/build-test-images
//! (scripts/testimages/hostile_images.py: hostile_image, hostile_failing_images): what a
//! mount serves of bad entries, and the clear errors a pull gives for layers it refuses,
//! the configurable bounds on a layer, and a full store disk.

use super::*;
use std::ffi::OsStr;

/// The one-line error of a pull that must fail; nothing of the image is listed after.
fn pull_fails(root: &Path, env: &[(&str, &str)], image: &str) -> String {
    let out = imgfs_env(root, env, &["pull", image]);
    assert!(!out.status.success(), "imgfs pull {image} should fail: {}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(err.lines().count(), 1, "pull {image}: want a one-line error: {}", show(&out));
    let ls = imgfs_ok(root, &["ls", "-q"]);
    assert!(ls.trim().is_empty(), "a refused image is listed: {ls}");
    err
}

/// Every name, byte for byte, in a directory of the mount.
fn names_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().as_bytes().to_vec()).collect();
    names.sort();
    names
}

/// A mount of hostile:1 lists both of two names that differ only in bytes that are
/// not UTF-8 and reads each one's own bytes; a broken hard link fails alone (EIO) and
/// is left out of its listing while the rest is served; `..` never climbs out of the
/// image; symlinks out of the image are served as they are; invalid whiteouts hide
/// nothing.
#[test]
fn a_mount_serves_bad_entries_as_documented() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let m = mount(store.root(), &format!("{}/hostile:1", env().addr), &[]);
    let latin1 = &b"caf\xe9"[..];
    let private = "caf\u{10FFE9}".as_bytes();
    assert_eq!(names_in(&m.path("names")), vec![latin1.to_vec(), private.to_vec()]);
    let names = m.path("names");
    assert_eq!(fs::read(names.join(OsStr::from_bytes(latin1))).unwrap(), b"latin-1\n");
    assert_eq!(fs::read(names.join(OsStr::from_bytes(private))).unwrap(), b"private use\n");

    assert_eq!(names_in(&m.dir), [&b"escaped"[..], b"etc", b"links", b"lowdir", b"names", b"sym"].map(|n| n.to_vec()));
    assert_eq!(names_in(&m.path("links")), [&b"d"[..], b"later", b"ok"].map(|n| n.to_vec()));
    for broken in ["links/passwd", "links/early", "links/to-dir"] {
        assert_eq!(errno_of(broken, fs::symlink_metadata(m.path(broken))), libc::EIO, "{broken}");
    }
    assert_eq!(fs::read(m.path("links/ok")).unwrap(), b"hostile\n");
    assert_eq!(fs::metadata(m.path("links/ok")).unwrap().nlink(), 2);
    assert_eq!(fs::read(m.path("links/later")).unwrap(), b"written after the link\n");
    assert_eq!(fs::read(m.path("escaped")).unwrap(), b"climbed\n");
    // Nothing is ever unpacked: `../../../escaped` is a name in the mount, never a file
    // written beside the store or the mountpoint.
    for dir in [store.root(), store.root().parent().unwrap(), m.dir.parent().unwrap(), Path::new("/")] {
        assert!(!dir.join("escaped").exists(), "{}/escaped", dir.display());
    }
    assert_eq!(fs::read_link(m.path("sym/passwd")).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(fs::read_link(m.path("sym/up")).unwrap(), Path::new("../../../../etc"));
    assert_eq!(names_in(&m.path("lowdir")), vec![b"f".to_vec()]);
    assert_eq!(fs::read(m.path("lowdir/f")).unwrap(), b"still here\n");

    let logs = server_logs(store.root());
    assert!(
        logs.contains(
            r#"hard link "links/passwd" in layer 1 points at "etc/passwd", which is not a file of the image"#
        ),
        "the broken link's reason is logged: {logs}"
    );
}

/// Layers a pull refuses, each with an error naming the layer and what is wrong.
#[test]
fn a_pull_refuses_bad_layers_with_a_clear_error() {
    let Some(_) = outcome::test_env() else { return };
    type Vars = &'static [(&'static str, &'static str)];
    let cases: &[(&str, Vars, &str)] = &[
        ("hostile-nottar:1", &[], "layer is not a tar archive"),
        ("hostile-truncgz:1", &[], "layer is truncated: its gzip stream ends early"),
        ("hostile-trunczst:1", &[], "layer is truncated: its zstd stream ends early"),
        ("hostile-longname:1", &[], "a name component is longer than 255 bytes"),
        ("hostile-hardout:1", &[], r#"hard link "d/out" points outside the image, at "../../etc/passwd""#),
        ("hostile-sparse:1", &[], r#"sparse file "GNUSparseFile.0/sparse" (PAX) in layer is not supported"#),
        (
            "hostile-bomb:1",
            &[("IMGFS_MAX_LAYER_SIZE", "16M")],
            "layer is larger than 16777216 bytes uncompressed, the limit (set IMGFS_MAX_LAYER_SIZE to raise it)",
        ),
        (
            "hostile-bomb:1",
            &[("IMGFS_MAX_LAYER_ENTRIES", "1000")],
            "layer has more than 1000 entries, the limit (set IMGFS_MAX_LAYER_ENTRIES to raise it)",
        ),
    ];
    for (tag, env_vars, want) in cases {
        let store = Store::new();
        let err = pull_fails(store.root(), env_vars, &format!("{}/{tag}", env().addr));
        let layer = &layer_digests(tag)[0];
        assert!(err.contains(want), "{tag}: {err}");
        assert!(err.contains(layer.as_str()), "{tag}: the error names the layer {layer}: {err}");
        assert!(!blob_file(store.root(), layer).exists(), "{tag}: the refused layer was kept");
    }
    // Within the default limits the bomb is an ordinary image.
    let store = Store::new();
    imgfs_ok(store.root(), &["pull", "-q", &format!("{}/hostile-bomb:1", env().addr)]);
}

/// A lazy `ls` on a mount indexes the layer; over the limit it fails with EIO (the
/// reason in the mount's log), and the mount stays up.
#[test]
fn a_mount_of_a_layer_over_the_limit_fails_the_operation_not_the_mount() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let m = Mount::empty();
    let image = format!("{}/hostile-bomb:1", env().addr);
    let out = imgfs_env(store.root(), &[("IMGFS_MAX_LAYER_SIZE", "16M")], &["mount", &image, m.arg()]);
    assert!(out.status.success(), "mount: {}", show(&out));
    assert_eq!(errno_of("ls", fs::read_dir(m.path("many"))), libc::EIO);
    assert_eq!(errno_of("ls", fs::read_dir(m.path("many"))), libc::EIO, "tried again, fails again");
    assert!(mountinfo(&m.dir).is_some(), "the mount is still up");
    let logs = server_logs(store.root());
    assert!(logs.contains("the limit (set IMGFS_MAX_LAYER_SIZE to raise it)"), "{logs}");
}

/// A store on a full disk: the pull fails saying there is no space, never that the
/// layer is corrupt. The store is a 3 MiB tmpfs (unmounted when the test ends): the
/// 1 MiB blob of hostile-fulldisk:1 fits, its 8 MiB re-encoded copy does not.
#[test]
fn a_full_store_disk_says_no_space() {
    let Some(_) = outcome::test_env() else { return };
    struct Tmpfs(TempDir);
    impl Drop for Tmpfs {
        fn drop(&mut self) {
            // EINVAL (not mounted) is fine.
            let _ = rustix::mount::unmount(self.0.path(), rustix::mount::UnmountFlags::DETACH);
        }
    }
    let tmpfs = Tmpfs(tempfile::tempdir().unwrap());
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m,mode=0700", "imgfs-test-full"])
        .arg(tmpfs.0.path())
        .status()
        .unwrap();
    assert!(st.success(), "mount -t tmpfs");
    let err = pull_fails(tmpfs.0.path(), &[], &format!("{}/hostile-fulldisk:1", env().addr));
    assert!(err.contains("cannot write the re-encoded layer: No space left on device"), "{err}");
    assert!(!err.contains("corrupt"), "{err}");
}
