//! Bringing one layer into the store and opening it for reads. A layer's blob is
//! downloaded while the same bytes are indexed, in one pass (digest, decompression
//! with checkpoints, diff_id, table of contents), or a blob already on disk (in the
//! store, or in an OCI layout read where it is) is indexed in one read; then the
//! result is committed: the form reads will decode from is picked (the blob itself, or
//! a re-encoded copy of a zstd layer in one big frame), checksummed, and the layer's
//! TOC file written. Only a layer whose digest and diff_id check out gets a TOC, so only
//! such a layer is ever served. (A blob is stored once its digest checks out; when its
//! download was restarted midway, its diff_id is checked after that, and a blob that
//! fails it stays unindexed until garbage collection takes it.)
//!
//! Where a layer's blob comes from when it is not stored is not decided here: the
//! caller (`layer_source`) names it.

use super::arriving::Arriving;
use super::block_sums::BlockSums;
use super::build::{self, Built};
use super::checkpoints::Format;
use super::data::Sums;
use super::indexing::IndexingDecoder;
use super::reframe::FrameWriter;
use super::spans::SpanCache;
use super::toc::write::DataIndex;
use super::toc::{self, AccessKind, Toc};
use super::LayerData;
use crate::digest::Digest;
use crate::image::{Compression, Descriptor};
use crate::registry::blob::BlobSink;
use crate::registry::{Client, LazyClient, RegistryError};
use crate::store::Store;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What goes wrong bringing a layer into the store. The texts are what users see after
/// `imgfs: error:` and in a mount's log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What failed (fetching, indexing a layer…), over its cause.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The layer is not what it must be, or has nowhere to come from; the text says what.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Layer(#[from] super::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Error::Context`: `what` failed, because of the cause given.
fn failed<E: Into<Box<dyn std::error::Error + Send + Sync>>>(what: impl Into<String>) -> impl FnOnce(E) -> Error {
    move |e| Error::Context { what: what.into(), source: e.into() }
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
pub type Loaded = (Arc<Toc>, Arc<LayerData>);

/// Where a layer's blob is when it is not in the store.
pub enum BlobSource<'a> {
    /// In the repository of a registry: downloaded into the store.
    Registry { client: &'a LazyClient, registry: &'a str, repository: &'a str },
    /// In an OCI layout: read where it is, never copied.
    Layout(&'a Path),
    /// Nowhere else (an image read from an archive, whose blobs were copied in when it
    /// was read): `what` names the source for the error.
    Nowhere { what: String },
}

impl BlobSource<'_> {
    /// The layer's blob in the layout, if it is there.
    fn in_layout(&self, layer: &Descriptor) -> Option<PathBuf> {
        let BlobSource::Layout(dir) = self else { return None };
        let p = dir.join("blobs/sha256").join(layer.digest.hex());
        p.is_file().then_some(p)
    }
}

/// Is the layer ready to open without indexing: a TOC in the current format, and the
/// blob it indexes (in the store, or in `layout`)? Reads the TOC's header only.
pub fn is_ready(store: &Store, layer: &Descriptor, layout: Option<&Path>) -> bool {
    Toc::is_current(&store.toc_path(&layer.digest), layer.digest.as_str()) && blob_file(store, layer, layout).is_some()
}

/// The file a layer's data is read from: the store's blob, else one in the layout.
fn blob_file(store: &Store, layer: &Descriptor, layout: Option<&Path>) -> Option<PathBuf> {
    if store.has_blob(&layer.digest) {
        return Some(store.blob_path(&layer.digest));
    }
    BlobSource::Layout(layout?).in_layout(layer)
}

/// Make sure a layer is stored (or in place in its layout) and indexed, without
/// opening it when it already is: a pull of an image already in the store reads one
/// header per layer, not every table of contents and checkpoint.
pub fn prepare(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    from: &BlobSource<'_>,
    progress: &dyn LayerProgress,
) -> Result<()> {
    if is_ready(store, layer, layout_of(from)) {
        return Ok(());
    }
    // Nothing will read file data through these layers.
    let spans = Arc::new(SpanCache::new(0));
    load(store, layer, diff_id, &spans, from, progress).map(drop)
}

fn layout_of<'a>(from: &BlobSource<'a>) -> Option<&'a Path> {
    match from {
        BlobSource::Layout(dir) => Some(dir),
        _ => None,
    }
}

/// Make a layer ready to serve: from its index in the store if it has one; else by
/// indexing its blob in the store, or in the layout `from` names (checked against its
/// digest on the way, not copied); else by downloading the blob from `from` and
/// indexing it on the way, in one pass. A process fetching the same blob is waited
/// for, not repeated: one fetcher per blob, through a lock in the store.
pub fn load(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    spans: &Arc<SpanCache>,
    from: &BlobSource<'_>,
    progress: &dyn LayerProgress,
) -> Result<Loaded> {
    // One lease against garbage collection for the whole load, from the first byte
    // written to the index that names the blob.
    let _lease = store.writer_guard()?;
    let layout = layout_of(from);
    if let Some(l) = open(store, layer, spans, layout) {
        return Ok(l);
    }
    let _fetching = store.fetch_lock(&layer.digest)?;
    if let Some(l) = open(store, layer, spans, layout) {
        return Ok(l); // another process made it ready while we waited
    }
    let compression = Compression::of_media_type(&layer.media_type)?;
    let built = if store.has_blob(&layer.digest) {
        progress.verifying();
        index_local(store, layer, compression, diff_id)?
    } else if let Some(blob) = from.in_layout(layer) {
        progress.verifying();
        let built = index_in_place(store, &blob, layer, compression, diff_id)?;
        return finish(store, &blob, layer, compression, built, spans)
            .map_err(failed(format!("cannot index layer {}", layer.digest)));
    } else {
        match from {
            BlobSource::Registry { client, registry, repository } => {
                match download_and_index(
                    &*client.get()?,
                    store,
                    (registry, repository),
                    layer,
                    compression,
                    diff_id,
                    progress,
                )? {
                    Some(done) => done,
                    // The registry restarted the blob midway; the blob is whole and
                    // verified now, so index it from the store.
                    None => index_local(store, layer, compression, diff_id)?,
                }
            }
            BlobSource::Layout(dir) => {
                let what = dir.display();
                return Err(Error::Invalid(format!(
                    "layer {} is neither in the store nor in oci:{what}",
                    layer.digest
                )));
            }
            BlobSource::Nowhere { what } => {
                return Err(Error::Invalid(format!("layer {} is neither in the store nor in {what}", layer.digest)));
            }
        }
    };
    finish(store, &store.blob_path(&layer.digest), layer, compression, built, spans)
        .map_err(failed(format!("cannot index layer {}", layer.digest)))
}

/// The layer from its index and blob, if both are there and usable. An index of another
/// format version is not: the layer is indexed again.
pub fn open(store: &Store, layer: &Descriptor, spans: &Arc<SpanCache>, layout: Option<&Path>) -> Option<Loaded> {
    let blob = blob_file(store, layer, layout)?;
    let toc = Arc::new(Toc::open(&store.toc_path(&layer.digest), layer.digest.as_str()).ok()?);
    let data = open_data(store, &blob, layer, &toc, spans);
    Some((toc, Arc::new(data.ok()?)))
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
        let built = build::index_blob(&whole, compression, Some(diff_id), as_sink(&mut copy), &store.scratch_dir());
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

/// The layer's data, every read from disk checked against the block sums in its TOC.
fn open_data(
    store: &Store,
    blob: &Path,
    layer: &Descriptor,
    toc: &Arc<Toc>,
    spans: &Arc<SpanCache>,
) -> Result<LayerData> {
    Ok(match toc.access() {
        AccessKind::Plain => LayerData::tar_checked(blob, Sums::Toc(Arc::clone(toc))),
        AccessKind::Checkpoints => LayerData::compressed_checked(blob, Arc::clone(toc), Arc::clone(spans)),
        AccessKind::Reframed => {
            LayerData::compressed_checked(&store.reframed_path(&layer.digest), Arc::clone(toc), Arc::clone(spans))
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
    match build::index_blob(&Arc::new(blob), compression, Some(diff_id), as_sink(&mut copy), &store.scratch_dir()) {
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
    (registry, repository): (&str, &str),
    layer: &Descriptor,
    compression: Compression,
    diff_id: &Digest,
    progress: &dyn LayerProgress,
) -> Result<Option<(Built, Reframe)>> {
    let mut copy = reframe(store, compression)?;
    let scratch = store.scratch_dir();
    let mut restarted = false;
    let mut outcome = None;
    let what = || format!("layer {}", layer.digest);
    let stored = store.put_blob_with(&layer.digest, |file| -> Result<Digest> {
        let arriving = Arc::new(Arriving::new(file.try_clone()?, layer.size));
        let indexer_failed = AtomicBool::new(false);
        std::thread::scope(|s| {
            let indexer = {
                let (arriving, copy, indexer_failed) = (Arc::clone(&arriving), &mut copy, &indexer_failed);
                s.spawn(move || {
                    let built = build::index_blob(&arriving, compression, Some(diff_id), as_sink(copy), &scratch);
                    // Over a limit, the layer is refused already: the download stops at its
                    // next write. A layer found damaged is downloaded to its end, so that its
                    // digest tells a transfer that damaged it from a layer that is so.
                    if matches!(built, Err(super::Error::OverLimit(_))) {
                        indexer_failed.store(true, Ordering::Release);
                    }
                    built
                })
            };
            // Should the download panic (in the client, in a progress callback), the scope
            // would wait for the indexer before going on unwinding: let it stop too.
            let _unblock = FailOnPanic(&arriving);
            let mut sink = TeeSink {
                file,
                arriving: &arriving,
                restarted: &mut restarted,
                indexer_failed: &indexer_failed,
                received: 0,
                total: layer.size,
                progress,
            };
            let downloaded = client.download_blob(registry, repository, &layer.digest, Some(layer.size), &mut sink);
            // Read before the download's end fails the indexer too: did it fail on its own?
            let refused = indexer_failed.load(Ordering::Acquire) && !*sink.restarted;
            if downloaded.is_err() || sink.received != layer.size {
                // The indexer must not wait for bytes that will not come.
                arriving.fail();
            } else {
                // The indexer may still be a few seconds behind the network.
                progress.verifying();
            }
            let built = indexer.join().map_err(|_| Error::Invalid(format!("the indexer of {} panicked", what())))?;
            if refused {
                if let Err(e) = built {
                    // What stopped the download, rather than the download's own complaint.
                    return Err(failed(what())(e));
                }
            }
            downloaded.map_err(failed(format!("cannot fetch layer {} from {registry}/{repository}", layer.digest)))?;
            if !restarted {
                // Only a layer whose content checks out is kept.
                outcome = Some(built.map_err(failed(what()))?);
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

/// Fails the blob's readers (the indexer) when dropped while the thread panics.
struct FailOnPanic<'a>(&'a Arriving);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail();
        }
    }
}

/// Writes a blob to its file and tells the indexer how far it has arrived. Once the
/// indexer has refused the layer for passing a limit (IMGFS_MAX_LAYER_SIZE or
/// IMGFS_MAX_LAYER_ENTRIES), the download stops at the next write: the layer is refused
/// whatever its remaining bytes are. (Unless the registry sent the blob again from the
/// start: then the indexer saw a broken stream, and the blob is indexed again once
/// stored.) Other failures of the indexer wait for the download and its digest.
struct TeeSink<'a> {
    file: &'a mut File,
    arriving: &'a Arriving,
    restarted: &'a mut bool,
    indexer_failed: &'a AtomicBool,
    /// Bytes of the blob written so far, of `total`, for `progress`.
    received: u64,
    total: u64,
    progress: &'a dyn LayerProgress,
}

impl TeeSink<'_> {
    fn refused(&self) -> io::Result<()> {
        if self.indexer_failed.load(Ordering::Acquire) && !*self.restarted {
            return Err(io::Error::other("the layer was refused while it downloaded"));
        }
        Ok(())
    }
}

impl Write for TeeSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.refused()?;
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
        // Nor does another try (another mirror) start once the layer is refused.
        self.refused()?;
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

/// Write a freshly built TOC (keeping the re-encoded form only of a layer that can't be
/// entered midway) and open the layer.
fn finish(
    store: &Store,
    blob: &Path,
    layer: &Descriptor,
    compression: Compression,
    (built, copy): (Built, Reframe),
    spans: &Arc<SpanCache>,
) -> Result<Loaded> {
    let reframed = store.reframed_path(&layer.digest);
    let (reframe_to, checkpoints) = match (compression, built.checkpoints, copy) {
        (Compression::None, _, copy) => {
            discard(copy);
            (None, None)
        }
        // A gzip checkpoint can only sit at a deflate block boundary, so a rare span
        // runs long; decoding it is still far cheaper than another form of the layer.
        (Compression::Gzip, Some(c), copy) => {
            discard(copy);
            (None, Some(c))
        }
        // zstd can only restart at a frame start: a layer in big frames is read from
        // its re-encoded form.
        (_, Some(c), copy) if c.is_seekable() => {
            discard(copy);
            (None, Some(c))
        }
        (_, _, Some((tmp, writer))) => {
            let file = writer.finish()?;
            file.sync_all()?;
            let mut frames = IndexingDecoder::new(File::open(&tmp)?, Format::Zstd, build::SPAN)?;
            io::copy(&mut frames, &mut io::sink())?;
            (Some(tmp), Some(frames.finish()?))
        }
        (_, _, None) => {
            return Err(Error::Invalid(format!("layer {} can't be read midway and was not re-encoded", layer.digest)))
        }
    };
    if let Some(tmp) = &reframe_to {
        std::fs::rename(tmp, &reframed).map_err(failed(format!("cannot write {}", reframed.display())))?;
    }
    let data = match (&reframe_to, &checkpoints) {
        (None, None) => DataIndex::Plain,
        (None, Some(c)) => DataIndex::Checkpoints(c),
        (Some(_), Some(c)) => DataIndex::Reframed(c),
        (Some(_), None) => unreachable!("a re-encoded layer has checkpoints"),
    };
    let _ = std::fs::remove_file(store.old_copy_path(&layer.digest));
    // Checksums of what reads will come from, taken right after the blob's digest (and
    // the layer's diff_id) checked out; the file is still in the page cache.
    let stored = if reframe_to.is_some() { &reframed } else { blob };
    let sums =
        File::open(stored).and_then(BlockSums::of).map_err(failed(format!("cannot read {}", stored.display())))?;
    let path = store.toc_path(&layer.digest);
    store.write_derived(&path, |f| -> Result<()> {
        Ok(toc::write::write(f, layer.digest.as_str(), built.toc, data, &sums)?)
    })?;
    // An older imgfs's index of this layer is never read again.
    let _ = std::fs::remove_file(store.legacy_index_path(&layer.digest));
    let toc = Arc::new(Toc::open(&path, layer.digest.as_str())?);
    let data = open_data(store, blob, layer, &toc, spans)?;
    Ok((toc, Arc::new(data)))
}

/// A layer's uncompressed tar size, if it is indexed in the store (read from its TOC's
/// header).
pub fn unpacked_size(store: &Store, layer: &Descriptor) -> Option<u64> {
    let toc = Toc::open(&store.toc_path(&layer.digest), layer.digest.as_str()).ok()?;
    Some(toc.uncompressed_size(layer.size))
}
