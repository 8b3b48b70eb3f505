//! Images from local files instead of a registry, named as skopeo names them:
//! `oci:DIR[:TAG]` (an OCI image layout), `oci-archive:FILE[:TAG]` (a tar of one) and
//! `docker-archive:FILE[:REF]` (what `docker save` and `podman save` write).
//!
//! Resolving one reads its index or `manifest.json`, picks the image (by tag, REF or
//! platform), and checks the manifest and config against their digests, all without
//! writing to the store; the caller then stores them like a registry pull does. A
//! docker archive has no registry manifest: one is made (OCI, with the layers'
//! computed digests), as skopeo makes one when it copies such an archive. Layer blobs
//! are read from the layout's `blobs/` (in place, for a mount of `oci:`) or from the
//! archive's members, by offset in the tar.
//!
//! Names follow podman 4's `pull`: an `oci:` image is `localhost/DIR`, an
//! `oci-archive:` image is named by its `org.opencontainers.image.ref.name` annotation
//! (a short name going to `localhost/`), a `docker-archive:` image by its `RepoTags`
//! (normalised as docker names, `busybox` being `docker.io/library/busybox`).

use crate::digest::{Digest, HashingReader};
use crate::image::{self, Compression, Descriptor, ImageConfig, Index, Manifest, ManifestKind, Platform};
use crate::reference::Reference;
use crate::store::db::ImageRecord;
use crate::store::Store;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// What is wrong with a local source; most name it (`oci:/path:tag: …`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid reference {input:?}: no path after {transport}:")]
    NoPath { input: String, transport: &'static str },
    #[error("{transport}: {}", .path.display())]
    Path {
        transport: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{local}: {} is not a directory (an OCI layout is one)", .path.display())]
    NotADirectory { local: String, path: PathBuf },
    #[error("{local}: not an OCI image layout (no oci-layout file)")]
    NotALayout { local: String },
    #[error("{local}: index.json is not a valid image index")]
    BadIndex {
        local: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{local}: no image tagged {tag:?} in the layout; it has: {have}")]
    NoSuchTag { local: String, tag: String, have: String },
    #[error("{local}: the layout holds {count} images, name one as {local}:TAG; it has: {have}")]
    LayoutHoldsMany { local: String, count: usize, have: String },
    /// A manifest or index that is not one, or has no image for the platform.
    #[error("{local}")]
    Manifest {
        local: String,
        #[source]
        source: Box<image::Error>,
    },
    #[error("{local}: the index for {platform} points at another index")]
    NestedIndex { local: String, platform: String },
    #[error("{local}: layer blob {digest} is missing")]
    MissingLayer { local: String, digest: Digest },
    #[error("{local}: image config {digest} is not valid")]
    BadConfig {
        local: String,
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("{local}: config lists {diff_ids} diff_ids for {layers} layers")]
    DiffIdCount { local: String, diff_ids: usize, layers: usize },
    #[error("{local}: layer {digest}")]
    LayerType {
        local: String,
        digest: Digest,
        #[source]
        source: Box<image::Error>,
    },
    #[error("{local}: image is {os}/{architecture}, not {want}")]
    WrongPlatform { local: String, os: String, architecture: String, want: String },
    #[error("{local}: not a docker archive")]
    NotADockerArchive {
        local: String,
        #[source]
        source: Box<Error>,
    },
    #[error("{local}: manifest.json is not a docker archive manifest")]
    BadArchiveManifest {
        local: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{local}: {pick:?} is not an image number")]
    NotAnImageNumber { local: String, pick: String },
    #[error("{local}: no image @{number}; it has {count}")]
    NoImageNumber { local: String, number: usize, count: usize },
    #[error("{local}: {pick:?} is not an image reference")]
    NotAReference { local: String, pick: String },
    #[error("{local}: no image {pick} in the archive; it has: {have}")]
    NoImageNamed { local: String, pick: String, have: String },
    #[error("{local}: the archive holds {count} images, name one as {local}:REF; it has: {have}")]
    ArchiveHoldsMany { local: String, count: usize, have: String },
    #[error("{local}: cannot read {name}")]
    ReadLayer {
        local: String,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{local}: blob {digest}")]
    Blob {
        local: String,
        digest: Digest,
        #[source]
        source: Box<Error>,
    },
    #[error("{local}: blob {digest} is corrupt (its content hashes to {actual})")]
    Corrupt { local: String, digest: Digest, actual: Digest },
    /// A file of the source, named by the source.
    #[error("{local}")]
    In {
        local: String,
        #[source]
        source: Box<Error>,
    },
    #[error("cannot open {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a file (an archive is one)", .path.display())]
    NotAFile { path: PathBuf },
    #[error("{} is not a tar archive", .path.display())]
    NotATar {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a tar archive (no files in it)", .path.display())]
    EmptyTar { path: PathBuf },
    #[error("no {name} in {}", .path.display())]
    NoMember { name: String, path: PathBuf },
    #[error("{name} is {len} bytes, more than {MAX_JSON_SIZE}")]
    TooLarge { name: String, len: u64 },
    #[error("cannot read {name}")]
    Read {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("no blob {digest} in the source")]
    NoBlob { digest: Digest },
    #[error("layer {digest} in {image}")]
    CopyLayer {
        digest: Digest,
        image: String,
        #[source]
        source: Box<Error>,
    },
    #[error("cannot encode the made manifest")]
    Encode(#[source] serde_json::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// This error, said of the source `local`.
    fn of(self, local: &LocalRef) -> Error {
        Error::In { local: local.to_string(), source: Box::new(self) }
    }
}

/// Index, manifest, config and `manifest.json` are read into memory: a claimed size
/// past this is not one of them.
const MAX_JSON_SIZE: u64 = 32 << 20;
/// The annotation an OCI layout tags its images with (skopeo's `oci:DIR:TAG`).
const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Oci,
    OciArchive,
    DockerArchive,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Oci => "oci",
            Transport::OciArchive => "oci-archive",
            Transport::DockerArchive => "docker-archive",
        }
    }
}

/// What a user typed as a local source: the transport, the path, and the TAG or REF
/// after the path's first `:` (skopeo splits there too, so a path can't hold a `:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRef {
    pub transport: Transport,
    pub path: PathBuf,
    pub pick: Option<String>,
}

impl LocalRef {
    /// `None` when `input` names no local transport (a registry reference, an ID).
    pub fn parse(input: &str) -> Option<Result<LocalRef>> {
        let transports = [Transport::OciArchive, Transport::Oci, Transport::DockerArchive];
        let (transport, rest) =
            transports.into_iter().find_map(|t| input.strip_prefix(t.name())?.strip_prefix(':').map(|r| (t, r)))?;
        let (path, pick) = match rest.split_once(':') {
            Some((p, t)) => (p, Some(t.to_string()).filter(|t| !t.is_empty())),
            None => (rest, None),
        };
        if path.is_empty() {
            return Some(Err(Error::NoPath { input: input.to_string(), transport: transport.name() }));
        }
        Some(Ok(LocalRef { transport, path: PathBuf::from(path), pick }))
    }

    /// The layout directory a mount reads layer blobs from in place, for `oci:`.
    pub fn layout_dir(&self) -> Option<&Path> {
        (self.transport == Transport::Oci).then_some(self.path.as_path())
    }
}

impl std::fmt::Display for LocalRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.transport.name(), self.path.display())?;
        if let Some(p) = &self.pick {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// An image read from a local source, checked, not yet in the store.
pub struct LocalImage {
    pub record: ImageRecord,
    pub config: ImageConfig,
    /// The digest of what the source's index points at (an index for a multi-arch image).
    pub top_digest: Digest,
    /// Manifests and config to store with the image.
    pub blobs: Vec<(Digest, Vec<u8>)>,
    /// Names (`registry/repo:tag`) to give the image; none leaves it known by ID.
    pub names: Vec<String>,
    files: Files,
    /// Where each blob sits among `files` (a layout's `blobs/sha256/HEX`, or an archive member).
    members: HashMap<Digest, String>,
}

impl LocalImage {
    /// Copy a layer blob into the store, verified against its digest on the way.
    pub fn copy_blob(&self, store: &Store, layer: &Descriptor) -> Result<()> {
        let member = self.members.get(&layer.digest).ok_or_else(|| Error::NoBlob { digest: layer.digest.clone() })?;
        store
            .put_blob_with(&layer.digest, |file| -> Result<_> {
                let mut from = HashingReader::new(self.files.open(member)?.0);
                io::copy(&mut from, file)?;
                Ok(from.finish().0)
            })
            .map_err(|source| Error::CopyLayer {
                digest: layer.digest.clone(),
                image: self.record.source.clone(),
                source: Box::new(source),
            })
    }
}

/// Read `r` and pick its image, for `platform` from a multi-arch index.
pub fn resolve(r: &LocalRef, platform: Option<&Platform>) -> Result<LocalImage> {
    let typed = &r.path;
    let path = r.path.canonicalize().map_err(|source| Error::Path {
        transport: r.transport.name(),
        path: r.path.clone(),
        source,
    })?;
    let r = &LocalRef { path, ..r.clone() };
    let image = match r.transport {
        Transport::Oci => {
            if !r.path.is_dir() {
                return Err(Error::NotADirectory { local: r.to_string(), path: r.path.clone() });
            }
            oci_layout(r, Files::Dir(r.path.clone()), platform)
        }
        Transport::OciArchive => oci_layout(r, Files::tar(&r.path)?, platform),
        Transport::DockerArchive => docker_archive(r, Files::tar(&r.path)?),
    }?;
    let mut image = image;
    if r.transport == Transport::Oci {
        // podman names an image pulled from a layout after the layout's path as typed.
        image.names = local_name(&typed.to_string_lossy()).into_iter().collect();
    }
    if let (Some(want), None) = (platform, &image.record.index) {
        if image.config.os != want.os || image.config.architecture != want.architecture {
            return Err(Error::WrongPlatform {
                local: r.to_string(),
                os: image.config.os.clone(),
                architecture: image.config.architecture.clone(),
                want: want.to_string(),
            });
        }
    }
    Ok(image)
}

fn oci_layout(r: &LocalRef, files: Files, platform: Option<&Platform>) -> Result<LocalImage> {
    if !files.has("oci-layout") {
        return Err(Error::NotALayout { local: r.to_string() });
    }
    let index: Index = serde_json::from_slice(&files.read_json("index.json").map_err(|e| e.of(r))?)
        .map_err(|source| Error::BadIndex { local: r.to_string(), source })?;
    let tag_of = |d: &Descriptor| d.annotations.as_ref().and_then(|a| a.get(REF_NAME)).cloned();
    let chosen: Vec<&Descriptor> = match &r.pick {
        Some(tag) => index.manifests.iter().filter(|d| tag_of(d).as_deref() == Some(tag)).collect(),
        None => index.manifests.iter().collect(),
    };
    let top = match chosen.as_slice() {
        [one] => (*one).clone(),
        _ => {
            let tags: Vec<String> =
                index.manifests.iter().map(|d| tag_of(d).unwrap_or_else(|| d.digest.to_string())).collect();
            let have = if tags.is_empty() { "none".to_string() } else { tags.join(", ") };
            match &r.pick {
                Some(t) => return Err(Error::NoSuchTag { local: r.to_string(), tag: t.clone(), have }),
                None => return Err(Error::LayoutHoldsMany { local: r.to_string(), count: tags.len(), have }),
            }
        }
    };
    let mut blobs = Vec::new();
    let top_body = files.read_blob(&blob_member(&top.digest), &top, r)?;
    let bad = |e| Error::Manifest { local: r.to_string(), source: Box::new(e) };
    let (manifest_desc, manifest, index_digest) =
        match image::parse_manifest(&top.media_type, &top_body).map_err(bad)? {
            ManifestKind::Image(m) => (top.clone(), m, None),
            ManifestKind::Index(idx) => {
                let want = platform.cloned().unwrap_or_else(Platform::host);
                let d = image::platform_manifest(&idx.manifests, &want).map_err(bad)?;
                let body = files.read_blob(&blob_member(&d.digest), d, r)?;
                let m = match image::parse_manifest(&d.media_type, &body).map_err(bad)? {
                    ManifestKind::Image(m) => m,
                    ManifestKind::Index(_) => {
                        return Err(Error::NestedIndex { local: r.to_string(), platform: want.to_string() })
                    }
                };
                blobs.push((top.digest.clone(), top_body.clone()));
                (d.clone(), m, Some(top.digest.clone()))
            }
        };
    let manifest_body = files.read_blob(&blob_member(&manifest_desc.digest), &manifest_desc, r)?;
    blobs.push((manifest_desc.digest.clone(), manifest_body));
    let mut members: HashMap<Digest, String> =
        manifest.layers.iter().map(|l| (l.digest.clone(), blob_member(&l.digest))).collect();
    for l in &manifest.layers {
        if !files.has(&members[&l.digest]) {
            return Err(Error::MissingLayer { local: r.to_string(), digest: l.digest.clone() });
        }
    }
    members.insert(manifest.config.digest.clone(), blob_member(&manifest.config.digest));
    // (`resolve` names an `oci:` image after its path.)
    let names = tag_of(&top).and_then(|t| local_name(&t)).into_iter().collect();
    finish(r, files, members, manifest, &manifest_desc, index_digest, top.digest.clone(), blobs, names)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    r: &LocalRef,
    files: Files,
    members: HashMap<Digest, String>,
    manifest: Manifest,
    manifest_desc: &Descriptor,
    index: Option<Digest>,
    top_digest: Digest,
    mut blobs: Vec<(Digest, Vec<u8>)>,
    names: Vec<String>,
) -> Result<LocalImage> {
    // Both callers put the config among the members.
    let member = &members[&manifest.config.digest];
    let config_body = files.read_blob(member, &manifest.config, r)?;
    let config: ImageConfig = serde_json::from_slice(&config_body).map_err(|source| Error::BadConfig {
        local: r.to_string(),
        digest: manifest.config.digest.clone(),
        source,
    })?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::DiffIdCount {
            local: r.to_string(),
            diff_ids: config.rootfs.diff_ids.len(),
            layers: manifest.layers.len(),
        });
    }
    for l in &manifest.layers {
        Compression::of_media_type(&l.media_type).map_err(|e| Error::LayerType {
            local: r.to_string(),
            digest: l.digest.clone(),
            source: Box::new(e),
        })?;
    }
    blobs.push((manifest.config.digest.clone(), config_body));
    let record = ImageRecord {
        id: manifest.config.digest.clone(),
        manifest: manifest_desc.digest.clone(),
        manifest_media_type: manifest_desc.media_type.clone(),
        index,
        config: manifest.config.clone(),
        layers: manifest.layers.clone(),
        source: LocalRef { pick: None, ..r.clone() }.to_string(),
        repo_digests: Vec::new(),
        pinned: Vec::new(),
        added: jiff::Timestamp::now().as_second(),
        other_manifests: Vec::new(),
    };
    Ok(LocalImage { record, config, top_digest, blobs, names, files, members })
}

/// One image of a docker archive's `manifest.json`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker_archive(r: &LocalRef, files: Files) -> Result<LocalImage> {
    let list: Vec<ArchiveImage> = serde_json::from_slice(
        &files
            .read_json("manifest.json")
            .map_err(|e| Error::NotADockerArchive { local: r.to_string(), source: Box::new(e) })?,
    )
    .map_err(|source| Error::BadArchiveManifest { local: r.to_string(), source })?;
    let norm = |t: &str| Reference::parse(t).ok().map(|n| n.to_string());
    let all_tags = || {
        let tags: Vec<String> = list.iter().flat_map(|i| i.repo_tags.clone().unwrap_or_default()).collect();
        if tags.is_empty() {
            "untagged images".to_string()
        } else {
            tags.join(", ")
        }
    };
    let (image, names) = match &r.pick {
        // `@N`: the Nth image, as skopeo's docker-archive transport numbers them.
        Some(p) if p.starts_with('@') => {
            let n: usize =
                p[1..].parse().map_err(|_| Error::NotAnImageNumber { local: r.to_string(), pick: p.clone() })?;
            let img = list.get(n).ok_or_else(|| Error::NoImageNumber {
                local: r.to_string(),
                number: n,
                count: list.len(),
            })?;
            (img, img.repo_tags.iter().flatten().filter_map(|t| norm(t)).collect())
        }
        Some(p) => {
            let want = norm(p).ok_or_else(|| Error::NotAReference { local: r.to_string(), pick: p.clone() })?;
            let img = list
                .iter()
                .find(|i| i.repo_tags.iter().flatten().any(|t| norm(t).as_ref() == Some(&want)))
                .ok_or_else(|| Error::NoImageNamed { local: r.to_string(), pick: p.clone(), have: all_tags() })?;
            (img, vec![want])
        }
        None => match list.as_slice() {
            [one] => (one, one.repo_tags.iter().flatten().filter_map(|t| norm(t)).collect()),
            _ => return Err(Error::ArchiveHoldsMany { local: r.to_string(), count: list.len(), have: all_tags() }),
        },
    };
    let mut members = HashMap::new();
    let config_body = files.read_json(&image.config).map_err(|e| e.of(r))?;
    let config_desc = Descriptor {
        media_type: "application/vnd.oci.image.config.v1+json".into(),
        digest: Digest::of(&config_body),
        size: config_body.len() as u64,
        platform: None,
        annotations: None,
    };
    members.insert(config_desc.digest.clone(), image.config.clone());
    let mut layers = Vec::new();
    for name in &image.layers {
        // No digests in the archive: each layer is hashed here (and again as it is
        // copied or indexed, against this digest).
        let (mut reader, size) = files.open(name).map_err(|e| e.of(r))?;
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut reader, &mut magic)?;
        let mut hashing = HashingReader::new(io::Cursor::new(magic[..got].to_vec()).chain(reader));
        io::copy(&mut hashing, &mut io::sink()).map_err(|source| Error::ReadLayer {
            local: r.to_string(),
            name: name.clone(),
            source,
        })?;
        let (digest, _) = hashing.finish();
        let media_type = match magic[..got] {
            [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
            [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => "application/vnd.oci.image.layer.v1.tar",
        };
        members.insert(digest.clone(), name.clone());
        layers.push(Descriptor { media_type: media_type.into(), digest, size, platform: None, annotations: None });
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(image::OCI_MANIFEST.into()),
        config: config_desc,
        layers,
        annotations: None,
    };
    let body = serde_json::to_vec(&manifest).map_err(Error::Encode)?;
    let desc = Descriptor {
        media_type: image::OCI_MANIFEST.into(),
        digest: Digest::of(&body),
        size: body.len() as u64,
        platform: None,
        annotations: None,
    };
    let blobs = vec![(desc.digest.clone(), body)];
    finish(r, files, members, manifest.clone(), &desc, None, desc.digest.clone(), blobs, names)
}

/// podman's name for an image that came with a short name or none: `localhost/NAME`,
/// `:latest` added; a name that is no valid reference leaves the image unnamed.
fn local_name(name: &str) -> Option<String> {
    let name = name.trim_start_matches('/');
    let first = name.split('/').next().unwrap_or("");
    let has_domain = name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_domain { name.to_string() } else { format!("localhost/{name}") };
    Reference::parse(&full).ok().filter(|r| r.digest.is_none()).map(|r| r.to_string())
}

fn blob_member(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Where the files of a source are: a directory, or the regular members of a tar
/// (by their offset and size, read in place; symlinks between members resolved).
enum Files {
    Dir(PathBuf),
    Tar { path: PathBuf, members: HashMap<String, (u64, u64)> },
}

impl Files {
    fn tar(path: &Path) -> Result<Files> {
        let file = File::open(path).map_err(|source| Error::Open { path: path.to_path_buf(), source })?;
        if !file.metadata()?.is_file() {
            return Err(Error::NotAFile { path: path.to_path_buf() });
        }
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        let mut links = Vec::new();
        let bad = |source: io::Error| Error::NotATar { path: path.to_path_buf(), source };
        for entry in archive.entries_with_seek().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            let name = clean(&entry.path_bytes());
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    members.insert(name, (entry.raw_file_position(), entry.size()));
                }
                tar::EntryType::Symlink => {
                    if let Some(target) = entry.link_name_bytes() {
                        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                        links.push((
                            name.clone(),
                            clean(format!("{dir}/{}", String::from_utf8_lossy(&target)).as_bytes()),
                        ));
                    }
                }
                _ => {}
            }
        }
        // docker 25+ saves `HEX/layer.tar` as a symlink to `../blobs/sha256/HEX`.
        for (name, target) in links {
            if let Some(&m) = members.get(&target) {
                members.insert(name, m);
            }
        }
        if members.is_empty() {
            return Err(Error::EmptyTar { path: path.to_path_buf() });
        }
        Ok(Files::Tar { path: path.to_path_buf(), members })
    }

    fn has(&self, name: &str) -> bool {
        match self {
            Files::Dir(d) => d.join(name).is_file(),
            Files::Tar { members, .. } => members.contains_key(name),
        }
    }

    fn open(&self, name: &str) -> Result<(Box<dyn Read>, u64)> {
        match self {
            Files::Dir(d) => {
                let p = d.join(name);
                let f = File::open(&p).map_err(|source| Error::Open { path: p.clone(), source })?;
                let len = f.metadata()?.len();
                Ok((Box::new(f), len))
            }
            Files::Tar { path, members } => {
                let &(at, len) =
                    members.get(name).ok_or_else(|| Error::NoMember { name: name.to_string(), path: path.clone() })?;
                let mut f = File::open(path).map_err(|source| Error::Open { path: path.clone(), source })?;
                f.seek(SeekFrom::Start(at))?;
                Ok((Box::new(f.take(len)), len))
            }
        }
    }

    fn read_json(&self, name: &str) -> Result<Vec<u8>> {
        let (r, len) = self.open(name)?;
        if len > MAX_JSON_SIZE {
            return Err(Error::TooLarge { name: name.to_string(), len });
        }
        let mut body = Vec::new();
        r.take(MAX_JSON_SIZE)
            .read_to_end(&mut body)
            .map_err(|source| Error::Read { name: name.to_string(), source })?;
        Ok(body)
    }

    /// A small blob (index, manifest, config), checked against its descriptor.
    fn read_blob(&self, member: &str, d: &Descriptor, r: &LocalRef) -> Result<Vec<u8>> {
        let body = self.read_json(member).map_err(|e| Error::Blob {
            local: r.to_string(),
            digest: d.digest.clone(),
            source: Box::new(e),
        })?;
        let actual = Digest::of(&body);
        if actual != d.digest {
            return Err(Error::Corrupt { local: r.to_string(), digest: d.digest.clone(), actual });
        }
        Ok(body)
    }
}

/// A member name as a relative path: no `./`, no `..` above the root, no trailing `/`.
fn clean(name: &[u8]) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let name = String::from_utf8_lossy(name);
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_transports_as_skopeo_does() {
        let p = |s: &str| LocalRef::parse(s).map(|r| r.unwrap());
        assert_eq!(p("alpine:3"), None);
        assert_eq!(p("oci.example.com/x:1"), None);
        let r = p("oci:/tmp/lay:v1").unwrap();
        assert_eq!(
            (r.transport, r.path.to_str().unwrap(), r.pick.as_deref()),
            (Transport::Oci, "/tmp/lay", Some("v1"))
        );
        let r = p("oci-archive:a.tar").unwrap();
        assert_eq!((r.transport, r.pick), (Transport::OciArchive, None));
        let r = p("docker-archive:/x/d.tar:busybox:latest").unwrap();
        assert_eq!((r.transport, r.pick.as_deref()), (Transport::DockerArchive, Some("busybox:latest")));
        assert!(LocalRef::parse("docker-archive:").unwrap().is_err());
    }

    #[test]
    fn names_images_as_podman_does() {
        assert_eq!(local_name("/tmp/lay").as_deref(), Some("localhost/tmp/lay:latest"));
        assert_eq!(local_name("v1").as_deref(), Some("localhost/v1:latest"));
        assert_eq!(local_name("quay.io/a/b:2").as_deref(), Some("quay.io/a/b:2"));
        assert_eq!(local_name("Not A Name"), None);
    }
}
