//! Manifests and indexes by tag or digest: asked of the mirrors first, sent with the
//! Accept list of every manifest type we read, checked against the digest they were asked
//! by (or that the registry announced), fetched again when cut off midway; and a
//! missing tag told apart from a missing repository.

use super::client::Client;
use super::error::{self, RegistryError, Subject};
use super::names::{check_manifest_reference, check_repository};
use super::retry;
use super::transport::{fail, read_body, ERROR_BODY_LIMIT};
use crate::digest::Digest;
use crate::image;
use reqwest::blocking::Response;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;
use std::io::Read;

/// containerd's limit: a manifest or index is JSON of a few KiB; anything far bigger is
/// a broken or hostile server, and it would be held in memory.
pub(super) const MANIFEST_LIMIT: usize = 4 << 20;

/// The digest of a manifest, as the registry computed it.
pub(super) const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// A manifest or index as the registry sent it, with the digest of exactly these bytes.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub body: Vec<u8>,
    /// The Content-Type without parameters; the body's own `mediaType` when the
    /// registry sent a generic one (`application/json`).
    pub media_type: String,
    pub digest: Digest,
}

impl Client {
    /// reference = tag or "sha256:..". Sends Accept: image::MANIFEST_ACCEPT. digest =
    /// sha256 of the body; when `reference` is a digest, or the registry named one in
    /// `Docker-Content-Digest`, a body whose digest differs is an error
    /// (DigestMismatch), never returned. A body cut off midway is fetched again.
    /// Asked of the mirrors configured for `registry` first (mirrors.rs), then of the
    /// registry.
    pub fn get_manifest(
        &self,
        registry: &str,
        repository: &str,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let by_digest = reference.parse::<Digest>().is_ok();
        self.via_mirrors(registry, repository, by_digest, |r, repo| self.get_manifest_from(r, repo, reference))
    }

    pub(super) fn get_manifest_from(
        &self,
        registry: &str,
        repository: &str,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        check_repository(repository)?;
        check_manifest_reference(reference)?;
        let subject = Subject::Manifest { repository, reference };
        let url = self.url(registry, &format!("v2/{repository}/manifests/{reference}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_str(&image::MANIFEST_ACCEPT.join(", ")).expect("ASCII media types"));
        let what = subject.describe(registry);
        let mut retries = retry::Retries::new(registry, &what, self.timeout);
        loop {
            let resp = self.get(registry, subject, &url, &headers)?;
            if !resp.status().is_success() {
                return Err(self.manifest_error(registry, subject, resp));
            }
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
                .unwrap_or_default();
            let announced = resp.headers().get(DOCKER_CONTENT_DIGEST).and_then(|v| v.to_str().ok()?.parse().ok());
            let body = match read_body(registry, &what, resp, MANIFEST_LIMIT) {
                Ok(b) => b,
                Err(e) if e.is_transient() => {
                    retries.pause(e.to_string())?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let digest = verify_manifest_digest(&what, reference, announced, &body)?;
            return Ok(FetchedManifest { media_type: manifest_media_type(&content_type, &body), body, digest });
        }
    }

    /// The error for a manifest request answered with a failure.
    pub(super) fn manifest_error(&self, registry: &str, subject: Subject<'_>, resp: Response) -> RegistryError {
        let err = fail(registry, subject, resp);
        if let Subject::Manifest { repository, .. } = subject {
            if matches!(err, RegistryError::ManifestUnknown { .. }) && self.repository_is_unknown(registry, repository)
            {
                return RegistryError::RepositoryUnknown {
                    registry: registry.to_string(),
                    repository: repository.to_string(),
                };
            }
        }
        err
    }

    /// distribution answers MANIFEST_UNKNOWN for a tag of a repository that does not
    /// exist at all; its tag list does say NAME_UNKNOWN. Asked only on that error path,
    /// so that "no such repository" is not reported as "no such tag".
    pub(super) fn repository_is_unknown(&self, registry: &str, repository: &str) -> bool {
        let subject = Subject::Tags { repository };
        let Ok(url) = self.url(registry, &format!("v2/{repository}/tags/list?n=1")) else { return false };
        match self.get(registry, subject, &url, &HeaderMap::new()) {
            Ok(resp) if !resp.status().is_success() => {
                let status = resp.status();
                let mut body = Vec::new();
                let _ = resp.take(ERROR_BODY_LIMIT as u64).read_to_end(&mut body);
                // Only the explicit code counts: a bare 404 could mean "no tag listing".
                error::parse_envelope(&body).iter().any(|e| e.code == "NAME_UNKNOWN") && status == StatusCode::NOT_FOUND
            }
            _ => false,
        }
    }
}

/// The digest of a manifest body; when it was asked for by digest, or the registry
/// announced one (`Docker-Content-Digest`, for a tag), that digest or an error: bytes
/// changed on the way, or a registry serving other bytes than it says, must not be
/// trusted.
pub(super) fn verify_manifest_digest(
    what: &str,
    reference: &str,
    announced: Option<Digest>,
    body: &[u8],
) -> Result<Digest, RegistryError> {
    let actual = Digest::of(body);
    if let Some(expected) = reference.parse::<Digest>().ok().or(announced) {
        if expected != actual {
            return Err(RegistryError::DigestMismatch { what: what.to_string(), expected, actual });
        }
    }
    Ok(actual)
}

/// The Content-Type when it names a manifest type; the body's `mediaType` when the
/// registry sent something generic; else whatever the header said.
pub(super) fn manifest_media_type(content_type: &str, body: &[u8]) -> String {
    if image::MANIFEST_ACCEPT.contains(&content_type) {
        return content_type.to_string();
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| content_type.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_asked_for_by_digest_must_hash_to_it() {
        let body = br#"{"schemaVersion":2}"#;
        let right = Digest::of(body);
        assert_eq!(verify_manifest_digest("m", right.as_str(), None, body).unwrap(), right);
        assert_eq!(verify_manifest_digest("m", "latest", None, body).unwrap(), right);
        assert_eq!(verify_manifest_digest("m", "latest", Some(right.clone()), body).unwrap(), right);
        let wrong = Digest::of(b"other");
        assert!(verify_manifest_digest("m", "latest", Some(wrong.clone()), body).is_err());
        match verify_manifest_digest("manifest r/x@..", wrong.as_str(), None, body) {
            Err(RegistryError::DigestMismatch { expected, actual, .. }) => {
                assert_eq!((expected, actual), (wrong, right));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn media_type_falls_back_to_the_body() {
        let body = format!(r#"{{"mediaType":"{}"}}"#, image::OCI_INDEX);
        assert_eq!(manifest_media_type("application/json", body.as_bytes()), image::OCI_INDEX);
        assert_eq!(manifest_media_type(image::DOCKER_MANIFEST, body.as_bytes()), image::DOCKER_MANIFEST);
        assert_eq!(manifest_media_type("application/json", b"{}"), "application/json");
    }
}
