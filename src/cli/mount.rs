//! `imgfs mount`: resolve an image, then serve it at a directory over FUSE.
//!
//! Without `-f` the command starts a copy of itself in the foreground mode as a
//! detached background server (its output going to a log under the store root) and
//! returns once the mountpoint answers. With no arguments it lists running mounts.

use super::Context;
use crate::fetch::{self, StoreLayers};
use crate::fs::Fs;
use crate::fuse::{self, MountSettings};
use crate::image::{ImageConfig, Platform};
use crate::layer::spans::SpanCache;
use crate::reference::Reference;
use crate::store::db::ImageRecord;
use crate::store::mounts::{is_fuse_mountpoint, process_start_ticks, MountRecord};
use crate::tree::{DirAttrs, Tree};
use anyhow::{bail, Context as _, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Platform to mount from a multi-arch image (OS/ARCH[/VARIANT])
    #[arg(long)]
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
        return list(ctx);
    };
    let meta = std::fs::metadata(&dir).with_context(|| format!("mountpoint {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("mountpoint {} is not a directory", dir.display());
    }
    let dir = dir.canonicalize().with_context(|| format!("mountpoint {}", dir.display()))?;
    if is_fuse_mountpoint(&dir) {
        bail!("{} is already a FUSE mountpoint (imgfs umount it first)", dir.display());
    }
    let (record, config) = match &args.resolved_id {
        Some(id) => local_image(ctx, id)?,
        None => resolve(ctx, &reference, args.platform.as_deref())?,
    };
    if args.foreground {
        serve(ctx, &reference, &dir, record, config, &args)
    } else {
        start_background(ctx, root, &reference, &dir, &record, &args)
    }
}

/// Find the image locally (by name or ID), else fetch its manifest and config from
/// the registry and register it; layers are left for the mount to fetch.
fn resolve(ctx: &Context, reference: &str, platform: Option<&str>) -> Result<(ImageRecord, ImageConfig)> {
    let platform = platform.map(Platform::parse).transpose().map_err(anyhow::Error::msg)?;
    if platform.is_none() {
        if let Ok((id, _)) = ctx.store.db()?.find(reference) {
            return local_image(ctx, id.as_str());
        }
    }
    let r = Reference::parse(reference).map_err(anyhow::Error::msg)?;
    let resolved = fetch::resolve(&*ctx.client()?, &ctx.store, &r, platform.as_ref())?;
    fetch::register(&ctx.store, &resolved, &r)?;
    Ok((resolved.record, resolved.config))
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
    let out = std::fs::File::create(&log).with_context(|| format!("cannot create log {}", log.display()))?;
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
    let client: Box<dyn Fn() -> Result<Arc<crate::registry::Client>> + Send + Sync> = {
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
    let layers = StoreLayers::new(ctx.store.clone(), client, &record, &config, spans);
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
    };
    // Written under the records lock, where rm and prune check for mounts, after
    // making sure the image is still there: a mount racing an rm can't lose its image.
    ctx.store.update_db(|db| {
        if !db.images.contains_key(&record.id) {
            bail!("image {} was removed before it could be mounted", record.id);
        }
        ctx.store.add_mount_record(&rec)
    })?;
    unmount_on_signal(dir.to_path_buf());
    eprintln!("imgfs: serving {reference} ({}) at {}", record.id, dir.display());
    // Enough workers that a thread waiting for a layer download leaves others free.
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get()).max(4);
    let settings = MountSettings { fsname: &fsname(reference), allow_other, threads };
    let result = fuse::serve(fs, dir, &settings);
    ctx.store.remove_mount_record(pid);
    eprintln!("imgfs: {} unmounted", dir.display());
    result.with_context(|| format!("cannot mount at {}", dir.display()))
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
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: c is a valid path and buf a properly sized, writable statvfs.
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statvfs(c.as_ptr(), &mut buf) == 0 }
}

/// The source column `mount` and `df` show. Commas would split the mount options.
fn fsname(reference: &str) -> String {
    format!("imgfs:{}", reference.replace([',', ' '], "_"))
}

/// On SIGINT/SIGTERM/SIGHUP, detach the mount so the FUSE session ends and the
/// server exits through its normal path (removing its record).
fn unmount_on_signal(dir: PathBuf) {
    // SAFETY: plain signal-mask calls on a zeroed sigset; done before the FUSE
    // worker threads start, so they inherit the mask and only the waiter gets signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || {
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            eprintln!("imgfs: signal {sig}, unmounting {}", dir.display());
            let _ = super::umount::detach(&dir);
        });
    }
}

fn list(ctx: &Context) -> Result<()> {
    let (live, _dead) = ctx.store.mounts()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<40} {:<14} {:<40} PID", "IMAGE", "IMAGE ID", "MOUNTPOINT")?;
    for m in live {
        writeln!(out, "{:<40} {:<14} {:<40} {}", m.reference, m.image.short(), m.mountpoint.display(), m.pid)?;
    }
    Ok(())
}
