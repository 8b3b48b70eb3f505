//! Layer indexes published next to their image as an OCI 1.1 artifact, and found again.
//!
//! The artifact is an image manifest with `artifactType` [`ARTIFACT_TYPE`], the empty
//! config, one blob per image layer (`index_artifact`, annotated with the layer's
//! digest) and `subject` = the image manifest, pushed by digest to the image's own
//! repository. Registries with the referrers API list it there; for those without it
//! (distribution 2.8) it is also listed under the referrers tag scheme: the tag
//! `sha256-<hex of the image manifest digest>` holds an OCI index of every referrer,
//! updated by reading it, adding ours and writing it back, other entries kept.
//!
//! The artifact is made deterministically (no timestamps), so publishing the same image
//! twice gives the same manifest digest and leaves the referrers list as it was.

use crate::digest::Digest;
use crate::image::{self, Descriptor, Platform};
use crate::index_artifact::{self, Expected, IndexArtifact};
use crate::reference::Reference;
use crate::registry::{Client, RegistryError};
use crate::resolve;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Why an index could not be published, found, or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("one index per layer")]
    IndexCount,
    #[error("cannot push {what} to {repository}")]
    Push {
        what: String,
        repository: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("cannot list the index under the referrers tag {tag} of {repository}")]
    ReferrersTag {
        tag: String,
        repository: String,
        #[source]
        source: Box<Error>,
    },
    #[error("the referrers index is not JSON")]
    ReferrersNotJson(#[source] serde_json::Error),
    #[error("the tag holds something other than an OCI index ({media_type})")]
    TagNotAnIndex { media_type: String },
    #[error("the referrers index is not valid")]
    ReferrersInvalid(#[source] serde_json::Error),
    #[error("no imgfs index is published for {image}")]
    NonePublished { image: String },
    #[error("the index {index} published for {subject} is not usable")]
    NotUsable {
        index: Digest,
        subject: Digest,
        #[source]
        source: Box<Error>,
    },
    #[error("index manifest {digest} is not valid")]
    ManifestInvalid {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest {digest} is not an imgfs index (artifactType {artifact_type:?})")]
    NotAnIndex { digest: Digest, artifact_type: Option<String> },
    #[error("index manifest {digest} is for another image")]
    OtherImage { digest: Digest },
    #[error("index manifest {digest} lists {count} blobs")]
    TooManyBlobs { digest: Digest, count: usize },
    #[error("index manifest {digest} has no index for layer {layer}")]
    NoIndexFor { digest: Digest, layer: Digest },
    #[error("the index of layer {layer} is of media type {media_type:?}")]
    MediaType { layer: Digest, media_type: String },
    #[error("the index of layer {layer} claims {size} bytes, more than {}", index_artifact::MAX_BLOB)]
    TooLarge { layer: Digest, size: u64 },
    #[error("cannot get the index of layer {layer}")]
    Fetch {
        layer: Digest,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("the index of layer {layer} has a wrong or no {HEAD_ANNOTATION} annotation")]
    HeadAnnotation { layer: Digest },
    #[error("the head of the index of layer {layer} is larger than its blob")]
    HeadTooLarge { layer: Digest },
    #[error("the head of the index of layer {layer} does not match its {HEAD_ANNOTATION} annotation")]
    HeadMismatch { layer: Digest },
    #[error("the windows of the index of layer {layer} do not fill its blob")]
    WindowsDoNotFill { layer: Digest },
    /// The image itself could not be resolved.
    #[error(transparent)]
    Resolve(Box<resolve::Error>),
    #[error(transparent)]
    Artifact(#[from] index_artifact::Error),
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

type Result<T, E = Error> = std::result::Result<T, E>;

// Boxed: a `RegistryError` inline would make every `Result` here large.
impl From<resolve::Error> for Error {
    fn from(e: resolve::Error) -> Error {
        Error::Resolve(Box::new(e))
    }
}

impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Error {
        Error::Registry(Box::new(e))
    }
}

/// What the artifact manifest says it is; what the referrers are filtered by.
pub const ARTIFACT_TYPE: &str = "application/vnd.imgfs.index.v1";
/// The layer digest an artifact blob indexes, as an annotation on its descriptor.
pub const LAYER_ANNOTATION: &str = "io.imgfs.layer.digest";
/// The head of an artifact blob (`IndexArtifact::head`: what lookups need, without the
/// windows), as `<size> <digest>`, so that a reader can fetch it alone by Range and
/// trust it.
pub const HEAD_ANNOTATION: &str = "io.imgfs.index.head";
/// The OCI empty descriptor's content: `{}`.
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";
/// An image has at most this many layers (docker's own limit is 127): a manifest
/// listing more is not read further.
const MAX_LAYERS: usize = 1000;

/// The image an index is for: where it lives, its manifest, and its layers.
pub struct Image {
    pub registry: String,
    pub repository: String,
    /// The image manifest (for a multi-arch image, the one of the chosen platform).
    pub manifest: Descriptor,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
}

/// One layer's published index as found: the artifact and its blob's size.
pub struct Found {
    pub artifact: IndexArtifact,
    pub blob_size: u64,
    /// The head alone: what lookups need before any window.
    pub head_size: u64,
}

/// Push the artifact blobs (one per layer of `image`, in order) and the artifact
/// manifest, and list it under the referrers tag. Returns the manifest's digest.
pub fn publish(client: &Client, image: &Image, blobs: &[Vec<u8>]) -> Result<Digest> {
    if blobs.len() != image.layers.len() {
        return Err(Error::IndexCount);
    }
    let (reg, repo) = (image.registry.as_str(), image.repository.as_str());
    let pushing = |what: &str| {
        let (what, repository) = (what.to_string(), format!("{reg}/{repo}"));
        move |source| Error::Push { what, repository, source: Box::new(source) }
    };
    let push =
        |what: &str, digest: &Digest, bytes: &[u8]| client.upload_blob(reg, repo, digest, bytes).map_err(pushing(what));
    push("the empty config", &Digest::of(EMPTY), EMPTY)?;
    let mut layers = Vec::new();
    for (layer, blob) in image.layers.iter().zip(blobs) {
        let digest = Digest::of(blob);
        push(&format!("the index of layer {}", layer.digest), &digest, blob)?;
        let head = IndexArtifact::head(blob)?;
        layers.push(json!({
            "mediaType": index_artifact::MEDIA_TYPE,
            "digest": digest,
            "size": blob.len(),
            "annotations": {
                LAYER_ANNOTATION: layer.digest,
                HEAD_ANNOTATION: format!("{} {}", head.len(), Digest::of(head)),
            },
        }));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": image::OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": { "mediaType": EMPTY_MEDIA_TYPE, "digest": Digest::of(EMPTY), "size": EMPTY.len(), "data": "e30=" },
        "layers": layers,
        "subject": {
            "mediaType": image.manifest.media_type,
            "digest": image.manifest.digest,
            "size": image.manifest.size,
        },
    });
    let body = serde_json::to_vec(&manifest)?;
    let digest = Digest::of(&body);
    client
        .put_manifest(reg, repo, digest.as_str(), image::OCI_MANIFEST, &body)
        .map_err(pushing("the index manifest"))?;
    let entry = json!({
        "mediaType": image::OCI_MANIFEST,
        "digest": digest,
        "size": body.len(),
        "artifactType": ARTIFACT_TYPE,
    });
    add_to_referrers_tag(client, image, entry).map_err(|e| Error::ReferrersTag {
        tag: referrers_tag(&image.manifest.digest),
        repository: format!("{reg}/{repo}"),
        source: Box::new(e),
    })?;
    Ok(digest)
}

/// The referrers tag scheme's tag for a subject: `sha256-<hex>`.
pub fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// Read the referrers index under the tag (or start one), add `entry` unless it is
/// there already, and write it back. Entries of other referrers are kept as they are.
/// (Two pushers at once may each write back without the other's entry: distribution
/// has no conditional PUT. Pushing again puts it back.)
fn add_to_referrers_tag(client: &Client, image: &Image, entry: Value) -> Result<()> {
    let (reg, repo) = (image.registry.as_str(), image.repository.as_str());
    let tag = referrers_tag(&image.manifest.digest);
    let mut index = match client.get_manifest_at_origin(reg, repo, &tag) {
        Ok(m) => {
            let v: Value = serde_json::from_slice(&m.body).map_err(Error::ReferrersNotJson)?;
            if !v.get("manifests").is_some_and(Value::is_array) {
                return Err(Error::TagNotAnIndex { media_type: m.media_type });
            }
            v
        }
        Err(e) if e.is_not_found() => {
            json!({ "schemaVersion": 2, "mediaType": image::OCI_INDEX, "manifests": [] })
        }
        Err(e) => return Err(e.into()),
    };
    let manifests = index["manifests"].as_array_mut().expect("checked above");
    if manifests.iter().any(|m| m.get("digest") == entry.get("digest")) {
        return Ok(());
    }
    manifests.push(entry);
    let body = serde_json::to_vec(&index)?;
    client.put_manifest(reg, repo, &tag, image::OCI_INDEX, &body)?;
    Ok(())
}

/// An entry of a referrers index; `artifactType` is what `image::Descriptor` drops.
#[derive(serde::Deserialize)]
struct Referrer {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Digest,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
}

#[derive(serde::Deserialize)]
struct Referrers {
    #[serde(default)]
    manifests: Vec<Referrer>,
}

/// The imgfs index artifacts published for an image (their manifest digests), newest
/// listed last: from the referrers API, or, where the registry has none, the
/// referrers tag.
pub fn list(client: &Client, image: &Image) -> Result<Vec<Digest>> {
    let (reg, repo) = (image.registry.as_str(), image.repository.as_str());
    let subject = &image.manifest.digest;
    let body = match client.get_referrers(reg, repo, subject, ARTIFACT_TYPE)? {
        Some(body) => body,
        None => match client.get_manifest(reg, repo, &referrers_tag(subject)) {
            Ok(m) => m.body,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        },
    };
    let index: Referrers = serde_json::from_slice(&body).map_err(Error::ReferrersInvalid)?;
    // The referrers API may ignore the filter, and the tag lists every referrer.
    Ok(index
        .manifests
        .into_iter()
        .filter(|d| d.artifact_type.as_deref() == Some(ARTIFACT_TYPE) && d.media_type == image::OCI_MANIFEST)
        .map(|d| d.digest)
        .collect())
}

/// Find the index published for `image` and fetch and check every layer's: the newest
/// artifact that loads whole. Returns its manifest digest and one `Found` per layer.
pub fn find(client: &Client, image: &Image) -> Result<(Digest, Vec<Found>)> {
    find_by(client, image, load)
}

/// One layer's published index as a mount reads it: the head alone (fetched by Range
/// and checked against its annotation), where its windows lie, and the blob they lie in.
pub struct Head {
    /// Decoded from the head: its checkpoints have no windows.
    pub artifact: IndexArtifact,
    /// The artifact blob, which holds the windows (format 1) or the TOC and its digests
    /// (format 2) after the head of `head_len` bytes.
    pub blob: Digest,
    pub head_len: u64,
    pub window_ranges: Vec<(u64, u64)>,
}

/// As `find`, fetching only each layer's head: what a mount needs before any read.
pub fn find_heads(client: &Client, image: &Image) -> Result<(Digest, Vec<Head>)> {
    find_by(client, image, load_heads)
}

type Loader<T> = fn(&Client, &Image, &Digest) -> Result<Vec<T>>;

fn find_by<T>(client: &Client, image: &Image, load: Loader<T>) -> Result<(Digest, Vec<T>)> {
    let candidates = list(client, image)?;
    let Some(newest) = candidates.last() else {
        return Err(Error::NonePublished {
            image: format!("{}/{}@{}", image.registry, image.repository, image.manifest.digest),
        });
    };
    let mut first_error = None;
    for d in candidates.iter().rev() {
        match load(client, image, d) {
            Ok(found) => return Ok((d.clone(), found)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let e = first_error.expect("one candidate at least");
    Err(Error::NotUsable { index: newest.clone(), subject: image.manifest.digest.clone(), source: Box::new(e) })
}

/// The artifact manifest's fields that matter here.
#[derive(serde::Deserialize)]
struct ArtifactManifest {
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    layers: Vec<Descriptor>,
    subject: Option<Descriptor>,
}

/// Fetch artifact manifest `digest` (checked against it) and give, for each layer of
/// the image in order, the descriptor of its artifact blob.
fn artifact_blobs(client: &Client, image: &Image, digest: &Digest) -> Result<Vec<Descriptor>> {
    let (reg, repo) = (image.registry.as_str(), image.repository.as_str());
    let m = client.get_manifest(reg, repo, digest.as_str())?;
    let manifest: ArtifactManifest =
        serde_json::from_slice(&m.body).map_err(|source| Error::ManifestInvalid { digest: digest.clone(), source })?;
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(Error::NotAnIndex { digest: digest.clone(), artifact_type: manifest.artifact_type });
    }
    if manifest.subject.as_ref().map(|s| &s.digest) != Some(&image.manifest.digest) {
        return Err(Error::OtherImage { digest: digest.clone() });
    }
    if manifest.layers.len() > MAX_LAYERS {
        return Err(Error::TooManyBlobs { digest: digest.clone(), count: manifest.layers.len() });
    }
    let by_layer: BTreeMap<&str, &Descriptor> = manifest
        .layers
        .iter()
        .filter_map(|d| Some((d.annotations.as_ref()?.get(LAYER_ANNOTATION)?.as_str(), d)))
        .collect();
    let mut blobs = Vec::new();
    for layer in &image.layers {
        let d = by_layer
            .get(layer.digest.as_str())
            .ok_or_else(|| Error::NoIndexFor { digest: digest.clone(), layer: layer.digest.clone() })?;
        if d.media_type != index_artifact::MEDIA_TYPE {
            return Err(Error::MediaType { layer: layer.digest.clone(), media_type: d.media_type.clone() });
        }
        if d.size > index_artifact::MAX_BLOB {
            return Err(Error::TooLarge { layer: layer.digest.clone(), size: d.size });
        }
        blobs.push((*d).clone());
    }
    Ok(blobs)
}

/// Fetch artifact manifest `digest`, then every layer's blob (checked against its
/// descriptor), and decode each bound to its layer.
fn load(client: &Client, image: &Image, digest: &Digest) -> Result<Vec<Found>> {
    let (reg, repo) = (image.registry.as_str(), image.repository.as_str());
    let mut found = Vec::new();
    let blobs = artifact_blobs(client, image, digest)?;
    for ((layer, diff_id), d) in image.layers.iter().zip(&image.diff_ids).zip(&blobs) {
        let mut blob = Vec::new();
        client
            .download_blob(reg, repo, &d.digest, Some(d.size), &mut blob)
            .map_err(|source| Error::Fetch { layer: layer.digest.clone(), source: Box::new(source) })?;
        let artifact = IndexArtifact::decode(&blob, &Expected { layer, diff_id })?;
        // The head's annotation must name this blob's head: a reader that trusts it to
        // fetch the head alone gets what a whole download would have.
        let head = IndexArtifact::head(&blob)?;
        let annotated = d.annotations.as_ref().and_then(|a| a.get(HEAD_ANNOTATION));
        if annotated.map(String::as_str) != Some(&format!("{} {}", head.len(), Digest::of(head))) {
            return Err(Error::HeadAnnotation { layer: layer.digest.clone() });
        }
        found.push(Found { artifact, blob_size: blob.len() as u64, head_size: head.len() as u64 });
    }
    Ok(found)
}

/// Fetch artifact manifest `digest`, then every layer's head alone by Range, checked
/// against the head annotation (size and digest) of its blob's descriptor, and decode
/// each bound to its layer. The windows stay in the registry until a read needs one.
fn load_heads(client: &Client, image: &Image, digest: &Digest) -> Result<Vec<Head>> {
    let (reg, repo) = (image.registry.as_str(), image.repository.as_str());
    let mut heads = Vec::new();
    let blobs = artifact_blobs(client, image, digest)?;
    for ((layer, diff_id), d) in image.layers.iter().zip(&image.diff_ids).zip(&blobs) {
        let annotated = d.annotations.as_ref().and_then(|a| a.get(HEAD_ANNOTATION));
        let (size, head_digest) = annotated
            .and_then(|a| a.split_once(' '))
            .and_then(|(n, h)| Some((n.parse::<u64>().ok()?, h.parse::<Digest>().ok()?)))
            .ok_or_else(|| Error::HeadAnnotation { layer: layer.digest.clone() })?;
        if size > d.size {
            return Err(Error::HeadTooLarge { layer: layer.digest.clone() });
        }
        let head = client
            .read_blob_range(reg, repo, &d.digest, 0, size)
            .map_err(|source| Error::Fetch { layer: layer.digest.clone(), source: Box::new(source) })?;
        if head.len() as u64 != size || Digest::of(&head) != head_digest {
            return Err(Error::HeadMismatch { layer: layer.digest.clone() });
        }
        let artifact = IndexArtifact::decode_head(&head, &Expected { layer, diff_id })?;
        let window_ranges = artifact.window_ranges(size);
        if artifact.blob_len(size) != d.size {
            return Err(Error::WindowsDoNotFill { layer: layer.digest.clone() });
        }
        heads.push(Head { artifact, blob: d.digest.clone(), head_len: size, window_ranges });
    }
    Ok(heads)
}

/// The image `r` names in its registry, without storing anything: its manifest (the
/// `platform` one from an index), layers and diff_ids.
pub fn remote_image(client: &Client, r: &Reference, platform: Option<&Platform>) -> Result<Image> {
    let found = resolve::remote_image(client, r, platform, |_| None)?;
    Ok(Image {
        registry: r.registry.clone(),
        repository: r.repository.clone(),
        manifest: Descriptor {
            media_type: found.manifest.media_type,
            size: found.manifest.body.len() as u64,
            digest: found.manifest.digest,
            platform: None,
            annotations: None,
        },
        layers: found.parsed.layers,
        diff_ids: found.config.rootfs.diff_ids,
    })
}
