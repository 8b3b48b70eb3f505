//! An image found or registered in the store and opened for reading, as the mount server
//! and the mount-free commands (`cat`, `cp`, `files`, `export`, `diff`, `history`,
//! `layers`) both need it: one piece of code for both, so that a command reads exactly
//! the union a mount serves.
//!
//! [`find_or_register`] finds the image in the store (by name or ID, of the platform
//! asked for), else resolves it in its registry or reads it from a local source (`oci:`
//! …) and registers it, layers left for later; a caller's `also` runs under the same
//! records lock (the server holds the image for its mount there). [`open_layers`] makes
//! the image's layer source with Range reads through a published index or eStargz TOC
//! unless told not to. [`OpenedImage`] puts the two together for a command: it also
//! holds the store's GC lease for its whole life, so a `prune` or `rm` meanwhile may
//! drop the image's record but sweeps no blob or index until the command is done (the
//! sweep waits for the lease). A mount keeps its image by its mount record instead,
//! which lasts as long as the mount; a command is short, and a lease needs no record
//! that a killed command could leave behind.

use crate::digest::Digest;
use crate::fs::Fs;
use crate::image::{ImageConfig, Platform};
use crate::layer::spans::SpanCache;
use crate::layer_source::{ImageLayers, IndexLookup, ReportFn};
use crate::local_source::{self, LocalRef};
use crate::reference::Reference;
use crate::register;
use crate::registry::LazyClient;
use crate::store::db::{Db, ImageRecord};
use crate::store::lock::FileLock;
use crate::store::Store;
use crate::tree::{DirAttrs, Tree};
use std::sync::Arc;

/// Why an image could not be found, registered or opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] crate::reference::Error),
    #[error("no such image: {0}")]
    NoRecord(Digest),
    #[error("image config {id} is not valid")]
    Config {
        id: Digest,
        #[source]
        source: serde_json::Error,
    },
    /// Boxed: inline it would make every `Result` here large.
    #[error(transparent)]
    Registry(Box<crate::registry::RegistryError>),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Register(#[from] crate::register::Error),
    #[error(transparent)]
    Layers(#[from] crate::layer_source::Error),
    #[error(transparent)]
    LocalSource(#[from] crate::local_source::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::registry::RegistryError> for Error {
    fn from(e: crate::registry::RegistryError) -> Error {
        Error::Registry(Box::new(e))
    }
}

/// Find `reference` in the store (a local image serves when no platform is asked for,
/// or when it is that platform), else fetch its manifest and config from the registry
/// (`client` is built only then) or read it from its local source, and register it.
/// `also` runs under the records lock that found or registered the image, with its ID.
pub fn find_or_register(
    store: &Store,
    client: &LazyClient,
    reference: &str,
    platform: Option<&Platform>,
    also: impl FnOnce(&Digest) -> Result<(), crate::store::Error>,
) -> Result<(ImageRecord, ImageConfig)> {
    if let Some(local) = LocalRef::parse(reference) {
        return register_local(store, &local?, platform, also);
    }
    let mut also = Some(also);
    let found = store.update_db(|db| -> Result<_> {
        let Ok((id, _)) = db.find(reference) else { return Ok(None) };
        let (record, config) = record_and_config(store, db, id)?;
        if platform.is_some_and(|p| !config.platform().is_some_and(|have| crate::image::serves(&have, p))) {
            return Ok(None);
        }
        if let Some(also) = also.take() {
            also(&record.id)?;
        }
        Ok(Some((record, config)))
    })?;
    if let Some(found) = found {
        return Ok(found);
    }
    let r = Reference::parse(reference)?;
    let resolved = register::resolve(&*client.get()?, store, &r, platform)?;
    let also = also.take().expect("not used while finding");
    register::register_and(store, &resolved, &r, |_| also(&resolved.record.id).map_err(Error::from))?;
    Ok((resolved.record, resolved.config))
}

/// Read an image from an OCI layout or archive and register it. An archive's layer
/// blobs are copied into the store now (a tar member can't be read in place cheaply);
/// a layout's stay where they are.
fn register_local(
    store: &Store,
    local: &LocalRef,
    platform: Option<&Platform>,
    also: impl FnOnce(&Digest) -> Result<(), crate::store::Error>,
) -> Result<(ImageRecord, ImageConfig)> {
    let image = local_source::resolve(local, platform)?;
    let resolved =
        register::stored(store, image.record.clone(), image.config.clone(), image.top_digest.clone(), &image.blobs)?;
    if local.layout_dir().is_none() {
        for l in &resolved.record.layers {
            if !store.has_blob(&l.digest) {
                image.copy_blob(store, l)?;
            }
        }
    }
    register::register_names(store, &resolved, &image.names, |_| also(&resolved.record.id).map_err(Error::from))?;
    Ok((resolved.record, resolved.config))
}

/// An image's record and its config, read from the store.
pub fn record_and_config(store: &Store, db: &Db, id: Digest) -> Result<(ImageRecord, ImageConfig)> {
    let record = db.images.get(&id).cloned().ok_or(Error::NoRecord(id))?;
    let config = serde_json::from_slice(&store.read_blob(&record.id)?)
        .map_err(|source| Error::Config { id: record.id.clone(), source })?;
    Ok((record, config))
}

/// How an image's layers are read.
pub struct Reading {
    /// Memory for decoded data of compressed layers (bytes).
    pub read_cache: u64,
    /// Bound of the disk cache of spans fetched by Range (bytes).
    pub cache_size: u64,
    /// Don't look for a published index (nor read eStargz layers by Range).
    pub no_index: bool,
}

/// The layer source of `record` as `reading` says, reporting each whole-layer fetch
/// through `report`, and what became of the search for a published index.
pub fn open_layers(
    store: &Store,
    client: Arc<LazyClient>,
    record: &ImageRecord,
    config: &ImageConfig,
    reference: &str,
    reading: &Reading,
    report: Box<ReportFn>,
) -> Result<(ImageLayers, IndexLookup)> {
    let mut layers = ImageLayers::new(store.clone(), client, record, config, reference)?
        .with_spans(Arc::new(SpanCache::new(reading.read_cache)))
        .with_report(report);
    let lookup = if reading.no_index {
        IndexLookup::Skipped
    } else {
        // One cache, and so one bound, for every layer read by Range. eStargz layers
        // need no index artifact: their own TOC serves them.
        let cache = Arc::new(crate::store::cache::DiskCache::open(store, reading.cache_size));
        layers.use_range_reads(cache)
    };
    Ok((layers, lookup))
}

/// An image opened for a command: its record and config, its layers, and the union as
/// the filesystem operations a mount serves. The GC lease lives as long as this value.
pub struct OpenedImage {
    pub record: ImageRecord,
    pub config: ImageConfig,
    pub layers: Arc<ImageLayers>,
    pub fs: Fs,
    _lease: FileLock,
}

impl OpenedImage {
    /// Find or register `reference` and open it. Directories get their exact
    /// attributes (a command prints or copies them; there is no kernel to ask again).
    /// A published index that is there but unusable is a warning; none published is
    /// said at debug level only, as it is the common case.
    pub fn open(
        store: &Store,
        client: Arc<LazyClient>,
        reference: &str,
        platform: Option<&Platform>,
        reading: &Reading,
        report: Box<ReportFn>,
    ) -> Result<OpenedImage> {
        let lease = store.writer_guard()?;
        let (record, config) = find_or_register(store, &client, reference, platform, |_| Ok(()))?;
        // An image known by several manifests is read with the one its name refers to.
        let record = record.known_as(reference);
        let (layers, lookup) = open_layers(store, client, &record, &config, reference, reading, report)?;
        match lookup {
            IndexLookup::Skipped => {}
            IndexLookup::Using { index, served } => {
                tracing::debug!("using published index {index}: {served} layers served by range reads")
            }
            IndexLookup::NoneUsable(e) => {
                let none = e
                    .downcast_ref::<crate::referrers::Error>()
                    .is_some_and(|r| matches!(r, crate::referrers::Error::NonePublished { .. }));
                if none {
                    tracing::debug!("no published index: {}", crate::log::Chain(&*e));
                } else {
                    tracing::warn!("no usable published index ({}); layers are fetched whole", crate::log::Chain(&*e));
                }
            }
        }
        let layers = Arc::new(layers);
        let source: Arc<dyn crate::tree::LayerSource> = layers.clone();
        let fs = Fs::new(Tree::new(source, DirAttrs::Exact), record.size());
        Ok(OpenedImage { record, config, layers, fs, _lease: lease })
    }
}
