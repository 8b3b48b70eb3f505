//! `imgfs login` and `logout` on the registry side: check a user name and password
//! against a registry through the same challenge/token flow pulls use, and keep them in
//! (or take them out of) docker's `config.json` the way `docker login` does: mode 0600,
//! `auths[KEY].auth` = base64 `user:password`, or through the credential helper the file
//! names (`credHelpers`, `credsStore`), leaving an empty `auths[KEY]` as docker does.
//! Docker Hub's key is `https://index.docker.io/v1/`; other registries' is `host[:port]`.

use super::client::Client;
use super::credentials::{self, normalise_auth_key, AuthFile, Credentials};
use super::endpoint::{self, is_docker_hub};
use super::error::AuthFileError;
use super::error::RegistryError;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a login or logout could not be done or kept.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{server:?} is not a registry host (expected HOST[:PORT])")]
    NotAHost { server: String },
    #[error("{server:?} is not a registry host")]
    BadHost {
        server: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("neither DOCKER_CONFIG nor HOME is set")]
    NoConfigDir,
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use {}", .path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: AuthFileError,
    },
    #[error("cannot use {}: {what}", .path.display())]
    NotAnObject { path: PathBuf, what: &'static str },
    #[error("cannot create {}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A credential helper that failed.
    #[error(transparent)]
    Registry(Box<RegistryError>),
}

type Result<T, E = Error> = std::result::Result<T, E>;

// Boxed: a `RegistryError` inline would make every `Result` here large.
impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Error {
        Error::Registry(Box::new(e))
    }
}

/// The registry a `login`/`logout` argument names: `docker.io` for none or any of
/// Docker Hub's names, else `host[:port]` (a scheme or path, as docker accepts, is
/// dropped).
pub fn registry_of(server: Option<&str>) -> Result<String> {
    let Some(server) = server else { return Ok("docker.io".to_string()) };
    let host = normalise_auth_key(server);
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(Error::NotAHost { server: server.to_string() });
    }
    if is_docker_hub(&host) {
        return Ok("docker.io".to_string());
    }
    endpoint::base_url(&host, &[])
        .map_err(|source| Error::BadHost { server: server.to_string(), source: Box::new(source) })?;
    Ok(host)
}

/// The key docker's config files the registry under (shown to the user too).
pub fn server_key(registry: &str) -> String {
    credentials::server_key(registry)
}

/// `$DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config_dir() -> Result<PathBuf> {
    credentials::default_docker_config_dir().ok_or(Error::NoConfigDir)
}

impl Client {
    /// Ping the registry with these credentials (and no others): Ok if it lets us in.
    pub fn check_login(&self, registry: &str, username: &str, password: &str) -> Result<(), RegistryError> {
        self.auth.set_credentials(registry, Credentials { username: username.into(), password: password.into() });
        self.ping(registry)
    }
}

/// Where a login went.
pub enum Saved {
    File(PathBuf),
    Helper(String),
}

/// Keep the credentials for `registry` in `dir/config.json` (or its helper).
pub fn save(dir: &Path, registry: &str, username: &str, password: &str) -> Result<Saved> {
    let path = dir.join("config.json");
    let (mut config, helper) = read_config(&path)?;
    let key = server_key(registry);
    let auths = auths_of(&mut config, &path)?;
    // Older entries under another spelling of the same registry would shadow nothing
    // (we read the normalised key) but would linger after a logout: drop them.
    auths.retain(|k, _| k == &key || !credentials::names_registry(k, registry));
    let saved = match helper.as_ref().and_then(|f| f.helper_for(registry)).map(str::to_string) {
        Some(helper) => {
            let creds = Credentials { username: username.into(), password: password.into() };
            credentials::helper_store(&helper, &key, &creds)?;
            // What docker leaves: the key, so that `docker login` lists it, and no secret.
            auths.insert(key, Value::Object(Map::new()));
            Saved::Helper(format!("docker-credential-{helper}"))
        }
        None => {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            let mut entry = Map::new();
            entry.insert("auth".into(), Value::String(auth));
            auths.insert(key, Value::Object(entry));
            Saved::File(path.clone())
        }
    };
    write_config(&path, &config)?;
    Ok(saved)
}

/// Remove the credentials for `registry`; false when there were none.
pub fn remove(dir: &Path, registry: &str) -> Result<bool> {
    let path = dir.join("config.json");
    let (mut config, file) = read_config(&path)?;
    let key = server_key(registry);
    let mut removed = false;
    if let Some(helper) = file.as_ref().and_then(|f| f.helper_for(registry)) {
        removed |= credentials::helper_erase(helper, &key)?;
    }
    if file.is_some() {
        let auths = auths_of(&mut config, &path)?;
        let before = auths.len();
        auths.retain(|k, _| !credentials::names_registry(k, registry));
        if auths.len() != before {
            removed = true;
            write_config(&path, &config)?;
        }
    }
    Ok(removed)
}

/// The file as a JSON object (every key kept, ours or not), and parsed for its
/// helpers; a missing file is an empty object and None.
fn read_config(path: &Path) -> Result<(Map<String, Value>, Option<AuthFile>)> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Map::new(), None)),
        Err(source) => return Err(Error::Read { path: path.to_path_buf(), source }),
    };
    let file = AuthFile::parse(&text).map_err(|source| Error::Invalid { path: path.to_path_buf(), source })?;
    match serde_json::from_slice(&text) {
        Ok(Value::Object(map)) => Ok((map, Some(file))),
        _ => Err(Error::NotAnObject { path: path.to_path_buf(), what: "not a JSON object" }),
    }
}

fn auths_of<'a>(config: &'a mut Map<String, Value>, path: &Path) -> Result<&'a mut Map<String, Value>> {
    config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| Error::NotAnObject { path: path.to_path_buf(), what: "`auths` is not an object" })
}

/// Replace the file whole (a temp file beside it, renamed over it), mode 0600 from the
/// first byte: it holds secrets. The directory is made 0700 if missing, as docker does.
fn write_config(path: &Path, config: &Map<String, Value>) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().expect("a file in a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::CreateDir { path: dir.to_path_buf(), source })?;
    let tmp = dir.join(format!(".config.json.imgfs-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        let mut text = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
        text.push(b'\n');
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        Error::Write { path: path.to_path_buf(), source }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_name_registries_as_docker_login_takes_them() {
        for hub in [None, Some("docker.io"), Some("https://index.docker.io/v1/"), Some("registry-1.docker.io")] {
            assert_eq!(registry_of(hub).unwrap(), "docker.io", "{hub:?}");
        }
        assert_eq!(server_key("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(registry_of(Some("https://Reg.Example:5000/v2/")).unwrap(), "reg.example:5000");
        assert_eq!(server_key("reg.example:5000"), "reg.example:5000");
        assert!(registry_of(Some("user@reg.example")).is_err());
        assert!(registry_of(Some("")).is_err());
    }

    /// Every spelling a pull would read Docker Hub's credentials under goes with a
    /// logout (and is replaced by a login); another registry's entry stays.
    #[test]
    fn logout_removes_every_spelling_a_pull_would_read() {
        let dir = tempfile::tempdir().unwrap();
        let entry = serde_json::json!({"auth": "dTpw"});
        let config = serde_json::json!({"auths": {
            "docker.io": entry, "registry-1.docker.io": entry, "https://index.docker.io/v1/": entry,
            "reg.example:5000": entry,
        }});
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        assert!(remove(dir.path(), "docker.io").unwrap());
        let left: Value = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        let keys: Vec<&String> = left["auths"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["reg.example:5000"]);
        assert!(!remove(dir.path(), "docker.io").unwrap());
    }
}
