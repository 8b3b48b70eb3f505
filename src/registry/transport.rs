//! One request on the wire: the URL for a registry (over the scheme that answered
//! before, or both tried where endpoint.rs allows it), redirects followed by hand with
//! the credentials sent to the registry's own origin only (never to the CDN a blob
//! download is sent on to), a failure before any answer said as "cannot reach" with its
//! cause, and an answer's body read up to a limit.

use super::client::{Client, CONNECT_TIMEOUT};
use super::endpoint;
use super::error::{self, RegistryError, Subject};
use super::tls;
use reqwest::blocking::Response;
use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION};
use reqwest::{Method, StatusCode, Url};
use std::io::Read;

pub(super) const MAX_REDIRECTS: usize = 10;

/// Error bodies are read only for their envelope.
pub(super) const ERROR_BODY_LIMIT: usize = 64 << 10;

/// What a request sends besides its URL and headers.
pub(crate) struct Outgoing<'a> {
    pub(super) method: reqwest::Method,
    pub(super) body: Option<&'a [u8]>,
}

impl Outgoing<'static> {
    pub(super) const GET: Outgoing<'static> = Outgoing { method: Method::GET, body: None };
}

impl Client {
    pub(super) fn url(&self, registry: &str, path_and_query: &str) -> Result<Url, RegistryError> {
        let mut base = endpoint::base_url(registry, &self.insecure_registries)?;
        if let Some(scheme) = self.settled_scheme(&endpoint::authority(&base)) {
            let _ = base.set_scheme(scheme);
        }
        base.join(path_and_query)
            .map_err(|e| RegistryError::InvalidInput { reason: format!("bad request path {path_and_query:?}: {e}") })
    }

    pub(super) fn settled_scheme(&self, authority: &str) -> Option<&'static str> {
        self.schemes.lock().unwrap_or_else(|p| p.into_inner()).get(authority).copied()
    }

    /// Send an API request to the registry, over the scheme that answered before, or,
    /// for a host where both are allowed (endpoint.rs), over the first and then the
    /// other, remembering the one that answered. Returns the answer and the URL it came
    /// from.
    pub(super) fn send_to_registry(
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
    pub(super) fn send_following_redirects(
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
    pub(super) fn send_request(
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
                let mut err = unreachable(registry, &host, &e);
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

/// The error for a non-success answer, from its status and error envelope.
pub(super) fn fail(registry: &str, subject: Subject<'_>, resp: Response) -> RegistryError {
    let status = resp.status();
    let mut body = Vec::new();
    // Best effort: the status alone still makes an error if the body cannot be read.
    let _ = resp.take(ERROR_BODY_LIMIT as u64).read_to_end(&mut body);
    error::from_status(registry, subject, status, &body)
}

/// The whole body, refusing more than `limit` bytes.
pub(super) fn read_body(registry: &str, what: &str, resp: Response, limit: usize) -> Result<Vec<u8>, RegistryError> {
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

/// A reqwest failure before any HTTP answer, as "cannot reach": the innermost causes
/// say what happened (refused, DNS, timeout); reqwest's own top line repeats the URL.
pub(crate) fn unreachable(registry: &str, host: &str, err: &reqwest::Error) -> RegistryError {
    let mut causes: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        // hyper's "client error (Connect)" only says which stage failed; its cause says how.
        let generic = text.starts_with("client error (") && s.source().is_some();
        if !generic && !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = s.source();
    }
    let reason = if err.is_timeout() && !causes.iter().any(|c| c.contains("timed out")) {
        "timed out".to_string()
    } else {
        // The last two causes are the specific ones (e.g. "tcp connect error: Connection
        // refused (os error 111)"); earlier ones are generic wrappers.
        let n = causes.len();
        let tail = if n > 2 { &causes[n - 2..] } else { &causes[..] };
        if tail.is_empty() {
            // reqwest's own text names the URL, which may carry a user and password.
            let text = err.to_string();
            match err.url() {
                Some(u) => text.replace(u.as_str(), &super::endpoint::redacted(u)),
                None => text,
            }
        } else {
            tail.join(": ")
        }
    };
    RegistryError::Unreachable { registry: registry.to_string(), host: host.to_string(), reason }
}
