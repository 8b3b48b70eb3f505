//! Bad mount requests: a missing or non-directory mountpoint, an unknown tag,
//! repository or registry, a directory already mounted. Each fails with one line naming
//! the culprit and leaves nothing mounted, listed or recorded. A mountpoint that holds
//! files is no error, but a warning.

use super::*;

/// A missing mountpoint, a file as mountpoint, an unknown tag or repository: exit
/// non-zero with one line naming the culprit, and nothing left mounted or listed.
#[test]
fn mount_rejects_bad_mountpoints_and_unknown_images() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let file = tmp.path().join("file");
    fs::write(&file, "not a dir").unwrap();
    let image = format!("{}/lazy:1", env().addr);

    let err = imgfs_fails(store.root(), &["mount", &image, missing.to_str().unwrap()]);
    assert!(err.contains("missing"), "{err}");
    let err = imgfs_fails(store.root(), &["mount", &image, file.to_str().unwrap()]);
    assert!(err.contains("file") && err.contains("not a directory"), "{err}");

    let m = Mount::empty();
    let err = imgfs_fails(store.root(), &["mount", &format!("{}/lazy:nosuchtag", env().addr), m.arg()]);
    assert!(err.contains("nosuchtag"), "{err}");
    let err = imgfs_fails(store.root(), &["mount", &format!("{}/nosuchrepo:1", env().addr), m.arg()]);
    assert!(err.contains("nosuchrepo"), "{err}");
    let err = imgfs_fails(store.root(), &["mount", "127.0.0.1:1/lazy:1", m.arg()]);
    assert!(err.contains("127.0.0.1:1"), "{err}");

    assert!(mountinfo(&m.dir).is_none(), "a failed mount left {} mounted", m.arg());
    assert!(server_pids(&m.dir).is_empty());
    let listing = mount_listing(store.root());
    assert!(!listing.contains(m.arg()), "a failed mount is listed:\n{listing}");
    assert!(fs::read_dir(store.root().join("mounts")).map_or(true, |mut d| d.next().is_none()), "mount records left");
}

/// Mounting over a live imgfs mount is refused, names the directory, and leaves the
/// first mount serving.
#[test]
fn mount_refuses_an_existing_mount() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/lazy:1", env().addr);
    let m = mount(store.root(), &image, &[]);
    let pid = m.server();
    let err = imgfs_fails(store.root(), &["mount", &image, m.arg()]);
    assert!(err.contains(m.arg()), "{err}");
    assert_eq!(server_pids(&m.dir), [pid], "a second server was started");
    assert_eq!(fs::read(m.path("top/c.txt")).unwrap(), reference_file("lazy:1", "top/c.txt"));
    // Only one mount stacked on the directory.
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(info.lines().filter(|l| l.split(' ').nth(4) == Some(m.arg())).count(), 1);
}

/// Mounting over a directory that holds files works (as mount(8) does) and says, in
/// one line on stderr, that they are hidden; they are back after the unmount. An
/// empty directory gets no such line.
#[test]
fn mount_over_a_non_empty_directory_warns_that_its_files_are_hidden() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/lazy:1", env().addr);
    let m = Mount::empty();
    fs::write(m.path("mine.txt"), "the user's file\n").unwrap();
    let out = imgfs(store.root(), &["mount", &image, m.arg()]);
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("imgfs: warning: ") && err.contains(m.arg()) && err.contains("hidden"), "{err}");
    assert!(!m.path("mine.txt").exists(), "the image is not mounted over the file");
    assert_eq!(fs::read(m.path("top/c.txt")).unwrap(), reference_file("lazy:1", "top/c.txt"));
    imgfs_ok(store.root(), &["umount", m.arg()]);
    assert_eq!(fs::read_to_string(m.path("mine.txt")).unwrap(), "the user's file\n");

    let empty = Mount::empty();
    let out = imgfs(store.root(), &["mount", &image, empty.arg()]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", show(&out));
}
