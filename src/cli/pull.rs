//! `imgfs pull`: bring an image (or every tag of a repository) into the store,
//! printing progress the way `docker pull` does.

use super::Context;
use crate::fetch;
use crate::image::Platform;
use crate::local_source::{self, LocalRef};
use crate::reference::Reference;
use crate::registry::Client;
use anyhow::{bail, Context as _, Result};
use std::io::Write;
use std::sync::Arc;

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
    // An empty value (`DOCKER_DEFAULT_PLATFORM=`) means no platform, as in docker.
    let platform = args
        .platform
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(Platform::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if let Some(local) = LocalRef::parse(&args.reference) {
        if args.all_tags {
            bail!("--all-tags takes a registry repository, not {}", args.reference);
        }
        return pull_local(ctx, &local?, platform.as_ref(), args.quiet);
    }
    let r = Reference::parse(&args.reference).map_err(anyhow::Error::msg)?;
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
    // Progress lines: if nobody reads them any more (`imgfs pull … | head -1`), the
    // pull still completes; only the final line's write failure ends the command.
    let say = |s: String| {
        if !quiet {
            let _ = writeln!(std::io::stdout(), "{s}");
        }
    };
    say(format!("{}: Pulling from {}", r.tag.as_deref().unwrap_or(&r.manifest_reference()), r.familiar_name()));
    let resolved = fetch::resolve(&client, store, r, platform)?;
    let layers = &resolved.record.layers;
    let missing: Vec<usize> = (0..layers.len()).filter(|&i| !store.has_blob(&layers[i].digest)).collect();
    for (i, l) in layers.iter().enumerate() {
        if !missing.contains(&i) {
            say(format!("{}: Already exists", l.digest.short()));
        }
    }
    // Fetch and index in parallel, a thread per core taking layers off a shared queue.
    // A stored layer without a current index is indexed too (checked against the
    // config's diff_id on the way), so a later mount starts with nothing to parse.
    let client_fn = || -> Result<Arc<Client>> { Ok(Arc::clone(&client)) };
    let queue = std::sync::Mutex::new(0..layers.len());
    let errors = std::sync::Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(layers.len());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let Some(i) = queue.lock().unwrap().next() else { break };
                let l = &layers[i];
                let diff_id = &resolved.config.rootfs.diff_ids[i];
                match fetch::prepare_layer(&client_fn, store, &resolved.record.source, l, diff_id) {
                    Ok(_) if missing.contains(&i) => say(format!("{}: Pull complete", l.digest.short())),
                    Ok(_) => {}
                    Err(e) => errors.lock().unwrap().push(e),
                }
            });
        }
    });
    if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
        return Err(e);
    }
    // Up to date: the name already pointed at this very image before this pull.
    let db = store.db()?;
    let up_to_date = match &r.tag {
        Some(t) => db.tags.get(&format!("{}:{t}", r.name())) == Some(&resolved.record.id),
        None => db
            .images
            .get(&resolved.record.id)
            .is_some_and(|i| i.pinned.iter().any(|p| p.ends_with(resolved.top_digest.as_str()))),
    };
    fetch::register(store, &resolved, r)?;
    say(format!("Digest: {}", resolved.top_digest));
    let shown = r.familiar();
    if up_to_date {
        say(format!("Status: Image is up to date for {shown}"));
    } else {
        say(format!("Status: Downloaded newer image for {shown}"));
    }
    writeln!(std::io::stdout(), "{shown}")?;
    Ok(())
}

/// Pull from an OCI layout or an archive: the same checks and store as a registry
/// pull, the blobs copied from the files (verified) instead of downloaded.
fn pull_local(ctx: &Context, r: &LocalRef, platform: Option<&Platform>, quiet: bool) -> Result<()> {
    let store = &ctx.store;
    let say = |s: String| {
        if !quiet {
            let _ = writeln!(std::io::stdout(), "{s}");
        }
    };
    let image = local_source::resolve(r, platform)?;
    let resolved =
        fetch::stored(store, image.record.clone(), image.config.clone(), image.top_digest.clone(), &image.blobs)?;
    let no_registry = || -> Result<Arc<Client>> { bail!("{r} is not a registry") };
    for (l, diff_id) in resolved.record.layers.iter().zip(&resolved.config.rootfs.diff_ids) {
        let had = store.has_blob(&l.digest);
        if !had {
            image.copy_blob(store, l)?;
        }
        // The blob is in the store now: this indexes it (checking its diff_id) and
        // never asks a registry.
        fetch::prepare_layer(&no_registry, store, &resolved.record.source, l, diff_id)?;
        say(format!("{}: {}", l.digest.short(), if had { "Already exists" } else { "Pull complete" }));
    }
    fetch::register_names(store, &resolved, &image.names, |_| Ok(()))?;
    say(format!("Digest: {}", resolved.top_digest));
    // The image's name, or its ID when the source gave it none (as podman prints).
    let shown = image.names.first().map(|n| crate::reference::familiar_ref(n));
    writeln!(std::io::stdout(), "{}", shown.unwrap_or_else(|| resolved.record.id.to_string()))?;
    Ok(())
}
