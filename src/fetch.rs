//! Getting images into the store: resolve a reference to a manifest (choosing a
//! platform from an index), fetch the config, register the image under its names,
//! and fetch, verify and index layers in one streaming pass each — all at once for
//! `pull`, one at a time on first use for a mount (`StoreLayers`).

use crate::digest::Digest;
use crate::image::{self, Compression, Descriptor, ImageConfig, ManifestKind, Platform};
use crate::index_artifact::Spans;
use crate::layer::arriving::Arriving;
use crate::layer::build::{self, Built};
use crate::layer::checkpoints::Format;
use crate::layer::data::BlockSums;
use crate::layer::estargz;
use crate::layer::indexing::IndexingDecoder;
use crate::layer::reframe::FrameWriter;
use crate::layer::remote::Remote;
use crate::layer::spans::SpanCache;
use crate::layer::{Access, IndexFile, LayerData, LayerIndex};
use crate::reference::Reference;
use crate::referrers;
use crate::registry::blob::BlobSink;
use crate::registry::{Client, RegistryError};
use crate::store::cache::DiskCache;
use crate::store::db::ImageRecord;
use crate::store::lock::FileLock;
use crate::store::Store;
use crate::tree::{LayerSource, SourceError};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// What goes wrong getting an image or a layer into the store. The texts are what
/// users see after `imgfs: error:` and in a mount's log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What failed (getting a manifest, indexing a layer…), over its cause.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The image or layer is not what it must be (a manifest, config or record that
    /// doesn't fit), or has nowhere to come from; the text says what.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Layer(#[from] crate::layer::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Error::Context`: `what` failed, because of the cause given.
fn failed<E: Into<Box<dyn std::error::Error + Send + Sync>>>(what: impl Into<String>) -> impl FnOnce(E) -> Error {
    move |e| Error::Context { what: what.into(), source: e.into() }
}

/// Makes the registry client a fetch needs, on first use (the caller's: the CLI's
/// options, or a local image's "no registry").
pub type ClientFn = dyn Fn() -> Result<Arc<Client>> + Send + Sync;

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

/// An image config is JSON of a few KiB (a long history makes it hundreds): a claimed
/// size past this is not an image config, and is not downloaded into memory.
const MAX_CONFIG_SIZE: u64 = 32 << 20;

/// Fetch the manifest for `r` (and, from an index, the one for `platform`), then the
/// config; check them all, and only then store the blobs, verified. An image that
/// fails a check leaves nothing in the store.
pub fn resolve(client: &Client, store: &Store, r: &Reference, platform: Option<&Platform>) -> Result<Resolved> {
    let top = client
        .get_manifest(&r.registry, &r.repository, &r.manifest_reference())
        .map_err(failed(format!("cannot get manifest for {r}")))?;
    let kind = image::parse_manifest(&top.media_type, &top.body).map_err(failed(r.to_string()))?;
    let (manifest, manifest_digest, media_type, index, sub_body) = match kind {
        // A single-platform image is checked against --platform below, from its config.
        ManifestKind::Image(m) => (m, top.digest.clone(), top.media_type.clone(), None, None),
        ManifestKind::Index(idx) => {
            let want = platform.cloned().unwrap_or_else(Platform::host);
            let d = image::platform_manifest(&idx.manifests, &want).map_err(failed(r.to_string()))?;
            let sub = client
                .get_manifest(&r.registry, &r.repository, d.digest.as_str())
                .map_err(failed(format!("cannot get the {want} manifest of {r}")))?;
            match image::parse_manifest(&sub.media_type, &sub.body).map_err(failed(r.to_string()))? {
                ManifestKind::Image(m) => (m, sub.digest, sub.media_type, Some(top.digest.clone()), Some(sub.body)),
                ManifestKind::Index(_) => {
                    return Err(Error::Invalid(format!("{r}: the index for {want} points at another index")))
                }
            }
        }
    };
    let config_desc = manifest.config.clone();
    // A config already in the store is read, not fetched, but kept in memory all the
    // same: until the lease below is taken a GC may sweep it (it can belong to an image
    // just removed), and then it is stored again from here. A damaged copy is fetched.
    let config_body = match store.read_blob(&config_desc.digest) {
        Ok(body) if Digest::of(&body) == config_desc.digest => body,
        _ => {
            if config_desc.size > MAX_CONFIG_SIZE {
                return Err(Error::Invalid(format!(
                    "{r}: image config {} claims {} bytes, more than {MAX_CONFIG_SIZE}",
                    config_desc.digest, config_desc.size
                )));
            }
            let (registry, repository) = (&r.registry, &r.repository);
            let mut body = Vec::new();
            client
                .download_blob(registry, repository, &config_desc.digest, Some(config_desc.size), &mut body)
                .map_err(failed(format!("cannot get config of {r}")))?;
            body
        }
    };
    let config: ImageConfig = serde_json::from_slice(&config_body)
        .map_err(failed(format!("{r}: image config {} is not valid", config_desc.digest)))?;
    if let (Some(want), None) = (platform, &index) {
        if config.os != want.os || config.architecture != want.architecture {
            return Err(Error::Invalid(format!("{r}: image is {}/{}, not {want}", config.os, config.architecture)));
        }
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::Invalid(format!(
            "{r}: config lists {} diff_ids for {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    for l in &manifest.layers {
        Compression::of_media_type(&l.media_type).map_err(failed(format!("{r}: layer {}", l.digest)))?;
    }
    // Everything checks out: store the blobs (each verified against its digest again
    // as it is written) under the lease the caller keeps until `register`.
    let lease = store.writer_guard()?;
    store.put_blob_bytes(&top.digest, &top.body)?;
    if let Some(body) = &sub_body {
        store.put_blob_bytes(&manifest_digest, body)?;
    }
    store.put_blob_bytes(&config_desc.digest, &config_body)?;
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
        added: jiff::Timestamp::now().as_second(),
    };
    Ok(Resolved { record, config, top_digest: top.digest, _lease: lease })
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
        db.images.entry(resolved.record.id.clone()).or_insert_with(|| resolved.record.clone());
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

/// What a layer fetch reports while it runs, for whoever shows it: `pull` draws bars
/// on a terminal, a mount server writes lines to its log. The fetch code only calls
/// these; it never prints. Calls come from the thread doing the fetch.
pub trait LayerProgress: Sync {
    /// `done` of `total` compressed bytes have arrived (back to 0 if the registry sent
    /// the blob again from the start).
    fn downloading(&self, _done: u64, _total: u64) {}
    /// The bytes are all here; the digest, diff_id and index are being finished (or,
    /// for a blob already stored, computed in one pass over it).
    fn verifying(&self) {}
}

/// A layer ready to serve: its table of contents and random access to its data.
pub type LoadedLayer = (Arc<LayerIndex>, Arc<LayerData>);

/// Make a layer of image `source` ready to serve: from its index in the store if it
/// has one; else by indexing the blob in the store, or where it is in the OCI layout
/// `in_place` (checked against its digest on the way, not copied); else by downloading the blob and
/// indexing it on the way, in one pass (digest, decompression, diff_id, table of
/// contents and checkpoints all while the bytes arrive). The blob is kept only if both
/// its digest and its diff_id check out. A process fetching the same blob is waited
/// for, not repeated: one fetcher per blob, through a lock in the store.
// Where the blob may come from (a registry, a layout in place), where it goes, and who
// hears of it: each a separate caller's choice.
#[allow(clippy::too_many_arguments)]
pub fn load_layer(
    client: &dyn Fn() -> Result<Arc<Client>>,
    store: &Store,
    source: &str,
    layer: &Descriptor,
    diff_id: &Digest,
    spans: &Arc<SpanCache>,
    in_place: Option<&Path>,
    progress: &dyn LayerProgress,
) -> Result<LoadedLayer> {
    // One lease against garbage collection for the whole load, from the first byte
    // written to the index that names the blob.
    let _lease = store.writer_guard()?;
    if let Some(l) = open_indexed(store, layer, spans, in_place) {
        return Ok(l);
    }
    let _fetching = store.fetch_lock(&layer.digest)?;
    if let Some(l) = open_indexed(store, layer, spans, in_place) {
        return Ok(l); // another process made it ready while we waited
    }
    let compression = Compression::of_media_type(&layer.media_type)?;
    let (built, copy) = if store.has_blob(&layer.digest) {
        progress.verifying();
        index_local(store, layer, compression, diff_id)?
    } else if let Some(blob) = blob_in_place(layer, in_place) {
        progress.verifying();
        let built = index_in_place(store, &blob, layer, compression, diff_id)?;
        return finish(store, &blob, layer, compression, built, spans)
            .map_err(failed(format!("cannot index layer {}", layer.digest)));
    } else if crate::local_source::LocalRef::parse(source).is_some() {
        // An image read from a layout or archive has no registry to fetch from.
        return Err(Error::Invalid(format!("layer {} is neither in the store nor in {source}", layer.digest)));
    } else {
        let client = client()?;
        match download_and_index(&client, store, source, layer, compression, diff_id, progress)? {
            Some(done) => done,
            // The registry restarted the blob midway; the blob is whole and verified
            // now, so index it from the store.
            None => index_local(store, layer, compression, diff_id)?,
        }
    };
    finish(store, &store.blob_path(&layer.digest), layer, compression, (built, copy), spans)
        .map_err(failed(format!("cannot index layer {}", layer.digest)))
}

/// The layer's blob in an OCI layout a mount reads in place, if it is there.
fn blob_in_place(layer: &Descriptor, layout: Option<&Path>) -> Option<PathBuf> {
    let p = layout?.join("blobs/sha256").join(layer.digest.hex());
    p.is_file().then_some(p)
}

/// The file a layer's data is read from: the store's blob, else one in place.
fn blob_file(store: &Store, layer: &Descriptor, in_place: Option<&Path>) -> Option<PathBuf> {
    if store.has_blob(&layer.digest) {
        return Some(store.blob_path(&layer.digest));
    }
    blob_in_place(layer, in_place)
}

/// Index a blob that stays where it is (an OCI layout's), checking its digest as it
/// is read, since nothing else did. A zstd layer in one big frame gets its re-encoded
/// copy in the store as usual.
fn index_in_place(
    store: &Store,
    blob: &Path,
    layer: &Descriptor,
    compression: Compression,
    diff_id: &Digest,
) -> Result<(Built, Reframe)> {
    let open = || File::open(blob).map_err(failed(format!("cannot open layer {}", blob.display())));
    let whole = Arc::new(Arriving::whole(open()?)?);
    let mut copy = reframe(store, compression)?;
    // The digest is taken on a thread of its own, beside the decoding.
    let (built, digest) = std::thread::scope(|s| {
        let digest = s.spawn(|| -> Result<Digest> {
            let mut hashing = crate::digest::HashingReader::new(open()?);
            io::copy(&mut hashing, &mut io::sink())?;
            Ok(hashing.finish().0)
        });
        let built = build::index_blob(&whole, compression, Some(diff_id), as_sink(&mut copy));
        (built, digest.join())
    });
    let built = digest
        .map_err(|_| Error::Invalid("the layer digest thread panicked".into()))
        .and_then(|d| d)
        .and_then(|actual| {
            if actual != layer.digest {
                return Err(Error::Invalid(format!("{} is corrupt: its content hashes to {actual}", blob.display())));
            }
            Ok(built?)
        })
        .map_err(failed(format!("layer {}", layer.digest)));
    match built {
        Ok(b) => Ok((b, copy)),
        Err(e) => {
            discard(copy);
            Err(e)
        }
    }
}

/// Make sure a layer is stored and indexed, as `load_layer` does, without opening it
/// when it already is: a pull of an image already in the store reads one header per
/// layer, not every table of contents and checkpoint.
pub fn prepare_layer(
    client: &dyn Fn() -> Result<Arc<Client>>,
    store: &Store,
    source: &str,
    layer: &Descriptor,
    diff_id: &Digest,
    progress: &dyn LayerProgress,
) -> Result<()> {
    if store.has_blob(&layer.digest) && IndexFile::is_current(&store.index_path(&layer.digest), layer.digest.as_str()) {
        return Ok(());
    }
    // Nothing will read file data through these layers.
    let spans = Arc::new(SpanCache::new(0));
    load_layer(client, store, source, layer, diff_id, &spans, None, progress).map(drop)
}

/// The layer from its index and blob in the store, if both are there and usable. An
/// index of another format version is not: the layer is indexed again.
fn open_indexed(
    store: &Store,
    layer: &Descriptor,
    spans: &Arc<SpanCache>,
    in_place: Option<&Path>,
) -> Option<LoadedLayer> {
    let blob = blob_file(store, layer, in_place)?;
    let file = IndexFile::load(&store.index_path(&layer.digest), layer.digest.as_str()).ok()?;
    let data = open_data(store, &blob, layer, file.access, file.sums, spans);
    Some((Arc::new(file.index), Arc::new(data.ok()?)))
}

/// The layer's data, every read from disk checked against `sums`.
fn open_data(
    store: &Store,
    blob: &Path,
    layer: &Descriptor,
    access: Access,
    sums: BlockSums,
    spans: &Arc<SpanCache>,
) -> Result<LayerData> {
    Ok(match access {
        Access::Plain => LayerData::tar_checked(blob, sums),
        Access::Checkpoints(c) => LayerData::compressed_checked(blob, c, Arc::clone(spans), Some(sums)),
        Access::Reframed(c) => {
            LayerData::compressed_checked(&store.reframed_path(&layer.digest), c, Arc::clone(spans), Some(sums))
        }
    }?)
}

/// Where a zstd layer's uncompressed stream is re-encoded in frames while it is
/// indexed, in case it turns out to be one big frame.
type Reframe = Option<(PathBuf, FrameWriter<File>)>;

fn reframe(store: &Store, compression: Compression) -> Result<Reframe> {
    if compression != Compression::Zstd {
        return Ok(None);
    }
    let (path, file) = store.temp_file()?;
    Ok(Some((path, FrameWriter::new(file, build::SPAN as usize)?)))
}

fn as_sink(r: &mut Reframe) -> Option<&mut dyn Write> {
    r.as_mut().map(|(_, w)| w as &mut dyn Write)
}

fn discard(r: Reframe) {
    if let Some((p, _)) = r {
        let _ = std::fs::remove_file(p);
    }
}

/// Index a layer whose blob is in the store: one pass over the file.
fn index_local(
    store: &Store,
    layer: &Descriptor,
    compression: Compression,
    diff_id: &Digest,
) -> Result<(Built, Reframe)> {
    let blob = File::open(store.blob_path(&layer.digest))
        .and_then(Arriving::whole)
        .map_err(failed(format!("layer {} is not in the store", layer.digest)))?;
    let mut copy = reframe(store, compression)?;
    match build::index_blob(&Arc::new(blob), compression, Some(diff_id), as_sink(&mut copy)) {
        Ok(built) => Ok((built, copy)),
        Err(e) => {
            discard(copy);
            Err(failed(format!("layer {}", layer.digest))(e))
        }
    }
}

/// Download a layer blob into the store while indexing it from the same bytes, on a
/// thread of its own that reads the blob's file up to what has arrived (the decoder may
/// work on several places of it at once, behind the download). `Ok(None)`: the blob is
/// stored and verified, but the registry sent it again from the start midway, so the
/// indexer saw a broken stream; index it from the store.
fn download_and_index(
    client: &Client,
    store: &Store,
    source: &str,
    layer: &Descriptor,
    compression: Compression,
    diff_id: &Digest,
    progress: &dyn LayerProgress,
) -> Result<Option<(Built, Reframe)>> {
    let (registry, repository) =
        source.split_once('/').ok_or_else(|| Error::Invalid("image source has no repository".into()))?;
    let mut copy = reframe(store, compression)?;
    let mut restarted = false;
    let mut outcome = None;
    let stored = store.put_blob_with(&layer.digest, |file| -> Result<Digest> {
        let arriving = Arc::new(Arriving::new(file.try_clone()?, layer.size));
        std::thread::scope(|s| {
            let indexer = {
                let (arriving, copy) = (Arc::clone(&arriving), &mut copy);
                s.spawn(move || build::index_blob(&arriving, compression, Some(diff_id), as_sink(copy)))
            };
            let mut sink = TeeSink {
                file,
                arriving: &arriving,
                restarted: &mut restarted,
                received: 0,
                total: layer.size,
                progress,
            };
            let downloaded = client.download_blob(registry, repository, &layer.digest, Some(layer.size), &mut sink);
            if downloaded.is_err() || sink.received != layer.size {
                // The indexer must not wait for bytes that will not come.
                arriving.fail();
            } else {
                // The indexer may still be a few seconds behind the network.
                progress.verifying();
            }
            let built = indexer.join().map_err(|_| Error::Invalid("the layer indexer panicked".into()))?;
            downloaded.map_err(failed(format!("cannot fetch layer {} from {source}", layer.digest)))?;
            if !restarted {
                // Only a layer whose content checks out is kept.
                outcome = Some(built.map_err(failed(format!("layer {}", layer.digest)))?);
            }
            Ok(layer.digest.clone())
        })
    });
    if let Err(e) = stored {
        discard(copy);
        return Err(e);
    }
    match outcome {
        Some(built) => Ok(Some((built, copy))),
        None => {
            discard(copy);
            Ok(None)
        }
    }
}

/// Writes a blob to its file and tells the indexer how far it has arrived. If the indexer
/// stopped (a bad layer), the download still completes; the indexer's error decides.
struct TeeSink<'a> {
    file: &'a mut File,
    arriving: &'a Arriving,
    restarted: &'a mut bool,
    /// Bytes of the blob written so far, of `total`, for `progress`.
    received: u64,
    total: u64,
    progress: &'a dyn LayerProgress,
}

impl Write for TeeSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all(buf)?;
        self.received += buf.len() as u64;
        self.progress.downloading(self.received, self.total);
        if !*self.restarted {
            self.arriving.arrived(self.received);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobSink for TeeSink<'_> {
    fn restart(&mut self) -> io::Result<()> {
        // The client empties the sink before its first request too: only bytes the
        // indexer may have read and that no longer count cut it off.
        if self.received > 0 {
            self.arriving.fail();
            *self.restarted = true;
        }
        self.file.restart()?;
        self.received = 0;
        self.progress.downloading(0, self.total);
        Ok(())
    }
}

/// Save a freshly built index (keeping the re-encoded form only of a layer that can't
/// be entered midway) and open the layer.
fn finish(
    store: &Store,
    blob: &Path,
    layer: &Descriptor,
    compression: Compression,
    (built, copy): (Built, Reframe),
    spans: &Arc<SpanCache>,
) -> Result<LoadedLayer> {
    let reframed = store.reframed_path(&layer.digest);
    let access = match (compression, built.checkpoints, copy) {
        (Compression::None, _, copy) => {
            discard(copy);
            Access::Plain
        }
        // A gzip checkpoint can only sit at a deflate block boundary, so a rare span
        // runs long; decoding it is still far cheaper than another form of the layer.
        (Compression::Gzip, Some(c), copy) => {
            discard(copy);
            Access::Checkpoints(c)
        }
        // zstd can only restart at a frame start: a layer in big frames is read from
        // its re-encoded form.
        (_, Some(c), copy) if c.is_seekable() => {
            discard(copy);
            Access::Checkpoints(c)
        }
        (_, _, Some((tmp, writer))) => {
            let file = writer.finish()?;
            file.sync_all()?;
            let mut frames = IndexingDecoder::new(File::open(&tmp)?, Format::Zstd, build::SPAN)?;
            io::copy(&mut frames, &mut io::sink())?;
            let c = frames.finish()?;
            std::fs::rename(&tmp, &reframed).map_err(failed(format!("cannot write {}", reframed.display())))?;
            Access::Reframed(c)
        }
        (_, _, None) => {
            return Err(Error::Invalid(format!("layer {} can't be read midway and was not re-encoded", layer.digest)))
        }
    };
    let _ = std::fs::remove_file(store.old_copy_path(&layer.digest));
    // Checksums of what reads will come from, taken right after the blob's digest (and
    // the layer's diff_id) checked out; the file is still in the page cache.
    let stored = if matches!(access, Access::Reframed(_)) { &reframed } else { blob };
    let sums =
        File::open(stored).and_then(BlockSums::of).map_err(failed(format!("cannot read {}", stored.display())))?;
    let file = IndexFile { index: LayerIndex::new(built.contents), access, sums };
    store.write_derived(&store.index_path(&layer.digest), |f| -> Result<()> {
        Ok(file.save(layer.digest.as_str(), f)?)
    })?;
    let IndexFile { index, access, sums } = file;
    let data = open_data(store, blob, layer, access, sums, spans)?;
    Ok((Arc::new(index), Arc::new(data)))
}

/// Makes the progress reporter for a fetch of layer `i` (a mount's log).
pub type ReportFn = dyn Fn(usize, &Descriptor) -> Box<dyn LayerProgress> + Send + Sync;

/// The layers of one image, fetched from its registry and indexed on first use:
/// what a mount's tree reads from. Each layer is loaded once: callers that need a
/// layer being loaded wait for that layer alone, and `is_local` never waits.
pub struct StoreLayers {
    store: Store,
    client: Box<ClientFn>,
    source: String,
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
    spans: Arc<SpanCache>,
    /// An OCI layout whose layer blobs are read where they are, not copied.
    in_place: Option<PathBuf>,
    report: Box<ReportFn>,
    loaded: Vec<OnceLock<LoadedLayer>>,
    /// Held while a layer loads, so that this process loads it once.
    loading: Vec<Mutex<()>>,
    /// Layers to serve by Range through their published index, until loaded.
    published: Vec<Mutex<Option<Published>>>,
    /// Where eStargz layers keep the chunks they fetch by Range; `None`: eStargz layers
    /// are downloaded whole like others.
    estargz: Option<Arc<DiskCache>>,
}

/// A layer's published index, as a mount serves the layer from it: its table of
/// contents, its checkpoints (without windows) and where to fetch spans and windows.
struct Published {
    contents: crate::layer::Contents,
    checkpoints: crate::layer::checkpoints::Checkpoints,
    remote: Remote,
}

impl StoreLayers {
    pub fn new(
        store: Store,
        client: Box<ClientFn>,
        record: &ImageRecord,
        config: &ImageConfig,
        spans: Arc<SpanCache>,
        in_place: Option<PathBuf>,
        report: Box<ReportFn>,
    ) -> StoreLayers {
        StoreLayers {
            store,
            client,
            source: record.source.clone(),
            layers: record.layers.clone(),
            diff_ids: config.rootfs.diff_ids.clone(),
            spans,
            in_place,
            report,
            loaded: record.layers.iter().map(|_| OnceLock::new()).collect(),
            loading: record.layers.iter().map(|_| Mutex::new(())).collect(),
            published: record.layers.iter().map(|_| Mutex::new(None)).collect(),
            estargz: None,
        }
    }

    /// Serve eStargz layers (those with a TOC digest annotation) that are not in the
    /// store from their own TOC, chunk by chunk by Range through `cache`.
    pub fn use_estargz(&mut self, cache: Arc<DiskCache>) {
        self.estargz = Some(cache);
    }

    /// An eStargz layer's table of contents and data from its footer and TOC, fetched
    /// by Range. `None` when the layer is not eStargz, is in the store, or no cache was
    /// given; an error when its TOC is unusable.
    fn open_estargz(&self, layer: &Descriptor) -> Result<Option<LoadedLayer>> {
        let annotation = layer.annotations.as_ref().and_then(|a| a.get(estargz::TOC_DIGEST_ANNOTATION));
        let (Some(cache), Some(annotation)) = (&self.estargz, annotation) else { return Ok(None) };
        if self.store.has_blob(&layer.digest) {
            return Ok(None);
        }
        let want: Digest = annotation.parse().map_err(failed(format!("bad TOC digest annotation {annotation:?}")))?;
        let (registry, repository) =
            self.source.split_once('/').ok_or_else(|| Error::Invalid("image source names no registry".into()))?;
        let remote = Remote::estargz((self.client)()?, registry, repository, layer.digest.clone(), Arc::clone(cache));
        let layout = estargz::open(layer.size, &want, |a, b| remote.blob_range(a, b))?;
        let index = Arc::new(LayerIndex::new(layout.contents));
        Ok(Some((index, Arc::new(LayerData::estargz(remote, layout.files, Arc::clone(&self.spans))))))
    }

    /// Serve the layers that are not in the store from their published index (`heads`,
    /// one per layer, from `referrers::find_heads`): by Range, span by span, through
    /// `cache`, never downloading the whole layer. Layers whose index has no
    /// checkpoints (an uncompressed tar, a zstd layer in one big frame) are still
    /// downloaded whole on first use. Returns how many layers will be served by Range.
    pub fn use_published(&mut self, heads: Vec<referrers::Head>, client: Arc<Client>, cache: Arc<DiskCache>) -> usize {
        let (registry, repository) = self.source.split_once('/').unwrap_or_default();
        let mut count = 0;
        for (i, head) in heads.into_iter().enumerate() {
            let layer = &self.layers[i];
            if self.store.has_blob(&layer.digest)
                && IndexFile::is_current(&self.store.index_path(&layer.digest), layer.digest.as_str())
            {
                continue; // read from the store, as without an index
            }
            let a = head.artifact;
            let Spans::Checkpoints(checkpoints) = a.spans else { continue };
            let remote = Remote {
                client: Arc::clone(&client),
                registry: registry.to_string(),
                repository: repository.to_string(),
                layer: a.layer,
                artifact: head.blob,
                span_digests: a.span_digests,
                windows: a.windows,
                window_ranges: head.window_ranges,
                cache: Arc::clone(&cache),
                vouched_by: "published index",
            };
            *self.published[i].get_mut().unwrap_or_else(|p| p.into_inner()) =
                Some(Published { contents: a.contents, checkpoints, remote });
            count += 1;
        }
        count
    }

    fn load(&self, i: usize) -> Result<LoadedLayer> {
        if let Some(l) = self.loaded[i].get() {
            return Ok(l.clone());
        }
        let _one_loader = self.loading[i].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = self.loaded[i].get() {
            return Ok(l.clone());
        }
        let layer = &self.layers[i];
        // Records and config are checked against each other at pull; records edited or
        // damaged since are an error here, not a panic.
        let diff_id = self.diff_ids.get(i).ok_or_else(|| {
            Error::Invalid(format!(
                "the image config lists {} diff_ids for {} layers",
                self.diff_ids.len(),
                self.layers.len()
            ))
        })?;
        let published = self.published[i].lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(p) = published {
            let index = Arc::new(LayerIndex::new(p.contents));
            let data = Arc::new(LayerData::remote(p.remote, p.checkpoints, Arc::clone(&self.spans)));
            return Ok(self.loaded[i].get_or_init(|| (index, data)).clone());
        }
        match self.open_estargz(layer) {
            Ok(Some(loaded)) => {
                tracing::info!("layer {} is eStargz: served from its TOC by range reads", layer.digest);
                return Ok(self.loaded[i].get_or_init(|| loaded).clone());
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "eStargz layer {}: {}; downloading it whole instead",
                layer.digest,
                crate::log::Chain(&e)
            ),
        }
        let progress = (self.report)(i, layer);
        let in_place = self.in_place.as_deref();
        let loaded =
            load_layer(&*self.client, &self.store, &self.source, layer, diff_id, &self.spans, in_place, &*progress)?;
        Ok(self.loaded[i].get_or_init(|| loaded).clone())
    }
}

impl LayerSource for StoreLayers {
    fn layer_count(&self) -> usize {
        self.layers.len()
    }
    fn index(&self, i: usize) -> Result<Arc<LayerIndex>, SourceError> {
        Ok(self.load(i)?.0)
    }
    fn data(&self, i: usize) -> Result<Arc<LayerData>, SourceError> {
        Ok(self.load(i)?.1)
    }
    fn is_local(&self, i: usize) -> bool {
        self.loaded[i].get().is_some()
            || self.published[i].lock().is_ok_and(|p| p.is_some())
            || self.store.index_path(&self.layers[i].digest).is_file()
    }
}
