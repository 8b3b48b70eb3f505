//! The commands that read an image without a mount (`cat`, `cp`, `files`, `export`,
//! `diff`, `history`, `layers`), against the real test registry and the reference
//! unpacks: bytes and trees compared with `umoci unpack`'s, diffs with one computed
//! from two reference unpacks, history with `podman history`, the registry's log for
//! what a diff with published indexes fetches, and every command run by a user who has
//! no FUSE at all (`/dev/fuse` hidden in a mount namespace of its own).
//! They live with the mount tests for the helpers they share (reference unpacks,
//! `treecmp.py`, the request-counting proxy, published copies); none mounts anything.

use super::published_index::{blob_requests, publish_copy};
use super::security::{test_user, TEST_USER};
use super::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;

/// The long directory name of edge:1's long-name cases (scripts/build-test-images).
fn long_dir() -> String {
    format!("{}/{}", "d".repeat(60), "e".repeat(70))
}

fn image(name: &str) -> String {
    format!("{}/{name}", env().addr)
}

/// `tar -x` as root of a stream, keeping owners, modes, xattrs, devices.
fn untar(stream: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    let out = Command::new("tar")
        .args(["-x", "--same-owner", "--numeric-owner", "-p", "--xattrs", "--xattrs-include=*", "-f"])
        .arg(stream)
        .arg("-C")
        .arg(into)
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar -x: {}", show(&out));
}

/// treecmp.py options for an unpack: its directories whose mtime umoci left undefined.
fn mtime_options(repo_tag: &str) -> Vec<String> {
    vec!["--ignore-dir-mtime-of".into(), unpack_of(repo_tag).join("dir-mtime-ignore").display().to_string()]
}

#[test]
fn cat_gives_the_reference_bytes_of_linked_readded_unicode_and_long_named_files() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let long_pax = format!("long-pax/{}/{}.txt", long_dir(), "f".repeat(90));
    let long_gnu = format!("long-gnu/{}/{}.txt", long_dir(), "g".repeat(90));
    let files = [
        "hardlinks/sub/c",
        "hardlink-wh/alias",
        "readd-wh-first/f.txt",
        "readd-file-first/f.txt",
        "unicode/héllo wörld ✓.txt",
        "unicode/dir with spaces/file name.txt",
        &long_pax,
        &long_gnu,
        "opq-before/d/same.txt",
        "dup/f.txt",
    ];
    for f in files {
        for path in [format!("/{f}"), f.to_string()] {
            let out = imgfs(store.root(), &["cat", &image("edge:1"), &path]);
            assert!(out.status.success(), "cat {path}: {}", show(&out));
            assert_eq!(out.stdout, reference_file("edge:1", f), "cat {path}");
        }
    }
    // Several at once, concatenated; a link resolved inside the image.
    let out = imgfs_ok(store.root(), &["cat", &image("edge:1"), "/hardlinks/a", "/unicode/→link"]);
    let want =
        [reference_file("edge:1", "hardlinks/a"), reference_file("edge:1", "unicode/héllo wörld ✓.txt")].concat();
    assert_eq!(out.into_bytes(), want);
    // An absolute link target starts again from the image's root, never the host's.
    let out = imgfs(store.root(), &["cat", &image("base:1"), "/bin/true"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(out.stdout, reference_file("base:1", "usr/bin/true"));

    // --platform and local sources, as pull takes them.
    let arm = imgfs_ok(store.root(), &["cat", "--platform", "linux/arm64", &image("multi:1"), "/etc/arch"]);
    assert_eq!(arm, "arm64\n");
    let layout = format!("oci:{}:app-1", env().dir.join("work/oci").display());
    assert_eq!(imgfs_ok(store.root(), &["cat", &layout, "/etc/hostname"]), "app-1\n");

    for (path, why) in [
        ("/hardlinks", "is a directory"),
        ("/nope", "no such file or directory in the image"),
        ("/wh-file/gone.txt", "no such file or directory in the image"),
        ("/wh-dir/gone/a.txt", "no such file or directory in the image"),
        ("/hardlinks/a/x", "not a directory"),
    ] {
        let out = imgfs(store.root(), &["cat", &image("edge:1"), "/hardlinks/a", path]);
        let err = outcome::fails(&out);
        assert!(err.contains(path) && err.contains(why), "cat {path}: {err}");
        assert!(out.stdout.is_empty(), "cat {path} wrote before failing");
    }
}

#[test]
fn export_extracted_as_root_equals_the_reference_unpack() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let tmp = tempfile::tempdir().unwrap();
    for name in ["edge:1", "edge-extra:1", "app:1", "layered:1"] {
        let stream = tmp.path().join(format!("{name}.tar"));
        imgfs_ok(store.root(), &["export", "-o", stream.to_str().unwrap(), &image(name)]);
        let tree = tmp.path().join(name);
        untar(&stream, &tree);
        let opts = mtime_options(name);
        let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
        let diffs = treecmp(&tree, &unpack_of(name).join("rootfs"), &opts);
        assert!(diffs.is_empty(), "export of {name} differs from its unpack:\n{}", diffs.join("\n"));
    }
    // The same stream on stdout; long names and xattrs are in PAX headers.
    let out = imgfs(store.root(), &["export", &image("edge:1")]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(out.stdout, fs::read(tmp.path().join("edge:1.tar")).unwrap(), "stdout and -o differ");
    let pax = String::from_utf8_lossy(&out.stdout);
    assert!(pax.contains("SCHILY.xattr.user.foo=bar"), "no PAX xattr record");
    assert!(pax.contains(&format!(" path=long-pax/{}/", long_dir())), "no PAX path record");
    // A subtree, as its own root.
    let sub = tmp.path().join("sub.tar");
    imgfs_ok(store.root(), &["export", "-o", sub.to_str().unwrap(), &image("edge:1"), "/hardlinks"]);
    let listing = Command::new("tar").arg("-tf").arg(&sub).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "./\na\nb\nsub/\nsub/c\n");
}

#[test]
fn cp_copies_a_directory_with_and_without_slash_dot_a_file_and_a_tar() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let tmp = tempfile::tempdir().unwrap();
    let reference = unpack_of("app:1").join("rootfs");
    let src = format!("{}:/etc", image("app:1"));
    let cmp = |got: &Path, want: &Path| {
        let diffs = treecmp(got, want, &[]);
        assert!(diffs.is_empty(), "{} differs from {}:\n{}", got.display(), want.display(), diffs.join("\n"));
    };
    // To a DEST that does not exist: DEST is the copy.
    let new = tmp.path().join("new");
    imgfs_ok(store.root(), &["cp", &src, new.to_str().unwrap()]);
    cmp(&new, &reference.join("etc"));
    // To an existing directory: under its own name.
    let into = tmp.path().join("into");
    fs::create_dir(&into).unwrap();
    fs::write(into.join("mine"), "stays\n").unwrap();
    imgfs_ok(store.root(), &["cp", &src, into.to_str().unwrap()]);
    cmp(&into.join("etc"), &reference.join("etc"));
    // With /. : the contents into it; what was there stays.
    let merge = tmp.path().join("merge");
    fs::create_dir(&merge).unwrap();
    fs::write(merge.join("mine"), "stays\n").unwrap();
    imgfs_ok(store.root(), &["cp", &format!("{src}/."), merge.to_str().unwrap()]);
    assert_eq!(fs::read(merge.join("mine")).unwrap(), b"stays\n");
    let mtime = |p: &Path| fs::metadata(p).unwrap().mtime();
    assert_eq!(mtime(&merge), mtime(&reference.join("etc")), "DEST takes the source directory's mtime");
    // Removing our own file moves the mtime again: not compared from here on.
    fs::remove_file(merge.join("mine")).unwrap();
    let root_mtime = tmp.path().join("root-mtime");
    fs::write(&root_mtime, ".\n").unwrap();
    let diffs = treecmp(&merge, &reference.join("etc"), &["--ignore-dir-mtime-of", root_mtime.to_str().unwrap()]);
    assert!(diffs.is_empty(), "{} differs:\n{}", merge.display(), diffs.join("\n"));
    assert_eq!(fs::read_dir(&merge).unwrap().count(), fs::read_dir(reference.join("etc")).unwrap().count());

    // A file into a directory, a file to a new name, a link with and without -L.
    imgfs_ok(store.root(), &["cp", &format!("{}:/etc/hostname", image("app:1")), into.to_str().unwrap()]);
    assert_eq!(fs::read(into.join("hostname")).unwrap(), b"app-1\n");
    let link = tmp.path().join("link");
    imgfs_ok(store.root(), &["cp", &format!("{}:/etc/issue.link", image("base:1")), link.to_str().unwrap()]);
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("issue"));
    let followed = tmp.path().join("followed");
    imgfs_ok(store.root(), &["cp", "-L", &format!("{}:etc/issue.link", image("base:1")), followed.to_str().unwrap()]);
    assert_eq!(fs::read(&followed).unwrap(), reference_file("base:1", "etc/issue"));

    // DEST -: a tar under the source's name; /. : under ./
    let out = imgfs(store.root(), &["cp", &src, "-"]);
    assert!(out.status.success(), "{}", show(&out));
    let names = tar_names(&out.stdout);
    assert!(names.contains(&"etc/".to_string()) && names.contains(&"etc/hostname".to_string()), "{names:?}");
    let out = imgfs(store.root(), &["cp", &format!("{src}/."), "-"]);
    let names = tar_names(&out.stdout);
    assert!(names.contains(&"./".to_string()) && names.contains(&"hostname".to_string()), "{names:?}");

    // Bad input: one line, nothing left at DEST.
    let none = tmp.path().join("none");
    for (args, why) in [
        (vec!["cp".to_string(), format!("{}:/nope", image("app:1")), none.display().to_string()], "no such file"),
        (
            vec!["cp".into(), format!("{}:/etc/hostname/", image("app:1")), none.display().to_string()],
            "not a directory",
        ),
        (
            vec!["cp".into(), format!("{}:/etc/hostname", image("app:1")), format!("{}/", none.display())],
            "does not exist",
        ),
        (
            vec!["cp".into(), src.clone(), into.join("hostname").display().to_string()],
            "cannot copy a directory to a file",
        ),
        (vec!["cp".into(), "no-colon-here".into(), none.display().to_string()], "REF:PATH"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = imgfs_fails(store.root(), &args);
        assert!(err.contains(why), "{args:?}: {err}");
        assert!(!none.exists(), "{args:?} left {}", none.display());
    }
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".imgfs-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

fn tar_names(stream: &[u8]) -> Vec<String> {
    let out = tar_list(stream);
    assert!(out.status.success(), "tar -t: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}

/// `tar -t` of `stream`.
fn tar_list(stream: &[u8]) -> Output {
    let mut child = Command::new("tar")
        .args(["-tf", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = stream.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    // tar may stop reading a stream it finds broken.
    let _ = writer.join().unwrap();
    out
}

/// A stream that fails midway ends where it failed. The layer blobs of a stored image
/// are damaged (zeros, the same size), so the first file's data fails its check:
/// `export` and `cp … -` exit 1 naming that file, and what they wrote is no archive
/// `tar -t` accepts (the tar writer used to end it with the end-of-archive blocks,
/// which `tar` read as the file's data, zeros, and the end). `export -o` leaves
/// nothing, nor does `export -o DIR`, which is refused before anything is read.
#[test]
fn a_stream_that_fails_midway_is_no_complete_archive() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let tmp = tempfile::tempdir().unwrap();
    let app = image("app:1");
    imgfs_ok(store.root(), &["pull", &app]);
    for d in layer_digests("app:1") {
        let blob = blob_file(store.root(), &d);
        let len = fs::metadata(&blob).unwrap().len() as usize;
        fs::write(&blob, vec![0u8; len]).unwrap();
    }
    let etc = format!("{app}:/etc");
    for (args, first_file) in
        [(vec!["export", app.as_str()], "/app/bin/run.sh"), (vec!["cp", etc.as_str(), "-"], "/etc/hostname")]
    {
        let out = imgfs(store.root(), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(first_file) && !err.contains("writing"),
            "{args:?}: not a read failure of {first_file}: {err}"
        );
        assert!(!out.stdout.is_empty(), "{args:?}: nothing written before {first_file}");
        let listed = tar_list(&out.stdout);
        assert!(!listed.status.success(), "{args:?}: tar takes the stream for a whole archive: {}", show(&listed));
    }
    let file = tmp.path().join("app.tar");
    imgfs_fails(store.root(), &["export", "-o", file.to_str().unwrap(), &app]);
    let dir = tmp.path().join("a-dir");
    fs::create_dir(&dir).unwrap();
    let err = imgfs_fails(store.root(), &["export", "-o", dir.to_str().unwrap(), &app]);
    assert!(err.contains("is a directory"), "{err}");
    let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["a-dir"], "export -o left files behind");
}

/// Where SRC's name is a symbolic link in DEST (a rootfs's `var/run -> /run`), `cp` of
/// a directory is refused and writes nothing through it; where it is a file, refused
/// too. `-L` names the copy after the link, as `docker cp` does, in a tar stream too.
#[test]
fn cp_never_writes_through_a_link_in_dest_and_names_a_followed_link_after_it() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let tmp = tempfile::tempdir().unwrap();
    let src = format!("{}:/etc", image("app:1"));
    let (into, outside) = (tmp.path().join("into"), tmp.path().join("outside"));
    fs::create_dir(&into).unwrap();
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, into.join("etc")).unwrap();
    let err = imgfs_fails(store.root(), &["cp", &src, into.to_str().unwrap()]);
    assert!(err.contains("cannot overwrite non-directory"), "{err}");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "cp wrote through the link");
    assert!(fs::symlink_metadata(into.join("etc")).unwrap().file_type().is_symlink());
    let files = tmp.path().join("files");
    fs::create_dir(&files).unwrap();
    fs::write(files.join("etc"), "mine\n").unwrap();
    let err = imgfs_fails(store.root(), &["cp", &src, files.to_str().unwrap()]);
    assert!(err.contains("cannot overwrite non-directory"), "{err}");
    assert_eq!(fs::read(files.join("etc")).unwrap(), b"mine\n");

    let link = format!("{}:/etc/issue.link", image("base:1"));
    imgfs_ok(store.root(), &["cp", "-L", &link, files.to_str().unwrap()]);
    let copied = files.join("issue.link");
    assert!(fs::symlink_metadata(&copied).unwrap().is_file(), "-L copies what the link leads to");
    assert_eq!(fs::read(&copied).unwrap(), reference_file("base:1", "etc/issue"));
    assert!(!files.join("issue").exists());
    let out = imgfs(store.root(), &["cp", "-L", &link, "-"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(tar_names(&out.stdout), ["issue.link"]);
}

/// An OCI layout made here with umoci (`oci:DIR:t`): /tree holds a read-only (0555)
/// directory with a read-only directory in it; /links a device node with a second
/// (hard-linked) name, between two files.
fn umoci_image(dir: &Path) -> String {
    let run = |program: &str, args: &[&std::ffi::OsStr]| {
        let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {}", show(&out));
    };
    let layout = dir.join("layout");
    let image = format!("{}:t", layout.display());
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    run("umoci", &["init".as_ref(), "--layout".as_ref(), layout.as_os_str()]);
    run("umoci", &["new".as_ref(), "--image".as_ref(), image.as_ref()]);
    run("umoci", &["unpack".as_ref(), "--image".as_ref(), image.as_ref(), bundle.as_os_str()]);
    fs::create_dir_all(rootfs.join("tree/ro/sub")).unwrap();
    fs::write(rootfs.join("tree/ro/f"), "in a read-only directory\n").unwrap();
    fs::write(rootfs.join("tree/ro/sub/g"), "deeper\n").unwrap();
    fs::write(rootfs.join("tree/plain"), "plain\n").unwrap();
    for d in ["tree/ro/sub", "tree/ro"] {
        fs::set_permissions(rootfs.join(d), fs::Permissions::from_mode(0o555)).unwrap();
    }
    fs::create_dir(rootfs.join("links")).unwrap();
    fs::write(rootfs.join("links/a"), "before\n").unwrap();
    run("mknod", &[rootfs.join("links/null").as_os_str(), "c".as_ref(), "1".as_ref(), "3".as_ref()]);
    fs::hard_link(rootfs.join("links/null"), rootfs.join("links/null2")).unwrap();
    fs::write(rootfs.join("links/z"), "after\n").unwrap();
    run("umoci", &["repack".as_ref(), "--image".as_ref(), image.as_ref(), bundle.as_os_str()]);
    // umoci keeps its layout to root (index.json is 0600).
    run("chmod", &["-R".as_ref(), "a+rX".as_ref(), layout.as_os_str()]);
    format!("oci:{image}")
}

/// `imgfs` run as the test user.
fn imgfs_as_user(store: &Path, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", TEST_USER, "--", env!("CARGO_BIN_EXE_imgfs"), "--root"])
        .arg(store)
        .args(args)
        .output()
        .expect("runuser")
}

/// `cp` as a user: a merge into an existing directory moves read-only directories in
/// (Linux moves a directory to another parent only while it is writable: they get
/// their modes once moved), and works in a directory whose parent the user cannot
/// write (as `~` in /home); a device node is skipped with a warning, the other names
/// of its hard-link group too.
#[test]
fn cp_as_a_user_merges_read_only_directories_and_skips_linked_device_nodes() {
    let Some(_) = outcome::test_env() else { return };
    let uid = test_user();
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let source = umoci_image(tmp.path());
    let nlink = imgfs_ok(Store::new().root(), &["files", "--format", "{{.Type}} {{.Nlink}}", &source, "/links/null2"]);
    assert_eq!(nlink.trim(), "char 2", "the image has no hard-linked device node");
    let (store, home) = (tmp.path().join("store"), tmp.path().join("home"));
    for d in [&store, &home, &home.join("merge")] {
        fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(uid)).unwrap();
    }
    let mine = home.join("mine");
    fs::write(&mine, "stays\n").unwrap();
    std::os::unix::fs::chown(&mine, Some(uid), Some(uid)).unwrap();
    let ok = |args: &[&str]| {
        let out = imgfs_as_user(&store, args);
        assert!(out.status.success(), "{args:?} as {TEST_USER}: {}", show(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let links = home.join("links");
    let warnings = ok(&["cp", &format!("{source}:/links"), links.to_str().unwrap()]);
    for name in ["null", "null2"] {
        let warned =
            warnings.lines().any(|l| l.contains(&format!("/links/{name}\"")) && l.contains("made only as root"));
        assert!(warned, "no warning for {name}: {warnings}");
        assert!(fs::symlink_metadata(links.join(name)).is_err(), "{name} made");
    }
    assert_eq!(fs::read(links.join("z")).unwrap(), b"after\n");

    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    for dest in [home.join("merge"), home.clone()] {
        ok(&["cp", &format!("{source}:/tree/."), dest.to_str().unwrap()]);
        assert_eq!(fs::read(dest.join("ro/f")).unwrap(), b"in a read-only directory\n");
        assert_eq!(fs::read(dest.join("ro/sub/g")).unwrap(), b"deeper\n");
        assert_eq!(fs::read(dest.join("plain")).unwrap(), b"plain\n");
        assert_eq!((mode(&dest.join("ro")), mode(&dest.join("ro/sub"))), (0o555, 0o555));
        assert_eq!(fs::metadata(dest.join("ro")).unwrap().uid(), uid);
    }
    assert_eq!(fs::read(&mine).unwrap(), b"stays\n");
    for dir in [tmp.path(), &home] {
        let left: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".imgfs-"))
            .collect();
        assert!(left.is_empty(), "temporary files left in {}: {left:?}", dir.display());
    }
}

#[test]
fn files_lists_a_directory_and_a_tree_as_the_reference_has_them() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let reference = unpack_of("edge:1").join("rootfs");
    let out = imgfs_ok(store.root(), &["files", &image("edge:1"), "/hardlinks"]);
    assert_eq!(out, "/hardlinks/a\n/hardlinks/b\n/hardlinks/sub\n");
    let out = imgfs_ok(store.root(), &["files", "-R", &image("edge:1")]);
    let mut want: Vec<String> = Vec::new();
    for e in walk_host(&reference) {
        want.push(format!("/{}", e.display()));
    }
    want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut got: Vec<String> = out.lines().map(String::from).collect();
    got.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(got, want);
    let line = imgfs_ok(store.root(), &["files", "-l", &image("edge:1"), "/modes/setuid-file"]);
    assert!(line.starts_with("-rwsr-xr-x 0/0 "), "{line}");
    let json = imgfs_ok(store.root(), &["files", "--format", "json", &image("edge:1"), "/ids"]);
    let rows: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let file = rows.iter().find(|r| r["Name"] == "file").expect("ids/file");
    assert_eq!(
        (file["UID"].as_u64(), file["GID"].as_u64(), file["Mode"].as_str()),
        (Some(4242), Some(4343), Some("0644"))
    );
}

/// Every path below `root` (not following links), relative to it; names that are not
/// UTF-8 shown lossily.
fn walk_host(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(PathBuf::from(
                String::from_utf8_lossy(&p.strip_prefix(root).unwrap().as_os_str().to_owned().into_vec()).into_owned(),
            ));
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            }
        }
    }
    out
}

/// What `imgfs diff` must say for two trees: per path, A (only in `b`), D (only in
/// `a`) or C (type, mode, owner, size, content, link target or user xattrs differ),
/// directories compared without their mtime.
fn reference_diff(a: &Path, b: &Path) -> Vec<String> {
    fn entries(root: &Path) -> BTreeMap<Vec<u8>, PathBuf> {
        let mut out = BTreeMap::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().as_os_str().to_owned().into_vec();
                if e.file_type().unwrap().is_dir() {
                    todo.push(p.clone());
                }
                out.insert([b"/".as_slice(), &rel].concat(), p);
            }
        }
        out
    }
    let describe = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        let t = m.file_type();
        let content = if t.is_file() { fs::read(p).unwrap() } else { Vec::new() };
        let link = if t.is_symlink() { fs::read_link(p).unwrap().into_os_string().into_vec() } else { Vec::new() };
        let size = if t.is_dir() { 0 } else { m.len() };
        let mut xattrs = listxattr(p);
        xattrs.sort();
        let values: Vec<_> = xattrs.iter().map(|n| (n.clone(), getxattr(p, n))).collect();
        (format!("{:?}", t), m.mode() & 0o7777, m.uid(), m.gid(), size, content, link, m.rdev(), values)
    };
    let (ea, eb) = (entries(a), entries(b));
    let mut out = BTreeMap::new();
    for (p, pa) in &ea {
        match eb.get(p) {
            None => {
                out.insert(p.clone(), 'D');
            }
            Some(pb) if describe(pa) != describe(pb) => {
                out.insert(p.clone(), 'C');
            }
            Some(_) => {}
        }
    }
    for p in eb.keys().filter(|p| !ea.contains_key(*p)) {
        out.insert(p.clone(), 'A');
    }
    out.into_iter().map(|(p, c)| format!("{c} {}", String::from_utf8_lossy(&p))).collect()
}

#[test]
fn diff_of_images_sharing_a_base_equals_the_diff_of_their_unpacks() {
    let Some(_) = outcome::test_env() else { return };
    let want = reference_diff(&unpack_of("app:1").join("rootfs"), &unpack_of("app:2").join("rootfs"));
    assert!(want.len() > 5, "the test needs differences: {want:?}");
    let store = Store::new();
    let got = imgfs_ok(store.root(), &["diff", &image("app:1"), &image("app:2")]);
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
    // The other way round, every A a D and back; and limited to a subtree.
    let back = imgfs_ok(store.root(), &["diff", &image("app:2"), &image("app:1"), "/etc"]);
    let flipped: Vec<String> = want
        .iter()
        .filter(|l| l[2..].starts_with("/etc"))
        .map(|l| match &l[..1] {
            "A" => format!("D{}", &l[1..]),
            "D" => format!("A{}", &l[1..]),
            _ => l.clone(),
        })
        .collect();
    assert_eq!(back.lines().collect::<Vec<_>>(), flipped);
    let json = imgfs_ok(store.root(), &["diff", "--format", "json", &image("app:1"), &image("app:2")]);
    let hostname = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["Path"] == "/etc/hostname")
        .expect("/etc/hostname");
    assert_eq!(
        (hostname["Kind"].as_str(), hostname["Size1"].as_u64(), hostname["Size2"].as_u64()),
        (Some("C"), Some(6), Some(6))
    );
    // The same image twice: nothing.
    assert_eq!(imgfs_ok(store.root(), &["diff", &image("app:1"), &image("app:1")]), "");
    // A PATH below a directory one image whites out, which no layer names: still compared.
    let readme = "/usr/share/doc/README";
    assert!(want.contains(&format!("A {readme}")), "the test needs {readme} only in app:2: {want:?}");
    let below = imgfs_ok(store.root(), &["diff", &image("app:1"), &image("app:2"), readme]);
    assert_eq!(below, format!("A {readme}\n"));
    // A PATH in neither image is an error naming it.
    let err = imgfs_fails(store.root(), &["diff", &image("app:1"), &image("app:2"), "/nowhere"]);
    assert!(err.contains("/nowhere") && err.contains("in neither image"), "{err}");
}

/// With indexes published for both images, a diff from an empty store fetches no
/// layer blob whole (Range GETs only, if any), and says what the diff without them says.
#[test]
fn diff_with_published_indexes_fetches_no_layer_whole() {
    let Some(_) = outcome::test_env() else { return };
    let (repo1, _) = publish_copy("app:1", "diff1");
    let (repo2, _) = publish_copy("app:2", "diff2");
    let proxy = FaultProxy::start(&env().addr);
    let store = Store::new();
    let mark = log_mark();
    let got =
        imgfs_ok(store.root(), &["diff", &format!("{}/{repo1}:1", proxy.addr), &format!("{}/{repo2}:1", proxy.addr)]);
    let want = reference_diff(&unpack_of("app:1").join("rootfs"), &unpack_of("app:2").join("rootfs"));
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
    for (repo, src) in [(&repo1, "app:1"), (&repo2, "app:2")] {
        for l in layer_digests(src) {
            let got = blob_requests(mark, &proxy.addr, repo, &l);
            assert!(got.iter().all(|(s, _)| *s == 206), "{src} layer {l}: a whole-blob GET: {got:?}");
            assert!(!blob_file(store.root(), &l).exists(), "{src} layer {l} is in the store");
        }
    }
}

#[test]
fn history_equals_podman_history() {
    let Some(_) = outcome::test_env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| -> Output {
        Command::new("podman")
            .arg("--root")
            .arg(tmp.path().join("root"))
            .arg("--runroot")
            .arg(tmp.path().join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("podman")
    };
    let store = Store::new();
    // Not edge:1: podman refuses its layer that names a path twice.
    for name in ["app:1", "layered:1", "v2s2:1"] {
        let out = podman(&["pull", "-q", "--tls-verify=false", &image(name)]);
        assert!(out.status.success(), "podman pull {name}: {}", show(&out));
        let out = podman(&["history", "--no-trunc", "--format", "json", &image(name)]);
        assert!(out.status.success(), "podman history {name}: {}", show(&out));
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let want: Vec<String> = rows
            .iter()
            .map(|r| {
                let id = r["id"].as_str().unwrap();
                let id = if id == "<missing>" { id.to_string() } else { format!("sha256:{id}") };
                format!(
                    "{id}\t{}\t{}\t{}",
                    r["CreatedBy"].as_str().unwrap_or(""),
                    r["size"],
                    r["comment"].as_str().unwrap_or("")
                )
            })
            .collect();
        let got = imgfs_ok(
            store.root(),
            &[
                "history",
                "--no-trunc",
                "-H=false",
                "--format",
                "{{.ID}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
                &image(name),
            ],
        );
        assert_eq!(got.lines().collect::<Vec<_>>(), want, "history of {name}");
    }
    let quiet = imgfs_ok(store.root(), &["history", "-q", &image("app:1")]);
    let ids: Vec<&str> = quiet.lines().collect();
    assert_eq!(ids[0], &config_digest("app:1")["sha256:".len()..][..12]);
    assert!(ids.len() > 1 && ids[1..].iter().all(|i| *i == "<missing>"), "{ids:?}");
}

/// dive's figures on app:1: layer 2 replaces /etc/hostname and whites out
/// /etc/debian_version, layer 3 whites out /usr/share/doc; what they hid of the base
/// layer is what the base wasted.
#[test]
fn layers_counts_what_each_layer_adds_changes_removes_and_wastes() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let out = imgfs_ok(store.root(), &["layers", "--format", "json", &image("app:1")]);
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let layers = doc["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    let base = unpack_of("base:1").join("rootfs");
    let size = |rel: &str| fs::metadata(base.join(rel)).unwrap().len();
    let wasted = size("etc/hostname") + size("etc/debian_version") + size("usr/share/doc/README");
    assert_eq!(layers[0]["WastedBytes"].as_u64(), Some(wasted), "{doc}");
    assert_eq!(layers[0]["Changed"].as_u64(), Some(0));
    assert!(layers[1]["Removed"].as_u64() >= Some(1) && layers[1]["Changed"].as_u64() >= Some(1), "{doc}");
    assert_eq!(layers[2]["Removed"].as_u64(), Some(2), "/usr/share/doc and its README: {doc}");
    let e = doc["Efficiency"].as_f64().unwrap();
    assert!(e > 0.0 && e < 1.0, "{doc}");
    // The table ends with dive's CI lines.
    let table = imgfs_ok(store.root(), &["layers", &image("app:1")]);
    assert!(table.starts_with("LAYER"), "{table}");
    assert!(
        table.contains("efficiency: ") && table.contains("wastedBytes: ") && table.contains("userWastedPercent: "),
        "{table}"
    );
}

/// Every command as a user with no FUSE at all: a mount namespace of its own where
/// /dev/fuse is /dev/null, as in a container without the device.
#[test]
fn every_command_runs_without_fuse_as_a_user() {
    let Some(_) = outcome::test_env() else { return };
    let uid = test_user();
    let tmp = tempfile::tempdir().unwrap();
    let (store, out) = (tmp.path().join("store"), tmp.path().join("out"));
    for d in [tmp.path(), &store, &out] {
        fs::create_dir_all(d).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(uid)).unwrap();
    }
    let bin = env!("CARGO_BIN_EXE_imgfs");
    let (a1, a2) = (image("app:1"), image("app:2"));
    let dest = out.join("etc");
    let commands: Vec<Vec<String>> = vec![
        vec!["cat".into(), a1.clone(), "/etc/hostname".into()],
        vec!["cp".into(), format!("{a1}:/etc"), dest.display().to_string()],
        vec!["files".into(), "-R".into(), a1.clone(), "/app".into()],
        vec!["export".into(), "-o".into(), out.join("app.tar").display().to_string(), a1.clone()],
        vec!["diff".into(), a1.clone(), a2.clone()],
        vec!["history".into(), a1.clone()],
        vec!["layers".into(), a1.clone()],
    ];
    for args in commands {
        let script = "mount --bind /dev/null /dev/fuse && exec runuser -u \"$0\" -- \"$@\"";
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script, TEST_USER, bin, "--root"])
            .arg(&store)
            .args(&args)
            .output()
            .expect("unshare");
        assert!(out.status.success(), "{args:?} without FUSE as {TEST_USER}: {}", show(&out));
        if args[0] == "cat" {
            assert_eq!(out.stdout, b"app-1\n");
        }
    }
    assert_eq!(fs::read(dest.join("hostname")).unwrap(), b"app-1\n");
    assert_eq!(fs::metadata(&dest).unwrap().uid(), uid, "the copy belongs to the user");
}
