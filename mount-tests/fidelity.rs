//! The mounted tree is the reference unpack: every image of the test registry, mounted,
//! equals its `umoci unpack` (types, modes, owners, sizes, contents, links, devices,
//! xattrs, hard-link groups, and directory mtimes wherever umoci defines them); an
//! xattr with an empty value, which that reference cannot show, is served too.

use super::*;

/// Every image with a reference unpack mounts as exactly that tree (types, modes,
/// owners, sizes, contents, links, devices, xattrs, hardlink groups), directory mtimes
/// aside (see the next test); multi-arch images also for linux/arm64.
#[test]
fn trees_match_reference_unpacks() {
    let Some(_) = outcome::test_env() else { return };
    let failures = compare_all(&["--no-dir-mtime"], |_| Vec::new());
    assert!(failures.is_empty(), "trees differ:\n{}", failures.join("\n"));
}

/// Directory mtimes match too, wherever umoci itself gives a directory the mtime of its
/// topmost tar entry (the unpack's dir-mtime-ignore lists where it doesn't).
#[test]
fn dir_mtimes_match_where_the_reference_defines_them() {
    let Some(_) = outcome::test_env() else { return };
    let failures = compare_all(&[], |unpack| {
        vec!["--ignore-dir-mtime-of".to_string(), unpack.join("dir-mtime-ignore").display().to_string()]
    });
    assert!(failures.is_empty(), "trees differ:\n{}", failures.join("\n"));
}

/// Mount each image of images.tsv (and the arm64 side of the multi-arch ones) in turn
/// into one store and compare; returns one message per image that differs.
fn compare_all(options: &[&str], per_unpack: impl Fn(&Path) -> Vec<String>) -> Vec<String> {
    let store = Store::new();
    let mut cases: Vec<(String, Vec<&str>, PathBuf)> = Vec::new();
    for (name, unpack) in &env().unpacked {
        // images.tsv gives the amd64 unpack for the multi-arch images.
        let platform = if name.starts_with("multi") && !cfg!(target_arch = "x86_64") {
            vec!["--platform", "linux/amd64"]
        } else {
            vec![]
        };
        cases.push((name.clone(), platform, unpack.clone()));
    }
    let arm64 = env().dir.join("unpacked/multi-arm64");
    for name in ["multi:1", "multi-docker:1"] {
        cases.push((name.to_string(), vec!["--platform", "linux/arm64"], arm64.clone()));
    }
    assert!(cases.len() > 10, "images.tsv lists too few images: {cases:?}");
    let mut failures = Vec::new();
    for (name, platform, unpack) in cases {
        let m = mount(store.root(), &format!("{}/{name}", env().addr), &platform);
        // The finished tree is what must be exact: a directory whose topmost entry is in
        // a layer not fetched yet is served with provisional attributes until then, so
        // fetch everything first (every file read, every directory listed).
        read_all(&m.dir);
        let mut opts: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        opts.extend(per_unpack(&unpack));
        let opts: Vec<&str> = opts.iter().map(|s| s.as_str()).collect();
        let diffs = treecmp(&m.dir, &unpack.join("rootfs"), &opts);
        if !diffs.is_empty() {
            failures.push(format!("== {name} {platform:?} vs {}:\n{}", unpack.display(), diffs.join("\n")));
        }
    }
    failures
}

/// edge:1's xattrs/file carries `user.empty` with an empty value (which the umoci
/// reference cannot show), next to the others; getfattr reads them all.
#[test]
fn empty_xattr_value_is_served() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let m = mount(store.root(), &format!("{}/edge:1", env().addr), &[]);
    let file = m.path("xattrs/file");
    let names = listxattr(&file);
    for want in ["user.empty", "user.foo", "user.unicode"] {
        assert!(names.iter().any(|n| n == want), "{want} not in listxattr {names:?}");
    }
    assert_eq!(getxattr(&file, "user.empty"), Some(Vec::new()));
    assert_eq!(getxattr(&file, "user.foo"), Some(b"bar".to_vec()));
    assert_eq!(getxattr(&file, "user.unicode"), Some("välue ✓".as_bytes().to_vec()));
    assert_eq!(getxattr(&file, "user.nope"), None);
    assert_eq!(getxattr(&m.path("xattrs"), "user.dir"), Some(b"on a directory".to_vec()));
    let out = Command::new("getfattr").args(["-d", "-m", "-"]).arg(&file).output().expect("getfattr");
    assert!(out.status.success(), "getfattr: {}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("user.empty=\"\"") && text.contains("user.foo=\"bar\""), "getfattr output:\n{text}");
}
