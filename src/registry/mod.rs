//! A blocking client for the Docker Registry HTTP API v2 (the OCI distribution spec):
//! ping, manifests, blobs (whole and by Range), tag lists and the catalog. It is called
//! from FUSE worker threads, never from async code, so it uses reqwest's blocking
//! client; one `Client` is shared by all threads (tokens are cached inside it).
//!
//! Requests that fail for a reason that may pass (no connection, a broken body, a
//! timeout, 5xx, 429) are tried again under one policy, in retry.rs.
//!
//! Everything fetched by digest is verified against that digest before it is handed
//! out. Redirects are followed by hand so that credentials only ever go to the
//! registry's own origin, never to the CDN a registry sends blob downloads to.
//!
//! Transport: one HTTP client per host (tls.rs: that host's CAs and client certificate
//! from certs.d; trust.rs: what certificate is trusted), the scheme for loopback and insecure hosts found by trying
//! (endpoint.rs), and manifests and blobs asked of the configured mirrors before the
//! registry itself (mirrors.rs).

mod auth;
pub mod blob;
mod credentials;
mod endpoint;
mod error;
mod lazy;
pub mod login;
mod mirrors;
mod push;
mod retry;
pub mod search;
mod tls;
mod trust;

pub use error::RegistryError;
pub use lazy::LazyClient;

use crate::digest::Digest;
use crate::image;
use error::Subject;
use reqwest::blocking::Response;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LINK, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// A registry that does not answer the TCP/TLS handshake within this is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// With reqwest's blocking client this bounds each wait separately: the answer's
/// headers, then every single read of the body. So a big blob may take as long as it
/// takes, while a connection that goes silent fails after a minute (by default; see
/// `ClientOptions::timeout`).
const IO_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 10;
/// Entries per page for tag lists and the catalog (`?n=`); distribution's own default.
const DEFAULT_PAGE_SIZE: usize = 100;
/// containerd's limit: a manifest or index is JSON of a few KiB; anything far bigger is
/// a broken or hostile server, and it would be held in memory.
const MANIFEST_LIMIT: usize = 4 << 20;
/// One page of tags or repositories.
const LIST_LIMIT: usize = 32 << 20;
/// Error bodies are read only for their envelope.
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// The digest of a manifest, as the registry computed it.
const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Registries whose certificates go unchecked and that may be reached over plain
    /// HTTP, as `host` (any port) or `host:port`. Loopback registries always are.
    pub insecure_registries: Vec<String>,
    /// Where `config.json` with registry credentials lives; default `$DOCKER_CONFIG`,
    /// else `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// The time budget of one request, retries included (renewed while a transfer
    /// makes progress): how long to wait for a registry that has gone silent (to
    /// connect, for an answer, or for the next bytes of a body); default 60 s.
    pub timeout: Option<Duration>,
}

/// A manifest or index as the registry sent it, with the digest of exactly these bytes.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub body: Vec<u8>,
    /// The Content-Type without parameters; the body's own `mediaType` when the
    /// registry sent a generic one (`application/json`).
    pub media_type: String,
    pub digest: Digest,
}

pub struct Client {
    http: tls::Clients,
    /// The scheme that answered, per `host:port`, for hosts where both are tried.
    schemes: Mutex<HashMap<String, &'static str>>,
    mirrors: mirrors::Mirrors,
    insecure_registries: Vec<String>,
    auth: auth::AuthState,
    page_size: usize,
    /// For messages: the limit a timed-out request ran into.
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    // Credentials and tokens stay out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("insecure_registries", &self.insecure_registries)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Client, RegistryError> {
        let docker_config_dir = opts.docker_config_dir.clone().or_else(credentials::default_docker_config_dir);
        let credentials = credentials::CredentialSources::load(docker_config_dir.as_deref())?;
        let http = tls::Clients::new(tls::Settings {
            connect_timeout: opts.timeout.map_or(CONNECT_TIMEOUT, |t| t.min(CONNECT_TIMEOUT)),
            timeout: opts.timeout.unwrap_or(IO_TIMEOUT),
        });
        let mirrors = mirrors::Mirrors::load()?;
        let mut insecure_registries = opts.insecure_registries;
        insecure_registries.extend(mirrors.insecure.iter().cloned());
        Ok(Client {
            http,
            schemes: Mutex::new(HashMap::new()),
            mirrors,
            insecure_registries,
            auth: auth::AuthState::new(credentials),
            page_size: DEFAULT_PAGE_SIZE,
            timeout: opts.timeout.unwrap_or(IO_TIMEOUT),
        })
    }

    /// Ask for `n` entries per page of tag lists and catalogs (at least 1).
    pub fn with_page_size(mut self, n: usize) -> Client {
        self.page_size = n.max(1);
        self
    }

    /// Check that the registry answers the v2 API (authenticating if it asks).
    pub fn ping(&self, registry: &str) -> Result<(), RegistryError> {
        let url = self.url(registry, "v2/")?;
        let resp = self.get(registry, Subject::Ping, &url, &HeaderMap::new())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(fail(registry, Subject::Ping, resp))
        }
    }

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

    /// Try `op` at each mirror in turn, then at the registry; a mirror that fails for
    /// any reason (down, missing the image, serving bad bytes) is passed over.
    fn via_mirrors<T>(
        &self,
        registry: &str,
        repository: &str,
        by_digest: bool,
        mut op: impl FnMut(&str, &str) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let route = self.mirrors.route(registry, repository, by_digest)?;
        for (mirror, repo) in &route.mirrors {
            if let Ok(v) = op(mirror, repo) {
                return Ok(v);
            }
        }
        op(&route.origin.0, &route.origin.1)
    }

    fn get_manifest_from(
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
    fn manifest_error(&self, registry: &str, subject: Subject<'_>, resp: Response) -> RegistryError {
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
    fn repository_is_unknown(&self, registry: &str, repository: &str) -> bool {
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

    /// All tags, following pagination (`?n=` and the `Link: <...>; rel="next"` header).
    pub fn list_tags(&self, registry: &str, repository: &str) -> Result<Vec<String>, RegistryError> {
        check_repository(repository)?;
        let url = self.url(registry, &format!("v2/{repository}/tags/list?n={}", self.page_size))?;
        self.paginate(registry, Subject::Tags { repository }, url, "tags")
    }

    /// All repositories from /v2/_catalog, paginated the same way.
    pub fn catalog(&self, registry: &str) -> Result<Vec<String>, RegistryError> {
        let url = self.url(registry, &format!("v2/_catalog?n={}", self.page_size))?;
        self.paginate(registry, Subject::Catalog, url, "repositories")
    }

    /// Collect `field` (an array of strings) from every page, following `rel="next"`.
    fn paginate(
        &self,
        registry: &str,
        subject: Subject<'_>,
        first: Url,
        field: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let what = subject.describe(registry);
        let invalid = |reason: String| RegistryError::InvalidResponse {
            registry: registry.to_string(),
            what: what.clone(),
            reason,
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut url = first;
        loop {
            if !seen.insert(url.to_string()) {
                return Err(invalid(format!("the next-page link leads back to {}", endpoint::redacted(&url))));
            }
            let resp = self.get(registry, subject, &url, &HeaderMap::new())?;
            if !resp.status().is_success() {
                return Err(fail(registry, subject, resp));
            }
            let next = match next_link(resp.headers()) {
                Some(link) => Some(url.join(&link).map_err(|source| RegistryError::InvalidLink {
                    registry: registry.to_string(),
                    what: what.clone(),
                    kind: "next-page link",
                    link: link.clone(),
                    source,
                })?),
                None => None,
            };
            let body = read_body(registry, &what, resp, LIST_LIMIT)?;
            let page: serde_json::Value =
                serde_json::from_slice(&body).map_err(|source| RegistryError::InvalidJson {
                    registry: registry.to_string(),
                    what: what.clone(),
                    reason: "not valid JSON",
                    source,
                })?;
            match page.get(field) {
                // distribution answers `"tags": null` for a repository with no tags left.
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Array(items)) => {
                    for item in items {
                        let s = item.as_str().ok_or_else(|| invalid(format!("`{field}` holds a non-string")))?;
                        out.push(s.to_string());
                    }
                }
                Some(_) => return Err(invalid(format!("`{field}` is not an array"))),
            }
            match next {
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
    }

    fn url(&self, registry: &str, path_and_query: &str) -> Result<Url, RegistryError> {
        let mut base = endpoint::base_url(registry, &self.insecure_registries)?;
        if let Some(scheme) = self.settled_scheme(&endpoint::authority(&base)) {
            let _ = base.set_scheme(scheme);
        }
        base.join(path_and_query)
            .map_err(|e| RegistryError::InvalidInput { reason: format!("bad request path {path_and_query:?}: {e}") })
    }

    /// GET with authentication (`send_authenticated`) for pull scope, tried again under the retry
    /// policy (retry.rs) while it fails to connect or the registry answers 5xx, 408 or
    /// 429. When retries or the time budget run out, the last answer is returned for
    /// the caller to report, or the last connection error.
    fn get(
        &self,
        registry: &str,
        subject: Subject<'_>,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<Response, RegistryError> {
        self.send(registry, subject, &pull_scope(subject), &Outgoing::GET, url, headers)
    }

    /// Any request, authenticated for `scope` and retried as `get` says.
    fn send(
        &self,
        registry: &str,
        subject: Subject<'_>,
        scope: &str,
        req: &Outgoing<'_>,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<Response, RegistryError> {
        let what = subject.describe(registry);
        let mut retries = retry::Retries::new(registry, &what, self.timeout);
        loop {
            let result = self.send_authenticated(registry, scope, req, url, headers);
            // Some(the pause the registry asked for, if any) for an answer worth asking again.
            let again = match &result {
                Ok(resp) if retry::retryable_status(resp.status()) => {
                    Some(retry::retry_after(resp.headers(), std::time::SystemTime::now()))
                }
                // A mirror that cannot be reached is passed over at once (via_mirrors).
                Err(RegistryError::Unreachable { .. }) if self.mirrors.is_mirror(registry) => None,
                Err(e) if e.is_transient() => Some(None),
                _ => None,
            };
            match again {
                Some(wait) if retries.wait(wait) => {}
                _ => return result,
            }
        }
    }

    /// A request with authentication: send what credentials we already hold; on a 401
    /// from the registry, answer its challenge (fetch a token for `scope`, or switch to
    /// basic) and send once more. A second 401 is returned as is, for the caller to
    /// report.
    fn send_authenticated(
        &self,
        registry: &str,
        scope: &str,
        req: &Outgoing<'_>,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<Response, RegistryError> {
        let mut answered = false;
        loop {
            let auth = self.auth.header_for(registry, scope);
            let (resp, sent_to) = self.send_to_registry(registry, req, url, headers, auth.as_deref())?;
            // Only the registry's own 401 is a challenge for it; a CDN's is just a failure.
            if resp.status() != StatusCode::UNAUTHORIZED || answered || !endpoint::same_origin(resp.url(), &sent_to) {
                return Ok(resp);
            }
            let values = resp.headers().get_all(WWW_AUTHENTICATE);
            let Some(challenge) = auth::pick_challenge(values.iter().filter_map(|v| v.to_str().ok())) else {
                return Ok(resp);
            };
            if !self.answer_challenge(registry, scope, &challenge)? {
                return Ok(resp);
            }
            answered = true;
        }
    }

    fn settled_scheme(&self, authority: &str) -> Option<&'static str> {
        self.schemes.lock().unwrap_or_else(|p| p.into_inner()).get(authority).copied()
    }

    /// Send an API request to the registry, over the scheme that answered before, or,
    /// for a host where both are allowed (endpoint.rs), over the first and then the
    /// other, remembering the one that answered. Returns the answer and the URL it came
    /// from.
    fn send_to_registry(
        &self,
        registry: &str,
        req: &Outgoing<'_>,
        url: &Url,
        headers: &HeaderMap,
        authorization: Option<&str>,
    ) -> Result<(Response, Url), RegistryError> {
        let authority = endpoint::authority(url);
        let mut url = url.clone();
        let second = match self.settled_scheme(&authority) {
            Some(scheme) => {
                let _ = url.set_scheme(scheme);
                None
            }
            None => endpoint::fallback_scheme(&authority, &self.insecure_registries),
        };
        let first = self.send_request(registry, req, url.clone(), headers, authorization);
        let Some(second) = second else { return first.map(|r| (r, url)) };
        let settle = |scheme: &'static str| {
            self.schemes.lock().unwrap_or_else(|p| p.into_inner()).insert(authority.clone(), scheme);
        };
        let try_other = match &first {
            // A TLS port answers plain HTTP with 400 ("Client sent an HTTP request to an
            // HTTPS server"), or with bytes that are not HTTP at all.
            Ok(resp) => second == "https" && resp.status() == StatusCode::BAD_REQUEST,
            // A closed port is closed to either scheme. A silent one may be a plain-HTTP
            // server waiting for a request line that our TLS hello never ends, so plain
            // HTTP still gets its turn after HTTPS; never the other way round (a TLS
            // server answers plain HTTP at once), which would only double the wait.
            Err(RegistryError::Unreachable { reason, .. }) => {
                !reason.contains("Connection refused") && (second == "http" || !reason.contains("timed out"))
            }
            Err(_) => false,
        };
        if !try_other {
            if first.is_ok() {
                settle(if url.scheme() == "https" { "https" } else { "http" });
            }
            return first.map(|r| (r, url));
        }
        let mut other = url.clone();
        let _ = other.set_scheme(second);
        match self.send_request(registry, req, other.clone(), headers, authorization) {
            // Plain HTTP answered 400 after HTTPS failed: the port speaks TLS and the
            // handshake failed; the HTTPS error says why.
            Ok(resp) if second == "http" && resp.status() == StatusCode::BAD_REQUEST => first.map(|r| (r, url)),
            Ok(resp) => {
                settle(second);
                Ok((resp, other))
            }
            Err(_) => first.map(|r| (r, url)),
        }
    }

    /// Follow redirects by hand, sending `authorization` only to the origin of `url`.
    /// (reqwest 0.12's own policy also drops Authorization on a cross-host hop, but
    /// that is an implementation detail we would rather not lean on: a token leaked to
    /// a CDN is a credential leaked.) Range, Accept etc. go along on every hop.
    fn send_following_redirects(
        &self,
        registry: &str,
        url: Url,
        headers: &HeaderMap,
        authorization: Option<&str>,
    ) -> Result<Response, RegistryError> {
        self.send_request(registry, &Outgoing::GET, url, headers, authorization)
    }

    /// `send_following_redirects` for any method. Only GET and HEAD follow redirects: a
    /// write is never sent on to somewhere the registry did not name as its API.
    fn send_request(
        &self,
        registry: &str,
        out: &Outgoing<'_>,
        url: Url,
        headers: &HeaderMap,
        authorization: Option<&str>,
    ) -> Result<Response, RegistryError> {
        let origin = url.clone();
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            let host = endpoint::authority(&url);
            let verify = !endpoint::skips_verification(&host, &self.insecure_registries);
            let mut req =
                self.http.for_host(&host, verify)?.request(out.method.clone(), url.clone()).headers(headers.clone());
            if let Some(body) = out.body {
                req = req.body(body.to_vec());
            }
            if let Some(a) = authorization {
                if endpoint::same_origin(&url, &origin) {
                    req = req.header(AUTHORIZATION, a);
                }
            }
            let resp = req.send().map_err(|e| {
                let mut err = error::unreachable(registry, &host, &e);
                if let (true, RegistryError::Unreachable { reason, .. }) = (tls::is_untrusted_certificate(&e), &err) {
                    return RegistryError::UntrustedCertificate {
                        registry: registry.to_string(),
                        host: host.clone(),
                        reason: reason.clone(),
                    };
                }
                if let RegistryError::Unreachable { reason, .. } = &mut err {
                    // What a server that demands a client certificate answers without one.
                    if reason.contains("fatal alert: BadCertificate")
                        || reason.contains("fatal alert: CertificateRequired")
                    {
                        reason.push_str(&format!(
                            " (the registry may want a client certificate: client.cert and client.key in \
                             /etc/docker/certs.d/{host}/ or /etc/containers/certs.d/{host}/)"
                        ));
                    }
                    // rustls's words for a TLS hello answered with bytes that are not a
                    // TLS record: "HTTP/1.1 400 …" from a server that speaks plain HTTP.
                    // (A host named insecure is tried over plain HTTP anyway.)
                    if verify && url.scheme() == "https" && reason.contains("InvalidContentType") {
                        reason.push_str(&format!(
                            " ({host} answered the TLS handshake with plain HTTP, or something else that is not \
                             TLS; if it is a plain-HTTP registry, name it with --insecure-registry {host})"
                        ));
                    }
                }
                if let (true, RegistryError::Unreachable { reason, .. }) = (e.is_timeout(), &mut err) {
                    // Say which limit, and where it is set: the fix may be a longer one.
                    let limit = if e.is_connect() { self.timeout.min(CONNECT_TIMEOUT) } else { self.timeout };
                    reason.push_str(&format!(" (limit {} s: --timeout, IMGFS_TIMEOUT)", limit.as_secs()));
                }
                err
            })?;
            let status = resp.status();
            let follows = out.method == Method::GET || out.method == Method::HEAD;
            if follows && status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                if let Some(loc) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) {
                    url = url.join(loc).map_err(|e| RegistryError::InvalidResponse {
                        registry: registry.to_string(),
                        what: format!("a redirect from {}", endpoint::redacted(&url)),
                        reason: format!("bad Location {loc:?}: {e}"),
                    })?;
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(RegistryError::InvalidResponse {
            registry: registry.to_string(),
            what: endpoint::redacted(&origin),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }
}

/// What a request sends besides its URL and headers.
pub(crate) struct Outgoing<'a> {
    method: reqwest::Method,
    body: Option<&'a [u8]>,
}

impl Outgoing<'static> {
    const GET: Outgoing<'static> = Outgoing { method: Method::GET, body: None };
}

/// The token scope a read needs: pull, never more.
fn pull_scope(subject: Subject<'_>) -> String {
    let scope = match subject {
        Subject::Catalog => "registry:catalog:*".to_string(),
        // The Hub's search API takes no scope (docker sends it no token).
        Subject::Ping | Subject::Search { .. } => String::new(),
        other => format!("repository:{}:pull", other.repository().unwrap_or_default()),
    };
    debug_assert_eq!(auth::pull_only(&scope), scope, "a read only ever asks for pulling");
    scope
}

/// The error for a non-success answer, from its status and error envelope.
fn fail(registry: &str, subject: Subject<'_>, resp: Response) -> RegistryError {
    let status = resp.status();
    let mut body = Vec::new();
    // Best effort: the status alone still makes an error if the body cannot be read.
    let _ = resp.take(ERROR_BODY_LIMIT as u64).read_to_end(&mut body);
    error::from_status(registry, subject, status, &body)
}

/// The whole body, refusing more than `limit` bytes.
fn read_body(registry: &str, what: &str, resp: Response, limit: usize) -> Result<Vec<u8>, RegistryError> {
    let host = endpoint::authority(resp.url());
    let mut body = Vec::new();
    resp.take(limit as u64 + 1).read_to_end(&mut body).map_err(|e| RegistryError::Unreachable {
        registry: registry.to_string(),
        host: if endpoint::api_host(registry) == host { registry.to_string() } else { host },
        reason: format!("connection lost while reading {what}: {e}"),
    })?;
    if body.len() > limit {
        return Err(RegistryError::InvalidResponse {
            registry: registry.to_string(),
            what: what.to_string(),
            reason: format!("more than {limit} bytes"),
        });
    }
    Ok(body)
}

/// The digest of a manifest body; when it was asked for by digest, or the registry
/// announced one (`Docker-Content-Digest`, for a tag), that digest or an error: bytes
/// changed on the way, or a registry serving other bytes than it says, must not be
/// trusted.
fn verify_manifest_digest(
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
fn manifest_media_type(content_type: &str, body: &[u8]) -> String {
    if image::MANIFEST_ACCEPT.contains(&content_type) {
        return content_type.to_string();
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| content_type.to_string())
}

/// The target of `rel="next"` in the Link headers (RFC 8288), as written (maybe relative).
fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK).iter().filter_map(|v| v.to_str().ok()) {
        let mut rest = value;
        while let Some(start) = rest.find('<') {
            let after = &rest[start + 1..];
            let end = after.find('>')?;
            let target = &after[..end];
            // Parameters run up to the next link (`, <`), or the end.
            let params_all = &after[end + 1..];
            let params_end = params_all.find('<').unwrap_or(params_all.len());
            let params = &params_all[..params_end];
            let is_next = params.split(';').any(|p| {
                let Some((k, v)) = p.split_once('=') else { return false };
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim().trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
            });
            if is_next {
                return Some(target.to_string());
            }
            rest = &params_all[params_end..];
        }
    }
    None
}

/// Repository names go into URL paths: only the spec's characters are let through.
fn check_repository(repository: &str) -> Result<(), RegistryError> {
    let ok = !repository.is_empty()
        && !repository.starts_with('/')
        && !repository.ends_with('/')
        && !repository.contains("//")
        && repository.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/'))
        && !repository.split('/').any(|c| c == "." || c == "..");
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidInput { reason: format!("invalid repository name {repository:?}") })
    }
}

/// A tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) or a sha256 digest.
fn check_manifest_reference(reference: &str) -> Result<(), RegistryError> {
    let b = reference.as_bytes();
    let tag = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if tag || reference.parse::<Digest>().is_ok() {
        Ok(())
    } else {
        Err(RegistryError::InvalidInput { reason: format!("invalid tag or digest {reference:?}") })
    }
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
    fn next_link_is_found_among_several() {
        let mut h = HeaderMap::new();
        h.insert(LINK, HeaderValue::from_static(r#"</v2/_catalog?last=b&n=2>; rel="next""#));
        assert_eq!(next_link(&h).as_deref(), Some("/v2/_catalog?last=b&n=2"));
        let mut h = HeaderMap::new();
        h.insert(LINK, HeaderValue::from_static(r#"<https://x/a?p=1,2>; rel="prev", <https://x/b?last=c>;rel=next"#));
        assert_eq!(next_link(&h).as_deref(), Some("https://x/b?last=c"));
        let mut h = HeaderMap::new();
        h.insert(LINK, HeaderValue::from_static(r#"</x>; rel="prev""#));
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn media_type_falls_back_to_the_body() {
        let body = format!(r#"{{"mediaType":"{}"}}"#, image::OCI_INDEX);
        assert_eq!(manifest_media_type("application/json", body.as_bytes()), image::OCI_INDEX);
        assert_eq!(manifest_media_type(image::DOCKER_MANIFEST, body.as_bytes()), image::DOCKER_MANIFEST);
        assert_eq!(manifest_media_type("application/json", b"{}"), "application/json");
    }

    #[test]
    fn names_that_would_bend_the_url_are_refused() {
        assert!(check_repository("library/alpine").is_ok());
        for bad in ["", "a/../b", "a?b", "/a", "A", "a//b", "a#b"] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
        assert!(check_manifest_reference("v1.2-rc_3").is_ok());
        assert!(check_manifest_reference(Digest::of(b"").as_str()).is_ok());
        for bad in ["", ".x", "a/b", "a?b", "sha512:abc", "x y"] {
            assert!(check_manifest_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Client>();
    }
}
