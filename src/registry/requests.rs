//! A request as the API methods send it: to the configured mirrors first (a mirror that
//! fails is passed over), authenticated (credentials or a token we hold up front; on the
//! registry's 401, its challenge answered: a bearer token fetched from the realm for the
//! scope the request needs, pull only for reads, or basic credentials), and tried again
//! under the retry policy (retry.rs) while it fails for a reason that may pass.

use super::auth::{self, parse_token_response, pull_only, Challenge};
use super::client::Client;
use super::endpoint;
use super::error::{self, RegistryError, Subject};
use super::retry;
use super::transport::{fail, read_body, unreachable, Outgoing};
use reqwest::blocking::Response;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use std::time::{Duration, SystemTime};

impl Client {
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

    /// Try `op` at each mirror in turn, then at the registry; a mirror that fails for
    /// any reason (down, missing the image, serving bad bytes) is passed over.
    pub(super) fn via_mirrors<T>(
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

    /// GET with authentication (`send_authenticated`) for pull scope, tried again under the retry
    /// policy (retry.rs) while it fails to connect or the registry answers 5xx, 408 or
    /// 429. When retries or the time budget run out, the last answer is returned for
    /// the caller to report, or the last connection error.
    pub(super) fn get(
        &self,
        registry: &str,
        subject: Subject<'_>,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<Response, RegistryError> {
        self.send(registry, subject, &pull_scope(subject), &Outgoing::GET, url, headers)
    }

    /// Any request, authenticated for `scope` and retried as `get` says.
    pub(super) fn send(
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
    pub(super) fn send_authenticated(
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

    /// Do what a 401's challenge asks so that the request can be sent again. Returns
    /// false when there is nothing we can do (Basic without credentials, or a scheme
    /// we do not speak): the 401 then stands.
    pub(super) fn answer_challenge(
        &self,
        registry: &str,
        scope: &str,
        challenge: &Challenge,
    ) -> Result<bool, RegistryError> {
        match challenge {
            Challenge::Basic => {
                // An identity token is only good at a token service.
                match self.auth.credentials(registry)? {
                    Some(c) if !c.is_identity_token() => {}
                    _ => return Ok(false),
                }
                self.auth.use_basic(registry);
                Ok(true)
            }
            Challenge::Bearer { realm, service, scope: challenge_scope } => {
                // Ask for the scope the operation needs (pull only); fall back to the
                // challenge's own scope, cut down to pulling, for requests that need
                // none of their own. We never ask for more than we use.
                let fallback = challenge_scope.as_deref().map(pull_only).unwrap_or_default();
                let want = if scope.is_empty() { fallback.as_str() } else { scope };
                let (token, life) = self.fetch_token(registry, realm, service.as_deref(), want)?;
                self.auth.store_token(registry, scope, token, life);
                Ok(true)
            }
        }
    }

    /// GET realm?service=…&scope=…, with the registry's credentials as basic auth if we
    /// have them (anonymous otherwise). With an identity token instead, POST the
    /// OAuth2 refresh-token grant to the realm, as docker does.
    pub(super) fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), RegistryError> {
        let denied = |message: String| RegistryError::Unauthorized {
            registry: registry.to_string(),
            what: if scope.is_empty() { format!("registry {registry}") } else { format!("scope {scope}") },
            message,
        };
        let mut url = match Url::parse(realm) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            Ok(u) => return Err(denied(format!("the token realm {} is not an http(s) URL", endpoint::redacted(&u)))),
            // Printed without its text: it might hold a password.
            Err(e) => return Err(denied(format!("the token realm is not a URL: {e}"))),
        };
        let creds = self.auth.credentials(registry)?;
        if creds.is_some() && !endpoint::may_carry_credentials(&url, &self.insecure_registries) {
            return Err(denied(format!(
                "refusing to send the credentials for {registry} over plain HTTP to the token service at {}",
                endpoint::authority(&url)
            )));
        }
        let resp = match creds {
            Some(c) if c.is_identity_token() => {
                // The form, encoded by the URL parser's own serializer.
                let mut form = Url::parse("form:").expect("a valid URL");
                {
                    let mut q = form.query_pairs_mut();
                    q.append_pair("grant_type", "refresh_token");
                    q.append_pair("refresh_token", &c.password);
                    q.append_pair("client_id", "imgfs");
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    if !scope.is_empty() {
                        q.append_pair("scope", scope);
                    }
                }
                let host = endpoint::authority(&url);
                let verify = !endpoint::skips_verification(&host, &self.insecure_registries);
                self.http
                    .for_host(&host, verify)?
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.query().unwrap_or_default().to_string())
                    .send()
                    .map_err(|e| unreachable(registry, &endpoint::authority(&url), &e))?
            }
            creds => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    if !scope.is_empty() {
                        q.append_pair("scope", scope);
                    }
                }
                let auth = creds.map(|c| c.basic_header());
                self.send_following_redirects(registry, url.clone(), &Default::default(), auth.as_deref())?
            }
        };
        let status = resp.status();
        let host = endpoint::authority(&url);
        let body = read_body(registry, &format!("a token from {host}"), resp, 1 << 20)?;
        if !status.is_success() {
            // Token services answer errors in several shapes: the spec's envelope,
            // Docker Hub's {"details": …}, or plain text.
            let detail = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    let envelope = error::parse_envelope(&body);
                    if let Some(e) = envelope.first() {
                        return Some(e.message.clone());
                    }
                    v.get("details").or(v.get("error")).and_then(|d| d.as_str()).map(str::to_string)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().chars().take(200).collect());
            return Err(denied(format!("token service {host} answered {status}: {detail}")));
        }
        parse_token_response(&body, SystemTime::now()).map_err(|source| RegistryError::InvalidToken {
            registry: registry.to_string(),
            host: host.to_string(),
            source,
        })
    }
}

/// The token scope a read needs: pull, never more.
pub(super) fn pull_scope(subject: Subject<'_>) -> String {
    let scope = match subject {
        Subject::Catalog => "registry:catalog:*".to_string(),
        // The Hub's search API takes no scope (docker sends it no token).
        Subject::Ping | Subject::Search { .. } => String::new(),
        other => format!("repository:{}:pull", other.repository().unwrap_or_default()),
    };
    debug_assert_eq!(auth::pull_only(&scope), scope, "a read only ever asks for pulling");
    scope
}
