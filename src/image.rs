//! The image model: manifests, indexes (manifest lists) and configs, in both the Docker
//! schema 2 and the OCI media types, and the choice of one platform from an index as a
//! plain function.
//!
//! The model is ours, not `oci-spec`'s; `oci-spec` is a test dependency only, the oracle
//! the tests check our OCI media type names against. Its types (0.10) would change what
//! we accept and what we say:
//! - a descriptor's `size` is a `u64`: `-1` and `1.5` are refused in serde's words, not
//!   as "descriptor size -1 is not a whole number of bytes", and sizes past the spec's
//!   int64 are accepted;
//! - its `digest` takes sha384, sha512 and any well-formed algorithm, where ours
//!   (`crate::digest::Digest`) refuses all but sha256 at parse time so that no other
//!   algorithm reaches the store's paths; and its `mediaType` is required, where a
//!   descriptor without one reads today;
//! - `ImageConfiguration` requires `architecture` and `os`, keeps `diff_ids` as
//!   unchecked strings, and reads `ExposedPorts`/`Volumes` through a `HashMap` of empty
//!   structs, so `{"80/tcp": null}` (which Go's encoding/json reads) refuses the image;
//! - `Arch::from("armbe")` is `arm64be`, which would change the platforms an error lists;
//! - maps are `HashMap`s (annotations, labels) and fields sit behind getters and
//!   builders, so adopting the types would mean converting at every user.
//!
//! Wrapping each of those would leave more code than the model it replaces, and taking
//! the crate for its media type names alone would add 14 crates to the binary for six
//! strings.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What is wrong with a manifest, index, platform or layer media type. Each variant's
/// text is the one-line message users see; the JSON error beneath it is its source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("manifest is not valid JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("Docker schema 1 manifests are not supported")]
    Schema1,
    #[error("bad image index")]
    BadIndex(#[source] serde_json::Error),
    #[error("bad image manifest")]
    BadManifest(#[source] serde_json::Error),
    #[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")]
    InvalidPlatform(String),
    #[error("no image for platform {want} in the index; it has: {}", have.join(", "))]
    NoPlatform { want: Platform, have: Vec<String> },
    #[error("unsupported layer media type {0:?}")]
    UnsupportedLayer(String),
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Everything we can read, in the order we prefer it; sent as the Accept header.
pub const MANIFEST_ACCEPT: [&str; 4] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// A content descriptor: what a manifest says about a blob it points to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    #[serde(deserialize_with = "blob_size")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A descriptor's `size`: a whole number of bytes that fits the spec's int64, so a
/// hostile `-1` or `1.5` is refused with a message that says which field is wrong. (A
/// huge size is accepted here; a download never trusts it beyond the bytes it receives.)
fn blob_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_u64()
        .filter(|s| *s <= i64::MAX as u64)
        .ok_or_else(|| serde::de::Error::custom(format!("descriptor size {n} is not a whole number of bytes")))
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// Parse `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform { os: os.to_string(), architecture: normalise_arch(arch), variant: None })
            }
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
                Ok(Platform { os: os.to_string(), architecture: normalise_arch(arch), variant: Some(v.to_string()) })
            }
            _ => Err(Error::InvalidPlatform(s.to_string())),
        }
    }

    /// The platform this binary runs on, in the names images use.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        let variant = if arch == "arm64" { Some("v8".to_string()) } else { None };
        Platform { os: std::env::consts::OS.to_string(), architecture: arch.to_string(), variant }
    }
}

impl ImageConfig {
    /// The platform the image was built for, None when its config names none.
    pub fn platform(&self) -> Option<Platform> {
        (!self.os.is_empty() && !self.architecture.is_empty()).then(|| Platform {
            os: self.os.clone(),
            architecture: normalise_arch(&self.architecture),
            variant: self.variant.clone(),
        })
    }
}

fn normalise_arch(a: &str) -> String {
    match a {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        other => other.into(),
    }
}

/// Pick the manifest for `want` from an index. A wanted variant must match exactly;
/// with no variant wanted, an entry without one wins over one with a variant, except
/// that arm64 treats a missing variant and `v8` as the same, as containerd does.
pub fn select_platform<'a>(manifests: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let mut best: Option<(&Descriptor, u8)> = None;
    for d in manifests {
        let Some(p) = &d.platform else { continue };
        let score = fit(p, want);
        if score > 0 && best.is_none_or(|(_, s)| score > s) {
            best = Some((d, score));
        }
    }
    best.map(|(d, _)| d)
}

/// Does an image built for `have` serve `want`, by the rules of `select_platform`?
pub fn serves(have: &Platform, want: &Platform) -> bool {
    fit(have, want) > 0
}

/// How well `have` serves `want`: 0 not at all (another OS or architecture, or
/// another variant), 1 acceptable, 2 the same arm64 (`v8` or none), 3 exactly.
fn fit(have: &Platform, want: &Platform) -> u8 {
    let arm64_v8 = |p: &Platform| p.architecture == "arm64" && p.variant.as_deref().unwrap_or("v8") == "v8";
    if have.os != want.os || have.architecture != want.architecture {
        0
    } else if have.variant == want.variant {
        3
    } else if arm64_v8(have) && arm64_v8(want) {
        2
    } else if want.variant.is_none() || (want.architecture != "arm64" && have.variant.is_none()) {
        1
    } else {
        0
    }
}

/// `select_platform`, or the error every source gives when the index has no such image:
/// the platforms it does have.
pub fn platform_manifest<'a>(manifests: &'a [Descriptor], want: &Platform) -> Result<&'a Descriptor, Error> {
    select_platform(manifests, want).ok_or_else(|| {
        let have: Vec<String> = manifests.iter().filter_map(|m| m.platform.as_ref().map(|p| p.to_string())).collect();
        Error::NoPlatform { want: want.clone(), have }
    })
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index or Docker manifest list.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// What a manifest body turned out to be.
pub enum ManifestKind {
    Image(Manifest),
    Index(Index),
}

/// Decide by the Content-Type the registry sent, falling back to the body's own
/// `mediaType` and shape (some registries send `application/json`).
pub fn parse_manifest(content_type: &str, body: &[u8]) -> Result<ManifestKind, Error> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(Error::NotJson)?;
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let declared = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
    let is_index = [ct, declared].iter().any(|t| *t == OCI_INDEX || *t == DOCKER_LIST)
        || (v.get("manifests").is_some() && v.get("layers").is_none());
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        return Err(Error::Schema1);
    }
    if is_index {
        serde_json::from_value(v).map(ManifestKind::Index).map_err(Error::BadIndex)
    } else {
        serde_json::from_value(v).map(ManifestKind::Image).map_err(Error::BadManifest)
    }
}

/// The image configuration (only the parts we show or need).
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
    /// How each layer was made, oldest first; entries with `empty_layer` made none.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub history: Vec<HistoryEntry>,
}

/// One step of an image's history, as the config records it (`docker history` shows these).
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct HistoryEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// A `null` where a list is expected reads as the empty list (Go writes nil slices so).
fn null_as_default<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// The part of the config that says how to run the image, kept with the names docker
/// uses so that `inspect` can print it as docker does.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "ExposedPorts", default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "StopSignal", default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default()
    }

    /// The creation time, if the config has a parseable one.
    pub fn created_at(&self) -> Option<jiff::Timestamp> {
        self.created.as_deref()?.parse().ok()
    }
}

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of_media_type(mt: &str) -> Result<Compression, Error> {
        match mt {
            "application/vnd.oci.image.layer.v1.tar" | "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
                Ok(Compression::None)
            }
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
            other => Err(Error::UnsupportedLayer(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored image is taken for a platform by the same rules as an index entry.
    #[test]
    fn an_image_serves_a_platform_as_an_index_entry_would() {
        let p = |s: &str| Platform::parse(s).unwrap();
        assert!(!serves(&p("linux/arm/v7"), &p("linux/arm/v6")));
        assert!(serves(&p("linux/arm/v7"), &p("linux/arm/v7")));
        assert!(serves(&p("linux/arm/v7"), &p("linux/arm")));
        assert!(serves(&p("linux/arm64"), &p("linux/arm64/v8")));
        assert!(serves(&p("linux/aarch64/v8"), &p("linux/arm64")));
        assert!(!serves(&p("linux/amd64"), &p("linux/arm64")));
        assert!(!serves(&p("windows/amd64"), &p("linux/amd64")));
    }

    fn desc(os: &str, arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: Some(Platform { os: os.into(), architecture: arch.into(), variant: variant.map(Into::into) }),
            annotations: None,
        }
    }

    #[test]
    fn platform_selection() {
        let list = vec![
            desc("linux", "amd64", None, 1),
            desc("linux", "arm", Some("v6"), 2),
            desc("linux", "arm", Some("v7"), 3),
            desc("linux", "arm64", Some("v8"), 4),
            desc("windows", "amd64", None, 5),
        ];
        let pick = |s: &str| select_platform(&list, &Platform::parse(s).unwrap()).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64"), Some(Digest::of(&[1])));
        assert_eq!(pick("linux/arm/v7"), Some(Digest::of(&[3])));
        assert_eq!(pick("linux/arm64"), Some(Digest::of(&[4])));
        assert_eq!(pick("linux/x86_64"), Some(Digest::of(&[1])));
        assert_eq!(pick("windows/amd64"), Some(Digest::of(&[5])));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("linux/arm/v5"), None);
        assert!(Platform::parse("linux").is_err());
        let e = platform_manifest(&list, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no image for platform linux/s390x in the index; it has: linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8, windows/amd64"
        );
    }

    #[test]
    fn layer_media_types_name_their_compression() {
        use oci_spec::image::MediaType as M;
        use Compression as C;
        // The OCI names as oci-spec spells them, so a typo on our side fails here.
        for (spec, want) in [
            (M::ImageLayer, C::None),
            (M::ImageLayerNonDistributable, C::None),
            (M::ImageLayerGzip, C::Gzip),
            (M::ImageLayerNonDistributableGzip, C::Gzip),
            (M::ImageLayerZstd, C::Zstd),
            (M::ImageLayerNonDistributableZstd, C::Zstd),
        ] {
            let mt = spec.to_string();
            assert_eq!(Compression::of_media_type(&mt).unwrap(), want, "{mt}");
        }
        // Docker schema 2's, which oci-spec does not name.
        for mt in [
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ] {
            assert_eq!(Compression::of_media_type(mt).unwrap(), C::Gzip, "{mt}");
        }
        for mt in [OCI_MANIFEST, "application/vnd.oci.image.config.v1+json", "", "application/x-tar"] {
            let e = Compression::of_media_type(mt).unwrap_err();
            assert_eq!(e.to_string(), format!("unsupported layer media type {mt:?}"));
        }
        assert_eq!(OCI_MANIFEST, M::ImageManifest.to_string());
        assert_eq!(OCI_INDEX, M::ImageIndex.to_string());
    }

    #[test]
    fn manifest_kind_follows_content_type_then_body() {
        let body = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(parse_manifest("application/json", body), Ok(ManifestKind::Index(_))));
        let d = Digest::of(b"x");
        let body = format!(r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{d}","size":1}},"layers":[]}}"#);
        assert!(matches!(parse_manifest(OCI_MANIFEST, body.as_bytes()), Ok(ManifestKind::Image(_))));
        assert!(parse_manifest(OCI_MANIFEST, br#"{"schemaVersion":1}"#).is_err());
    }

    #[test]
    fn hostile_manifests_are_refused_naming_the_problem() {
        let d = Digest::of(b"x");
        let manifest = |layer_size: &str| {
            format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{d}","size":1}},
                "layers":[{{"mediaType":"b","digest":"{d}","size":{layer_size}}}]}}"#
            )
        };
        // The message as the CLI prints it: the error, then each source after ": ".
        let err = |body: &str| match parse_manifest(OCI_MANIFEST, body.as_bytes()) {
            Err(e) => {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                text
            }
            Ok(_) => panic!("accepted: {body}"),
        };
        let e = err(&manifest("-1"));
        assert!(e.starts_with("bad image manifest: descriptor size -1 is not a whole number of bytes"), "{e}");
        assert!(err(&manifest("1.5")).contains("descriptor size 1.5 is not"));
        assert!(err(&manifest("9223372036854775808")).contains("descriptor size 9223372036854775808 is not"));
        assert!(err(&manifest(r#""12""#)).starts_with("bad image manifest: "));
        // Huge but whole: accepted here, not trusted by the download.
        match parse_manifest(OCI_MANIFEST, manifest("1000000000000000").as_bytes()) {
            Ok(ManifestKind::Image(m)) => assert_eq!(m.layers[0].size, 1_000_000_000_000_000),
            _ => panic!("a 10^15 size is a parse error"),
        }
        let whole = manifest("1");
        for cut in [1, whole.len() / 2, whole.len() - 1] {
            assert!(err(&whole[..cut]).starts_with("manifest is not valid JSON"), "{}", err(&whole[..cut]));
        }
        let e = err(r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:12","size":1}]}"#);
        assert!(e.starts_with("bad image index: "), "{e}");
    }
}
