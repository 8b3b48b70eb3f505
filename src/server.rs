//! A mount's life, from the image it serves to the teardown: resolving and holding
//! the image (a `starting` mount record, so that `rm` and `prune` leave it alone
//! until the server records itself), starting the server as a detached background
//! process and waiting for its mountpoint to answer, serving the union over FUSE with
//! its mount record, the one thread that handles the server's signals, and detaching
//! the mount and removing the record when it ends (or when a killed server left a
//! dead mountpoint behind). `cli::mount` parses the arguments and prints.
//!
//! A server's mount is its device, not its path: a mount detached lazily (`umount
//! --lazy`) is served until the last file open in it closes, and meanwhile its
//! directory may be mounted again. So a server only ever unmounts the mount of its own
//! device, and `umount DIR` waits for the server of the mount it took off DIR.

use crate::digest::Digest;
use crate::fs::Fs;
use crate::fuse::{self, MountSettings};
use crate::image::{ImageConfig, Platform};
use crate::layer::ingest::LayerProgress;
use crate::layer_source::IndexLookup;
use crate::opened_image::{self, open_layers, Reading};
use crate::registry::LazyClient;
use crate::store::db::ImageRecord;
use crate::store::mounts::{
    detach, holders, is_fuse_mountpoint, mount_at, mount_table, mountpoint_path, process_is_stopped,
    process_start_ticks, statfs_of, unmount_device, MountRecord, Statfs, Unmounted,
};
use crate::store::Store;
use crate::tree::{DirAttrs, Tree};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Why a mount could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mountpoint {} is a dead mount that is not imgfs's; unmount it first", .0.display())]
    ForeignDeadMount(PathBuf),
    #[error("mountpoint {}", dir.display())]
    Mountpoint {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mountpoint {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{} is already an imgfs mount (imgfs umount it first)", .0.display())]
    AlreadyImgfs(PathBuf),
    #[error("{} is already a FUSE mountpoint ({from}); unmount it first", dir.display())]
    AlreadyFuse { dir: PathBuf, from: String },
    #[error("cannot create log {}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the mount server")]
    Spawn(#[source] std::io::Error),
    /// The background server ended before its mount came up; `last` is the last line
    /// it logged.
    #[error("mount server exited ({status}): {last} (log: {})", log.display())]
    Exited { status: ExitStatus, last: String, log: PathBuf },
    #[error("mount of {} did not come up within {timeout:?} (log: {})", dir.display(), log.display())]
    Timeout { dir: PathBuf, timeout: Duration, log: PathBuf },
    #[error("image {0} was removed before it could be mounted")]
    ImageRemoved(Digest),
    #[error("cannot mount at {}", dir.display())]
    Mount {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serving {} failed", dir.display())]
    Serve {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not mounted", .0.display())]
    NotMounted(PathBuf),
    /// What was mounted there was detached, and its server still serves the files
    /// open in it.
    #[error("{} is not mounted (its detached mount is served by pid {pid} until the last file open in it is closed)", dir.display())]
    OnlyDetached { dir: PathBuf, pid: u32 },
    /// A plain unmount refused, as umount(8)'s: something has the mount open.
    #[error("{} is busy{in_use_by}; close what uses it, or detach it now with imgfs umount --lazy", dir.display())]
    Busy { dir: PathBuf, in_use_by: String },
    /// `umount` touches imgfs mounts only: as root an unmount would succeed on anything.
    #[error("{} is not an imgfs mount (it is {fstype} from {from}); unmount it with umount or fusermount3 -u", dir.display())]
    NotImgfs { dir: PathBuf, fstype: String, from: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// Boxed: inline it would make every `Result` here large.
    #[error(transparent)]
    Open(Box<crate::opened_image::Error>),
}

impl From<crate::opened_image::Error> for Error {
    fn from(e: crate::opened_image::Error) -> Error {
        Error::Open(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a server is asked to do besides serving the image.
pub struct Settings {
    /// Let other users see the mount.
    pub allow_other: bool,
    /// Memory for decoded data of compressed layers (MiB).
    pub read_cache: u64,
    /// Bound of the disk cache of spans fetched by Range (bytes).
    pub cache_size: u64,
    /// Don't look for a published index.
    pub no_index: bool,
}

/// How long `imgfs mount` waits for its background server to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server that did not start in time has to end after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Makes the background server's command line from the image ID and the mountpoint.
pub type ServerCommand = dyn FnOnce(&Digest, &Path) -> std::io::Result<Command>;

/// How `mount` serves once the image is held.
pub enum Serving {
    /// In this process, until unmounted (`-f`, and what a background server runs).
    Foreground(Settings),
    /// In a background server started from this command line, given the image ID and
    /// the checked mountpoint; `mount` returns once the mountpoint answers.
    Background(Box<ServerCommand>),
}

/// `imgfs mount REF DIR`, from the mountpoint check to the end of the serving: the
/// image is resolved and held (or, for a background server, found by the ID its
/// parent resolved and holds), then served here or by a background server, and the
/// hold is let go once the server has recorded itself.
pub fn mount(
    store: &Store,
    client: Arc<LazyClient>,
    reference: &str,
    dir: &Path,
    platform: Option<&Platform>,
    resolved_id: Option<&str>,
    serving: Serving,
) -> Result<()> {
    let dir = prepare_mountpoint(dir)?;
    let (record, config) = match resolved_id {
        // A server started by `imgfs mount`: its parent holds the image for it.
        Some(id) => local_image(store, id)?,
        None => resolve(store, &client, reference, &dir, platform)?,
    };
    // On the terminal (the parent) and in the log (the server).
    warn_if_foreign(&config, platform);
    // An image known by several manifests is served with the one its name refers to:
    // those layer blobs, fetched (if need be) from that repository.
    let record = record.known_as(reference);
    let result = match serving {
        Serving::Foreground(settings) => serve(store, client, &settings, reference, &dir, record, config),
        Serving::Background(command) => {
            command(&record.id, &dir).map_err(Error::Spawn).and_then(|cmd| start_background(store, &dir, cmd))
        }
    };
    release_hold(store);
    result
}

/// Find the image locally (by name or ID, and of the platform asked for), else fetch
/// its manifest and config from the registry or read it from its local source and
/// register it (`opened_image::find_or_register`); layers are left for the mount to
/// fetch. Whichever it is, the image is held for the mount under the same records lock
/// that found or registered it, so that a `prune -a` or `rm` before the server records
/// itself leaves it alone.
pub fn resolve(
    store: &Store,
    client: &LazyClient,
    reference: &str,
    dir: &Path,
    platform: Option<&Platform>,
) -> Result<(ImageRecord, ImageConfig)> {
    Ok(opened_image::find_or_register(store, client, reference, platform, |id| hold(store, id, reference, dir))?)
}

/// A name may point at another platform's image (after `pull --platform`): when no
/// platform was asked for and the image is not the host's, say so as docker does. It
/// is still mounted (its files are readable on any host).
fn warn_if_foreign(config: &ImageConfig, requested: Option<&Platform>) {
    if requested.is_some() {
        return;
    }
    let host = Platform::host();
    if let Some(image) = config.platform().filter(|p| p.os != host.os || p.architecture != host.architecture) {
        tracing::warn!(
            "the requested image's platform ({image}) does not match the detected host platform ({host}) and no \
             specific platform was requested"
        );
    }
}

/// A mount record of this process marked `starting`: the image is in use from now on.
fn hold(store: &Store, image: &Digest, reference: &str, dir: &Path) -> Result<(), crate::store::Error> {
    let pid = std::process::id();
    // Before the record exists, so that a signal from now on removes it (see
    // `handle_signals`); removing a record not written yet is harmless.
    {
        let mut phase = PHASE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Phase::Starting = *phase {
            *phase = Phase::Holding { store: store.clone(), pid };
        }
    }
    store.add_mount_record(&MountRecord {
        pid,
        start_ticks: process_start_ticks(pid).unwrap_or(0),
        mountpoint: dir.to_path_buf(),
        image: image.clone(),
        reference: reference.to_string(),
        starting: true,
        device: None,
    })
}

/// End the hold `resolve` took: the server has recorded itself (or failed). In the
/// foreground the server is this process and its record replaced the hold already.
fn release_hold(store: &Store) {
    store.remove_mount_record(std::process::id());
}

/// Check that `dir` can be mounted on, and return its canonical path: a directory,
/// not mounted already. A dead imgfs mount there is detached first. A directory that
/// holds files is mounted over (as mount(8) does), with a warning: they are hidden
/// until the unmount.
fn prepare_mountpoint(dir: &Path) -> Result<PathBuf> {
    clear_dead_mount(dir)?;
    let io = |source| Error::Mountpoint { dir: dir.to_path_buf(), source };
    if !std::fs::metadata(dir).map_err(io)?.is_dir() {
        return Err(Error::NotADirectory(dir.to_path_buf()));
    }
    let dir = dir.canonicalize().map_err(io)?;
    match mount_at(&dir) {
        Some(m) if m.is_imgfs() => Err(Error::AlreadyImgfs(dir)),
        Some(m) if m.is_fuse() => Err(Error::AlreadyFuse { dir, from: m.source }),
        _ => {
            if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
                tracing::warn!("{} is not empty: its files are hidden while the image is mounted there", dir.display());
            }
            Ok(dir)
        }
    }
}

/// A server killed with SIGKILL leaves its mountpoint dead (ENOTCONN to everything);
/// mounting there again detaches it first. Only an imgfs mount: a dead mount of
/// another filesystem is its owner's to clear.
fn clear_dead_mount(dir: &Path) -> Result<()> {
    let path = mountpoint_path(dir);
    if statfs_of(&path) != Statfs::Failed(libc::ENOTCONN) {
        return Ok(());
    }
    if !mount_at(&path).is_some_and(|m| m.is_imgfs()) {
        return Err(Error::ForeignDeadMount(path));
    }
    detach(&path)?;
    tracing::info!("detached the dead mount a killed server left at {}", path.display());
    Ok(())
}

/// Unmount the imgfs mount at `dir` (a dead one a killed server left included) and
/// wait for its server, if it is alive, to see the session end and exit. A mount that
/// something has open is busy and left as it is, unless `lazy`: then it is detached
/// at once and its server serves what is open until the last of it is closed (its
/// record stays until then, protecting the image, and `imgfs mount` lists it as
/// detached).
pub fn unmount(store: &Store, dir: &Path, lazy: bool) -> Result<()> {
    let dir = mountpoint_path(dir);
    let Some(entry) = mount_at(&dir) else {
        let table = mount_table();
        let (live, _) = store.mounts()?;
        if let Some(m) = live.iter().find(|m| m.mountpoint == dir && m.is_detached(&table)) {
            return Err(Error::OnlyDetached { dir, pid: m.pid });
        }
        return Err(Error::NotMounted(dir));
    };
    if !entry.is_imgfs() {
        return Err(Error::NotImgfs { dir, fstype: entry.fstype, from: entry.source });
    }
    // The server of this mount, not of an older one detached from the same directory;
    // found before the unmount, as it removes its record on its way out.
    let server = store.mounts()?.0.into_iter().find(|m| !m.starting && m.serves(&entry));
    // Nothing serves a dead mount: whatever has it open only gets errors, so it is
    // detached even when busy (the listing above already did, for a server of this
    // store that was killed). A mount whose server lives is not asked: a stopped server
    // never answers, and a statfs left waiting on it would hold the mount busy.
    if server.is_none() {
        if mount_at(&dir).is_none_or(|m| m.device != entry.device) {
            return Ok(());
        }
        if statfs_of(&dir) == Statfs::Failed(libc::ENOTCONN) {
            detach(&dir)?;
            store.mounts()?;
            return Ok(());
        }
    }
    match unmount_device(&dir, &entry.device, lazy)? {
        Unmounted::Done => {}
        Unmounted::NotThere => return Err(Error::NotMounted(dir)),
        Unmounted::Busy => return Err(Error::Busy { in_use_by: in_use_by(&holders(&entry.device)), dir }),
    }
    if lazy {
        return Ok(());
    }
    // It exits once it sees the session end.
    if let Some(m) = server {
        let start = Instant::now();
        while process_start_ticks(m.pid) == Some(m.start_ticks) {
            // Waiting for a stopped server is waiting for whoever stopped it.
            if process_is_stopped(m.pid) {
                tracing::warn!("server {} is stopped: it exits once it runs again (kill -CONT {})", m.pid, m.pid);
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                tracing::warn!("server {} still running after unmount", m.pid);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Listing clears the record of a server that died instead of exiting cleanly.
        store.mounts()?;
    }
    Ok(())
}

/// ": in use by pid 4242 (sh), pid 4250 (vim)" for a busy mount's error, or nothing
/// when no process that this user may see holds it.
fn in_use_by(holders: &[(u32, String)]) -> String {
    const NAMED: usize = 3;
    if holders.is_empty() {
        return String::new();
    }
    let named: Vec<String> = holders.iter().take(NAMED).map(|(pid, comm)| format!("pid {pid} ({comm})")).collect();
    let more = match holders.len().saturating_sub(NAMED) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(": in use by {}{more}", named.join(", "))
}

/// Detach this server's own mount, the one of `device`, if it is still mounted at
/// `dir`; never another mount there. Returns whether there was one to detach.
fn detach_own(dir: &Path, device: &str) -> Result<bool> {
    if !mount_table().iter().any(|m| m.device == device && m.mountpoint == dir) {
        return Ok(false);
    }
    Ok(unmount_device(dir, device, true)? == Unmounted::Done)
}

/// The image a background server was started for, found by the ID its parent resolved.
fn local_image(store: &Store, id: &str) -> Result<(ImageRecord, ImageConfig)> {
    let db = store.db()?;
    let (id, _) = db.find(id)?;
    Ok(opened_image::record_and_config(store, &db, id)?)
}

/// Start `server` (an `imgfs mount -f` command line) as a detached background process
/// logging to a file under the store, and return once its mountpoint `dir` answers.
/// Its last log line is the error when it exits first.
fn start_background(store: &Store, dir: &Path, mut server: Command) -> Result<()> {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S");
    let log = store.logs_dir().join(format!("mount-{stamp}-{}.log", std::process::id()));
    // Private like everything in the store (see store::FILE_MODE), whatever the umask.
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::store::FILE_MODE)
        .open(&log)
        .map_err(|source| Error::Log { path: log.clone(), source })?;
    server.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    // A session of its own: the server outlives the shell that started it and
    // doesn't get its terminal's signals.
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: setsid is one system call, and the closure
    // neither allocates nor takes locks. It fails only for a process group leader,
    // which a freshly forked child is not, so its result is not needed.
    unsafe {
        use std::os::unix::process::CommandExt;
        server.pre_exec(|| {
            let _ = rustix::process::setsid();
            Ok(())
        });
    }
    let mut child = server.spawn().map_err(Error::Spawn)?;
    let start = Instant::now();
    loop {
        // statfs answers without reading any layer (a stat of the root would read
        // the top layer for its attributes): the mount is up and nothing is fetched.
        if is_fuse_mountpoint(dir) && statfs_of(dir) == Statfs::Answered {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            let last = last.strip_prefix("imgfs: error: ").unwrap_or(last).to_string();
            return Err(Error::Exited { status, last, log });
        }
        if start.elapsed() > START_TIMEOUT {
            stop(&mut child);
            return Err(Error::Timeout { dir: dir.to_path_buf(), timeout: START_TIMEOUT, log });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stop a server that did not come up in time: asked first (SIGTERM, which it answers
/// by unmounting and removing its mount record, should it have got that far), killed
/// if it has not ended after a while, and reaped either way.
fn stop(child: &mut std::process::Child) {
    use rustix::process::{kill_process, Pid, Signal};
    let _ = kill_process(Pid::from_child(child), Signal::TERM);
    let asked = Instant::now();
    while asked.elapsed() < STOP_GRACE {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Serve `record` at `dir` in this process until the mount ends: unmounted from
/// outside, or by a signal (see `handle_signals`). The mount record is written, and
/// removed at the end, here.
pub fn serve(
    store: &Store,
    client: Arc<LazyClient>,
    settings: &Settings,
    reference: &str,
    dir: &Path,
    record: ImageRecord,
    config: ImageConfig,
) -> Result<()> {
    let allow_other = settings.allow_other;
    limit_malloc_arenas();
    let source = record.source.clone();
    let report = Box::new(move |i, layer: &crate::image::Descriptor| {
        Box::new(FetchLog::new(i, layer.digest.clone(), layer.size, source.clone())) as Box<dyn LayerProgress>
    });
    let reading =
        Reading { read_cache: settings.read_cache << 20, cache_size: settings.cache_size, no_index: settings.no_index };
    let (layers, lookup) = open_layers(store, client, &record, &config, reference, &reading, report)?;
    match lookup {
        IndexLookup::Skipped => {}
        IndexLookup::Using { index, served } => tracing::info!(
            "using published index {index}: {served} of {} layers served by range reads (cache bound {})",
            record.layers.len(),
            indicatif::BinaryBytes(settings.cache_size)
        ),
        IndexLookup::NoneUsable(e) => tracing::warn!(
            "no usable published index ({}); layers are fetched whole on first use",
            crate::log::Chain(&*e)
        ),
    }
    // A provisional directory mode could let other users into a directory that is
    // really closed to them, so a mount they can see serves exact ones only.
    let dir_attrs = if allow_other { DirAttrs::Exact } else { DirAttrs::Provisional };
    let fs = Fs::new(Tree::new(Arc::new(layers), dir_attrs), record.size());
    let pid = std::process::id();
    let rec = MountRecord {
        pid,
        start_ticks: process_start_ticks(pid).unwrap_or(0),
        mountpoint: dir.to_path_buf(),
        image: record.id.clone(),
        reference: reference.to_string(),
        starting: false,
        device: None,
    };
    // Enough workers that a thread waiting for a layer download leaves others free.
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get()).max(4);
    let settings = MountSettings { fsname: &fsname(reference), allow_other, threads };
    // The record and the mount come into being under the phase lock, so a signal
    // finds either nothing to undo or a mount to detach (see `handle_signals`).
    let (session, device) = {
        let mut phase = PHASE.lock().unwrap_or_else(PoisonError::into_inner);
        // Written under the records lock, where rm and prune check for mounts, after
        // making sure the image is still there: a mount racing an rm can't lose its image.
        store.update_db(|db| {
            if !db.images.contains_key(&record.id) {
                return Ok(Err(Error::ImageRemoved(record.id.clone())));
            }
            store.add_mount_record(&rec).map(Ok)
        })??;
        // The mount's device names it from now on; found at once, before anything
        // else could be mounted over it.
        let mounted = fuse::mount(fs, dir, &settings).and_then(|session| {
            let device = mount_at(dir).filter(|m| m.is_imgfs()).map(|m| m.device);
            let device = device.ok_or_else(|| std::io::Error::other("the new mount is not in /proc/self/mountinfo"))?;
            Ok((session, device))
        });
        match mounted {
            Ok((session, device)) => {
                // Before a signal can remove the record (it waits for the phase lock).
                if let Err(e) = store.add_mount_record(&MountRecord { device: Some(device.clone()), ..rec }) {
                    // The record without its device still protects the image; `umount`
                    // finds the mount by its path then.
                    tracing::warn!("cannot record the mount's device: {}", crate::log::Chain(&e));
                }
                *phase = Phase::Serving { dir: dir.to_path_buf(), device: device.clone(), store: store.clone(), pid };
                (session, device)
            }
            Err(e) => {
                store.remove_mount_record(pid);
                return Err(Error::Mount { dir: dir.to_path_buf(), source: e });
            }
        }
    };
    tracing::info!("serving {reference} ({}) at {} (device {device})", record.id, dir.display());
    let result = session.run();
    *PHASE.lock().unwrap_or_else(PoisonError::into_inner) = Phase::Stopping;
    // The session ends when the kernel drops the connection, normally once the mount
    // is gone; a connection aborted (/sys/fs/fuse/connections) or a failed session
    // leaves it mounted and dead, and only then is there something to detach.
    if let Err(e) = detach_own(dir, &device) {
        tracing::error!("{}", crate::log::Chain(&e));
    }
    store.remove_mount_record(pid);
    tracing::info!("{} unmounted", dir.display());
    result.map_err(|source| Error::Serve { dir: dir.to_path_buf(), source })
}

/// How a layer fetched under a mount shows in the server's log: a line when the
/// download starts, one at each tenth of the layer and one every `FetchLog::EVERY` in
/// between (a slow link still shows it is moving), and one when it is all here and
/// being verified, never a line per chunk.
struct FetchLog {
    layer: usize,
    digest: Digest,
    total: u64,
    source: String,
    state: Mutex<Option<Logged>>,
}

/// Set by the first bytes: when the download started, and what the last line said.
struct Logged {
    started: Instant,
    last_line: Instant,
    last_tenth: u64,
}

impl FetchLog {
    const EVERY: Duration = Duration::from_secs(5);

    fn new(layer: usize, digest: Digest, total: u64, source: String) -> FetchLog {
        FetchLog { layer, digest, total, source, state: Mutex::new(None) }
    }
}

impl LayerProgress for FetchLog {
    fn downloading(&self, done: u64, total: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let logged = state.get_or_insert_with(|| {
            tracing::info!(
                "fetching layer {} ({}, {}) from {}",
                self.layer,
                self.digest,
                indicatif::DecimalBytes(self.total),
                self.source
            );
            Logged { started: now, last_line: now, last_tenth: 0 }
        });
        let tenth = (done * 10).checked_div(total).unwrap_or(0);
        if (tenth > logged.last_tenth && tenth < 10) || now - logged.last_line >= Self::EVERY {
            tracing::info!(
                "layer {}: {} of {} ({}%) in {:.1}s",
                self.layer,
                indicatif::DecimalBytes(done),
                indicatif::DecimalBytes(total),
                (done * 100).checked_div(total).unwrap_or(0),
                (now - logged.started).as_secs_f64()
            );
            logged.last_line = now;
        }
        logged.last_tenth = tenth;
    }

    fn verifying(&self) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &*state {
            Some(logged) => tracing::info!(
                "layer {}: {} downloaded in {:.1}s; verifying and indexing",
                self.layer,
                indicatif::DecimalBytes(self.total),
                logged.started.elapsed().as_secs_f64()
            ),
            None => tracing::info!("indexing layer {} ({}) from the store", self.layer, self.digest),
        }
    }
}

/// glibc gives each thread a malloc arena of its own (up to 8 per core by default) and
/// keeps what is freed in an arena for that arena's next use. FUSE workers and
/// read-ahead threads each decode 1 MiB spans, so each arena ends up holding span-sized
/// buffers that no other thread reuses, and the server's memory grows with the number
/// of threads that have read rather than with what is being read. These threads spend
/// their time in I/O and inflate, not in malloc, so one arena per core costs them
/// nothing; scripts/bench's peak-RSS figure is where the difference shows.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        // SAFETY: mallopt only sets an allocator parameter; called before the server's
        // threads start.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, cores as libc::c_int) };
    }
}

/// The source column `mount` and `df` show. Commas would split the mount options.
fn fsname(reference: &str) -> String {
    format!("imgfs:{}", reference.replace([',', ' '], "_"))
}

// ---- Signals: what SIGINT, SIGTERM and SIGHUP do to a server ------------------------

/// How far the server got, as the signal thread sees it.
enum Phase {
    /// Resolving: nothing mounted, no record written. A signal ends the process.
    Starting,
    /// The image is held for the mount (`hold`): a `starting` record is, or is about to
    /// be, written. A signal removes it and ends the process.
    Holding { store: Store, pid: u32 },
    /// Mounted: a signal detaches the mount (the one of `device`, if it is still at
    /// `dir`), removes the record and ends the process. Exiting rather than waiting
    /// for the session to end is what stops a mount that was busy (an open file keeps
    /// a lazily detached mount alive): closing the FUSE device aborts the connection,
    /// and whoever still reads gets ENOTCONN.
    Serving { dir: PathBuf, device: String, store: Store, pid: u32 },
    /// The session is over (unmounted from outside): the main thread is on its way out.
    Stopping,
}

static PHASE: Mutex<Phase> = Mutex::new(Phase::Starting);

/// Handle SIGINT, SIGTERM and SIGHUP by how far the server got (see `Phase`). Call it
/// before any other thread starts (see `signals`).
pub fn handle_signals() {
    let handled = crate::signals::handle(|sig| {
        let phase = PHASE.lock().unwrap_or_else(PoisonError::into_inner);
        match &*phase {
            Phase::Starting => {
                tracing::info!("signal {sig} before the mount was up; exiting");
                std::process::exit(128 + sig);
            }
            Phase::Holding { store, pid } => {
                tracing::info!("signal {sig} before the mount was up; exiting");
                // Under the records lock: a hold being written (inside the resolve's
                // `update_db`) is finished first, then removed. The phase lock stays
                // held, so the main thread can't go on to mount meanwhile; it takes
                // the phase lock before the records lock too, so the two can't deadlock.
                let _ = store.with_records_lock(|| store.remove_mount_record(*pid));
                std::process::exit(128 + sig);
            }
            Phase::Serving { dir, device, store, pid } => {
                tracing::info!("signal {sig}, unmounting {}", dir.display());
                match detach_own(dir, device) {
                    Ok(detached) => {
                        store.remove_mount_record(*pid);
                        if detached {
                            tracing::info!("{} unmounted", dir.display());
                        } else {
                            tracing::info!("the mount was detached from {} already", dir.display());
                        }
                        std::process::exit(0);
                    }
                    // Still serving: a later signal tries again.
                    Err(e) => tracing::error!("{}", crate::log::Chain(&e)),
                }
            }
            Phase::Stopping => {}
        }
    });
    if let Err(e) = handled {
        tracing::warn!("cannot start the signal thread ({e}); signals end the server without unmounting");
    }
}
