//! `imgfs prune`: remove dangling images (with `-a`, every image no live mount uses),
//! then sweep the blobs nothing refers to any more and stale temp files, and empty the
//! cache of spans fetched by Range (`store::cache`), printing what
//! went as `docker image prune` does. The filters are `filter::PruneFilter`'s and what
//! may go is the store's decision (`store::remove`). It asks first unless `-f`; the
//! answer is read from stdin even when that is not a terminal, so `echo y | imgfs
//! prune` works and no answer at all means no.

use super::ls::human_size;
use super::Context;
use crate::filter::{candidates, PruneFilter};
use anyhow::Result;
use std::io::{BufRead, IsTerminal, Write};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove all images not used by a mount, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Filter: until=TIMESTAMP|DURATION, label=KEY[=VALUE], label!=KEY[=VALUE]
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let filter = PruneFilter::parse(&args.filters, jiff::Timestamp::now())?;
    if !args.force && !confirm(args.all)? {
        return Ok(());
    }
    let store = &ctx.store;
    // Configs (labels, times) are read before taking the records lock; an image a
    // concurrent pull adds meanwhile is simply not considered.
    let images = candidates(store, &store.db()?);
    // The store decides under its records lock, where it reads the mount records too.
    let (deleted, spared) = store.prune_images(images.keys(), args.all, |id| filter.selects(&images[id]))?;
    for s in &spared {
        let what = if s.names.is_empty() {
            s.id.short().to_string()
        } else {
            format!("{} ({})", s.names.join(", "), s.id.short())
        };
        eprintln!(
            "imgfs: skipping image {what}: in use by the mount at {} (pid {})",
            s.mount.mountpoint.display(),
            s.mount.pid
        );
    }
    // Sweep even when no image went: unreferenced blobs and stale temp files remain
    // from interrupted pulls and earlier removals.
    let sweep = store.collect_garbage()?;
    // Spans fetched by Range are only a cache: a mount using them fetches them again.
    let cache = crate::store::cache::DiskCache::clear(store)?;
    let mut out = std::io::stdout().lock();
    if !deleted.is_empty() {
        writeln!(out, "Deleted Images:")?;
        // A blob several deleted images shared went once: it is listed once, with the
        // first of them.
        let mut listed = std::collections::HashSet::new();
        for d in &deleted {
            for name in &d.names {
                writeln!(out, "untagged: {name}")?;
            }
            for blob in d.deleted_blobs(&sweep) {
                if listed.insert(blob.clone()) {
                    writeln!(out, "deleted: {blob}")?;
                }
            }
        }
        writeln!(out)?;
    }
    writeln!(out, "Total reclaimed space: {}", human_size(sweep.bytes + cache, 4))?;
    Ok(())
}

/// Docker's question; anything but y/yes is no. The prompt goes to stderr, so it never
/// lands in the report on stdout (`imgfs prune > report.txt` still asks on the screen).
fn confirm(all: bool) -> Result<bool> {
    let what = if all { "all images not used by a mount" } else { "all dangling images" };
    let prompt = format!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    eprint!("{prompt}");
    let mut answer = String::new();
    let read = stdin.lock().read_line(&mut answer).unwrap_or(0);
    if !terminal {
        eprintln!("{}", answer.trim_end());
    }
    let answer = answer.trim().to_ascii_lowercase();
    if answer == "y" || answer == "yes" {
        return Ok(true);
    }
    if read == 0 {
        eprintln!("imgfs: nothing pruned: no answer on stdin (use -f to prune without asking)");
    } else {
        eprintln!("imgfs: nothing pruned");
    }
    Ok(false)
}
