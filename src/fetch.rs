//! Getting images into the store: resolve a reference to a manifest (choosing a
//! platform from an index), fetch the config, register the image under its names,
//! and fetch, verify and index layers — all at once for `pull`, one at a time on
//! first use for a mount (`StoreLayers`).

use crate::digest::Digest;
use crate::image::{self, Compression, Descriptor, ImageConfig, ManifestKind, Platform};
use crate::layer::{build, LayerData, LayerIndex};
use crate::reference::Reference;
use crate::registry::Client;
use crate::store::db::ImageRecord;
use crate::store::Store;
use crate::tree::LayerSource;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// A manifest resolved to one image, with its config, not yet registered.
pub struct Resolved {
    pub record: ImageRecord,
    pub config: ImageConfig,
    /// The digest of the top-level manifest (the index for a multi-arch image).
    pub top_digest: Digest,
}

/// Fetch the manifest for `r` (and, from an index, the one for `platform`), then the
/// config; store all three blobs, verified.
pub fn resolve(client: &Client, store: &Store, r: &Reference, platform: Option<&Platform>) -> Result<Resolved> {
    let top = client
        .get_manifest(&r.registry, &r.repository, &r.manifest_reference())
        .with_context(|| format!("cannot get manifest for {r}"))?;
    let _guard = store.writer_guard()?;
    store.put_blob_bytes(&top.digest, &top.body)?;
    let kind = image::parse_manifest(&top.media_type, &top.body).map_err(|e| anyhow::anyhow!("{r}: {e}"))?;
    let (manifest, manifest_digest, media_type, index) = match kind {
        // A single-platform image is checked against --platform below, from its config.
        ManifestKind::Image(m) => (m, top.digest.clone(), top.media_type.clone(), None),
        ManifestKind::Index(idx) => {
            let want = platform.cloned().unwrap_or_else(Platform::host);
            let Some(d) = image::select_platform(&idx.manifests, &want) else {
                let have: Vec<String> =
                    idx.manifests.iter().filter_map(|m| m.platform.as_ref().map(|p| p.to_string())).collect();
                bail!("{r}: no image for platform {want} in the index; it has: {}", have.join(", "));
            };
            let sub = client
                .get_manifest(&r.registry, &r.repository, d.digest.as_str())
                .with_context(|| format!("cannot get the {want} manifest of {r}"))?;
            store.put_blob_bytes(&sub.digest, &sub.body)?;
            match image::parse_manifest(&sub.media_type, &sub.body).map_err(|e| anyhow::anyhow!("{r}: {e}"))? {
                ManifestKind::Image(m) => (m, sub.digest, sub.media_type, Some(top.digest.clone())),
                ManifestKind::Index(_) => bail!("{r}: the index for {want} points at another index"),
            }
        }
    };
    let config_desc = manifest.config.clone();
    if !store.has_blob(&config_desc.digest) {
        download(client, store, &r.name(), &config_desc).with_context(|| format!("cannot get config of {r}"))?;
    }
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(&config_desc.digest)?)
        .with_context(|| format!("{r}: image config {} is not valid", config_desc.digest))?;
    if let (Some(want), None) = (platform, &index) {
        if config.os != want.os || config.architecture != want.architecture {
            bail!("{r}: image is {}/{}, not {want}", config.os, config.architecture);
        }
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!("{r}: config lists {} diff_ids for {} layers", config.rootfs.diff_ids.len(), manifest.layers.len());
    }
    for l in &manifest.layers {
        Compression::of_media_type(&l.media_type).map_err(|e| anyhow::anyhow!("{r}: layer {}: {e}", l.digest))?;
    }
    let record = ImageRecord {
        id: config_desc.digest.clone(),
        manifest: manifest_digest,
        manifest_media_type: media_type,
        index,
        config: config_desc,
        layers: manifest.layers.clone(),
        source: r.name(),
        repo_digests: vec![format!("{}@{}", r.name(), top.digest)],
        pinned: Vec::new(),
        added: chrono::Utc::now().timestamp(),
    };
    Ok(Resolved { record, config, top_digest: top.digest })
}

/// Record the image and point `r`'s tag (or, for a digest reference, a pin) at it.
/// Returns the image the tag pointed at before, if it moved.
pub fn register(store: &Store, resolved: &Resolved, r: &Reference) -> Result<Option<Digest>> {
    store.update_db(|db| {
        let rec = db.images.entry(resolved.record.id.clone()).or_insert_with(|| resolved.record.clone());
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
        Ok(moved)
    })
}

/// Download a layer blob into the store (verified against its digest and size).
pub fn fetch_layer_blob(client: &Client, store: &Store, source: &str, layer: &Descriptor) -> Result<()> {
    let _guard = store.writer_guard()?;
    if store.has_blob(&layer.digest) {
        return Ok(());
    }
    download(client, store, source, layer).with_context(|| format!("cannot fetch layer {} from {source}", layer.digest))
}

/// Stream a blob of `source` (`registry/repository`) into the store.
fn download(client: &Client, store: &Store, source: &str, blob: &Descriptor) -> Result<()> {
    let (registry, repository) = source.split_once('/').context("image source has no repository")?;
    store.put_blob_with(&blob.digest, |file| {
        // download_blob hashes the stream as it writes and answers Ok only when the
        // bytes are exactly `blob.size` long and hash to `blob.digest`.
        client.download_blob(registry, repository, &blob.digest, Some(blob.size), file)?;
        Ok(blob.digest.clone())
    })
}

/// Make sure a layer in the store has its index (and, if compressed, an
/// uncompressed copy); build them if not. Returns the index and the path of the
/// uncompressed tar.
pub fn ensure_layer_index(store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<(LayerIndex, PathBuf)> {
    let compression = Compression::of_media_type(&layer.media_type).map_err(anyhow::Error::msg)?;
    let idx_path = store.index_path(&layer.digest);
    let data_path = match compression {
        Compression::None => store.blob_path(&layer.digest),
        _ => store.layer_tar_path(&layer.digest),
    };
    if idx_path.is_file() && data_path.is_file() {
        if let Ok(idx) = LayerIndex::load(&idx_path) {
            return Ok((idx, data_path));
        }
    }
    let mut blob = std::fs::File::open(store.blob_path(&layer.digest))
        .with_context(|| format!("layer {} is not in the store", layer.digest))?;
    let contents = if compression == Compression::None {
        build::index_layer(&mut blob, compression, Some(diff_id), None)?
    } else {
        let mut contents = None;
        store.write_derived(&data_path, |copy| {
            contents = Some(build::index_layer(&mut blob, compression, Some(diff_id), Some(copy))?);
            Ok(())
        })?;
        contents.expect("set by a successful write")
    };
    let idx = LayerIndex::new(contents);
    store.write_derived(&idx_path, |f| idx.save(f))?;
    Ok((idx, data_path))
}

/// The layers of one image, fetched from its registry and indexed on first use:
/// what a mount's tree reads from. Each layer is loaded once: callers that need a
/// layer being loaded wait for that layer alone, and `is_local` never waits.
pub struct StoreLayers {
    store: Store,
    client: Box<dyn Fn() -> Result<Arc<Client>> + Send + Sync>,
    source: String,
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
    loaded: Vec<OnceLock<(Arc<LayerIndex>, Arc<LayerData>)>>,
    /// Held while a layer loads, so that it is fetched and indexed once.
    loading: Vec<Mutex<()>>,
}

impl StoreLayers {
    pub fn new(
        store: Store,
        client: Box<dyn Fn() -> Result<Arc<Client>> + Send + Sync>,
        record: &ImageRecord,
        config: &ImageConfig,
    ) -> StoreLayers {
        StoreLayers {
            store,
            client,
            source: record.source.clone(),
            layers: record.layers.clone(),
            diff_ids: config.rootfs.diff_ids.clone(),
            loaded: record.layers.iter().map(|_| OnceLock::new()).collect(),
            loading: record.layers.iter().map(|_| Mutex::new(())).collect(),
        }
    }

    fn load(&self, i: usize) -> Result<(Arc<LayerIndex>, Arc<LayerData>)> {
        if let Some(l) = self.loaded[i].get() {
            return Ok(l.clone());
        }
        let _one_loader = self.loading[i].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = self.loaded[i].get() {
            return Ok(l.clone());
        }
        let layer = &self.layers[i];
        if !self.store.has_blob(&layer.digest) {
            eprintln!("imgfs: fetching layer {i} ({}, {} bytes) from {}", layer.digest, layer.size, self.source);
            fetch_layer_blob(&*(self.client)()?, &self.store, &self.source, layer)?;
        }
        let (idx, data_path) = {
            let _guard = self.store.writer_guard()?;
            ensure_layer_index(&self.store, layer, &self.diff_ids[i])?
        };
        let loaded = (Arc::new(idx), Arc::new(LayerData::open(&data_path)?));
        Ok(self.loaded[i].get_or_init(|| loaded).clone())
    }
}

impl LayerSource for StoreLayers {
    fn layer_count(&self) -> usize {
        self.layers.len()
    }
    fn index(&self, i: usize) -> Result<Arc<LayerIndex>> {
        Ok(self.load(i)?.0)
    }
    fn data(&self, i: usize) -> Result<Arc<LayerData>> {
        Ok(self.load(i)?.1)
    }
    fn is_local(&self, i: usize) -> bool {
        self.loaded[i].get().is_some() || self.store.index_path(&self.layers[i].digest).is_file()
    }
}
