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
    /// The image index (a multi-arch image's list of manifests) the manifest was chosen
    /// from, if it came from one. (Records written before the field was named so say
    /// `index`.)
    #[serde(default, alias = "index")]
    pub image_index: Option<Digest>,
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
    /// The other manifests the image is known by: its config pushed with other layer
    /// blobs (gzip in one repository, zstd in another) or found in another repository,
    /// each with the repository its layers come from. Their blobs are kept as the main
    /// manifest's are while the image has a record; a name picks its own
    /// (`known_as`). Records written before imgfs kept them have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_manifests: Vec<ManifestRecord>,
}

/// One manifest an image is known by: the image's config with these layer blobs, in
/// that repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub manifest: Digest,
    pub manifest_media_type: String,
    /// The image index (a multi-arch image's list of manifests) the manifest was chosen
    /// from, if it came from one. (Records written before the field was named so say
    /// `index`.)
    #[serde(default, alias = "index")]
    pub image_index: Option<Digest>,
    pub layers: Vec<Descriptor>,
    /// `registry/repository` (or the local source) the layers are fetched from.
    pub source: String,
}

impl ManifestRecord {
    /// The digest a digest reference names: the index of a multi-arch image, else the
    /// manifest.
    pub fn top(&self) -> &Digest {
        self.image_index.as_ref().unwrap_or(&self.manifest)
    }

    /// Every blob the manifest needs: itself, its index, its layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.manifest).chain(self.image_index.as_ref()).chain(self.layers.iter().map(|l| &l.digest))
    }
}

impl ImageRecord {
    /// The main manifest: the one the image was first recorded with.
    fn main_manifest(&self) -> ManifestRecord {
        ManifestRecord {
            manifest: self.manifest.clone(),
            manifest_media_type: self.manifest_media_type.clone(),
            image_index: self.image_index.clone(),
            layers: self.layers.clone(),
            source: self.source.clone(),
        }
    }

    /// Every manifest the image is known by, the main one first.
    pub fn manifests(&self) -> Vec<ManifestRecord> {
        std::iter::once(self.main_manifest()).chain(self.other_manifests.iter().cloned()).collect()
    }

    /// Remember that the image is also known by `other`'s main manifest, unless that
    /// manifest from that repository is one of its own already.
    pub fn add_manifest(&mut self, other: &ImageRecord) {
        let new = other.main_manifest();
        let known = |m: &ManifestRecord| {
            m.manifest == new.manifest && m.image_index == new.image_index && m.source == new.source
        };
        if other.id == self.id && !self.manifests().iter().any(known) {
            self.other_manifests.push(new);
        }
    }

    /// Forget the other manifest `repo_digest` (`registry/repo@sha256:…`) named: no
    /// name is left for it. The main manifest stays while the record does.
    pub fn forget_manifest(&mut self, repo_digest: &str) {
        self.other_manifests.retain(|m| format!("{}@{}", m.source, m.top()) != repo_digest);
    }

    /// The image as `name` knows it: with the manifest from `name`'s repository (the
    /// one with `name`'s digest, for a digest reference) as its main one, when the
    /// image has such a manifest; as it is otherwise (an ID, a name from a repository
    /// the image was not fetched from).
    pub fn known_as(&self, name: &str) -> ImageRecord {
        let Ok(r) = crate::reference::Reference::parse(name) else { return self.clone() };
        let repo = r.name();
        let fits = |m: &ManifestRecord| m.source == repo && r.digest.as_ref().is_none_or(|d| m.top() == d);
        if fits(&self.main_manifest()) {
            return self.clone();
        }
        let Some(i) = self.other_manifests.iter().position(fits) else { return self.clone() };
        let mut out = self.clone();
        let chosen = out.other_manifests.remove(i);
        out.other_manifests.insert(0, self.main_manifest());
        out.manifest = chosen.manifest;
        out.manifest_media_type = chosen.manifest_media_type;
        out.image_index = chosen.image_index;
        out.layers = chosen.layers;
        out.source = chosen.source;
        out
    }
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
        let _lock = FileLock::exclusive(&self.db_lock_path())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(manifest: &[u8], source: &str) -> ImageRecord {
        let layer = Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            digest: Digest::of(&[manifest, b"layer"].concat()),
            size: 1,
            platform: None,
            annotations: None,
        };
        ImageRecord {
            id: Digest::of(b"config"),
            manifest: Digest::of(manifest),
            manifest_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            image_index: None,
            config: Descriptor { digest: Digest::of(b"config"), ..layer.clone() },
            layers: vec![layer],
            source: source.into(),
            repo_digests: vec![format!("{source}@{}", Digest::of(manifest))],
            pinned: Vec::new(),
            added: 0,
            other_manifests: Vec::new(),
        }
    }

    #[test]
    fn a_name_picks_the_manifest_of_its_repository_and_a_removed_digest_forgets_it() {
        let mut rec = record(b"zstd", "reg.lan/r-zstd");
        let gzip = record(b"gzip", "reg.lan/r");
        rec.add_manifest(&gzip);
        rec.add_manifest(&gzip); // known already: nothing changes
        rec.add_manifest(&rec.clone());
        assert_eq!(rec.manifests().len(), 2);
        assert_eq!(rec.known_as("reg.lan/r:apps").manifest, gzip.manifest);
        assert_eq!(rec.known_as("reg.lan/r:apps").layers, gzip.layers);
        assert_eq!(rec.known_as("reg.lan/r:apps").manifests().len(), 2);
        assert_eq!(rec.known_as(&format!("reg.lan/r@{}", gzip.manifest)).source, "reg.lan/r");
        assert_eq!(rec.known_as("reg.lan/r-zstd:apps").manifest, rec.manifest);
        assert_eq!(rec.known_as("reg.lan/other:1").manifest, rec.manifest);
        assert_eq!(rec.known_as(rec.id.as_str()).manifest, rec.manifest);
        rec.forget_manifest(&format!("reg.lan/r@{}", gzip.manifest));
        assert_eq!(rec.manifests().len(), 1);
        // An old record (no other_manifests key) still reads, and is written as before.
        let json = serde_json::to_value(&rec).unwrap();
        assert!(json.get("other_manifests").is_none());
        let back: ImageRecord = serde_json::from_value(json).unwrap();
        assert!(back.other_manifests.is_empty());
    }

    #[test]
    fn a_record_written_before_image_index_was_named_so_reads_its_index() {
        let mut old = serde_json::to_value(record(b"m", "reg.lan/r")).unwrap();
        let index = Digest::of(b"index");
        let fields = old.as_object_mut().unwrap();
        fields.remove("image_index");
        fields.insert("index".into(), serde_json::json!(index));
        let back: ImageRecord = serde_json::from_value(old).unwrap();
        assert_eq!(back.image_index, Some(index));
    }
}
