//! Where registry credentials come from and where `imgfs login` keeps them: docker's
//! `config.json` (`auths`, `credsStore`, `credHelpers`), podman's `auth.json` (the same
//! format), and docker's credential-helper protocol (`docker-credential-NAME get|store|erase`,
//! JSON on stdio).
//!
//! Precedence, first file with an answer for the registry wins:
//! 1. `$REGISTRY_AUTH_FILE`: set on purpose, so it beats everything (as in podman).
//! 2. docker's `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`): the file
//!    `imgfs login` writes, so that a fresh login takes effect at once. Podman reads it
//!    last; we read it before podman's default files for that reason.
//! 3. `$XDG_RUNTIME_DIR/containers/auth.json` (where `podman login` writes), then
//!    `$XDG_CONFIG_HOME/containers/auth.json` (else `~/.config/containers/auth.json`).
//!
//! Within one file docker's order holds: a `credHelpers` entry for the host, else
//! `credsStore`, else the inline `auths` entry (also the fallback when the helper has
//! nothing for the host). Helpers run only when a registry asks for credentials.

use super::endpoint::is_docker_hub;
use super::error::{AuthFileError, RegistryError};
use base64::Engine as _;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The key docker files Docker Hub under, in `auths` and for helpers.
pub(crate) const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Docker's way of saying "the secret is an identity (refresh) token".
pub(crate) const IDENTITY_TOKEN_USER: &str = "<token>";

/// What a helper prints when it has nothing for a server (docker-credential-helpers'
/// `ErrCredentialsNotFound`).
const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";

/// `$DOCKER_CONFIG`, else `~/.docker`: where docker keeps `config.json`.
pub(crate) fn default_docker_config_dir() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => home().map(|h| h.join(".docker")),
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The auth files to read, in precedence order (see the top of this file).
pub(crate) fn auth_file_paths(docker_config_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    out.extend(env_path("REGISTRY_AUTH_FILE"));
    out.extend(docker_config_dir.map(|d| d.join("config.json")));
    out.extend(env_path("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    let config_home = env_path("XDG_CONFIG_HOME").or_else(|| home().map(|h| h.join(".config")));
    out.extend(config_home.map(|d| d.join("containers/auth.json")));
    out
}

/// A user name and password (or personal access token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print the secret, not even in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    pub(crate) fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }

    /// The secret is an identity (refresh) token, not a password.
    pub(crate) fn is_identity_token(&self) -> bool {
        self.username == IDENTITY_TOKEN_USER
    }
}

/// One docker `config.json` or podman `auth.json`, read.
#[derive(Default)]
pub(crate) struct AuthFile {
    auths: HashMap<String, Credentials>,
    creds_store: Option<String>,
    cred_helpers: HashMap<String, String>,
}

impl AuthFile {
    /// A missing file is an empty one; an unreadable or malformed one is an error,
    /// because silently ignoring it would turn into a baffling "unauthorized" later.
    pub fn load(path: &Path) -> Result<AuthFile, RegistryError> {
        match std::fs::read(path) {
            Ok(text) => AuthFile::parse(&text)
                .map_err(|source| RegistryError::CredentialsInvalid { path: path.to_path_buf(), source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthFile::default()),
            Err(source) => Err(RegistryError::CredentialsUnreadable { path: path.to_path_buf(), source }),
        }
    }

    pub(crate) fn parse(text: &[u8]) -> Result<AuthFile, AuthFileError> {
        #[derive(serde::Deserialize)]
        struct Config {
            #[serde(default)]
            auths: HashMap<String, AuthEntry>,
            #[serde(default, rename = "credsStore")]
            creds_store: Option<String>,
            #[serde(default, rename = "credHelpers")]
            cred_helpers: HashMap<String, String>,
        }
        #[derive(serde::Deserialize)]
        struct AuthEntry {
            #[serde(default)]
            auth: Option<String>,
            #[serde(default)]
            username: Option<String>,
            #[serde(default)]
            password: Option<String>,
            #[serde(default)]
            identitytoken: Option<String>,
        }
        let config: Config = serde_json::from_slice(text).map_err(AuthFileError::Json)?;
        let mut auths = HashMap::new();
        for (key, entry) in config.auths {
            let token = entry.identitytoken.filter(|t| !t.is_empty());
            let creds = match (token, entry.auth.as_deref().filter(|a| !a.is_empty()), entry.username, entry.password) {
                // An identity token replaces the password (docker sends it, not the
                // `auth` pair, when both are present).
                (Some(token), ..) => Credentials { username: IDENTITY_TOKEN_USER.into(), password: token },
                (None, Some(auth), _, _) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|source| AuthFileError::NotBase64 { key: key.clone(), source })?;
                    let decoded =
                        String::from_utf8(decoded).map_err(|_| AuthFileError::NotUtf8 { key: key.clone() })?;
                    let (user, pass) =
                        decoded.split_once(':').ok_or_else(|| AuthFileError::NotUserPassword { key: key.clone() })?;
                    Credentials { username: user.to_string(), password: pass.to_string() }
                }
                (None, None, Some(username), Some(password)) if !username.is_empty() => {
                    Credentials { username, password }
                }
                // `{}`: docker leaves this when a helper holds the secret.
                _ => continue,
            };
            auths.insert(normalise_auth_key(&key), creds);
        }
        let cred_helpers = config.cred_helpers.into_iter().map(|(k, v)| (normalise_auth_key(&k), v)).collect();
        Ok(AuthFile { auths, creds_store: config.creds_store.filter(|s| !s.is_empty()), cred_helpers })
    }

    /// The helper that holds this registry's secret, if the file names one.
    pub fn helper_for(&self, registry: &str) -> Option<&str> {
        key_candidates(registry)
            .iter()
            .find_map(|k| self.cred_helpers.get(*k))
            .or(self.creds_store.as_ref())
            .map(String::as_str)
            .filter(|h| !h.is_empty())
    }

    fn inline(&self, registry: &str) -> Option<&Credentials> {
        key_candidates(registry).iter().find_map(|k| self.auths.get(*k))
    }

    /// This file's credentials for `registry` (helper first, then `auths`).
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        if let Some(helper) = self.helper_for(registry) {
            if let Some(c) = helper_get(helper, &server_key(registry))? {
                return Ok(Some(c));
            }
        }
        Ok(self.inline(registry).cloned())
    }
}

/// The names a registry's entry may be filed under, normalised. Docker keeps Docker
/// Hub's under `https://index.docker.io/v1/`, but people write the other names too.
fn key_candidates(registry: &str) -> Vec<&str> {
    if is_docker_hub(registry) {
        vec!["index.docker.io", "docker.io", "registry-1.docker.io"]
    } else {
        vec![registry]
    }
}

/// Does the auth file key `entry` name `registry`, as a lookup would read it? (Docker
/// Hub answers to three spellings.)
pub(crate) fn names_registry(entry: &str, registry: &str) -> bool {
    key_candidates(registry).contains(&normalise_auth_key(entry).as_str())
}

/// The key `imgfs login` writes for a registry, as docker does.
pub(crate) fn server_key(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `http://reg:5000` → `reg:5000`.
pub(crate) fn normalise_auth_key(key: &str) -> String {
    let key = key.trim();
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    key.split('/').next().unwrap_or("").to_ascii_lowercase()
}

/// Every auth file in precedence order, read once per client.
pub(crate) struct CredentialSources {
    files: Vec<AuthFile>,
}

impl CredentialSources {
    pub fn load(docker_config_dir: Option<&Path>) -> Result<CredentialSources, RegistryError> {
        let files = auth_file_paths(docker_config_dir).iter().map(|p| AuthFile::load(p)).collect::<Result<_, _>>()?;
        Ok(CredentialSources { files })
    }

    /// The first answer for `registry` (lower-cased) in precedence order.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        for file in &self.files {
            if let Some(c) = file.lookup(registry)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

fn helper_program(helper: &str) -> Result<String, RegistryError> {
    // The name becomes part of a program looked up on PATH: no paths, no options.
    if helper.is_empty() || helper.contains('/') || helper.starts_with('-') {
        return Err(RegistryError::CredentialHelper {
            helper: helper.to_string(),
            reason: "not a valid credential helper name".into(),
        });
    }
    Ok(format!("docker-credential-{helper}"))
}

/// Run `docker-credential-HELPER ACTION` with `input` on stdin; its stdout, or the
/// exit status's failure with what it printed.
fn run_helper(helper: &str, action: &str, input: &[u8]) -> Result<Result<Vec<u8>, String>, RegistryError> {
    let program = helper_program(helper)?;
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RegistryError::CredentialHelperRun { helper: program.clone(), source })?;
    // A helper that exits without reading its input is judged by its exit status.
    let _ = child.stdin.take().expect("piped").write_all(input);
    let out = child
        .wait_with_output()
        .map_err(|source| RegistryError::CredentialHelperRun { helper: program.clone(), source })?;
    if out.status.success() {
        return Ok(Ok(out.stdout));
    }
    // Helpers print their error on stdout (docker-credential-helpers does); take the
    // first line of whichever stream has one.
    let text = [&out.stdout, &out.stderr]
        .iter()
        .map(|s| String::from_utf8_lossy(s).trim().lines().next().unwrap_or("").to_string())
        .find(|l| !l.is_empty())
        .unwrap_or_else(|| out.status.to_string());
    Ok(Err(text))
}

/// `get`: the helper's credentials for `server`, None when it has none.
fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>, RegistryError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    match run_helper(helper, "get", server.as_bytes())? {
        Ok(stdout) => {
            let a: Answer = serde_json::from_slice(&stdout).map_err(|source| {
                RegistryError::CredentialHelperAnswer { helper: format!("docker-credential-{helper}"), source }
            })?;
            Ok((!a.secret.is_empty()).then_some(Credentials { username: a.username, password: a.secret }))
        }
        Err(msg) if msg.contains(HELPER_NOT_FOUND) => Ok(None),
        Err(msg) => Err(RegistryError::CredentialHelper {
            helper: format!("docker-credential-{helper}"),
            reason: format!("`get` for {server} failed: {msg}"),
        }),
    }
}

/// `store`: hand credentials to a helper.
pub(crate) fn helper_store(helper: &str, server: &str, creds: &Credentials) -> Result<(), RegistryError> {
    let input = serde_json::json!({"ServerURL": server, "Username": creds.username, "Secret": creds.password});
    run_helper(helper, "store", input.to_string().as_bytes())?.map(drop).map_err(|msg| {
        RegistryError::CredentialHelper {
            helper: format!("docker-credential-{helper}"),
            reason: format!("`store` for {server} failed: {msg}"),
        }
    })
}

/// `erase`: true if the helper removed something, false if it had nothing.
pub(crate) fn helper_erase(helper: &str, server: &str) -> Result<bool, RegistryError> {
    match run_helper(helper, "erase", server.as_bytes())? {
        Ok(_) => Ok(true),
        Err(msg) if msg.contains(HELPER_NOT_FOUND) => Ok(false),
        Err(msg) => Err(RegistryError::CredentialHelper {
            helper: format!("docker-credential-{helper}"),
            reason: format!("`erase` for {server} failed: {msg}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auths_in_all_forms_and_key_styles() {
        let cfg = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},
            "http://reg.lan:5000":{"username":"u","password":"p:w"},
            "ghcr.io":{"auth":"Z2g6dG9rOmVu"},
            "tok.io":{"auth":"dTpw","identitytoken":"refresh-me"},
            "helper.io":{}
        },"credHelpers":{"https://ecr.example":"ecr"}}"#;
        let file = AuthFile::parse(cfg).unwrap();
        let c = |r: &str| file.inline(r).map(|c| (c.username.clone(), c.password.clone()));
        assert_eq!(c("docker.io"), Some(("hub".into(), "secret".into())));
        assert_eq!(c("reg.lan:5000"), Some(("u".into(), "p:w".into())));
        assert_eq!(c("ghcr.io"), Some(("gh".into(), "tok:en".into())));
        assert_eq!(c("tok.io"), Some((IDENTITY_TOKEN_USER.into(), "refresh-me".into())));
        assert_eq!(c("reg.lan"), None);
        assert_eq!(c("helper.io"), None);
        assert_eq!(file.helper_for("ecr.example"), Some("ecr"));
        assert_eq!(file.helper_for("ghcr.io"), None);
        let with_store = AuthFile::parse(br#"{"credsStore":"desktop","credHelpers":{"a.io":"a"}}"#).unwrap();
        assert_eq!(with_store.helper_for("a.io"), Some("a"));
        assert_eq!(with_store.helper_for("b.io"), Some("desktop"));
        assert!(AuthFile::parse(br#"{"auths":{"x":{"auth":"%%%"}}}"#).err().unwrap().to_string().contains("\"x\""));
    }

    #[test]
    fn helper_names_cannot_be_paths() {
        assert!(helper_program("../bin/sh").is_err());
        assert!(helper_program("-x").is_err());
        assert_eq!(helper_program("pass").unwrap(), "docker-credential-pass");
    }
}
