//! What may be deleted from the store, decided under the records lock: untagging and
//! deleting an image by one of its names (`imgfs rm`, as `docker rmi` decides), and
//! choosing which images a prune deletes (`imgfs prune`).
//!
//! Removing a tag (or a digest reference) only untags while the image keeps another
//! tag or pinned digest; removing the last one deletes the image. Removing by ID
//! deletes the image and all its names, but only when forced if several tags or
//! repositories name it. An image a live mount uses is never deleted, forced or not:
//! mount records are read under the same records lock the deletion happens under,
//! where a mount server records itself after checking its image is there, so a mount
//! starting meanwhile is either seen or finds its image gone and fails.
//!
//! Deleting an image removes its record only; the blobs go in the sweep that follows
//! (`Store::collect_garbage`), so a blob another image shares stays.

use super::db::{Db, ImageRecord, LocalName};
use super::gc::Sweep;
use super::mounts::MountRecord;
use super::Store;
use crate::digest::Digest;
use crate::reference::familiar_ref;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// Why an image may not be removed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A live mount (or one starting) uses the image.
    #[error("image {name} is in use by the mount at {} (pid {pid})", mountpoint.display())]
    Mounted { name: String, mountpoint: PathBuf, pid: u32 },
    /// Deleting by ID an image that several tags or repositories name needs force.
    #[error("conflict: unable to delete {id} (must be forced) - image is referenced in multiple repositories")]
    MustForce { id: String },
    /// The records lost the image between finding and removing it, under the same
    /// lock: a bug, not something a user can cause.
    #[error("image {0} has no record")]
    NoRecord(Digest),
    /// Reading or writing the records failed.
    #[error(transparent)]
    Store(#[from] super::Error),
}

/// What removing one name did.
pub enum Outcome {
    Untagged(String),
    Deleted(Box<Deletion>),
}

/// An image deleted from the records, with the names it had (familiar form).
pub struct Deletion {
    pub record: ImageRecord,
    pub names: Vec<String>,
}

/// An image a prune selected but left because a mount uses it.
pub struct Spared {
    pub id: Digest,
    /// Its tags, familiar form.
    pub names: Vec<String>,
    pub mount: MountRecord,
}

impl Store {
    /// Untag `name` (a reference or an image ID), deleting the image from the records
    /// when no name is left to it, or when `name` is its ID (`force` when several tags
    /// or repositories name it).
    pub fn remove_image(&self, name: &str, force: bool) -> Result<Outcome, Error> {
        self.update_db(|db| self.decide_removal(db, name, force))
    }

    fn decide_removal(&self, db: &mut Db, name: &str, force: bool) -> Result<Outcome, Error> {
        let (id, how) = db.find(name)?;
        let img = db.images.get(&id).ok_or_else(|| Error::NoRecord(id.clone()))?;
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
                    self.refuse_if_mounted(name, &id)?;
                    return Ok(Outcome::Deleted(Box::new(
                        delete_image(db, &id).ok_or_else(|| Error::NoRecord(id.clone()))?,
                    )));
                }
                if is_tag {
                    db.tags.remove(&key);
                } else if let Some(img) = db.images.get_mut(&id) {
                    img.pinned.retain(|p| *p != key);
                    img.repo_digests.retain(|p| *p != key);
                    img.forget_manifest(&key);
                }
                Ok(Outcome::Untagged(familiar_ref(&key)))
            }
            LocalName::Id(_) => {
                self.refuse_if_mounted(name, &id)?;
                // Docker deletes by ID without -f only when one tag at most, all in one
                // repository, names the image.
                let repos: HashSet<&str> = tags
                    .iter()
                    .filter_map(|t| t.rsplit_once(':').map(|(n, _)| n))
                    .chain(img.pinned.iter().filter_map(|p| p.split_once('@').map(|(n, _)| n)))
                    .collect();
                if !force && (tags.len() > 1 || repos.len() > 1) {
                    return Err(Error::MustForce { id: id.short().to_string() });
                }
                Ok(Outcome::Deleted(Box::new(delete_image(db, &id).ok_or_else(|| Error::NoRecord(id.clone()))?)))
            }
        }
    }

    /// An image used by a live mount must stay, whatever `-f` says: the mount reads its
    /// blobs.
    fn refuse_if_mounted(&self, name: &str, id: &Digest) -> Result<(), Error> {
        if let Some(m) = self.mounts_of(id)?.first() {
            return Err(Error::Mounted { name: name.to_string(), mountpoint: m.mountpoint.clone(), pid: m.pid });
        }
        Ok(())
    }

    /// Delete from the records the images a prune selects among `candidates`: the
    /// dangling ones (every one with `all`) that `selects` accepts, except those a
    /// mount uses, which are returned as spared. An image that left the records since
    /// the candidates were read is passed over.
    pub fn prune_images<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a Digest>,
        all: bool,
        selects: impl Fn(&Digest) -> bool,
    ) -> Result<(Vec<Deletion>, Vec<Spared>), Error> {
        self.update_db(|db| -> Result<_, Error> {
            let mounted: HashMap<_, _> = self.mounts()?.0.into_iter().map(|m| (m.image.clone(), m)).collect();
            let mut deleted = Vec::new();
            let mut spared = Vec::new();
            for id in candidates {
                let Some(rec) = db.images.get(id) else { continue };
                if (!all && !db.is_dangling(rec)) || !selects(id) {
                    continue;
                }
                if let Some(m) = mounted.get(id) {
                    let names = db.tags_of(id).iter().map(|t| familiar_ref(t)).collect();
                    spared.push(Spared { id: id.clone(), names, mount: m.clone() });
                    continue;
                }
                deleted.extend(delete_image(db, id));
            }
            Ok((deleted, spared))
        })
    }
}

/// Remove image `id` and every name that refers to it from the records (None, and
/// nothing changed, if it has no record).
fn delete_image(db: &mut Db, id: &Digest) -> Option<Deletion> {
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

impl Deletion {
    /// What to report as deleted for the removed image: its ID, then those of its
    /// manifest, index and layer blobs that the sweep removed (a blob another image
    /// still uses was kept, and other swept leftovers are not this image's).
    pub fn deleted_blobs(&self, sweep: &Sweep) -> Vec<Digest> {
        let rec = &self.record;
        let swept: HashSet<&Digest> = sweep.blobs.iter().collect();
        let mut out = vec![rec.id.clone()];
        for m in rec.manifests() {
            for d in m.blobs() {
                if swept.contains(d) && !out.contains(d) {
                    out.push(d.clone());
                }
            }
        }
        out
    }
}
