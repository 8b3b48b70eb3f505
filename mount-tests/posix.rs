//! A mount as tools see it: read-only (EROFS for anything that would write), POSIX
//! errnos, symlinks, the link and block counts and statfs that find, du and df rely on,
//! and its line in the mount table (source `imgfs:IMAGE`, ro, nosuid, nodev).

use super::*;

/// Anything that would write fails with EROFS; a missing name is ENOENT; symlinks read
/// back their targets; directory link counts, block counts and statfs are what tools
/// (find, du, df) expect.
#[test]
fn mount_is_read_only_with_posix_errnos_and_attrs() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let app = mount(store.root(), &format!("{}/app:1", env().addr), &[]);
    let edge = mount(store.root(), &format!("{}/edge:1", env().addr), &[]);
    let p = |rel: &str| app.path(rel);

    let erofs = [
        ("open for write", errno_of("w", fs::OpenOptions::new().write(true).open(p("etc/hostname")))),
        ("truncate", errno_of("t", fs::OpenOptions::new().write(true).truncate(true).open(p("etc/hostname")))),
        ("create", errno_of("c", fs::File::create(p("etc/new-file")))),
        ("mkdir", errno_of("m", fs::create_dir(p("new-dir")))),
        ("unlink", errno_of("u", fs::remove_file(p("etc/hostname")))),
        ("rmdir", errno_of("r", fs::remove_dir(p("srv/www")))),
        ("rename", errno_of("mv", fs::rename(p("etc/hostname"), p("etc/hostname2")))),
        ("symlink", errno_of("ln", std::os::unix::fs::symlink("x", p("etc/new-link")))),
        ("chmod", errno_of("chmod", fs::set_permissions(p("etc/hostname"), fs::Permissions::from_mode(0o600)))),
        ("setxattr", setxattr(&p("etc/hostname"), "user.x", b"y")),
    ];
    for (what, e) in erofs {
        assert_eq!(e, libc::EROFS, "{what}: errno {e}, want EROFS");
    }

    assert_eq!(errno_of("missing", fs::metadata(p("no/such/path"))), libc::ENOENT);
    assert_eq!(errno_of("missing", fs::read(p("etc/no-such-file"))), libc::ENOENT);
    // Whited out in app:1's upper layers: gone, not merely hidden from readdir.
    assert_eq!(errno_of("whiteout", fs::metadata(p("etc/debian_version"))), libc::ENOENT);
    assert_eq!(errno_of("whiteout", fs::metadata(p("usr/share/doc"))), libc::ENOENT);
    assert_eq!(errno_of("readdir of a file", fs::read_dir(p("etc/hostname"))), libc::ENOTDIR);

    assert_eq!(fs::read_link(p("etc/issue.link")).unwrap(), Path::new("issue"));
    assert_eq!(fs::read_link(p("bin")).unwrap(), Path::new("/usr/bin"));
    assert_eq!(fs::symlink_metadata(p("bin")).unwrap().len(), "/usr/bin".len() as u64);
    assert_eq!(errno_of("readlink of a file", fs::read_link(p("etc/hostname"))), libc::EINVAL);
    assert_eq!(fs::read(p("etc/issue.link")).unwrap(), fs::read(p("etc/issue")).unwrap());

    for m in [&app, &edge] {
        for dir in all_dirs(&m.dir) {
            let subdirs =
                fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir()).count();
            let nlink = fs::metadata(&dir).unwrap().nlink();
            assert_eq!(nlink, 2 + subdirs as u64, "{}: st_nlink {nlink}, {subdirs} subdirectories", dir.display());
            for e in fs::read_dir(&dir).unwrap() {
                let md = fs::symlink_metadata(e.unwrap().path()).unwrap();
                if md.is_file() {
                    assert!(
                        md.blocks() * 512 >= md.len(),
                        "{}: st_blocks {} for {} bytes",
                        dir.display(),
                        md.blocks(),
                        md.len()
                    );
                }
            }
        }
    }
    let big = fs::symlink_metadata(p("usr/bin/true")).unwrap();
    assert!(big.len() > 4096 && big.blocks() > 0);

    let sv = rustix::fs::statvfs(app.arg()).unwrap_or_else(|e| panic!("statvfs: {e}"));
    assert!(sv.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY), "statvfs: not ST_RDONLY");
    assert!(sv.f_bsize > 0 && sv.f_namemax > 0, "statvfs: bsize {} namemax {}", sv.f_bsize, sv.f_namemax);
    let df = Command::new("df").arg(&app.dir).output().expect("df");
    assert!(df.status.success(), "df: {}", show(&df));
    let du = Command::new("du").arg("-s").arg(&app.dir).output().expect("du");
    assert!(du.status.success(), "du: {}", show(&du));
}

/// setxattr(2)'s errno.
fn setxattr(p: &Path, name: &str, value: &[u8]) -> i32 {
    let r = rustix::fs::setxattr(p, name, value, rustix::fs::XattrFlags::empty());
    r.expect_err("setxattr on the mount succeeded").raw_os_error()
}

/// The mount table shows an imgfs mount as a FUSE mount, ro,nosuid,nodev, with
/// `imgfs:IMAGE` in the source column.
#[test]
fn mount_table_shows_imgfs_source_ro_nosuid_nodev() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/base:1", env().addr);
    let m = mount(store.root(), &image, &[]);
    let info = mountinfo(&m.dir).expect("in mountinfo");
    let opts: Vec<&str> = info.options.split(',').collect();
    for o in ["ro", "nosuid", "nodev"] {
        assert!(opts.contains(&o), "mount options {:?} lack {o}", info.options);
    }
    assert!(info.source.starts_with("imgfs:"), "source {:?} does not say imgfs", info.source);
    assert!(info.source.contains(&image), "source {:?} does not name {image}", info.source);
    // fuser's own mount(2) as root registers the type as plain "fuse"; through
    // fusermount3 (non-root) it is "fuse.imgfs". The source column names imgfs either way.
    assert!(info.fstype == "fuse" || info.fstype == "fuse.imgfs", "{info:?}");
    let out = Command::new("mount").output().expect("mount");
    let line = String::from_utf8_lossy(&out.stdout).lines().find(|l| l.contains(m.arg())).map(String::from);
    let line = line.unwrap_or_else(|| panic!("`mount` does not show {}", m.arg()));
    assert!(line.starts_with("imgfs:") && line.contains(" type fuse"), "`mount` shows: {line}");
}
