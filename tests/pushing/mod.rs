//! Pushing blobs and manifests to a real docker-registry through its HTTP API, for
//! tests that need what no image tool makes (hand-written manifests, broken configs,
//! odd indexes). Shared by the test binaries that need it through `#[path]`.

#![allow(dead_code)] // each test binary uses a different part

use imgfs::digest::Digest;
use reqwest::blocking::Client;

/// Monolithic upload to the registry at `addr`: POST for an upload URL, then PUT the
/// bytes with their digest.
pub fn push_blob(http: &Client, addr: &str, repo: &str, data: &[u8]) -> Digest {
    let digest = Digest::of(data);
    let r = http.post(format!("http://{addr}/v2/{repo}/blobs/uploads/")).send().unwrap();
    assert_eq!(r.status(), 202, "starting an upload to {repo}");
    let location = r.headers()["location"].to_str().unwrap();
    let mut url = reqwest::Url::parse(&format!("http://{addr}/")).unwrap().join(location).unwrap();
    url.query_pairs_mut().append_pair("digest", digest.as_str());
    let r = http.put(url).header("content-type", "application/octet-stream").body(data.to_vec()).send().unwrap();
    assert_eq!(r.status(), 201, "finishing the upload of {digest}: {:?}", r.text());
    digest
}

/// PUT a manifest or index of `media_type` as `repo:reference`.
pub fn push_manifest(http: &Client, addr: &str, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
    let r = http
        .put(format!("http://{addr}/v2/{repo}/manifests/{reference}"))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "pushing {media_type} {repo}:{reference}: {:?}", r.text());
}

/// Push `manifest` (an OCI image manifest: an imgfs index artifact) by digest and make it
/// the one referrer of `subject` under the referrers tag scheme (`sha256-<hex>`), as a
/// registry without the referrers API keeps them. Returns the manifest's digest.
pub fn push_index_referrer(http: &Client, addr: &str, repo: &str, subject: &Digest, manifest: &[u8]) -> Digest {
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    let digest = Digest::of(manifest);
    push_manifest(http, addr, repo, digest.as_str(), OCI_MANIFEST, manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
            "artifactType": "application/vnd.imgfs.index.v1",
        }],
    }))
    .unwrap();
    push_manifest(http, addr, repo, &format!("sha256-{}", subject.hex()), OCI_INDEX, &index);
    digest
}
