//! `imgfs rm` (alias `rmi`): untag images and delete those no name is left to, as
//! `docker rmi` does, printing what went. What may be removed is the store's decision
//! (`store::remove`); a deleted image's blobs go in the sweep that follows, so a blob
//! another image shares stays.

use super::Context;
use crate::store::remove::Outcome;
use anyhow::{bail, Result};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove an image even when several tags refer to it
    #[arg(short, long)]
    pub force: bool,
    /// Images to untag or remove (reference or ID)
    #[arg(required = true, value_name = "REF|ID")]
    pub images: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    // Like docker, go on with the other names when one fails, and fail at the end.
    let mut errors = Vec::new();
    let mut out = std::io::stdout().lock();
    for name in &args.images {
        match ctx.store.remove_image(name, args.force) {
            Ok(Outcome::Untagged(r)) => writeln!(out, "Untagged: {r}")?,
            Ok(Outcome::Deleted(d)) => {
                for r in &d.names {
                    writeln!(out, "Untagged: {r}")?;
                }
                let sweep = ctx.store.collect_garbage()?;
                for blob in d.deleted_blobs(&sweep) {
                    writeln!(out, "Deleted: {blob}")?;
                }
            }
            Err(e) => errors.push(crate::log::Chain(&e).to_string()),
        }
        out.flush()?;
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}
