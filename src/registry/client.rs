//! The registry client itself: what it holds (an HTTP client per host, the schemes
//! found per host, mirrors, credentials and tokens, the page size, the time budget) and
//! how it is made from `ClientOptions`, the credential files and the mirror
//! configuration. What it does is in the files beside this one: `requests` (where a
//! request goes, authenticated and retried), `transport` (one request on the wire),
//! `manifests`, `lists`, `blob`, `push`, `search` and `login`.

use super::auth::AuthState;
use super::credentials;
use super::error::RegistryError;
use super::mirrors::Mirrors;
use super::tls;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// A registry that does not answer the TCP/TLS handshake within this is unreachable.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// With reqwest's blocking client this bounds each wait separately: the answer's
/// headers, then every single read of the body. So a big blob may take as long as it
/// takes, while a connection that goes silent fails after a minute (by default; see
/// `ClientOptions::timeout`).
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Entries per page for tag lists and the catalog (`?n=`); distribution's own default.
pub(super) const DEFAULT_PAGE_SIZE: usize = 100;

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

pub struct Client {
    pub(super) http: tls::Clients,
    /// The scheme that answered, per `host:port`, for hosts where both are tried.
    pub(super) schemes: Mutex<HashMap<String, &'static str>>,
    pub(super) mirrors: Mirrors,
    pub(super) insecure_registries: Vec<String>,
    pub(super) auth: AuthState,
    pub(super) page_size: usize,
    /// For messages: the limit a timed-out request ran into.
    pub(super) timeout: Duration,
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
        let mirrors = Mirrors::load()?;
        let mut insecure_registries = opts.insecure_registries;
        insecure_registries.extend(mirrors.insecure.iter().cloned());
        Ok(Client {
            http,
            schemes: Mutex::new(HashMap::new()),
            mirrors,
            insecure_registries,
            auth: AuthState::new(credentials),
            page_size: DEFAULT_PAGE_SIZE,
            timeout: opts.timeout.unwrap_or(IO_TIMEOUT),
        })
    }

    /// Ask for `n` entries per page of tag lists and catalogs (at least 1).
    pub fn with_page_size(mut self, n: usize) -> Client {
        self.page_size = n.max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Client>();
    }
}
