//! `imgfs mount`: resolve an image, then serve it at a directory over FUSE.
//!
//! Without `-f` the command starts a copy of itself in the foreground mode as a
//! detached background server (its output going to a log under the store root) and
//! returns once the mountpoint answers. With no arguments it lists running mounts.

use super::Context;
use crate::digest::Digest;
use crate::fetch::{self, StoreLayers};
use crate::fs::Fs;
use crate::fuse::{self, MountSettings};
use crate::image::{ImageConfig, Platform};
use crate::layer::spans::SpanCache;
use crate::local_source::{self, LocalRef};
use crate::reference::Reference;
use crate::store::db::ImageRecord;
use crate::store::mounts::{
    detach, is_dead_imgfs_mount, is_fuse_mountpoint, mount_at, mountpoint_path, process_start_ticks, statfs_errno,
    MountRecord,
};
use crate::store::Store;
use crate::template::Format;
use crate::tree::{DirAttrs, Tree};
use anyhow::{bail, Context as _, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Platform to mount from a multi-arch image (OS/ARCH[/VARIANT])
    // Docker's variable for the default platform; the flag wins over it.
    #[arg(long, env = "DOCKER_DEFAULT_PLATFORM")]
    pub platform: Option<String>,
    /// Stay in the foreground and log to stderr
    #[arg(short, long)]
    pub foreground: bool,
    /// Let other users see the mount (for a non-root user this needs
    /// `user_allow_other` in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,
    /// Memory for decoded data of compressed layers, shared by all reads (MiB)
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    pub read_cache: u64,
    /// Don't look for an index published next to the image (`imgfs index push`):
    /// fetch each layer whole on first use
    #[arg(long)]
    pub no_index: bool,
    /// Bound of the disk cache (ROOT/cache) of spans fetched by Range through a
    /// published index, shared by all mounts of the store: 512M, 2G, … (`imgfs prune`
    /// empties it)
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_cache_size)]
    pub cache_size: u64,
    /// With no image: format the list of mounts with a Go-style template, `table
    /// TEMPLATE`, or `json` (fields .Image .ID .Mountpoint .PID)
    #[arg(long, conflicts_with = "reference")]
    pub format: Option<String>,
    /// The image ID the parent already resolved (internal, for the background server)
    #[arg(long, hide = true)]
    pub resolved_id: Option<String>,
    /// Image reference or ID
    #[arg(value_name = "REF", requires = "dir")]
    pub reference: Option<String>,
    /// Directory to mount at
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// How long `imgfs mount` waits for its background server to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(ctx: &Context, args: Args, root: &Path) -> Result<()> {
    let (Some(reference), Some(dir)) = (args.reference.clone(), args.dir.clone()) else {
        return list(ctx, args.format.as_deref());
    };
    clear_dead_mount(&dir)?;
    let meta = std::fs::metadata(&dir).with_context(|| format!("mountpoint {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("mountpoint {} is not a directory", dir.display());
    }
    let dir = dir.canonicalize().with_context(|| format!("mountpoint {}", dir.display()))?;
    match mount_at(&dir) {
        Some(m) if m.is_imgfs() => bail!("{} is already an imgfs mount (imgfs umount it first)", dir.display()),
        Some(m) if m.is_fuse() => {
            bail!("{} is already a FUSE mountpoint ({}); unmount it first", dir.display(), m.source)
        }
        _ => {}
    }
    let (record, config) = match &args.resolved_id {
        // A server started by `imgfs mount`: its parent holds the image for it.
        Some(id) => local_image(ctx, id)?,
        None => resolve(ctx, &reference, &dir, args.platform.as_deref())?,
    };
    let result = if args.foreground {
        serve(ctx, &reference, &dir, record, config, &args)
    } else {
        start_background(ctx, root, &reference, &dir, &record, &args)
    };
    // The server has recorded itself (or failed): the hold `resolve` took ends. In the
    // foreground the server is this process and its record replaced the hold already.
    ctx.store.remove_mount_record(std::process::id());
    result
}

/// Find the image locally (by name or ID, and of the platform asked for), else fetch its manifest and config from
/// the registry and register it; layers are left for the mount to fetch. Whichever it
/// is, the image is held for the mount under the same records lock that found or
/// registered it, so that a `prune -a` or `rm` before the server records itself
/// leaves it alone.
fn resolve(ctx: &Context, reference: &str, dir: &Path, platform: Option<&str>) -> Result<(ImageRecord, ImageConfig)> {
    // An empty value (`DOCKER_DEFAULT_PLATFORM=`) means no platform, as in docker.
    let platform = platform.filter(|p| !p.is_empty()).map(Platform::parse).transpose()?;
    if let Some(local) = LocalRef::parse(reference) {
        return resolve_local(ctx, &local?, reference, dir, platform.as_ref());
    }
    // A local image serves when no platform is asked for, or when it is that platform
    // (so `DOCKER_DEFAULT_PLATFORM` doesn't send a mount of a pulled image to the registry).
    let held = ctx.store.update_db(|db| -> Result<_> {
        let Ok((id, _)) = db.find(reference) else { return Ok(None) };
        let record = db.images.get(&id).cloned().with_context(|| format!("no such image: {id}"))?;
        let config: ImageConfig = serde_json::from_slice(&ctx.store.read_blob(&record.id)?)
            .with_context(|| format!("image config {} is not valid", record.id))?;
        if platform.as_ref().is_some_and(|p| p.os != config.os || p.architecture != config.architecture) {
            return Ok(None);
        }
        hold(ctx, &record.id, reference, dir)?;
        Ok(Some((record, config)))
    })?;
    if let Some(found) = held {
        return Ok(found);
    }
    let r = Reference::parse(reference)?;
    let resolved = fetch::resolve(&*ctx.client()?, &ctx.store, &r, platform.as_ref())?;
    fetch::register_and(&ctx.store, &resolved, &r, |_| hold(ctx, &resolved.record.id, reference, dir))?;
    Ok((resolved.record, resolved.config))
}

/// Read an image from an OCI layout or archive and register it, held for the mount.
/// An archive's layer blobs are copied into the store now (a tar member can't be
/// read in place cheaply); a layout's stay where they are, read by the server.
fn resolve_local(
    ctx: &Context,
    local: &LocalRef,
    reference: &str,
    dir: &Path,
    platform: Option<&Platform>,
) -> Result<(ImageRecord, ImageConfig)> {
    let image = local_source::resolve(local, platform)?;
    let resolved =
        fetch::stored(&ctx.store, image.record.clone(), image.config.clone(), image.top_digest.clone(), &image.blobs)?;
    if local.layout_dir().is_none() {
        for l in &resolved.record.layers {
            if !ctx.store.has_blob(&l.digest) {
                image.copy_blob(&ctx.store, l)?;
            }
        }
    }
    fetch::register_names(&ctx.store, &resolved, &image.names, |_| hold(ctx, &resolved.record.id, reference, dir))?;
    Ok((resolved.record, resolved.config))
}

/// The OCI layout a mount reads layer blobs from in place: the one named by the
/// mount's reference, else the one the image was first read from.
fn layout_of(reference: &str, record: &ImageRecord) -> Option<PathBuf> {
    [reference, record.source.as_str()].into_iter().find_map(|s| {
        let local = LocalRef::parse(s)?.ok()?;
        let dir = local.layout_dir()?;
        Some(dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()))
    })
}

/// A mount record of this process marked `starting`: the image is in use from now on.
fn hold(ctx: &Context, image: &Digest, reference: &str, dir: &Path) -> Result<()> {
    let pid = std::process::id();
    ctx.store.add_mount_record(&MountRecord {
        pid,
        start_ticks: process_start_ticks(pid).unwrap_or(0),
        mountpoint: dir.to_path_buf(),
        image: image.clone(),
        reference: reference.to_string(),
        starting: true,
    })?;
    Ok(())
}

/// A server killed with SIGKILL leaves its mountpoint dead (ENOTCONN to everything);
/// mounting there again detaches it first. Only an imgfs mount: a dead mount of
/// another filesystem is its owner's to clear.
fn clear_dead_mount(dir: &Path) -> Result<()> {
    let path = mountpoint_path(dir);
    if is_dead_imgfs_mount(&path) {
        detach(&path)?;
        eprintln!("imgfs: detached the dead mount a killed server left at {}", path.display());
    } else if statfs_errno(&path) == Some(libc::ENOTCONN) {
        bail!("mountpoint {} is a dead mount that is not imgfs's; unmount it first", path.display());
    }
    Ok(())
}

fn local_image(ctx: &Context, id: &str) -> Result<(ImageRecord, ImageConfig)> {
    let db = ctx.store.db()?;
    let (id, _) = db.find(id)?;
    let record = db.images.get(&id).cloned().with_context(|| format!("no such image: {id}"))?;
    let config = serde_json::from_slice(&ctx.store.read_blob(&record.id)?)
        .with_context(|| format!("image config {} is not valid", record.id))?;
    Ok((record, config))
}

fn start_background(
    ctx: &Context,
    root: &Path,
    reference: &str,
    dir: &Path,
    record: &ImageRecord,
    args: &Args,
) -> Result<()> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let log = ctx.store.logs_dir().join(format!("mount-{stamp}-{}.log", std::process::id()));
    // Private like everything in the store (see store::FILE_MODE), whatever the umask.
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::store::FILE_MODE)
        .open(&log)
        .with_context(|| format!("cannot create log {}", log.display()))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--root").arg(root);
    for h in &ctx.client_options().insecure_registries {
        cmd.arg("--insecure-registry").arg(h);
    }
    if let Some(t) = ctx.client_options().timeout {
        cmd.arg("--timeout").arg(t.as_secs().to_string());
    }
    cmd.args(["mount", "-f", "--resolved-id", record.id.as_str()]);
    if args.allow_other {
        cmd.arg("--allow-other");
    }
    cmd.arg("--read-cache").arg(args.read_cache.to_string());
    cmd.arg("--cache-size").arg(args.cache_size.to_string());
    if args.no_index {
        cmd.arg("--no-index");
    }
    cmd.arg(reference).arg(dir);
    cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    // A session of its own: the server outlives the shell that started it and
    // doesn't get its terminal's signals.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the mount server")?;
    let start = Instant::now();
    loop {
        // statfs answers without reading any layer (a stat of the root would read
        // the top layer for its attributes): the mount is up and nothing is fetched.
        if is_fuse_mountpoint(dir) && statfs_answers(dir) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            let last = last.strip_prefix("imgfs: error: ").unwrap_or(last);
            bail!("mount server exited ({status}): {last} (log: {})", log.display());
        }
        if start.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            bail!("mount of {} did not come up within {:?} (log: {})", dir.display(), START_TIMEOUT, log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve(
    ctx: &Context,
    reference: &str,
    dir: &Path,
    record: ImageRecord,
    config: ImageConfig,
    args: &Args,
) -> Result<()> {
    let allow_other = args.allow_other;
    limit_malloc_arenas();
    let options = ctx.client_options().clone();
    let client: Box<fetch::ClientFn> = {
        let cell = std::sync::OnceLock::new();
        Box::new(move || {
            if let Some(c) = cell.get() {
                return Ok(Arc::clone(c));
            }
            let c = Arc::new(crate::registry::Client::new(options.clone())?);
            Ok(Arc::clone(cell.get_or_init(|| c)))
        })
    };
    let spans = Arc::new(SpanCache::new(args.read_cache << 20));
    let source = record.source.clone();
    let report: Box<fetch::ReportFn> = Box::new(move |i, layer| {
        Box::new(FetchLog::new(i, layer.digest.clone(), layer.size, source.clone())) as Box<dyn fetch::LayerProgress>
    });
    let in_place = layout_of(reference, &record);
    let index_client = (!args.no_index && in_place.is_none()).then(|| client().map_err(anyhow::Error::from));
    let mut layers = StoreLayers::new(ctx.store.clone(), client, &record, &config, spans, in_place, report);
    if let Some(c) = index_client {
        // One cache, and so one bound, for every layer read by Range. eStargz layers
        // need no index artifact: their own TOC serves them.
        let cache = Arc::new(crate::store::cache::DiskCache::open(&ctx.store, args.cache_size));
        layers.use_estargz(Arc::clone(&cache));
        use_published_index(ctx, &record, &config, c, &mut layers, cache, args.cache_size);
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
    };
    // Enough workers that a thread waiting for a layer download leaves others free.
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get()).max(4);
    let settings = MountSettings { fsname: &fsname(reference), allow_other, threads };
    // The record and the mount come into being under the phase lock, so a signal
    // finds either nothing to undo or a mount to detach (see `handle_server_signals`).
    let session = {
        let mut phase = PHASE.lock().unwrap_or_else(PoisonError::into_inner);
        // Written under the records lock, where rm and prune check for mounts, after
        // making sure the image is still there: a mount racing an rm can't lose its image.
        ctx.store.update_db(|db| {
            if !db.images.contains_key(&record.id) {
                bail!("image {} was removed before it could be mounted", record.id);
            }
            Ok(ctx.store.add_mount_record(&rec)?)
        })?;
        match fuse::mount(fs, dir, &settings) {
            Ok(session) => {
                *phase = Phase::Serving { dir: dir.to_path_buf(), store: ctx.store.clone(), pid };
                session
            }
            Err(e) => {
                ctx.store.remove_mount_record(pid);
                return Err(e).with_context(|| format!("cannot mount at {}", dir.display()));
            }
        }
    };
    eprintln!("imgfs: serving {reference} ({}) at {}", record.id, dir.display());
    let result = session.run();
    *PHASE.lock().unwrap_or_else(PoisonError::into_inner) = Phase::Stopping;
    ctx.store.remove_mount_record(pid);
    eprintln!("imgfs: {} unmounted", dir.display());
    result.with_context(|| format!("serving {} failed", dir.display()))
}

/// Look for an index published for the image (`imgfs index push`) and serve the
/// layers that are not in the store from it, by Range. Without one, or with one that
/// does not check out, layers are downloaded whole on first use, as the log says: a
/// mount never depends on an index, which only saves bytes.
fn use_published_index(
    ctx: &Context,
    record: &ImageRecord,
    config: &ImageConfig,
    client: Result<Arc<crate::registry::Client>>,
    layers: &mut StoreLayers,
    cache: Arc<crate::store::cache::DiskCache>,
    cache_size: u64,
) {
    let all_stored = record.layers.iter().all(|l| {
        crate::layer::IndexFile::is_current(&ctx.store.index_path(&l.digest), l.digest.as_str())
            && ctx.store.has_blob(&l.digest)
    });
    if all_stored || LocalRef::parse(&record.source).is_some() {
        return;
    }
    let Some((registry, repository)) = record.source.split_once('/') else { return };
    let image = crate::referrers::Image {
        registry: registry.to_string(),
        repository: repository.to_string(),
        // Only the digest is used to find referrers; the size is for publishing.
        manifest: crate::image::Descriptor {
            media_type: record.manifest_media_type.clone(),
            digest: record.manifest.clone(),
            size: 0,
            platform: None,
            annotations: None,
        },
        layers: record.layers.clone(),
        diff_ids: config.rootfs.diff_ids.clone(),
    };
    let found = client
        .and_then(|c| crate::referrers::find_heads(&c, &image).map(|(d, heads)| (c, d, heads)).map_err(Into::into));
    match found {
        Ok((c, digest, heads)) => {
            let n = layers.use_published(heads, c, cache);
            eprintln!(
                "imgfs: using published index {digest}: {n} of {} layers served by range reads (cache bound {})",
                record.layers.len(),
                indicatif::BinaryBytes(cache_size)
            );
        }
        Err(e) => eprintln!("imgfs: no usable published index ({e:#}); layers are fetched whole on first use"),
    }
}

/// `--cache-size`: `1G`, `512M`, `2097152`, …
fn parse_cache_size(v: &str) -> Result<u64, String> {
    crate::layer::build::parse_size(v).ok_or_else(|| format!("{v:?} is not a size (like 512M or 2G)"))
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

impl fetch::LayerProgress for FetchLog {
    fn downloading(&self, done: u64, total: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let logged = state.get_or_insert_with(|| {
            eprintln!(
                "imgfs: fetching layer {} ({}, {}) from {}",
                self.layer,
                self.digest,
                indicatif::DecimalBytes(self.total),
                self.source
            );
            Logged { started: now, last_line: now, last_tenth: 0 }
        });
        let tenth = (done * 10).checked_div(total).unwrap_or(0);
        if (tenth > logged.last_tenth && tenth < 10) || now - logged.last_line >= Self::EVERY {
            eprintln!(
                "imgfs: layer {}: {} of {} ({}%) in {:.1}s",
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
            Some(logged) => eprintln!(
                "imgfs: layer {}: {} downloaded in {:.1}s; verifying and indexing",
                self.layer,
                indicatif::DecimalBytes(self.total),
                logged.started.elapsed().as_secs_f64()
            ),
            None => eprintln!("imgfs: indexing layer {} ({}) from the store", self.layer, self.digest),
        }
    }
}

/// glibc gives each thread a malloc arena of its own and keeps what is freed there.
/// FUSE workers and read-ahead threads each decode 1 MiB spans, and the memory their
/// arenas kept was about half the server's RSS (four readers on the bench image: 132 MB
/// with the default of 8 arenas per core, 72 MB with 2). One per core is plenty.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        // SAFETY: mallopt only sets an allocator parameter; called before the server's
        // threads start.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, cores as libc::c_int) };
    }
}

fn statfs_answers(dir: &Path) -> bool {
    statfs_errno(dir).is_none()
}

/// The source column `mount` and `df` show. Commas would split the mount options.
fn fsname(reference: &str) -> String {
    format!("imgfs:{}", reference.replace([',', ' '], "_"))
}

// ---- Signals: the server's one place for SIGINT, SIGTERM and SIGHUP ------------------
//
// A thread is created with its creator's signal mask, and the kernel hands a signal
// sent to the process to any thread that doesn't block it. A thread started before the
// mask was set (the blocking HTTP client's runtime, started while the image resolves)
// would take SIGINT's default action and end the server without unmounting, leaving a
// dead mountpoint and a stale record. So `main` blocks these signals before any thread
// exists, and one thread waits for them and acts on how far the server got.

/// How far the server got, as the signal thread sees it.
enum Phase {
    /// Resolving: nothing mounted, no record written. A signal ends the process.
    Starting,
    /// Mounted: a signal detaches the mount, removes the record and ends the process.
    /// Exiting rather than waiting for the session to end is what stops a mount that
    /// was busy (an open file keeps a lazily detached mount alive): closing the FUSE
    /// device aborts the connection, and whoever still reads gets ENOTCONN.
    Serving { dir: PathBuf, store: Store, pid: u32 },
    /// The session is over (unmounted from outside): the main thread is on its way out.
    Stopping,
}

static PHASE: Mutex<Phase> = Mutex::new(Phase::Starting);

/// Is this `mount` the server itself (`mount -f REF DIR`, also what the background
/// mount runs)?
pub fn is_server(args: &Args) -> bool {
    args.foreground && args.dir.is_some()
}

/// Block SIGINT, SIGTERM and SIGHUP in this thread, and so in every thread started
/// after it, and handle them on a thread of their own. Call it before any other
/// thread starts.
///
/// A signal the server was started with ignored stays ignored, as in any program:
/// `nohup` ignores SIGHUP, a script's background job SIGINT. (Blocked, it would be
/// queued for `sigwait` instead of being dropped.)
pub fn handle_server_signals() {
    // SAFETY: signal-set calls on a zeroed sigset_t, which sigemptyset initialises;
    // sigaction with a null new action only reads the current one.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let mut old: libc::sigaction = std::mem::zeroed();
            let ignored = libc::sigaction(s, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN;
            if !ignored {
                libc::sigaddset(&mut set, s);
            }
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || loop {
        let mut sig = 0;
        // SAFETY: set is an initialised sigset_t and sig a writable int.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        let phase = PHASE.lock().unwrap_or_else(PoisonError::into_inner);
        match &*phase {
            Phase::Starting => {
                eprintln!("imgfs: signal {sig} before the mount was up; exiting");
                std::process::exit(128 + sig);
            }
            Phase::Serving { dir, store, pid } => {
                eprintln!("imgfs: signal {sig}, unmounting {}", dir.display());
                match detach(dir) {
                    Ok(()) => {
                        store.remove_mount_record(*pid);
                        eprintln!("imgfs: {} unmounted", dir.display());
                        std::process::exit(0);
                    }
                    // Still serving: a later signal tries again.
                    Err(e) => eprintln!("imgfs: {e:#}"),
                }
            }
            Phase::Stopping => {}
        }
    });
    if let Err(e) = spawned {
        // Without the thread the signals would stay blocked and the server could not be
        // stopped but by SIGKILL or an unmount; better to keep the default actions.
        eprintln!("imgfs: cannot start the signal thread ({e}); signals end the server without unmounting");
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

const LIST_TABLE: &str = "{{.Image}}\t{{.ID}}\t{{.Mountpoint}}\t{{.PID}}";

fn list(ctx: &Context, format: Option<&str>) -> Result<()> {
    let format = Format::parse(format, LIST_TABLE, true).context("invalid --format")?;
    let (live, _dead) = ctx.store.mounts()?;
    let rows: Vec<serde_json::Value> = live
        .into_iter()
        .filter(|m| !m.starting)
        .map(|m| {
            serde_json::json!({
                "Image": m.reference,
                "ID": m.image.short(),
                "Mountpoint": m.mountpoint.display().to_string(),
                "PID": m.pid,
            })
        })
        .collect();
    let titles = serde_json::json!({"Image": "IMAGE", "ID": "IMAGE ID", "Mountpoint": "MOUNTPOINT", "PID": "PID"});
    let text = format.render(&rows, &titles).context("invalid --format")?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    Ok(())
}
