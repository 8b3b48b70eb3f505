//! How imgfs speaks TLS to a host, the way docker and podman do: the built-in web roots
//! and the system's trust store, plus the private CAs and the client certificate kept
//! for that host in `certs.d` (`/etc/docker/certs.d/HOST[:PORT]/`,
//! `/etc/containers/certs.d/HOST[:PORT]/`, and for a non-root user
//! `~/.config/containers/certs.d/HOST[:PORT]/`): every `*.crt` there is a CA to trust,
//! a `NAME.cert` with its `NAME.key` is the client certificate for mutual TLS. Since
//! that differs per host, there is one HTTP client per host (and per verification
//! mode), built the first time the host is dialled and kept for the client's life.
//! The TLS set-up is rustls's, made here rather than by reqwest, so that the
//! certificate check is trust.rs's (a server certificate that is itself one of the
//! anchors is accepted, as docker accepts it).

use super::error::RegistryError;
use super::trust;
use reqwest::blocking::Client as HttpClient;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where docker and podman look for a host's certificates, in the order searched.
pub(crate) fn certs_d_dirs(authority: &str) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/etc/docker/certs.d"), PathBuf::from("/etc/containers/certs.d")];
    // podman run by a user reads the user's own directory too.
    if !rustix::process::geteuid().is_root() {
        if let Some(home) = std::env::var_os("HOME") {
            roots.push(PathBuf::from(home).join(".config/containers/certs.d"));
        }
    }
    roots.into_iter().map(|r| r.join(authority)).collect()
}

/// What every per-host client shares.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// The HTTP clients, one per (host, checks certificates or not).
pub(crate) struct Clients {
    settings: Settings,
    by_host: Mutex<HashMap<(String, bool), HttpClient>>,
}

impl Clients {
    pub fn new(settings: Settings) -> Clients {
        Clients { settings, by_host: Mutex::new(HashMap::new()) }
    }

    /// The client for `authority` (`host[:port]`); `verify` false for a host whose
    /// certificate is not checked (loopback, named insecure). Built outside the lock
    /// (it reads certs.d and the system store): threads dialling other hosts do not
    /// wait for it, and of two threads racing for one host, the first one's is kept.
    pub fn for_host(&self, authority: &str, verify: bool) -> Result<HttpClient, RegistryError> {
        let key = (authority.to_string(), verify);
        if let Some(c) = self.by_host.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(c.clone());
        }
        let built = self.build(authority, verify)?;
        let mut map = self.by_host.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.entry(key).or_insert(built).clone())
    }

    fn build(&self, authority: &str, verify: bool) -> Result<HttpClient, RegistryError> {
        let setup = |reason: String| RegistryError::Setup { reason };
        let mut anchors: Vec<CertificateDer<'static>> = Vec::new();
        let mut identity: Option<(PathBuf, PathBuf)> = None;
        for dir in certs_d_dirs(authority) {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            names.sort();
            for path in names {
                match path.extension().and_then(|e| e.to_str()) {
                    Some("crt") => {
                        let pem = std::fs::read(&path)
                            .map_err(|e| setup(format!("cannot read CA certificate {}: {e}", path.display())))?;
                        let certs = CertificateDer::pem_slice_iter(&pem)
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| setup(format!("bad CA certificate {}: {e}", path.display())))?;
                        if certs.is_empty() {
                            return Err(setup(format!("no PEM certificate in {}", path.display())));
                        }
                        anchors.extend(certs);
                    }
                    Some("cert") if identity.is_none() => {
                        let key = path.with_extension("key");
                        if !key.exists() {
                            return Err(setup(format!(
                                "client certificate {} has no key beside it ({})",
                                path.display(),
                                key.display()
                            )));
                        }
                        identity = Some((path, key));
                    }
                    _ => {}
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = if verify {
            // The system store (or SSL_CERT_FILE / SSL_CERT_DIR, as OpenSSL reads them):
            // certificates it cannot parse are skipped, as every TLS client does.
            anchors.extend(rustls_native_certs::load_native_certs().certs);
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            roots.add_parsable_certificates(anchors.iter().cloned());
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| setup(format!("cannot set up TLS verification for {authority}: {e}")))?;
            Arc::new(trust::AnchorAwareVerifier::new(webpki, anchors))
        } else {
            Arc::new(trust::Unchecked { schemes: provider.signature_verification_algorithms.supported_schemes() })
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(format!("cannot set up TLS for {authority}: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match identity {
            Some((cert, key)) => {
                let chain_pem = std::fs::read(&cert)
                    .map_err(|e| setup(format!("cannot read client certificate {}: {e}", cert.display())))?;
                let key_pem =
                    std::fs::read(&key).map_err(|e| setup(format!("cannot read client key {}: {e}", key.display())))?;
                let bad = |e: &dyn std::fmt::Display| {
                    setup(format!("bad client certificate or key {} / {}: {e}", cert.display(), key.display()))
                };
                let chain =
                    CertificateDer::pem_slice_iter(&chain_pem).collect::<Result<Vec<_>, _>>().map_err(|e| bad(&e))?;
                let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(&e))?;
                config.with_client_auth_cert(chain, private).map_err(|e| bad(&e))?
            }
            None => config.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        HttpClient::builder()
            .user_agent(concat!("imgfs/", env!("CARGO_PKG_VERSION")))
            // Followed by hand in `send_following_redirects`, see there.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.settings.connect_timeout)
            .timeout(self.settings.timeout)
            .use_preconfigured_tls(config)
            .build()
            .map_err(|e| setup(format!("cannot set up the HTTP client for {authority}: {e}")))
    }
}

/// Whether a failed request failed because the host's certificate is not trusted
/// (rustls says "invalid peer certificate": unknown issuer, expired, wrong name).
pub(crate) fn is_untrusted_certificate(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(s) = source {
        if s.to_string().contains("invalid peer certificate") {
            return true;
        }
        source = s.source();
    }
    false
}
