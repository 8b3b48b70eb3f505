//! Registry authentication's state and vocabulary: the `WWW-Authenticate` challenge a
//! 401 carries, the token service's answer and how long a token is good for, and what a
//! client holds (each registry's credentials, looked up once; the bearer tokens per
//! scope, until they expire or the registry stops taking them; the registries that want
//! `Basic`). The flow that uses them, answering a challenge with a token fetched from
//! its realm (an identity token, docker's `identitytoken` or a helper's `<token>` user,
//! traded with OAuth2's refresh-token grant) or with basic credentials, is requests.rs;
//! where credentials come from is credentials.rs.

use super::credentials::{CredentialSources, Credentials};
use super::error::{RegistryError, TokenError};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// A `WWW-Authenticate` challenge we know how to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
    Basic,
}

/// The first challenge we can answer among a response's `WWW-Authenticate` values,
/// preferring Bearer.
pub(crate) fn pick_challenge<'a>(values: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    let parsed: Vec<Challenge> = values.filter_map(parse_challenge).collect();
    parsed.iter().find(|c| matches!(c, Challenge::Bearer { .. })).or(parsed.first()).cloned()
}

/// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="…"`.
/// Quoted values may hold commas and `\"` escapes; the scheme is case-insensitive.
pub(crate) fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_auth_params(rest);
    let get = |k: &str| params.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
}

fn parse_auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.trim().is_empty() && chars.peek().is_none() {
            return out;
        }
        if chars.next() != Some('=') {
            // A bare token (e.g. a token68 blob); nothing we need.
            continue;
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(e) = chars.next() {
                            val.push(e)
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
            val = val.trim().to_string();
        }
        out.push((key.trim().to_string(), val));
    }
}

/// A bearer token and the moment we stop using it.
#[derive(Clone, Debug)]
struct Token {
    value: String,
    renew_at: Instant,
}

/// How long a token from the token service is good for, counted from `now`. The spec
/// says `expires_in` defaults to 60 s; `issued_at` (when present) moves the start back,
/// but never past `now`, since the clocks of the token service and this host may
/// disagree. We stop using a token a little before it expires (a tenth of its life, at
/// most 10 s) so that a request in flight does not arrive with a dead one. A claimed life
/// is held to a day: a token service may say anything up to 2^64 s, which no `Instant`
/// can be moved by, and a registry that refuses a stale token gets asked for a new one.
pub(crate) fn token_lifetime(expires_in: Option<u64>, issued_at: Option<&str>, now: SystemTime) -> Duration {
    const LONGEST: u64 = 24 * 60 * 60;
    let life = Duration::from_secs(expires_in.filter(|s| *s > 0).unwrap_or(60).min(LONGEST));
    let elapsed = issued_at
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .and_then(|t| now.duration_since(SystemTime::from(t)).ok())
        .unwrap_or(Duration::ZERO);
    let left = life.saturating_sub(elapsed);
    left.saturating_sub((life / 10).min(Duration::from_secs(10)))
}

/// The token service's answer: `token` (or the OAuth2 name `access_token`), with its life.
pub(crate) fn parse_token_response(body: &[u8], now: SystemTime) -> Result<(String, Duration), TokenError> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<u64>,
        #[serde(default)]
        issued_at: Option<String>,
    }
    let r: TokenResponse = serde_json::from_slice(body).map_err(TokenError::Json)?;
    let token =
        r.token.filter(|t| !t.is_empty()).or(r.access_token.filter(|t| !t.is_empty())).ok_or(TokenError::NoToken)?;
    Ok((token, token_lifetime(r.expires_in, r.issued_at.as_deref(), now)))
}

/// Credentials and the tokens obtained with them, shared by all threads of a client.
pub(crate) struct AuthState {
    sources: CredentialSources,
    /// Each registry's credentials, looked up once (a helper runs at most once).
    resolved: Mutex<HashMap<String, Option<Credentials>>>,
    /// Keyed by (registry, scope); the scope is "" for requests that need none.
    tokens: Mutex<HashMap<(String, String), Token>>,
    /// Registries that challenged with `Basic`: they get the credentials up front.
    basic: Mutex<HashSet<String>>,
}

impl AuthState {
    pub fn new(sources: CredentialSources) -> AuthState {
        AuthState {
            sources,
            resolved: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(HashSet::new()),
        }
    }

    /// The credentials for a registry, from the first source that has some. Looked up
    /// on first need only, since a helper may be slow or ask the user.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        let registry = registry.to_ascii_lowercase();
        if let Some(c) = self.resolved.lock().unwrap_or_else(|p| p.into_inner()).get(&registry) {
            return Ok(c.clone());
        }
        // Not under the lock: a helper is a process that may take its time.
        let found = self.sources.lookup(&registry)?;
        let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        Ok(resolved.entry(registry).or_insert(found).clone())
    }

    /// Use these credentials for `registry` whatever the files say (`imgfs login`
    /// checks new ones before it saves them).
    pub fn set_credentials(&self, registry: &str, creds: Credentials) {
        let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        resolved.insert(registry.to_ascii_lowercase(), Some(creds));
    }

    /// The Authorization header to send up front: a live token for this scope, or the
    /// basic credentials of a registry known to want them.
    pub fn header_for(&self, registry: &str, scope: &str) -> Option<String> {
        let key = (registry.to_string(), scope.to_string());
        {
            let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            match tokens.get(&key) {
                Some(t) if Instant::now() < t.renew_at => return Some(format!("Bearer {}", t.value)),
                Some(_) => {
                    tokens.remove(&key);
                }
                None => {}
            }
        }
        let wants_basic = self.basic.lock().unwrap_or_else(|p| p.into_inner()).contains(registry);
        if wants_basic {
            // Known to be resolved: `basic` only holds registries we had credentials for.
            return self.credentials(registry).ok().flatten().map(|c| c.basic_header());
        }
        None
    }

    /// `registry` challenged with `Basic`: send it the credentials up front from now on.
    pub fn use_basic(&self, registry: &str) {
        self.basic.lock().unwrap_or_else(|p| p.into_inner()).insert(registry.to_string());
    }

    pub fn store_token(&self, registry: &str, scope: &str, value: String, life: Duration) {
        let token = Token { value, renew_at: Instant::now() + life };
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert((registry.to_string(), scope.to_string()), token);
    }
}

/// A scope string (`repository:a/b:pull,push repository:c:*`) with every action but
/// `pull` taken out, and resources left with no action dropped. `registry:catalog:*`
/// stays: listing repositories (search) changes nothing.
pub(crate) fn pull_only(scope: &str) -> String {
    let kept: Vec<String> = scope
        .split_whitespace()
        .filter_map(|item| {
            if item == "registry:catalog:*" {
                return Some(item.to_string());
            }
            let (resource, actions) = item.rsplit_once(':')?;
            actions.split(',').any(|a| a == "pull").then(|| format!("{resource}:pull"))
        })
        .collect();
    kept.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pull_is_ever_asked_for() {
        assert_eq!(pull_only("repository:a/b:pull,push"), "repository:a/b:pull");
        assert_eq!(pull_only("repository:a/b:push repository:c:pull"), "repository:c:pull");
        assert_eq!(pull_only("repository:a/b:*"), "");
        assert_eq!(pull_only("registry:catalog:*"), "registry:catalog:*");
        assert_eq!(pull_only(""), "");
    }

    #[test]
    fn challenge_values_may_hold_commas_and_escapes() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token?a=1,b=2",service="reg, \"quoted\"",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token?a=1,b=2".into(),
                service: Some(r#"reg, "quoted""#.into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        let c = parse_challenge(r#"bearer  Realm=https://a/token , service=svc"#);
        assert_eq!(
            c,
            Some(Challenge::Bearer { realm: "https://a/token".into(), service: Some("svc".into()), scope: None })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(
            pick_challenge(["Basic realm=x", "Bearer realm=\"r\""].into_iter()),
            Some(Challenge::Bearer { realm: "r".into(), service: None, scope: None })
        );
    }

    #[test]
    fn token_lifetime_counts_from_issue_and_keeps_a_margin() {
        let now = SystemTime::from("2024-01-01T00:01:00Z".parse::<jiff::Timestamp>().unwrap());
        assert_eq!(token_lifetime(None, None, now), Duration::from_secs(54));
        assert_eq!(token_lifetime(Some(300), None, now), Duration::from_secs(290));
        assert_eq!(token_lifetime(Some(300), Some("2024-01-01T00:00:00Z"), now), Duration::from_secs(230));
        // issued "in the future" by a fast clock: counted from now.
        assert_eq!(token_lifetime(Some(300), Some("2024-01-01T00:05:00Z"), now), Duration::from_secs(290));
        assert_eq!(token_lifetime(Some(2), None, now), Duration::from_millis(1800));
        // A life no Instant can hold (Instant + it panicked) is held to a day.
        assert_eq!(token_lifetime(Some(u64::MAX), None, now), Duration::from_secs(24 * 60 * 60 - 10));
        let (_, life) = parse_token_response(br#"{"token":"t","expires_in":18446744073709551615}"#, now).unwrap();
        let empty = tempfile::tempdir().unwrap();
        let auth = AuthState::new(CredentialSources::load(Some(empty.path())).unwrap());
        auth.store_token("r.example", "repository:a:pull", "t".into(), life);
        let (t, life) = parse_token_response(br#"{"access_token":"abc","expires_in":120}"#, now).unwrap();
        assert_eq!((t.as_str(), life), ("abc", Duration::from_secs(110)));
        assert!(parse_token_response(br#"{"token":""}"#, now).is_err());
    }
}
