//! The mount server's life: the listing of live mounts and unmounting by `imgfs umount`,
//! `fusermount3 -u` and `umount`, signals to a foreground server, a server killed with
//! SIGKILL (its reader, its record, its dead mountpoint, a remount over it), and many
//! readers at once.
//!
//! A signal test starts `imgfs mount -f` itself (no background parent in between) of an
//! image that is not pulled, so the server resolves it over HTTP first: the blocking
//! client starts a runtime thread then, and a signal the kernel hands to that thread
//! must still end in an unmount, not kill the server with its mount left behind.

use super::layered::LAYERED;
use super::*;
use std::os::unix::fs::FileExt;
use std::process::{Child, Stdio};

/// A `imgfs mount -f` started by the test, its stderr kept in a file for the asserts.
struct Foreground {
    child: Child,
    log: PathBuf,
}

impl Foreground {
    fn start(root: &Path, image: &str, m: &Mount) -> Foreground {
        Foreground::start_ignoring(root, image, m, &[])
    }

    /// Started with the signals `ignored` set to SIG_IGN, as `nohup` does for SIGHUP.
    fn start_ignoring(root: &Path, image: &str, m: &Mount, ignored: &[i32]) -> Foreground {
        use std::os::unix::process::CommandExt;
        let log = root.join("foreground.log");
        let err = fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgfs"));
        cmd.arg("--root").arg(root).args(["mount", "-f", image, m.arg()]);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let ignored = ignored.to_vec();
        // SAFETY: pre_exec's hook runs in the forked child, where only async-signal-safe
        // calls are allowed: signal(2) is one, and the hook allocates nothing (`ignored`
        // was copied before the fork). SIG_IGN installs no handler that could run.
        unsafe {
            cmd.pre_exec(move || {
                for &s in &ignored {
                    libc::signal(s, libc::SIG_IGN);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("cannot start imgfs mount -f");
        Foreground { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: i32) {
        // Our own child, not reaped yet, so the pid is still its.
        let _ = kill(self.pid(), sig);
    }

    /// Wait for the server to exit; returns how it ended.
    fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "server {} did not exit: {}", self.pid(), self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Mount records in the store (the files themselves: listing them through imgfs would
/// clear a dead one on the way).
fn records(root: &Path) -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(root.join("mounts")) else { return Vec::new() };
    dir.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect()
}

/// Is `dir` served (mounted and answering)?
fn answers(dir: &Path) -> bool {
    mountinfo(dir).is_some() && fs::metadata(dir).is_ok()
}

/// SIGINT, SIGTERM and SIGHUP to `imgfs mount -f`, at several moments of its life
/// (while it resolves the image, once it serves, while a reader has a file open and
/// reads, twice in a row, while a read waits for a layer download the registry holds
/// back): every time the server exits, the mountpoint is unmounted (a plain empty
/// directory again) and its record is gone, and a waiting reader gets an error.
#[test]
fn signals_to_a_foreground_server_always_unmount() {
    let Some(_) = outcome::test_env() else { return };
    #[derive(Debug, Clone, Copy)]
    enum Moment {
        Starting(u64),
        Serving,
        Reading,
        Twice,
        Fetching,
        /// The image is held (a `starting` record written) and the server waits on its
        /// published-index lookup, before anything is mounted.
        Holding,
    }
    let image = format!("{}/lazy:1", env().addr);
    let mut rounds = Vec::new();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        for moment in [Moment::Serving, Moment::Reading, Moment::Twice, Moment::Serving, Moment::Starting(0)] {
            rounds.push((sig, moment));
        }
    }
    rounds.extend([
        (libc::SIGHUP, Moment::Serving),
        (libc::SIGINT, Moment::Starting(30)),
        (libc::SIGINT, Moment::Fetching),
        (libc::SIGTERM, Moment::Fetching),
        (libc::SIGTERM, Moment::Holding),
        (libc::SIGHUP, Moment::Holding),
    ]);
    let bottom_layer = layer_digests("lazy:1")[0].clone();
    for (sig, moment) in rounds {
        let what = format!("signal {sig} at {moment:?}");
        let store = Store::new();
        let m = Mount::empty();
        // Lives to the end of the round (its Drop opens a held gate).
        let proxy = FaultProxy::start(&env().addr);
        let image = match moment {
            Moment::Fetching | Moment::Holding => format!("{}/lazy:1", proxy.addr),
            _ => image.clone(),
        };
        if let Moment::Holding = moment {
            proxy.add(Rule::new("/referrers/", Fault::Hold));
        }
        let mut server = Foreground::start(store.root(), &image, &m);
        let stop = Arc::new(AtomicBool::new(false));
        let mut reader = None;
        match moment {
            Moment::Starting(ms) => std::thread::sleep(Duration::from_millis(ms)),
            Moment::Holding => {
                let asked = wait_until(Duration::from_secs(20), || proxy.held() > 0);
                assert!(asked, "{what}: the server never looked for a published index: {}", server.stderr());
                assert_eq!(records(store.root()).len(), 1, "{what}: no hold while resolving: {}", server.stderr());
            }
            _ => {
                let up = wait_until(Duration::from_secs(20), || answers(&m.dir));
                assert!(up, "{what}: the mount never came up: {}", server.stderr());
            }
        }
        if let Moment::Reading = moment {
            let (file, stop) = (m.path("top/c.txt"), Arc::clone(&stop));
            let want = reference_file("lazy:1", "top/c.txt");
            let f = fs::File::open(&file).unwrap();
            reader = Some(std::thread::spawn(move || {
                let mut buf = vec![0u8; want.len()];
                while !stop.load(Ordering::SeqCst) {
                    match f.read_at(&mut buf, 0) {
                        Ok(n) => assert_eq!(&buf[..n], &want[..n], "wrong bytes from {}", file.display()),
                        Err(_) => break,
                    }
                }
            }));
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut waiting = None;
        if let Moment::Fetching = moment {
            proxy.add(Rule::new(&bottom_layer, Fault::Hold));
            let file = m.path("bottom/a.txt");
            waiting = Some(std::thread::spawn(move || fs::read(file)));
            let asked = wait_until(Duration::from_secs(20), || proxy.held() > 0);
            assert!(asked, "{what}: reading bottom/a.txt never asked for its layer");
        }
        server.signal(sig);
        if let Moment::Twice = moment {
            server.signal(sig);
        }
        let status = server.wait();
        stop.store(true, Ordering::SeqCst);
        if let Some(r) = reader {
            r.join().expect("reader");
        }
        if let Some(w) = waiting {
            let read = w.join().expect("waiting reader");
            assert!(read.is_err(), "{what}: the read waiting for a held layer succeeded: {read:?}");
        }
        let log = server.stderr();
        assert!(mountinfo(&m.dir).is_none(), "{what}: server exited ({status}) leaving {} mounted: {log}", m.arg());
        assert_eq!(records(store.root()), Vec::<PathBuf>::new(), "{what}: record left ({status}): {log}");
        assert!(fs::read_dir(&m.dir).unwrap().next().is_none(), "{what}: {} is not a plain empty dir", m.arg());
        assert!(!log.contains("panicked"), "{what}: {log}");
    }
}

/// A signal the server was started with ignored stays ignored (`nohup` ignores SIGHUP):
/// SIGHUP then SIGTERM, and it is SIGTERM that unmounts. Pending signals are taken
/// lowest number first, so a SIGHUP that were handled would be the one in the log.
#[test]
fn a_signal_ignored_at_start_stays_ignored() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let m = Mount::empty();
    let image = format!("{}/lazy:1", env().addr);
    let mut server = Foreground::start_ignoring(store.root(), &image, &m, &[libc::SIGHUP]);
    assert!(wait_until(Duration::from_secs(20), || answers(&m.dir)), "no mount: {}", server.stderr());
    server.signal(libc::SIGHUP);
    server.signal(libc::SIGTERM);
    let status = server.wait();
    let log = server.stderr();
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains(&format!("signal {}, unmounting", libc::SIGTERM)), "{log}");
    assert!(!log.contains(&format!("signal {},", libc::SIGHUP)), "an ignored SIGHUP was handled: {log}");
    assert!(mountinfo(&m.dir).is_none() && records(store.root()).is_empty(), "{log}");
}

/// A small xorshift generator: the tests need varied offsets, not good randomness, and
/// print the seed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    /// A seed that differs from run to run (never 0, which xorshift can't leave).
    fn seed() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform enough in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Drop the page cache of `f` so that the next read of it reaches the server.
fn drop_cache(f: &fs::File) {
    // DONTNEED only evicts clean cached pages.
    let _ = rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed);
}

/// Read one span of random offset and length (up to `max_len`) of `f`, whose contents
/// should be `want`, and compare; the error says where it went wrong.
fn check_read(f: &fs::File, want: &[u8], rng: &mut Rng, max_len: u64) -> Result<(), String> {
    let size = want.len() as u64;
    let off = rng.below(size);
    let len = 1 + rng.below(max_len);
    let expect = &want[off as usize..(off + len).min(size) as usize];
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    // A read may come back short only at the end of the file; FUSE hands a request of
    // up to max_read at a time, so loop like any reader would.
    while got < expect.len() {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => return Err(format!("read at {} of {len}: end of file after {got} bytes", off)),
            Ok(n) => got += n,
            Err(e) => return Err(format!("read at {off} of {len}: {e}")),
        }
    }
    if &buf[..expect.len()] != expect {
        let first = buf.iter().zip(expect).position(|(a, b)| a != b).unwrap();
        return Err(format!("read at {off} of {len}: wrong bytes from offset {}", off + first as u64));
    }
    Ok(())
}

/// 16 readers at once, each reading spans of random offset and length across a mounted
/// image (two 24 MiB / 1 MiB files in one gzip layer, and the files of a four-layer
/// image), with a small decoded-span cache so spans are evicted and decoded again while
/// others read, and the page cache dropped now and then so reads reach the server:
/// every byte matches the reference unpack.
#[test]
fn sixteen_random_readers_read_exact_bytes() {
    let Some(_) = outcome::test_env() else { return };
    const READERS: usize = 16;
    const READS: usize = 60;
    let store = Store::new();
    let mounts = [
        (mount(store.root(), &format!("{}/big:1", env().addr), &["--read-cache", "2"]), "big:1"),
        (mount(store.root(), &format!("{}/{LAYERED}", env().addr), &["--read-cache", "2"]), LAYERED),
    ];
    let mut files: Vec<(PathBuf, Arc<Vec<u8>>)> = Vec::new();
    for (m, image) in &mounts {
        let rootfs = unpack_of(image).join("rootfs");
        for rel in regular_files(&rootfs, &rootfs) {
            let want = fs::read(rootfs.join(&rel)).unwrap();
            if !want.is_empty() {
                files.push((m.path(&rel), Arc::new(want)));
            }
        }
    }
    let big = files.iter().position(|(p, _)| p.ends_with("data/big.bin")).expect("big.bin");
    let seed = Rng::seed();
    let files = Arc::new(files);
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let files = Arc::clone(&files);
            std::thread::spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(r as u64 + 1) | 1);
                let mut errors = Vec::new();
                for i in 0..READS {
                    // Half the reads go to the multi-MB file, the rest to any file.
                    let which = if i % 2 == 0 { big } else { rng.below(files.len() as u64) as usize };
                    let (path, want) = &files[which];
                    let f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    if let Err(e) = check_read(&f, want, &mut rng, 256 << 10) {
                        errors.push(format!("reader {r}: {}: {e}", path.display()));
                    }
                    if rng.below(2) == 0 {
                        drop_cache(&f);
                    }
                }
                errors
            })
        })
        .collect();
    let errors: Vec<String> = readers.into_iter().flat_map(|t| t.join().expect("reader panicked")).collect();
    assert!(errors.is_empty(), "seed {seed}: {} bad reads:\n{}", errors.len(), errors.join("\n"));
}

/// Regular files under `dir`, relative to `base`.
fn regular_files(base: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            out.extend(regular_files(base, &p));
        } else if md.is_file() {
            out.push(p.strip_prefix(base).unwrap().to_str().unwrap().to_string());
        }
    }
    out
}

/// A server killed with SIGKILL while a reader reads a multi-MB file of a gzip layer:
/// the reader gets an error, never wrong bytes; the next imgfs command (`ls`, which has
/// nothing to do with mounts) clears the dead record and detaches the mountpoint; and a
/// remount at the same directory serves the file again.
#[test]
fn killed_server_fails_its_reader_and_the_next_command_clears_it() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/big:1", env().addr);
    let m = mount(store.root(), &image, &[]);
    let pid = m.server();
    let record = store.root().join(format!("mounts/{pid}.json"));
    assert!(record.exists());
    let want = Arc::new(reference_file("big:1", "data/big.bin"));
    let (ready_tx, ready) = mpsc::channel();
    let (path, want2) = (m.path("data/big.bin"), Arc::clone(&want));
    let seed = Rng::seed();
    let reader = std::thread::spawn(move || {
        let mut rng = Rng(seed);
        let f = fs::File::open(&path).unwrap();
        for i in 0..100_000 {
            if i == 20 {
                ready_tx.send(()).unwrap();
            }
            if let Err(e) = check_read(&f, &want2, &mut rng, 256 << 10) {
                return Some(e);
            }
            drop_cache(&f);
        }
        None
    });
    ready.recv_timeout(Duration::from_secs(60)).expect("the reader never got going");
    kill(pid, libc::SIGKILL).unwrap();
    let failure = reader.join().expect("reader panicked");
    let failure = failure.expect("the reader read on after its server was killed");
    // ENOTCONN for a request made after the connection died, ECONNABORTED for one that
    // was in flight then.
    let errnos = [libc::ENOTCONN, libc::ECONNABORTED].map(|e| format!("(os error {e})"));
    assert!(
        errnos.iter().any(|e| failure.ends_with(e.as_str())),
        "seed {seed}: want ENOTCONN or ECONNABORTED, not wrong bytes or a short read: {failure}"
    );
    assert!(wait_until(Duration::from_secs(10), || pid_gone(pid)));

    imgfs_ok(store.root(), &["ls"]);
    assert!(!record.exists(), "the dead server's record {} is still there", record.display());
    assert!(mountinfo(&m.dir).is_none(), "the dead mount at {} is still there", m.arg());
    assert!(fs::read_dir(&m.dir).unwrap().next().is_none(), "{} is not a plain empty dir", m.arg());

    imgfs_ok(store.root(), &["mount", &image, m.arg()]);
    assert!(fs::read(m.path("data/big.bin")).unwrap() == *want, "data/big.bin differs after the remount");
}

/// Mounting at the dead mountpoint of a killed server (one this store has no record
/// of, so nothing cleared it before) detaches it first and mounts; only one mount is
/// left on the directory.
#[test]
fn mount_over_a_dead_mountpoint_detaches_it_first() {
    let Some(_) = outcome::test_env() else { return };
    let image = format!("{}/lazy:1", env().addr);
    let first = Store::new();
    let m = mount(first.root(), &image, &[]);
    let pid = m.server();
    kill(pid, libc::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(10), || pid_gone(pid)));
    assert_eq!(errno_of("stat of the dead mount", fs::metadata(&m.dir)), libc::ENOTCONN);

    let other = Store::new();
    imgfs_ok(other.root(), &["mount", &image, m.arg()]);
    assert_eq!(fs::read(m.path("top/c.txt")).unwrap(), reference_file("lazy:1", "top/c.txt"));
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(info.lines().filter(|l| l.split(' ').nth(4) == Some(m.arg())).count(), 1, "stacked mounts");
}

/// `imgfs mount` lists live mounts (reference, mountpoint, pid); `imgfs umount`,
/// `fusermount3 -u` and `umount` each unmount, and the server then exits and its
/// listing line goes.
#[test]
fn unmount_by_imgfs_fusermount3_and_umount() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/lazy:1", env().addr);
    let mounts: Vec<Mount> = (0..3).map(|_| mount(store.root(), &image, &[])).collect();
    let pids: Vec<u32> = mounts.iter().map(|m| m.server()).collect();

    let listing = mount_listing(store.root());
    for (m, pid) in mounts.iter().zip(&pids) {
        assert!(
            listing.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&image.as_str())
                    && f.contains(&m.arg())
                    && f.last() == Some(&pid.to_string().as_str())
            }),
            "imgfs mount does not list {image} at {} (pid {pid}):\n{listing}",
            m.arg()
        );
    }

    let ways: [(&str, Vec<String>); 3] = [
        (env!("CARGO_BIN_EXE_imgfs"), vec!["--root".into(), store.root().display().to_string(), "umount".into()]),
        ("fusermount3", vec!["-u".into()]),
        ("umount", vec![]),
    ];
    for ((m, pid), (cmd, args)) in mounts.iter().zip(&pids).zip(ways) {
        let out = Command::new(cmd).args(&args).arg(&m.dir).output().expect(cmd);
        assert!(out.status.success(), "{cmd} {args:?} {}: {}", m.arg(), show(&out));
        assert!(mountinfo(&m.dir).is_none(), "{cmd}: {} is still mounted", m.arg());
        assert!(wait_until(Duration::from_secs(10), || pid_gone(*pid)), "{cmd}: server {pid} did not exit");
        let listing = mount_listing(store.root());
        assert!(!listing.contains(m.arg()), "{cmd}: {} still listed:\n{listing}", m.arg());
        assert!(fs::read_dir(&m.dir).unwrap().next().is_none(), "{cmd}: {} is not an empty dir", m.arg());
    }
}

/// A server killed with SIGKILL cannot clean up: the next imgfs command recognises its
/// record as dead, drops it and detaches the dead mountpoint, which is then a plain
/// directory again; `imgfs umount` of such a mountpoint does the same and succeeds.
#[test]
fn sigkilled_server_is_cleared_and_its_mountpoint_detached() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/lazy:1", env().addr);
    let (a, b) = (mount(store.root(), &image, &[]), mount(store.root(), &image, &[]));
    let mut records = Vec::new();
    for m in [&a, &b] {
        let pid = m.server();
        let record = store.root().join(format!("mounts/{pid}.json"));
        assert!(record.exists(), "no mount record {}", record.display());
        kill(pid, libc::SIGKILL).unwrap();
        // Wait for it to be gone, reaped included (a zombie is a separate matter).
        assert!(wait_until(Duration::from_secs(10), || !Path::new(&format!("/proc/{pid}")).exists()));
        assert_eq!(errno_of("stat of a dead mount", fs::metadata(m.path("top"))), libc::ENOTCONN);
        records.push(record);
    }

    // umount first: it detaches b and clears a's mountpoint and record on the way.
    imgfs_ok(store.root(), &["umount", b.arg()]);
    let listing = mount_listing(store.root());
    for (m, record) in [&a, &b].into_iter().zip(&records) {
        assert!(!listing.contains(m.arg()), "a dead server is still listed:\n{listing}");
        assert!(!record.exists(), "the dead server's record {} was not removed", record.display());
        assert!(mountinfo(&m.dir).is_none(), "{} is still mounted", m.arg());
        assert!(fs::read_dir(&m.dir).unwrap().next().is_none(), "{} is not a plain empty dir", m.arg());
    }
}
