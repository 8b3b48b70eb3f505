//! What can go wrong when talking to a registry, as a small enum that callers can act
//! on (`is_not_found`, `is_transient`) and that prints as one line naming the registry,
//! repository, tag or digest concerned. HTTP answers are mapped here, with the
//! distribution spec's error envelope `{"errors":[{"code","message","detail"}]}` read
//! first because it says more than the status code.

use crate::digest::Digest;
use reqwest::StatusCode;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Connection refused, DNS failure, TLS failure, timeout: nothing HTTP came back.
    /// `host` is the host actually dialled (the API host, a token service or a CDN).
    #[error("cannot reach registry {registry}{}: {reason}", at_host(.registry, .host))]
    Unreachable { registry: String, host: String, reason: String },
    /// The TLS handshake failed because the host's certificate is not trusted: no CA we
    /// know signed it, or it is expired or for another name. Not transient.
    #[error(
        "cannot reach registry {registry}: the TLS certificate of {host} is not trusted ({reason}); put the \
         certificate of the CA that signed it in /etc/docker/certs.d/{host}/ca.crt or \
         /etc/containers/certs.d/{host}/ca.crt, or name {host} with --insecure-registry"
    )]
    UntrustedCertificate { registry: String, host: String, reason: String },
    /// The registry does not know the repository (NAME_UNKNOWN).
    #[error("repository {repository} not found on registry {registry}")]
    RepositoryUnknown { registry: String, repository: String },
    /// No manifest under that tag or digest (MANIFEST_UNKNOWN, or a bare 404).
    #[error("{} not found in {registry}/{repository}", tag_or_manifest(.reference))]
    ManifestUnknown { registry: String, repository: String, reference: String },
    /// No blob with that digest in the repository (BLOB_UNKNOWN, or a bare 404).
    #[error("blob {digest} not found in {registry}/{repository}")]
    BlobUnknown { registry: String, repository: String, digest: Digest },
    /// 401/403, UNAUTHORIZED/DENIED, or a token service that refused us.
    #[error("access to {what} denied by registry {registry}: {message}")]
    Unauthorized { registry: String, what: String, message: String },
    /// Content that does not hash to the digest it was asked for by.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: Digest, actual: Digest },
    /// A blob whose length differs from its descriptor's size.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    /// Any other HTTP status; `message` is the error envelope's, if the body had one.
    #[error("registry {registry} answered {status} {} for {what}{}", status_reason(*.status), colon(.message))]
    Status { registry: String, what: String, status: u16, message: Option<String> },
    /// A blob transfer that kept breaking off, retries included.
    #[error("download of {what} from registry {registry} failed after {attempts} attempts: {reason}")]
    Interrupted { registry: String, what: String, attempts: u32, reason: String },
    /// An answer we cannot use: bad JSON, a bad header, a body over the size limit.
    #[error("registry {registry} sent an unusable answer for {what}: {reason}")]
    InvalidResponse { registry: String, what: String, reason: String },
    /// An answer that is not the JSON it should be.
    #[error("registry {registry} sent an unusable answer for {what}: {reason}")]
    InvalidJson {
        registry: String,
        what: String,
        reason: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A link in an answer (a `Location`, a next-page link) that is not a URL.
    #[error("registry {registry} sent an unusable answer for {what}: bad {kind} {link:?}")]
    InvalidLink {
        registry: String,
        what: String,
        kind: &'static str,
        link: String,
        #[source]
        source: url::ParseError,
    },
    /// A token service's answer that holds no token we can use.
    #[error("registry {registry} sent an unusable answer for a token from {host}")]
    InvalidToken {
        registry: String,
        host: String,
        #[source]
        source: TokenError,
    },
    /// Writing what we downloaded failed on our side (the output file).
    #[error("cannot store {what}: {source}")]
    LocalIo { what: String, source: std::io::Error },
    /// A credentials file (docker's config.json, podman's auth.json) exists but cannot
    /// be read.
    #[error("cannot use the registry credentials in {}", .path.display())]
    CredentialsUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A credentials file that is not one.
    #[error("cannot use the registry credentials in {}", .path.display())]
    CredentialsInvalid {
        path: PathBuf,
        #[source]
        source: AuthFileError,
    },
    /// A credential helper (`docker-credential-NAME`) failed.
    #[error("credential helper {helper}: {reason}")]
    CredentialHelper { helper: String, reason: String },
    /// A credential helper that cannot be run.
    #[error("credential helper {helper}: cannot run it")]
    CredentialHelperRun {
        helper: String,
        #[source]
        source: std::io::Error,
    },
    /// A credential helper whose `get` answer is not its JSON.
    #[error("credential helper {helper}: `get` answered something other than credentials JSON")]
    CredentialHelperAnswer {
        helper: String,
        #[source]
        source: serde_json::Error,
    },
    /// The HTTP client could not be built.
    #[error("{reason}")]
    Setup { reason: String },
    /// registries.conf or daemon.json exists but cannot be read or used.
    #[error("cannot use registry configuration {}", .path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    /// A URL given in the environment that is not one.
    #[error("{name}={value:?} is not a URL")]
    InvalidUrl {
        name: &'static str,
        value: String,
        #[source]
        source: url::ParseError,
    },
    /// A registry name that cannot be the host part of a URL.
    #[error("invalid registry host {registry:?}")]
    InvalidHost {
        registry: String,
        #[source]
        source: Option<url::ParseError>,
    },
    /// A registry, repository, tag or digest that cannot even be put into a URL.
    #[error("{reason}")]
    InvalidInput { reason: String },
}

impl RegistryError {
    /// The thing asked for does not exist (repository, tag, manifest or blob).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            RegistryError::RepositoryUnknown { .. }
                | RegistryError::ManifestUnknown { .. }
                | RegistryError::BlobUnknown { .. }
        )
    }

    /// Worth trying again later: the network or the server is having a bad moment
    /// (connection failures, timeouts, broken transfers, 5xx, 408 and 429).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } | RegistryError::Interrupted { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    pub fn is_unauthorized(&self) -> bool {
        matches!(self, RegistryError::Unauthorized { .. })
    }
}

/// Why a token service's answer holds no usable token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token answer is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("token answer has neither `token` nor `access_token`")]
    NoToken,
}

/// Why a docker `config.json` or podman `auth.json` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("auths.{key:?}.auth is not base64")]
    NotBase64 {
        key: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("auths.{key:?}.auth is not UTF-8 text")]
    NotUtf8 { key: String },
    #[error("auths.{key:?}.auth does not decode to user:password")]
    NotUserPassword { key: String },
}

/// What is wrong in registries.conf or daemon.json (the path is `RegistryError::Config`'s).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Read(std::io::Error),
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("a [[registry]] has neither location nor prefix")]
    NoLocation,
    #[error("a mirror of {prefix} has an empty location")]
    EmptyMirror { prefix: String },
    #[error("unknown pull-from-mirror {value:?} for mirror {mirror}")]
    PullFromMirror { value: String, mirror: String },
    #[error("`{key}` holds a non-string")]
    NotAString { key: &'static str },
    #[error("`{key}` is not an array")]
    NotAnArray { key: &'static str },
    #[error("bad registry mirror {url:?}")]
    MirrorUrl {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("bad registry mirror {url:?}: not an http(s) URL")]
    MirrorNotHttp { url: String },
}

/// ` (at HOST)` when the host dialled is not the registry's own name.
fn at_host(registry: &str, host: &str) -> String {
    if host == registry {
        String::new()
    } else {
        format!(" (at {host})")
    }
}

/// A digest names a manifest, anything else a tag.
fn tag_or_manifest(reference: &str) -> String {
    if reference.starts_with("sha256:") {
        format!("manifest {reference}")
    } else {
        format!("tag {reference:?}")
    }
}

fn status_reason(status: u16) -> &'static str {
    StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("")
}

fn colon(message: &Option<String>) -> String {
    message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
}

/// One entry of the spec's error envelope.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub(crate) struct EnvelopeError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// The errors of a `{"errors":[…]}` body; empty when the body is anything else.
pub(crate) fn parse_envelope(body: &[u8]) -> Vec<EnvelopeError> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        errors: Vec<EnvelopeError>,
    }
    serde_json::from_slice::<Envelope>(body).map(|e| e.errors).unwrap_or_default()
}

/// The envelope's messages as one line: `message (detail)` joined by `; `. A detail is
/// shown only when it is a plain string: distribution's structured details (`{"Tag":…}`)
/// repeat what the error line already names.
fn envelope_message(errors: &[EnvelopeError]) -> Option<String> {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            let text = if e.message.is_empty() { e.code.to_lowercase().replace('_', " ") } else { e.message.clone() };
            match e.detail.as_str() {
                Some(d) if !d.is_empty() && d != text => format!("{text} ({d})"),
                _ => text,
            }
        })
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("; "))
    }
}

/// What a request was about; decides how a 404 reads and names the thing in messages.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Subject<'a> {
    Ping,
    Manifest {
        repository: &'a str,
        reference: &'a str,
    },
    Blob {
        repository: &'a str,
        digest: &'a Digest,
    },
    Tags {
        repository: &'a str,
    },
    Catalog,
    /// Docker Hub's search API, for a term.
    Search {
        term: &'a str,
    },
}

impl Subject<'_> {
    pub fn repository(&self) -> Option<&str> {
        match self {
            Subject::Manifest { repository, .. } | Subject::Blob { repository, .. } | Subject::Tags { repository } => {
                Some(repository)
            }
            Subject::Ping | Subject::Catalog | Subject::Search { .. } => None,
        }
    }

    /// The thing, named for a message: `manifest reg/repo:tag`, `blob reg/repo@sha256:…`.
    pub fn describe(&self, registry: &str) -> String {
        match self {
            Subject::Ping => format!("the API root of {registry}"),
            Subject::Manifest { repository, reference } if reference.starts_with("sha256:") => {
                format!("manifest {registry}/{repository}@{reference}")
            }
            Subject::Manifest { repository, reference } => format!("manifest {registry}/{repository}:{reference}"),
            Subject::Blob { repository, digest } => format!("blob {registry}/{repository}@{digest}"),
            Subject::Tags { repository } => format!("the tag list of {registry}/{repository}"),
            Subject::Catalog => format!("the catalog of {registry}"),
            Subject::Search { term } => format!("the search API of {registry} (term {term:?})"),
        }
    }
}

/// The error for a non-success answer: the envelope's code when it has a known one,
/// else the status.
pub(crate) fn from_status(registry: &str, subject: Subject<'_>, status: StatusCode, body: &[u8]) -> RegistryError {
    let errors = parse_envelope(body);
    let message = envelope_message(&errors);
    let codes: Vec<&str> = errors.iter().map(|e| e.code.as_str()).collect();
    let registry_s = registry.to_string();
    let repo = subject.repository().unwrap_or("").to_string();

    let repository_unknown =
        || RegistryError::RepositoryUnknown { registry: registry_s.clone(), repository: repo.clone() };
    let not_found = || match subject {
        Subject::Manifest { repository, reference } => RegistryError::ManifestUnknown {
            registry: registry_s.clone(),
            repository: repository.to_string(),
            reference: reference.to_string(),
        },
        Subject::Blob { repository, digest } => RegistryError::BlobUnknown {
            registry: registry_s.clone(),
            repository: repository.to_string(),
            digest: digest.clone(),
        },
        Subject::Tags { .. } => repository_unknown(),
        Subject::Ping | Subject::Catalog | Subject::Search { .. } => RegistryError::Status {
            registry: registry_s.clone(),
            what: subject.describe(registry),
            status: status.as_u16(),
            message: message.clone(),
        },
    };

    if codes.contains(&"NAME_UNKNOWN") && subject.repository().is_some() {
        return repository_unknown();
    }
    if codes.iter().any(|c| matches!(*c, "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN")) {
        return not_found();
    }
    let denied = codes.iter().any(|c| matches!(*c, "UNAUTHORIZED" | "DENIED"));
    if denied || status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let mut message = message.unwrap_or_else(|| status.to_string());
        if subject.repository().is_some() {
            // Docker Hub answers 401 for repositories that do not exist, so say both.
            message.push_str(" (the repository may not exist, or may need credentials: docker login)");
        }
        return RegistryError::Unauthorized { registry: registry_s, what: subject.describe(registry), message };
    }
    if status == StatusCode::NOT_FOUND {
        return not_found();
    }
    RegistryError::Status { registry: registry_s, what: subject.describe(registry), status: status.as_u16(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_codes_decide_over_the_status() {
        let body = br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry","detail":{"name":"x"}}]}"#;
        let s = Subject::Manifest { repository: "x", reference: "latest" };
        let e = from_status("r:5000", s, StatusCode::NOT_FOUND, body);
        assert!(matches!(e, RegistryError::RepositoryUnknown { .. }), "{e:?}");
        assert_eq!(e.to_string(), "repository x not found on registry r:5000");

        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v9"}}]}"#;
        let s = Subject::Manifest { repository: "x", reference: "v9" };
        let e = from_status("r:5000", s, StatusCode::NOT_FOUND, body);
        assert_eq!(e.to_string(), r#"tag "v9" not found in r:5000/x"#);
        assert!(e.is_not_found());

        let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        let e = from_status("docker.io", s, StatusCode::FORBIDDEN, body);
        assert!(e.is_unauthorized());
        assert_eq!(
            e.to_string(),
            "access to manifest docker.io/x:v9 denied by registry docker.io: requested access to the resource is denied \
             (the repository may not exist, or may need credentials: docker login)"
        );
    }

    /// A cause is the variant's `source()`, not part of its text: the one-line chain the
    /// CLI prints (`{:#}`) reads as the message did when the cause was pasted in.
    #[test]
    fn causes_are_sources_and_the_printed_chain_reads_as_before() {
        let chain = |e: RegistryError| format!("{:#}", anyhow::Error::from(e));
        let json = serde_json::from_slice::<serde_json::Value>(b"{").unwrap_err();
        let e = RegistryError::InvalidJson {
            registry: "r".into(),
            what: "x".into(),
            reason: "not valid JSON",
            source: json,
        };
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            chain(e),
            "registry r sent an unusable answer for x: not valid JSON: EOF while parsing an object at line 1 column 1"
        );
        let url = reqwest::Url::parse("http://[::1").unwrap_err();
        let e = RegistryError::InvalidHost { registry: "[::1".into(), source: Some(url) };
        assert_eq!(chain(e), r#"invalid registry host "[::1": invalid IPv6 address"#);
        let e =
            RegistryError::InvalidToken { registry: "r".into(), host: "auth.r".into(), source: TokenError::NoToken };
        assert_eq!(
            chain(e),
            "registry r sent an unusable answer for a token from auth.r: token answer has neither `token` nor `access_token`"
        );
        let e = RegistryError::CredentialsInvalid {
            path: "/c.json".into(),
            source: AuthFileError::NotUserPassword { key: "x".into() },
        };
        assert_eq!(
            chain(e),
            r#"cannot use the registry credentials in /c.json: auths."x".auth does not decode to user:password"#
        );
    }

    #[test]
    fn other_statuses_keep_the_envelope_message() {
        let body = br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down","detail":"rate limit"}]}"#;
        let e = from_status("r", Subject::Catalog, StatusCode::TOO_MANY_REQUESTS, body);
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "registry r answered 429 Too Many Requests for the catalog of r: slow down (rate limit)"
        );
        let e = from_status("r", Subject::Ping, StatusCode::BAD_GATEWAY, b"<html>");
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "registry r answered 502 Bad Gateway for the API root of r");
        let e = from_status("r", Subject::Tags { repository: "a/b" }, StatusCode::NOT_FOUND, b"");
        assert!(matches!(e, RegistryError::RepositoryUnknown { .. }));
    }
}
