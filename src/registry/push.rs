//! Publishing to a registry and finding what was published: blob uploads (POST for an
//! upload session, then one PUT with the bytes: the spec's monolithic upload; a blob the
//! repository already has is not sent again), manifest PUTs, a manifest read from the
//! registry itself for a read-modify-write, and the OCI 1.1 referrers API. Used to
//! publish layer indexes next to an image (`crate::referrers`).
//!
//! The writes are the only requests that ask for a token with `push` scope; every read
//! keeps asking for `pull` alone.

use super::client::Client;
use super::error::RegistryError;
use super::error::Subject;
use super::manifests::{DOCKER_CONTENT_DIGEST, MANIFEST_LIMIT};
use super::names::{check_manifest_reference, check_repository};
use super::transport::{fail, read_body, Outgoing};
use crate::digest::Digest;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

impl Client {
    /// Does the repository hold this blob? (HEAD; 404 is no.)
    pub fn blob_exists(&self, registry: &str, repository: &str, digest: &Digest) -> Result<bool, RegistryError> {
        check_repository(repository)?;
        let subject = Subject::Blob { repository, digest };
        let url = self.url(registry, &format!("v2/{repository}/blobs/{digest}"))?;
        let head = Outgoing { method: Method::HEAD, body: None };
        let resp = self.send(registry, subject, &push_scope(repository), &head, &url, &HeaderMap::new())?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(fail(registry, subject, resp)),
        }
    }

    /// Upload `data` as blob `digest` (the caller's digest of it), unless the repository
    /// has it already. The registry checks the digest against the bytes itself.
    pub fn upload_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        data: &[u8],
    ) -> Result<(), RegistryError> {
        if self.blob_exists(registry, repository, digest)? {
            return Ok(());
        }
        let subject = Subject::Blob { repository, digest };
        let scope = push_scope(repository);
        let start = self.url(registry, &format!("v2/{repository}/blobs/uploads/"))?;
        let post = Outgoing { method: Method::POST, body: None };
        let resp = self.send(registry, subject, &scope, &post, &start, &HeaderMap::new())?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(fail(registry, subject, resp));
        }
        let invalid = |reason: String| RegistryError::InvalidResponse {
            registry: registry.to_string(),
            what: format!("the upload of {}", subject.describe(registry)),
            reason,
        };
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| invalid("no Location for the upload".into()))?;
        let mut url = resp.url().join(location).map_err(|source| RegistryError::InvalidLink {
            registry: registry.to_string(),
            what: format!("the upload of {}", subject.describe(registry)),
            kind: "Location",
            link: location.to_string(),
            source,
        })?;
        // The upload URL must stay on the registry the session was opened with: the
        // token goes along.
        if !super::endpoint::same_origin(&url, resp.url()) {
            return Err(invalid(format!("the upload Location leads to another host: {location:?}")));
        }
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        let put = Outgoing { method: Method::PUT, body: Some(data) };
        let resp = self.send(registry, subject, &scope, &put, &url, &headers)?;
        if resp.status() != StatusCode::CREATED {
            return Err(fail(registry, subject, resp));
        }
        Ok(())
    }

    /// PUT a manifest (or index) under `reference` (a tag or its digest). Returns its
    /// digest, checked against the one the registry computed when it says.
    pub fn put_manifest(
        &self,
        registry: &str,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<Digest, RegistryError> {
        check_repository(repository)?;
        check_manifest_reference(reference)?;
        let subject = Subject::Manifest { repository, reference };
        let url = self.url(registry, &format!("v2/{repository}/manifests/{reference}"))?;
        let mut headers = HeaderMap::new();
        let content_type = HeaderValue::from_str(media_type)
            .map_err(|_| RegistryError::InvalidInput { reason: format!("bad media type {media_type:?}") })?;
        headers.insert(CONTENT_TYPE, content_type);
        let put = Outgoing { method: Method::PUT, body: Some(body) };
        let resp = self.send(registry, subject, &push_scope(repository), &put, &url, &headers)?;
        if resp.status() != StatusCode::CREATED {
            return Err(fail(registry, subject, resp));
        }
        let digest = Digest::of(body);
        let announced = resp.headers().get(DOCKER_CONTENT_DIGEST).and_then(|v| v.to_str().ok()?.parse::<Digest>().ok());
        if let Some(announced) = announced.filter(|a| *a != digest) {
            return Err(RegistryError::DigestMismatch {
                what: subject.describe(registry),
                expected: digest,
                actual: announced,
            });
        }
        Ok(digest)
    }

    /// A manifest from the registry itself, never a mirror: what a read-modify-write
    /// (the referrers tag) must start from.
    pub fn get_manifest_at_origin(
        &self,
        registry: &str,
        repository: &str,
        reference: &str,
    ) -> Result<super::FetchedManifest, RegistryError> {
        self.get_manifest_from(registry, repository, reference)
    }

    /// The OCI 1.1 referrers API: the index of manifests whose `subject` is `digest`,
    /// filtered by `artifact_type` where the registry does. `None` when the registry has
    /// no such API (404): the caller then reads the referrers tag (`sha256-HEX`).
    /// Asked of the mirrors first, like a manifest by tag (the list changes as indexes
    /// are published, so a `mirror-by-digest-only` mirror is not asked): a fleet behind a
    /// pull-through mirror then never asks the origin itself.
    pub fn get_referrers(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        artifact_type: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        self.via_mirrors(registry, repository, false, |r, repo| self.get_referrers_from(r, repo, digest, artifact_type))
    }

    fn get_referrers_from(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        artifact_type: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        check_repository(repository)?;
        let reference = digest.as_str();
        let subject = Subject::Manifest { repository, reference };
        let mut url = self.url(registry, &format!("v2/{repository}/referrers/{digest}"))?;
        url.query_pairs_mut().append_pair("artifactType", artifact_type);
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static(crate::image::OCI_INDEX));
        let resp = self.get(registry, subject, &url, &headers)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(fail(registry, subject, resp));
        }
        let what = format!("the referrers of {}", subject.describe(registry));
        read_body(registry, &what, resp, MANIFEST_LIMIT).map(Some)
    }
}
