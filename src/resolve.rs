//! From a reference to one image in its registry, without the store: the manifest the
//! reference names, the platform's manifest when that is a multi-arch index, the
//! config, and the checks that make them one image imgfs can serve (the config's size
//! and platform, one diff_id per layer, layer media types it reads). `register`
//! stores what this finds for `pull`, `mount` and `index push`; `index inspect` uses it
//! as it is.

use crate::digest::Digest;
use crate::image::{self, Compression, ImageConfig, Manifest, ManifestKind, Platform};
use crate::reference::Reference;
use crate::registry::{Client, FetchedManifest, RegistryError};

/// Why a reference does not resolve to an image. The texts are what users see after
/// `imgfs: error:`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot get manifest for {image}")]
    Manifest {
        image: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("cannot get the {platform} manifest of {image}")]
    PlatformManifest {
        image: String,
        platform: Platform,
        #[source]
        source: Box<RegistryError>,
    },
    /// A manifest or index that is not one, or an index without the platform.
    #[error("{image}")]
    NotAnImage {
        image: String,
        #[source]
        source: image::Error,
    },
    #[error("{image}: the index for {platform} points at another index")]
    NestedIndex { image: String, platform: Platform },
    #[error("{image}: image config {digest} claims {size} bytes, more than {MAX_CONFIG_SIZE}")]
    ConfigTooLarge { image: String, digest: Digest, size: u64 },
    #[error("cannot get config of {image}")]
    Config {
        image: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("{image}: image config {digest} is not valid")]
    BadConfig {
        image: String,
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    /// `found` is the config's `os/architecture`.
    #[error("{image}: image is {found}, not {platform}")]
    OtherPlatform { image: String, found: String, platform: Platform },
    #[error("{image}: config lists {diff_ids} diff_ids for {layers} layers")]
    DiffIdCount { image: String, diff_ids: usize, layers: usize },
    #[error("{image}: layer {digest}")]
    LayerMediaType {
        image: String,
        digest: Digest,
        #[source]
        source: Box<image::Error>,
    },
}

/// An image config is JSON of a few KiB (a long history makes it hundreds): a claimed
/// size past this is not an image config, and is not downloaded into memory.
pub const MAX_CONFIG_SIZE: u64 = 32 << 20;

/// One image of a registry, checked, as the registry sent it.
pub struct RemoteImage {
    /// What the reference names: the image manifest, or the multi-arch index.
    pub top: FetchedManifest,
    /// The image manifest (the platform's, from an index): `top` again for a
    /// single-platform image.
    pub manifest: FetchedManifest,
    pub parsed: Manifest,
    /// Did the manifest come from an index (`top`)?
    pub from_index: bool,
    pub config_body: Vec<u8>,
    pub config: ImageConfig,
}

impl RemoteImage {
    /// The index the manifest was chosen from, if any.
    pub fn index_digest(&self) -> Option<&Digest> {
        self.from_index.then_some(&self.top.digest)
    }
}

/// Fetch the manifest `r` names (and from an index the one for `platform`, else the
/// host's), then the config, and check them. `stored_config` gives the config's bytes
/// when they are at hand already (checked against its digest by the caller), so they
/// are not downloaded again.
pub fn remote_image(
    client: &Client,
    r: &Reference,
    platform: Option<&Platform>,
    stored_config: impl FnOnce(&Digest) -> Option<Vec<u8>>,
) -> Result<RemoteImage, Error> {
    let image = r.to_string();
    let (registry, repository) = (r.registry.as_str(), r.repository.as_str());
    let top = client
        .get_manifest(registry, repository, &r.manifest_reference())
        .map_err(|source| Error::Manifest { image: image.clone(), source: Box::new(source) })?;
    let not_an_image = |source| Error::NotAnImage { image: image.clone(), source };
    let (parsed, manifest, from_index) =
        match image::parse_manifest(&top.media_type, &top.body).map_err(not_an_image)? {
            // A single-platform image is checked against --platform below, from its config.
            ManifestKind::Image(m) => (m, top.clone(), false),
            ManifestKind::Index(idx) => {
                let want = platform.cloned().unwrap_or_else(Platform::host);
                let d = image::platform_manifest(&idx.manifests, &want).map_err(not_an_image)?;
                let sub = client.get_manifest(registry, repository, d.digest.as_str()).map_err(|source| {
                    Error::PlatformManifest { image: image.clone(), platform: want.clone(), source: Box::new(source) }
                })?;
                match image::parse_manifest(&sub.media_type, &sub.body).map_err(not_an_image)? {
                    ManifestKind::Image(m) => (m, sub, true),
                    ManifestKind::Index(_) => return Err(Error::NestedIndex { image, platform: want }),
                }
            }
        };
    let desc = &parsed.config;
    let config_body = match stored_config(&desc.digest) {
        Some(body) => body,
        None => {
            if desc.size > MAX_CONFIG_SIZE {
                return Err(Error::ConfigTooLarge { image, digest: desc.digest.clone(), size: desc.size });
            }
            let mut body = Vec::new();
            client
                .download_blob(registry, repository, &desc.digest, Some(desc.size), &mut body)
                .map_err(|source| Error::Config { image: image.clone(), source: Box::new(source) })?;
            body
        }
    };
    let config: ImageConfig = serde_json::from_slice(&config_body).map_err(|source| Error::BadConfig {
        image: image.clone(),
        digest: desc.digest.clone(),
        source,
    })?;
    if let (Some(want), false) = (platform, from_index) {
        if config.os != want.os || config.architecture != want.architecture {
            let found = format!("{}/{}", config.os, config.architecture);
            return Err(Error::OtherPlatform { image, found, platform: want.clone() });
        }
    }
    if config.rootfs.diff_ids.len() != parsed.layers.len() {
        return Err(Error::DiffIdCount { image, diff_ids: config.rootfs.diff_ids.len(), layers: parsed.layers.len() });
    }
    for l in &parsed.layers {
        Compression::of_media_type(&l.media_type).map_err(|source| Error::LayerMediaType {
            image: image.clone(),
            digest: l.digest.clone(),
            source: Box::new(source),
        })?;
    }
    Ok(RemoteImage { top, manifest, parsed, from_index, config_body, config })
}
