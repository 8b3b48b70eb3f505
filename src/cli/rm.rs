//! `imgfs rm` (alias `rmi`): untag images and delete those no name is left to, as
//! `docker rmi` does.
//!
//! Removing a tag (or a digest reference) only untags while the image keeps another
//! tag or pinned digest; removing the last one deletes the image. Removing by ID
//! deletes the image and all its names, but only with `-f` when several tags or
//! repositories name it. An image a live mount uses is never deleted, even with `-f`:
//! that is checked under the records lock before anything changes. Deleting an image
//! removes its record first and then sweeps unreferenced blobs, so a blob another image
//! shares stays.

use super::Context;
use crate::digest::Digest;
use crate::reference::familiar_ref;
use crate::store::db::{Db, ImageRecord, LocalName};
use crate::store::gc::Sweep;
use crate::store::Store;
use anyhow::{bail, Context as _, Result};
use std::collections::HashSet;
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

/// What removing one name did.
enum Outcome {
    Untagged(String),
    Deleted(Box<Deletion>),
}

/// An image deleted from the records, with the names it had (familiar form).
pub(crate) struct Deletion {
    pub record: ImageRecord,
    pub names: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    // Like docker, go on with the other names when one fails, and fail at the end.
    let mut errors = Vec::new();
    let mut out = std::io::stdout().lock();
    for name in &args.images {
        match remove(&ctx.store, name, args.force) {
            Ok(Outcome::Untagged(r)) => writeln!(out, "Untagged: {r}")?,
            Ok(Outcome::Deleted(d)) => {
                for r in &d.names {
                    writeln!(out, "Untagged: {r}")?;
                }
                let sweep = ctx.store.collect_garbage()?;
                for blob in deleted_blobs(&d.record, &sweep) {
                    writeln!(out, "Deleted: {blob}")?;
                }
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
        out.flush()?;
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

fn remove(store: &Store, name: &str, force: bool) -> Result<Outcome> {
    store.update_db(|db| {
        let (id, how) = db.find(name)?;
        let img = db.images.get(&id).context("the image was just found in the records")?;
        let tags = db.tags_of(&id);
        match how {
            LocalName::Tag(key) | LocalName::Digest(key) => {
                let is_tag = !key.contains('@');
                let last = if is_tag {
                    tags == [key.clone()] && img.pinned.is_empty()
                } else {
                    tags.is_empty() && img.pinned.iter().all(|p| *p == key)
                };
                if last {
                    refuse_if_mounted(store, name, &id)?;
                    return Ok(Outcome::Deleted(Box::new(delete_image(db, &id).context("the image has no record")?)));
                }
                if is_tag {
                    db.tags.remove(&key);
                } else if let Some(img) = db.images.get_mut(&id) {
                    img.pinned.retain(|p| *p != key);
                    img.repo_digests.retain(|p| *p != key);
                }
                Ok(Outcome::Untagged(familiar_ref(&key)))
            }
            LocalName::Id(_) => {
                refuse_if_mounted(store, name, &id)?;
                // Docker deletes by ID without -f only when one tag at most, all in one
                // repository, names the image.
                let repos: HashSet<&str> = tags
                    .iter()
                    .filter_map(|t| t.rsplit_once(':').map(|(n, _)| n))
                    .chain(img.pinned.iter().filter_map(|p| p.split_once('@').map(|(n, _)| n)))
                    .collect();
                if !force && (tags.len() > 1 || repos.len() > 1) {
                    bail!(
                        "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        id.short()
                    );
                }
                Ok(Outcome::Deleted(Box::new(delete_image(db, &id).context("the image has no record")?)))
            }
        }
    })
}

/// An image used by a live mount must stay, whatever `-f` says: the mount reads its
/// blobs.
pub(crate) fn refuse_if_mounted(store: &Store, name: &str, id: &Digest) -> Result<()> {
    if let Some(m) = store.mounts_of(id)?.first() {
        bail!("image {name} is in use by the mount at {} (pid {})", m.mountpoint.display(), m.pid);
    }
    Ok(())
}

/// Remove image `id` and every name that refers to it from the records (None, and
/// nothing changed, if it has no record).
pub(crate) fn delete_image(db: &mut Db, id: &Digest) -> Option<Deletion> {
    db.images.get(id)?;
    let tags = db.tags_of(id);
    for t in &tags {
        db.tags.remove(t);
    }
    let record = db.images.remove(id)?;
    let mut names: Vec<String> = tags.iter().map(|t| familiar_ref(t)).collect();
    for r in record.pinned.iter().chain(&record.repo_digests) {
        let r = familiar_ref(r);
        if !names.contains(&r) {
            names.push(r);
        }
    }
    Some(Deletion { record, names })
}

/// What to report as deleted for a removed image: its ID, then those of its manifest,
/// index and layer blobs that the sweep removed (a blob another image still uses was
/// kept, and other swept leftovers are not this image's).
pub(crate) fn deleted_blobs(rec: &ImageRecord, sweep: &Sweep) -> Vec<Digest> {
    let swept: HashSet<&Digest> = sweep.blobs.iter().collect();
    let mut out = vec![rec.id.clone()];
    let own = std::iter::once(&rec.manifest).chain(rec.index.as_ref()).chain(rec.layers.iter().map(|l| &l.digest));
    for d in own {
        if swept.contains(d) && !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}
