//! Getting an image into the store and under its names: the manifests and config of an
//! image resolved from its registry (`resolve`) or read from a local source are stored,
//! verified, under a lease against garbage collection that lasts until the record that
//! names them is written; then the image is recorded and its tags or digest pins
//! pointed at it. Its layers are brought in by `layer_source` (all at once for `pull`,
//! on first use for a mount).

use crate::digest::Digest;
use crate::image::{ImageConfig, Platform};
use crate::reference::Reference;
use crate::registry::Client;
use crate::resolve;
use crate::store::db::ImageRecord;
use crate::store::lock::FileLock;
use crate::store::Store;

/// What goes wrong getting an image into the store. The texts are what users see after
/// `imgfs: error:`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Boxed: inline it would make every `Result` here large.
    #[error(transparent)]
    Resolve(Box<resolve::Error>),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<resolve::Error> for Error {
    fn from(e: resolve::Error) -> Error {
        Error::Resolve(Box::new(e))
    }
}

/// A manifest resolved to one image, with its config, not yet registered.
pub struct Resolved {
    pub record: ImageRecord,
    pub config: ImageConfig,
    /// The digest of the top-level manifest (the index for a multi-arch image).
    pub top_digest: Digest,
    /// A lease against garbage collection, taken before the first blob was stored and
    /// held as long as this value lives: the caller keeps it through its layer fetches
    /// and `register`, so no sweep runs between a blob landing and the record that
    /// names it.
    _lease: FileLock,
}

/// Resolve `r` in its registry (`resolve::remote_image`) and only then, everything
/// checked, store its manifests and config, verified. An image that fails a check
/// leaves nothing in the store.
pub fn resolve(client: &Client, store: &Store, r: &Reference, platform: Option<&Platform>) -> Result<Resolved> {
    // A config already in the store is read, not fetched, but kept in memory all the
    // same: until the lease below is taken a GC may sweep it (it can belong to an image
    // just removed), and then it is stored again from here. A damaged copy is fetched.
    let stored_config = |d: &Digest| store.read_blob(d).ok().filter(|body| Digest::of(body) == *d);
    let found = resolve::remote_image(client, r, platform, stored_config)?;
    let lease = store.writer_guard()?;
    store.put_blob_bytes(&found.top.digest, &found.top.body)?;
    if found.from_index {
        store.put_blob_bytes(&found.manifest.digest, &found.manifest.body)?;
    }
    let config_desc = found.parsed.config.clone();
    store.put_blob_bytes(&config_desc.digest, &found.config_body)?;
    let record = ImageRecord {
        id: config_desc.digest.clone(),
        index: found.index_digest().cloned(),
        manifest: found.manifest.digest,
        manifest_media_type: found.manifest.media_type,
        config: config_desc,
        layers: found.parsed.layers,
        source: r.name(),
        repo_digests: vec![format!("{}@{}", r.name(), found.top.digest)],
        pinned: Vec::new(),
        added: jiff::Timestamp::now().as_second(),
        other_manifests: Vec::new(),
    };
    Ok(Resolved { record, config: found.config, top_digest: found.top.digest, _lease: lease })
}

/// Store the manifests and config of an image resolved from somewhere other than a
/// registry (a local source, already checked), under a lease the result keeps.
pub fn stored(
    store: &Store,
    record: ImageRecord,
    config: ImageConfig,
    top_digest: Digest,
    blobs: &[(Digest, Vec<u8>)],
) -> Result<Resolved> {
    let lease = store.writer_guard()?;
    for (d, body) in blobs {
        store.put_blob_bytes(d, body)?;
    }
    Ok(Resolved { record, config, top_digest, _lease: lease })
}

/// Record the image and give it `names` (`registry/repo:tag`, none for an image known
/// by ID only), then `also` under the same records lock, as `register_and` does.
/// `also`'s own error comes back as it is.
/// Returns the images the names pointed at before, where they moved.
pub fn register_names<E: From<Error> + From<crate::store::Error>>(
    store: &Store,
    resolved: &Resolved,
    names: &[String],
    also: impl FnOnce(&crate::store::db::Db) -> Result<(), E>,
) -> Result<Vec<Digest>, E> {
    store.update_db(|db| {
        let rec = db.images.entry(resolved.record.id.clone()).or_insert_with(|| resolved.record.clone());
        rec.add_manifest(&resolved.record);
        let moved = names.iter().filter_map(|n| db.set_tag(n, &resolved.record.id)).collect();
        also(db)?;
        Ok(moved)
    })
}

/// Record the image and point `r`'s tag (or, for a digest reference, a pin) at it.
/// Returns the image the tag pointed at before, if it moved. Still under the lease
/// `resolved` holds.
pub fn register(store: &Store, resolved: &Resolved, r: &Reference) -> Result<Option<Digest>> {
    register_and(store, resolved, r, |_| Ok::<_, Error>(()))
}

/// `register`, then `also` under the same records lock, so that nothing can remove
/// the image in between (a mount records that it holds the image this way).
pub fn register_and<E: From<Error> + From<crate::store::Error>>(
    store: &Store,
    resolved: &Resolved,
    r: &Reference,
    also: impl FnOnce(&crate::store::db::Db) -> Result<(), E>,
) -> Result<Option<Digest>, E> {
    store.update_db(|db| {
        let rec = db.images.entry(resolved.record.id.clone()).or_insert_with(|| resolved.record.clone());
        // The same image under another manifest (other layer blobs, another
        // repository): its blobs are kept as the first one's are.
        rec.add_manifest(&resolved.record);
        for d in &resolved.record.repo_digests {
            if !rec.repo_digests.contains(d) {
                rec.repo_digests.push(d.clone());
            }
        }
        if r.digest.is_some() && r.tag.is_none() {
            let pin = format!("{}@{}", r.name(), resolved.top_digest);
            if !rec.pinned.contains(&pin) {
                rec.pinned.push(pin);
            }
        }
        let moved = match &r.tag {
            Some(t) => db.set_tag(&format!("{}:{t}", r.name()), &resolved.record.id),
            None => None,
        };
        also(db)?;
        Ok(moved)
    })
}
