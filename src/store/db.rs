//! Image records and the references that name them, kept in one small JSON file
//! (`images.json`) that is only ever replaced whole (temp file + rename) under the
//! `db.lock` flock, so concurrent commands see either the old or the new state.
//!
//! An image is identified by its config digest (docker's image ID). A tag
//! (`registry/repo:tag`) points at one image; moving a tag away from an image whose
//! last reference it was leaves that image dangling (`<none>:<none>`), as in docker.

use super::lock::FileLock;
use super::{Error, Result, Store};
use crate::digest::Digest;
use crate::image::Descriptor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest, docker's image ID.
    pub id: Digest,
    /// The image manifest (the platform-specific one for a multi-arch image).
    pub manifest: Digest,
    pub manifest_media_type: String,
    /// The index the manifest was chosen from, if it came from one.
    #[serde(default)]
    pub index: Option<Digest>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// `registry/repository` the image was fetched from; lazy layer fetches go there.
    pub source: String,
    /// `registry/repo@sha256:…` of the top-level manifest, as docker's RepoDigests.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Digest references the user pulled explicitly; they keep the image from
    /// being dangling even without a tag.
    #[serde(default)]
    pub pinned: Vec<String>,
    /// When the image entered the store (seconds since the epoch).
    pub added: i64,
}

impl ImageRecord {
    /// Total size of the blobs that make up the image.
    pub fn size(&self) -> u64 {
        // Sizes come from a manifest, not from bytes received: a hostile one can claim
        // sizes that add up past u64.
        self.layers.iter().fold(self.config.size, |sum, l| sum.saturating_add(l.size))
    }
}

impl ImageRecord {
    /// The image's size unpacked, as podman counts it: the sum of its layers'
    /// uncompressed tar sizes, known once a layer is indexed (`layer_size` says), plus
    /// its config (podman also counts the manifest). A layer not fetched yet (a lazily
    /// mounted image) counts with its compressed size, the best figure known before its
    /// bytes have been seen.
    pub fn unpacked_size(&self, layer_size: impl Fn(&Descriptor) -> Option<u64>) -> u64 {
        // Sizes of layers not fetched come from a manifest, which may claim sizes that
        // add up past u64.
        self.layers.iter().fold(self.config.size, |sum, l| sum.saturating_add(layer_size(l).unwrap_or(l.size)))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Db {
    pub images: BTreeMap<Digest, ImageRecord>,
    /// `registry/repo:tag` → image ID.
    pub tags: BTreeMap<String, Digest>,
}

impl Db {
    pub fn tags_of(&self, id: &Digest) -> Vec<String> {
        self.tags.iter().filter(|(_, v)| *v == id).map(|(k, _)| k.clone()).collect()
    }

    /// No tag and no pinned digest reference.
    pub fn is_dangling(&self, img: &ImageRecord) -> bool {
        img.pinned.is_empty() && !self.tags.values().any(|v| v == &img.id)
    }

    /// Point `tag` at `id`. Returns the image the tag used to point at, if different.
    pub fn set_tag(&mut self, tag: &str, id: &Digest) -> Option<Digest> {
        match self.tags.insert(tag.to_string(), id.clone()) {
            Some(old) if &old != id => Some(old),
            _ => None,
        }
    }
}

impl Store {
    fn db_path(&self) -> std::path::PathBuf {
        self.root().join("images.json")
    }

    /// A snapshot of the records (no lock held afterwards).
    pub fn db(&self) -> Result<Db> {
        let _lock = FileLock::shared(&self.db_lock_path())?;
        self.read_db()
    }

    fn read_db(&self) -> Result<Db> {
        match fs::read(self.db_path()) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| Error::CorruptRecords { path: self.db_path(), source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Db::default()),
            Err(e) => Err(super::io("cannot read store records")(e)),
        }
    }

    /// Run `f` under the records' exclusive lock, reading and writing nothing: for
    /// work that must not interleave with a change of the records (a mount record
    /// removed after any `update_db` that writes one has finished).
    pub fn with_records_lock<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let _lock = FileLock::exclusive(&self.db_lock_path())?;
        Ok(f())
    }

    /// Read, change and write back the records under the exclusive lock. `change`
    /// returning an error, or changing nothing (a caller that only needs the lock, as
    /// a mount recording itself), leaves the file as it was.
    /// `change`'s own error comes back as it is; the store's failures are made into it.
    pub fn update_db<T, E: From<Error>>(&self, change: impl FnOnce(&mut Db) -> Result<T, E>) -> Result<T, E> {
        let _lock = FileLock::exclusive(&self.db_lock_path()).map_err(Error::from)?;
        let mut db = self.read_db()?;
        let before = serde_json::to_vec_pretty(&db).map_err(Error::from)?;
        let out = change(&mut db)?;
        let bytes = serde_json::to_vec_pretty(&db).map_err(Error::from)?;
        if bytes == before {
            return Ok(out);
        }
        let dest = self.db_path();
        self.write_derived(&dest, |f| {
            use std::io::Write;
            f.write_all(&bytes).map_err(Error::from)
        })?;
        Ok(out)
    }
}

/// How a user named a local image.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalName {
    /// A full or abbreviated image ID (`sha256:` optional).
    Id(Digest),
    /// A tag reference, normalised (`registry/repo:tag`).
    Tag(String),
    /// `registry/repo@sha256:…`.
    Digest(String),
}

impl Db {
    /// Resolve what a user typed (`alpine`, `app:1`, `1a2b3c`, `sha256:…`,
    /// `repo@sha256:…`) to a local image, which is in `images` (a tag naming an image
    /// that has no record, in records edited or damaged by hand, is an error, not a
    /// panic later).
    pub fn find(&self, input: &str) -> Result<(Digest, LocalName)> {
        let (id, how) = self.find_name(input)?;
        if !self.images.contains_key(&id) {
            return Err(Error::Inconsistent { input: input.to_string(), id });
        }
        Ok((id, how))
    }

    fn find_name(&self, input: &str) -> Result<(Digest, LocalName)> {
        // An ID prefix of at least 4 hex digits wins over a repository of the same
        // name only when no such tag exists, as in docker.
        let as_ref = crate::reference::Reference::parse(input).ok();
        if let Some(r) = &as_ref {
            if let Some(d) = &r.digest {
                let key = format!("{}@{}", r.name(), d);
                if let Some(img) =
                    self.images.values().find(|i| i.repo_digests.contains(&key) || i.pinned.contains(&key))
                {
                    return Ok((img.id.clone(), LocalName::Digest(key)));
                }
            } else if let Some(t) = &r.tag {
                let key = format!("{}:{}", r.name(), t);
                if let Some(id) = self.tags.get(&key) {
                    return Ok((id.clone(), LocalName::Tag(key)));
                }
            }
        }
        let hex = input.strip_prefix("sha256:").unwrap_or(input);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let hits: Vec<&Digest> = self.images.keys().filter(|d| d.hex().starts_with(&hex)).collect();
            match hits.as_slice() {
                [one] => return Ok(((*one).clone(), LocalName::Id((*one).clone()))),
                [] => {}
                _ => return Err(Error::Ambiguous { input: input.to_string(), count: hits.len() }),
            }
        }
        let why = match as_ref {
            Some(_) => None,
            None => crate::reference::Reference::parse(input).err().map(|e| crate::log::Chain(&e).to_string()),
        };
        Err(Error::NoSuchImage { input: input.to_string(), why })
    }
}
