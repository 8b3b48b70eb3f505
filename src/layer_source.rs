//! Where each layer of an image comes from, decided in one place. Given an image (its
//! record and config) this picks, per layer, the first that can serve it:
//! 1. the store: the blob stored and indexed (or, for an image read from an OCI
//!    layout, the blob read where it is, with its index in the store);
//! 2. a published index (`imgfs index push`, found through `referrers`): the table of
//!    contents from the index, the data span by span by HTTP Range;
//! 3. an eStargz layer's own TOC: the data chunk by chunk by Range;
//! 4. the blob, downloaded from the image's registry, or indexed where it is in its
//!    layout, and kept in the store (`layer::ingest`).
//!
//! [`ImageLayers`] is what a mount's union (`tree`) reads its layers from, each loaded
//! on first use and once; `pull` and `index push` call [`ImageLayers::prepare`] to get
//! every layer into the store without opening it.

use crate::digest::Digest;
use crate::image::{Descriptor, ImageConfig};
use crate::index_artifact::Spans;
use crate::layer::block_sums::BlockSums;
use crate::layer::estargz;
use crate::layer::ingest::{self, BlobSource, LayerProgress, Loaded};
use crate::layer::remote::{Estargz, PagedIndex, Published, RangeSource, TocPages};
use crate::layer::spans::SpanCache;
use crate::layer::toc::{self, write::DataIndex, Toc};
use crate::layer::{Contents, LayerData};
use crate::origin::Origin;
use crate::referrers;
use crate::registry::LazyClient;
use crate::store::cache::DiskCache;
use crate::store::db::ImageRecord;
use crate::store::Store;
use crate::tree::{LayerSource, SourceError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Why a layer could not be served. The texts are what a mount's log and `pull` show.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the image config lists {diff_ids} diff_ids for {layers} layers")]
    DiffIdCount { diff_ids: usize, layers: usize },
    #[error("bad TOC digest annotation {0:?}")]
    TocAnnotation(String, #[source] crate::digest::Error),
    #[error(transparent)]
    Origin(#[from] crate::origin::Error),
    /// Boxed: inline it would make every `Result` here large.
    #[error(transparent)]
    Registry(Box<crate::registry::RegistryError>),
    #[error(transparent)]
    Layer(#[from] crate::layer::Error),
    #[error(transparent)]
    Ingest(#[from] ingest::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::registry::RegistryError> for Error {
    fn from(e: crate::registry::RegistryError) -> Error {
        Error::Registry(Box::new(e))
    }
}

/// Makes the progress reporter for a fetch of layer `i` (`pull`'s bar, a mount's log).
pub type ReportFn = dyn Fn(usize, &Descriptor) -> Box<dyn LayerProgress> + Send + Sync;

/// The layers of one image, each made ready on first use: callers that need a layer
/// being loaded wait for that layer alone, and `is_local` never waits.
pub struct ImageLayers {
    store: Store,
    client: Arc<LazyClient>,
    origin: Origin,
    /// The image manifest the layers are listed in: what a published index is for.
    manifest: Descriptor,
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
    spans: Arc<SpanCache>,
    /// An OCI layout whose layer blobs are read where they are, not copied.
    layout: Option<PathBuf>,
    report: Box<ReportFn>,
    loaded: Vec<OnceLock<Loaded>>,
    /// Held while a layer loads, so that this process loads it once.
    loading: Vec<Mutex<()>>,
    /// Layers stored and indexed when the image was opened: asked of the store once, not
    /// on every `is_local` (which the tree asks under its lock). A layer stored since is
    /// still found when it loads (`ingest::load` opens it first).
    ready: Vec<bool>,
    /// Layers to serve by Range through their published index, until loaded.
    published: Vec<Mutex<Option<PublishedLayer>>>,
    /// The uncompressed length of each layer a published index serves, as it says.
    published_sizes: Vec<Option<u64>>,
    /// The disk cache for pieces fetched by Range; `None`: no published index is looked
    /// for, and eStargz layers are downloaded whole like others.
    range_cache: Option<Arc<DiskCache>>,
}

/// A layer's published index, as a mount serves the layer from it: its table of
/// contents, its checkpoints (without windows) and where to fetch spans and windows.
enum PublishedLayer {
    /// Format 1: the whole table and the checkpoints came with the head.
    Whole { contents: Contents, checkpoints: crate::layer::checkpoints::Checkpoints, remote: Published },
    /// Format 2: the TOC (table, checkpoints, windows) is read page by page by Range.
    Paged { toc_len: u64, pages: Arc<PagedIndex>, remote: Published },
}

/// What became of the search for a published index.
pub enum IndexLookup {
    /// Not looked for: every layer is stored, the image is from a local source, or
    /// Range reads are off.
    Skipped,
    /// Found: `served` of the image's layers will be read by Range.
    Using { index: Digest, served: usize },
    /// None usable: layers are fetched whole on first use.
    NoneUsable(SourceError),
}

impl ImageLayers {
    /// The layers of `record`, whose config is `config`. `reference` is what the user
    /// named the image by: an `oci:` layout there is read in place, as is the one the
    /// image was first read from.
    pub fn new(
        store: Store,
        client: Arc<LazyClient>,
        record: &ImageRecord,
        config: &ImageConfig,
        reference: &str,
    ) -> Result<ImageLayers> {
        let origin = Origin::parse(&record.source)?;
        let layout = [Origin::parse(reference).ok().as_ref(), Some(&origin)].into_iter().flatten().find_map(|o| {
            let dir = o.layout_dir()?;
            Some(dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()))
        });
        let n = record.layers.len();
        let ready = record.layers.iter().map(|l| ingest::is_ready(&store, l, layout.as_deref())).collect();
        Ok(ImageLayers {
            store,
            client,
            origin,
            manifest: Descriptor {
                media_type: record.manifest_media_type.clone(),
                digest: record.manifest.clone(),
                // Only the digest is used to find referrers; the size is for publishing.
                size: 0,
                platform: None,
                annotations: None,
            },
            layers: record.layers.clone(),
            diff_ids: config.rootfs.diff_ids.clone(),
            spans: Arc::new(SpanCache::new(0)),
            layout,
            report: Box::new(|_, _| Box::new(Silent)),
            loaded: (0..n).map(|_| OnceLock::new()).collect(),
            loading: (0..n).map(|_| Mutex::new(())).collect(),
            ready,
            published: (0..n).map(|_| Mutex::new(None)).collect(),
            published_sizes: vec![None; n],
            range_cache: None,
        })
    }

    /// Keep decoded spans of compressed layers in `spans` (shared by every read).
    pub fn with_spans(mut self, spans: Arc<SpanCache>) -> ImageLayers {
        self.spans = spans;
        self
    }

    /// Report each layer fetch through what `report` makes for it.
    pub fn with_report(mut self, report: Box<ReportFn>) -> ImageLayers {
        self.report = report;
        self
    }

    /// Read layers that are not stored by Range where the registry allows it (a
    /// published index, an eStargz TOC), through `cache`; then look for a published
    /// index. An image from a layout is read in place and an image from an archive has
    /// no registry, so neither is looked up.
    pub fn use_range_reads(&mut self, cache: Arc<DiskCache>) -> IndexLookup {
        if self.layout.is_some() {
            return IndexLookup::Skipped;
        }
        self.range_cache = Some(Arc::clone(&cache));
        let Some((registry, repository)) = self.origin.registry() else { return IndexLookup::Skipped };
        if (0..self.layers.len()).all(|i| self.is_stored(i)) {
            return IndexLookup::Skipped;
        }
        let image = referrers::Image {
            registry: registry.to_string(),
            repository: repository.to_string(),
            manifest: self.manifest.clone(),
            layers: self.layers.clone(),
            diff_ids: self.diff_ids.clone(),
        };
        let found = self
            .client
            .get()
            .map_err(SourceError::from)
            .and_then(|c| referrers::find_heads(&c, &image).map(|found| (c, found)).map_err(SourceError::from));
        let (client, (index, heads)) = match found {
            Ok(found) => found,
            Err(e) => return IndexLookup::NoneUsable(e),
        };
        let mut served = 0;
        for (i, head) in heads.into_iter().enumerate() {
            if self.is_stored(i) {
                continue; // read from the store, as without an index
            }
            let mut a = head.artifact;
            self.published_sizes[i] = Some(a.uncompressed_size);
            let contents = a.take_contents();
            let source = RangeSource {
                client: Arc::clone(&client),
                registry: registry.to_string(),
                repository: repository.to_string(),
                cache: Arc::clone(&cache),
            };
            let layer = match (a.spans, a.paged) {
                (Spans::InToc(_), Some(paged)) => {
                    let toc_len = paged.toc_len;
                    let pages = Arc::new(PagedIndex::new(
                        source.clone(),
                        a.layer.clone(),
                        head.blob.clone(),
                        head.head_len,
                        paged,
                    ));
                    let remote = Published {
                        source,
                        layer: a.layer,
                        artifact: head.blob,
                        span_digests: Vec::new(),
                        windows: Vec::new(),
                        window_ranges: Vec::new(),
                        paged: Some(Arc::clone(&pages)),
                    };
                    PublishedLayer::Paged { toc_len, pages, remote }
                }
                (Spans::Checkpoints(checkpoints), None) => {
                    tracing::info!("layer {}: its published index is of format 1, read whole", a.layer);
                    let Some(contents) = contents else { continue };
                    let remote = Published {
                        source,
                        layer: a.layer,
                        artifact: head.blob,
                        span_digests: a.span_digests,
                        windows: a.windows,
                        window_ranges: head.window_ranges,
                        paged: None,
                    };
                    PublishedLayer::Whole { contents, checkpoints, remote }
                }
                _ => continue,
            };
            *self.published[i].get_mut().unwrap_or_else(|p| p.into_inner()) = Some(layer);
            served += 1;
        }
        IndexLookup::Using { index, served }
    }

    /// Make sure layer `i` is stored and indexed, without opening it if it is: what
    /// `pull` and `index push` need. Never reads by Range.
    pub fn prepare(&self, i: usize, progress: &dyn LayerProgress) -> Result<()> {
        let diff_id = self.diff_id(i)?;
        let from = self.blob_source();
        Ok(ingest::prepare(&self.store, &self.layers[i], diff_id, &from, progress)?)
    }

    /// The length of layer `i`'s uncompressed tar (what `docker history` and `podman
    /// history` show as its size): from its stored index, or from its published index;
    /// else the layer is fetched and indexed as `pull` does (`progress` shows that).
    pub fn unpacked_size(&self, i: usize, progress: &dyn LayerProgress) -> Result<u64> {
        let layer = &self.layers[i];
        if let Some(size) = ingest::unpacked_size(&self.store, layer) {
            return Ok(size);
        }
        if let Some(size) = self.published_sizes[i] {
            return Ok(size);
        }
        self.prepare(i, progress)?;
        let toc = crate::layer::toc::Toc::open(&self.store.toc_path(&layer.digest), layer.digest.as_str())?;
        Ok(toc.uncompressed_size(layer.size))
    }

    /// The image's layer descriptors, bottom first.
    pub fn descriptors(&self) -> &[Descriptor] {
        &self.layers
    }

    /// Was layer `i` stored and indexed (its blob in the store, or in its layout) when
    /// the image was opened?
    fn is_stored(&self, i: usize) -> bool {
        self.ready[i]
    }

    fn diff_id(&self, i: usize) -> Result<&Digest> {
        // Records and config are checked against each other at pull; records edited or
        // damaged since are an error here, not a panic.
        self.diff_ids.get(i).ok_or(Error::DiffIdCount { diff_ids: self.diff_ids.len(), layers: self.layers.len() })
    }

    /// Where a blob that is not stored is read from.
    fn blob_source(&self) -> BlobSource<'_> {
        if let Some(dir) = &self.layout {
            return BlobSource::Layout(dir);
        }
        match &self.origin {
            Origin::Registry { registry, repository } => {
                BlobSource::Registry { client: &self.client, registry, repository }
            }
            Origin::Local(l) => BlobSource::Nowhere { what: l.to_string() },
        }
    }

    /// An eStargz layer's table of contents and data from its footer and TOC, fetched
    /// by Range. `None` when the layer is not eStargz, is stored, or Range reads are
    /// off; an error when its TOC is unusable.
    fn open_estargz(&self, i: usize) -> Result<Option<Loaded>> {
        let layer = &self.layers[i];
        let annotation = layer.annotations.as_ref().and_then(|a| a.get(estargz::TOC_DIGEST_ANNOTATION));
        let (Some(cache), Some(annotation)) = (&self.range_cache, annotation) else { return Ok(None) };
        let Some((registry, repository)) = self.origin.registry() else { return Ok(None) };
        if self.store.has_blob(&layer.digest) {
            return Ok(None);
        }
        let want: Digest = annotation.parse().map_err(|e| Error::TocAnnotation(annotation.clone(), e))?;
        let remote = Estargz {
            source: RangeSource {
                client: self.client.get()?,
                registry: registry.to_string(),
                repository: repository.to_string(),
                cache: Arc::clone(cache),
            },
            layer: layer.digest.clone(),
        };
        let layout = estargz::open(layer.size, &want, |a, b| remote.blob_range(a, b))?;
        let toc = self.scratch_toc(&layout.contents, layer)?;
        Ok(Some((toc, Arc::new(LayerData::estargz(remote, layout.files, Arc::clone(&self.spans))))))
    }

    /// The TOC of a table that came whole from elsewhere (an eStargz TOC, a published
    /// index), in a scratch file of the store for as long as the mount runs.
    fn scratch_toc(&self, contents: &Contents, layer: &Descriptor) -> Result<Arc<Toc>> {
        let _lease = self.store.writer_guard().map_err(ingest::Error::from)?;
        let sums = BlockSums::of(std::io::empty()).map_err(crate::layer::Error::from)?;
        let dir = self.store.scratch_dir();
        Ok(Arc::new(toc::from_contents(contents, &dir, layer.digest.as_str(), DataIndex::Plain, &sums)?))
    }

    /// The table of contents of layer `i` from its published index: the table a format 1
    /// head held, written to a scratch TOC; a format 2 TOC, opened to be read by page.
    fn open_published(&self, i: usize, published: &PublishedLayer) -> Result<Arc<Toc>> {
        let layer = &self.layers[i];
        match published {
            PublishedLayer::Whole { contents, .. } => self.scratch_toc(contents, layer),
            PublishedLayer::Paged { toc_len, pages, .. } => {
                let dir = self.store.scratch_dir();
                let label = dir.join(format!("(published TOC of {})", layer.digest));
                let _lease = self.store.writer_guard().map_err(ingest::Error::from)?;
                let source = Box::new(TocPages(Arc::clone(pages)));
                Ok(Arc::new(Toc::open_remote(source, *toc_len, &dir, &label, layer.digest.as_str())?))
            }
        }
    }

    fn load(&self, i: usize) -> Result<Loaded> {
        if let Some(l) = self.loaded[i].get() {
            return Ok(l.clone());
        }
        let _one_loader = self.loading[i].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = self.loaded[i].get() {
            return Ok(l.clone());
        }
        let diff_id = self.diff_id(i)?;
        let published = self.published[i].lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(index) = published {
            let toc = match self.open_published(i, &index) {
                Ok(toc) => toc,
                Err(e) => {
                    // A network blip: the next access tries the index again, rather than
                    // downloading the whole layer.
                    *self.published[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(index);
                    return Err(e);
                }
            };
            let spans = Arc::clone(&self.spans);
            let data = match index {
                PublishedLayer::Whole { checkpoints, remote, .. } => LayerData::remote(remote, checkpoints, spans),
                PublishedLayer::Paged { remote, .. } => LayerData::remote_toc(remote, Arc::clone(&toc), spans)?,
            };
            return Ok(self.loaded[i].get_or_init(|| (toc, Arc::new(data))).clone());
        }
        let layer = &self.layers[i];
        match self.open_estargz(i) {
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
        let loaded = ingest::load(&self.store, layer, diff_id, &self.spans, &self.blob_source(), &*progress)?;
        Ok(self.loaded[i].get_or_init(|| loaded).clone())
    }
}

/// Progress nobody is shown.
struct Silent;
impl LayerProgress for Silent {}

impl LayerSource for ImageLayers {
    fn layer_count(&self) -> usize {
        self.layers.len()
    }
    fn toc(&self, i: usize) -> Result<Arc<Toc>, SourceError> {
        Ok(self.load(i)?.0)
    }
    fn data(&self, i: usize) -> Result<Arc<LayerData>, SourceError> {
        Ok(self.load(i)?.1)
    }
    fn is_local(&self, i: usize) -> bool {
        self.loaded[i].get().is_some() || self.published[i].lock().is_ok_and(|p| p.is_some()) || self.is_stored(i)
    }
    fn reads_by_range(&self, i: usize) -> bool {
        match self.loaded[i].get() {
            Some((toc, _)) => toc.is_remote(),
            None => self.published[i].lock().is_ok_and(|p| matches!(*p, Some(PublishedLayer::Paged { .. }))),
        }
    }
}
