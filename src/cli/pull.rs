//! `imgfs pull`: bring an image (or every tag of a repository) into the store,
//! showing progress on stderr the way `docker pull` does (a live line per layer on a
//! terminal), and printing the image's reference on stdout.

use super::Context;
use crate::image::Platform;
use crate::layer::ingest::LayerProgress;
use crate::layer_source::ImageLayers;
use crate::local_source::{self, LocalRef};
use crate::reference::Reference;
use crate::register;
use anyhow::{bail, Context as _, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Platform to pull from a multi-arch image (OS/ARCH[/VARIANT])
    // Docker's variable for the default platform; the flag wins over it.
    #[arg(long, env = "DOCKER_DEFAULT_PLATFORM")]
    pub platform: Option<String>,
    /// Pull every tag of the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// Only print the image reference
    #[arg(short, long)]
    pub quiet: bool,
    /// Image reference ([registry/]name[:tag][@sha256:…]), or the repository with -a
    #[arg(value_name = "REF")]
    pub reference: String,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    if Display::live(args.quiet) {
        // Before the HTTP client starts its thread: see `close_display_on_signals`.
        close_display_on_signals();
    }
    // An empty value (`DOCKER_DEFAULT_PLATFORM=`) means no platform, as in docker.
    let platform = args.platform.as_deref().filter(|p| !p.is_empty()).map(Platform::parse).transpose()?;
    if let Some(local) = LocalRef::parse(&args.reference) {
        if args.all_tags {
            bail!("--all-tags takes a registry repository, not {}", args.reference);
        }
        return pull_local(ctx, &local?, platform.as_ref(), args.quiet);
    }
    let r = Reference::parse(&args.reference)?;
    if args.all_tags {
        if r.digest.is_some() || args.reference.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            bail!("tag can't be used with --all-tags: {}", args.reference);
        }
        let client = ctx.client()?;
        let tags = client
            .list_tags(&r.registry, &r.repository)
            .with_context(|| format!("cannot list tags of {}", r.name()))?;
        if tags.is_empty() {
            bail!("repository {} has no tags", r.name());
        }
        for t in tags {
            pull_one(ctx, &r.with_tag(&t), platform.as_ref(), args.quiet)?;
        }
        return Ok(());
    }
    pull_one(ctx, &r, platform.as_ref(), args.quiet)
}

fn pull_one(ctx: &Context, r: &Reference, platform: Option<&Platform>, quiet: bool) -> Result<()> {
    let client = ctx.client()?;
    let store = &ctx.store;
    let display = Display::new(quiet);
    display.say(&format!(
        "{}: Pulling from {}",
        r.tag.as_deref().unwrap_or(&r.manifest_reference()),
        r.familiar_name()
    ));
    let resolved = register::resolve(&client, store, r, platform)?;
    let layers = &resolved.record.layers;
    let missing: Vec<usize> = (0..layers.len()).filter(|&i| !store.has_blob(&layers[i].digest)).collect();
    // One line per layer, in the manifest's order, as docker shows them.
    let lines: Vec<LayerLine> =
        layers.iter().enumerate().map(|(i, l)| display.layer(l.digest.short(), missing.contains(&i))).collect();
    // Fetch and index in parallel, a thread per core taking layers off a shared queue.
    // A stored layer without a current index is indexed too (checked against the
    // config's diff_id on the way), so a later mount starts with nothing to parse.
    let sourcing = ImageLayers::new(store.clone(), ctx.lazy_client(), &resolved.record, &resolved.config, "")?;
    let queue = std::sync::Mutex::new(0..layers.len());
    let errors = std::sync::Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(layers.len());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let Some(i) = queue.lock().unwrap().next() else { break };
                match sourcing.prepare(i, &lines[i]) {
                    Ok(()) => lines[i].complete(),
                    Err(e) => {
                        lines[i].failed();
                        errors.lock().unwrap().push(e);
                    }
                }
            });
        }
    });
    display.done();
    if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
        return Err(e.into());
    }
    // Up to date: the name already pointed at this very image before this pull, and
    // nothing had to be fetched for it.
    let db = store.db()?;
    let up_to_date = missing.is_empty()
        && match &r.tag {
            Some(t) => db.tags.get(&format!("{}:{t}", r.name())) == Some(&resolved.record.id),
            None => db
                .images
                .get(&resolved.record.id)
                .is_some_and(|i| i.pinned.iter().any(|p| p.ends_with(resolved.top_digest.as_str()))),
        };
    register::register(store, &resolved, r)?;
    display.say(&format!("Digest: {}", resolved.top_digest));
    let shown = r.familiar();
    if up_to_date {
        display.say(&format!("Status: Image is up to date for {shown}"));
    } else {
        display.say(&format!("Status: Downloaded newer image for {shown}"));
    }
    // The one result: the reference, alone on stdout (what `docker pull -q` prints).
    writeln!(std::io::stdout(), "{shown}")?;
    Ok(())
}

/// The layer lines on the terminal, while a pull draws them: what a signal must close.
static LIVE: Mutex<Option<(MultiProgress, Vec<ProgressBar>)>> = Mutex::new(None);

/// Ctrl-C (or SIGTERM, SIGHUP) while a pull draws its layer lines: the lines are
/// written once more, plain (an unfinished layer's as `Interrupted`), each ending its
/// line, and the process exits with 128 + the signal. Killed mid-draw, it would leave
/// the cursor after the last line's padding to the terminal's width. The signals are
/// blocked here and waited for on a thread of their own; threads inherit the mask, so
/// this runs before any other thread starts (the HTTP client's runtime among them).
/// A signal the process was started with ignored stays ignored.
fn close_display_on_signals() {
    // SAFETY: signal-set calls on a zeroed sigset_t, which sigemptyset initialises;
    // sigaction with a null new action only reads the current one. (libc's, not
    // rustix's: see server.rs on signals.)
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
        if let Some((multi, bars)) = LIVE.lock().unwrap_or_else(PoisonError::into_inner).take() {
            // suspend clears the lines and keeps every other thread from drawing
            // while the plain ones are written; the process ends inside it.
            multi.suspend(|| {
                let mut err = std::io::stderr().lock();
                for bar in &bars {
                    let state = if bar.is_finished() { bar.message() } else { "Interrupted".to_string() };
                    let _ = writeln!(err, "{}: {state}", bar.prefix());
                }
                let _ = err.flush();
                std::process::exit(128 + sig)
            });
        }
        std::process::exit(128 + sig);
    });
    if spawned.is_err() {
        // No thread to wait for them: the signals keep their default action.
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

/// Pull from an OCI layout or an archive: the same checks, store and lines as a
/// registry pull, the blobs copied from the files (verified) instead of downloaded.
fn pull_local(ctx: &Context, r: &LocalRef, platform: Option<&Platform>, quiet: bool) -> Result<()> {
    let store = &ctx.store;
    let display = Display::new(quiet);
    let image = local_source::resolve(r, platform)?;
    let resolved =
        register::stored(store, image.record.clone(), image.config.clone(), image.top_digest.clone(), &image.blobs)?;
    let sourcing = ImageLayers::new(store.clone(), ctx.lazy_client(), &resolved.record, &resolved.config, "")?;
    for (i, l) in resolved.record.layers.iter().enumerate() {
        let line = display.layer(l.digest.short(), !store.has_blob(&l.digest));
        let copied = if store.has_blob(&l.digest) { Ok(()) } else { image.copy_blob(store, l).map_err(Into::into) };
        // The blob is in the store now: this indexes it (checking its diff_id) and
        // never asks a registry.
        match copied.and_then(|()| Ok(sourcing.prepare(i, &line)?)) {
            Ok(()) => line.complete(),
            Err(e) => {
                line.failed();
                return Err(e);
            }
        }
    }
    display.done();
    register::register_names(store, &resolved, &image.names, |_| Ok::<_, anyhow::Error>(()))?;
    display.say(&format!("Digest: {}", resolved.top_digest));
    // The one result: the image's name, or its ID when the source gave it none (as
    // podman prints).
    let shown = image.names.first().map(|n| crate::reference::familiar_ref(n));
    writeln!(std::io::stdout(), "{}", shown.unwrap_or_else(|| resolved.record.id.to_string()))?;
    Ok(())
}

/// How a pull shows what it does, on stderr: docker's lines, live, when stderr is a
/// terminal; nothing with `-q` or when stderr is a pipe or file, so that captured
/// output holds no escape codes and a failed pull's stderr is its one error line.
enum Display {
    Quiet,
    Bars(MultiProgress),
}

impl Display {
    /// Whether a pull draws live lines: on a terminal, without -q.
    fn live(quiet: bool) -> bool {
        !quiet && std::io::stderr().is_terminal()
    }

    fn new(quiet: bool) -> Display {
        if Display::live(quiet) {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            *LIVE.lock().unwrap_or_else(PoisonError::into_inner) = Some((multi.clone(), Vec::new()));
            Display::Bars(multi)
        } else {
            Display::Quiet
        }
    }

    /// The layer lines are all final: a signal has nothing left to close.
    fn done(&self) {
        LIVE.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// A line of its own: called before the layer lines exist and after they have all
    /// ended, so it never lands inside a bar being drawn.
    fn say(&self, line: &str) {
        if let Display::Bars(_) = self {
            // Nobody reading stderr any more is no reason to fail the pull.
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }

    /// The line for one layer: `Waiting` if it is to be fetched, else `Already exists`.
    fn layer(&self, short: &str, missing: bool) -> LayerLine {
        let bar = match self {
            Display::Quiet => None,
            Display::Bars(m) => {
                let bar = m.add(ProgressBar::new(0).with_style(plain_style()).with_prefix(short.to_string()));
                if missing {
                    bar.set_message("Waiting");
                } else {
                    bar.finish_with_message("Already exists");
                }
                if let Some((_, bars)) = LIVE.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                    bars.push(bar.clone());
                }
                Some(bar)
            }
        };
        LayerLine { bar, missing }
    }
}

fn plain_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}: {msg}").expect("a valid template")
}

/// One layer's line; the fetch reports to it through `LayerProgress`.
struct LayerLine {
    bar: Option<ProgressBar>,
    /// Fetched by this pull (not `Already exists`).
    missing: bool,
}

impl LayerLine {
    fn complete(&self) {
        if let Some(bar) = &self.bar {
            if self.missing {
                bar.disable_steady_tick();
                bar.set_style(plain_style());
                bar.finish_with_message("Pull complete");
            }
        }
    }

    fn failed(&self) {
        if let Some(bar) = &self.bar {
            bar.disable_steady_tick();
            bar.set_style(plain_style());
            bar.abandon_with_message("Failed");
        }
    }
}

impl LayerProgress for LayerLine {
    fn downloading(&self, done: u64, total: u64) {
        let Some(bar) = &self.bar else { return };
        if bar.length() != Some(total) {
            // The first bytes: from `Waiting` to a bar.
            bar.set_style(
                ProgressStyle::with_template("{prefix}: {msg} [{bar:40}] {decimal_bytes}/{decimal_total_bytes}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_message("Downloading");
            bar.set_length(total);
        }
        bar.set_position(done);
    }

    fn verifying(&self) {
        let Some(bar) = &self.bar else { return };
        // Indexing can trail the download by seconds: a spinner shows it is alive.
        bar.set_style(ProgressStyle::with_template("{prefix}: {msg} {spinner}").expect("a valid template"));
        bar.set_message(if bar.length() == Some(0) { "Indexing" } else { "Verifying and indexing" });
        bar.enable_steady_tick(Duration::from_millis(120));
    }
}
