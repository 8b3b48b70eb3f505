//! Registry mirrors, configured where podman and docker keep them: podman's
//! `registries.conf` (`$CONTAINERS_REGISTRIES_CONF`, else for a non-root user
//! `~/.config/containers/registries.conf` if it exists, else
//! `/etc/containers/registries.conf`; `[[registry]]` tables with `[[registry.mirror]]`,
//! for any registry) and docker's `registry-mirrors` in `/etc/docker/daemon.json`
//! (`$IMGFS_DAEMON_JSON` to read another file; Docker Hub only). A pull asks the mirrors
//! in order and the registry itself last; `route` says where to ask.

use super::endpoint;
use super::error::{ConfigError, RegistryError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where a request for `registry/repository` may be sent, in the order to try.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Route {
    /// (registry, repository) of each mirror that applies.
    pub mirrors: Vec<(String, String)>,
    /// The registry itself (rewritten when registries.conf gives it another location).
    pub origin: (String, String),
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Mirrors {
    rules: Vec<Rule>,
    /// Hosts the files name insecure (a mirror's or registry's `insecure = true`,
    /// daemon.json's `insecure-registries`, an `http://` mirror URL).
    pub insecure: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    /// `registry[/namespace]` this rule is for.
    prefix: String,
    /// Where the registry really is (usually the prefix itself).
    location: String,
    blocked: bool,
    mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone)]
struct Mirror {
    location: String,
    /// podman's `pull-from-mirror`: "all", "digest-only" or "tag-only".
    by_digest: bool,
    by_tag: bool,
}

/// registries.conf, v2 format; unknown keys (search registries, aliases) are ignored.
#[derive(Deserialize, Default)]
struct RegistriesConf {
    #[serde(default)]
    registry: Vec<RegistryTable>,
}

#[derive(Deserialize)]
struct RegistryTable {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default, rename = "mirror-by-digest-only")]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<MirrorTable>,
}

#[derive(Deserialize)]
struct MirrorTable {
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default, rename = "pull-from-mirror")]
    pull_from_mirror: Option<String>,
}

impl Mirrors {
    /// Read the configuration files from where podman and docker keep them (see top).
    pub fn load() -> Result<Mirrors, RegistryError> {
        let conf = match std::env::var_os("CONTAINERS_REGISTRIES_CONF").filter(|v| !v.is_empty()) {
            Some(p) => Some(PathBuf::from(p)),
            None => {
                let user = (!rustix::process::geteuid().is_root())
                    .then(|| {
                        std::env::var_os("XDG_CONFIG_HOME")
                            .map(PathBuf::from)
                            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
                    })
                    .flatten()
                    .map(|c| c.join("containers/registries.conf"))
                    .filter(|p| p.exists());
                Some(user.unwrap_or_else(|| PathBuf::from("/etc/containers/registries.conf")))
            }
        };
        let daemon = std::env::var_os("IMGFS_DAEMON_JSON")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/docker/daemon.json"));
        let mut m = Mirrors::default();
        if let Some(text) = conf.as_deref().map(read_optional).transpose()?.flatten() {
            m.add_registries_conf(&text).map_err(|e| config_error(conf.as_deref().unwrap(), e))?;
        }
        if let Some(text) = read_optional(&daemon)? {
            m.add_daemon_json(&text).map_err(|e| config_error(&daemon, e))?;
        }
        Ok(m)
    }

    pub(crate) fn add_registries_conf(&mut self, text: &str) -> Result<(), ConfigError> {
        let conf: RegistriesConf = toml::from_str(text)?;
        for r in conf.registry {
            let location = r.location.unwrap_or_default().trim_end_matches('/').to_string();
            let prefix = r.prefix.map(|p| p.trim_end_matches('/').to_string()).unwrap_or_else(|| location.clone());
            if prefix.is_empty() {
                return Err(ConfigError::NoLocation);
            }
            if prefix.starts_with("*.") {
                // Not supported yet; skipped rather than refused, so that a system
                // configuration made for podman does not stop imgfs altogether.
                continue;
            }
            if r.insecure && !location.is_empty() {
                self.insecure.push(host_of(&location).to_string());
            }
            let mut mirrors = Vec::new();
            for mt in r.mirror {
                let loc = mt.location.trim_end_matches('/').to_string();
                if loc.is_empty() {
                    return Err(ConfigError::EmptyMirror { prefix });
                }
                if mt.insecure {
                    self.insecure.push(host_of(&loc).to_string());
                }
                let (by_digest, by_tag) = match mt.pull_from_mirror.as_deref() {
                    _ if r.mirror_by_digest_only => (true, false),
                    None | Some("all") => (true, true),
                    Some("digest-only") => (true, false),
                    Some("tag-only") => (false, true),
                    Some(other) => return Err(ConfigError::PullFromMirror { value: other.to_string(), mirror: loc }),
                };
                mirrors.push(Mirror { location: loc, by_digest, by_tag });
            }
            let location = if location.is_empty() { prefix.clone() } else { location };
            self.rules.push(Rule { prefix: normalise(&prefix), location, blocked: r.blocked, mirrors });
        }
        Ok(())
    }

    /// `{"registry-mirrors": ["https://mirror.example", …], "insecure-registries": […]}`;
    /// the mirrors serve Docker Hub only, after any registries.conf names for it.
    pub(crate) fn add_daemon_json(&mut self, text: &str) -> Result<(), ConfigError> {
        let v: serde_json::Value = serde_json::from_str(text)?;
        let strings = |key: &'static str| -> Result<Vec<String>, ConfigError> {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(vec![]),
                Some(serde_json::Value::Array(a)) => {
                    a.iter().map(|s| s.as_str().map(str::to_string).ok_or(ConfigError::NotAString { key })).collect()
                }
                Some(_) => Err(ConfigError::NotAnArray { key }),
            }
        };
        self.insecure.extend(strings("insecure-registries")?);
        let mut mirrors = Vec::new();
        for url in strings("registry-mirrors")? {
            let u = match reqwest::Url::parse(&url) {
                Ok(u) => u,
                Err(source) => return Err(ConfigError::MirrorUrl { url, source }),
            };
            let authority = endpoint::authority(&u);
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                return Err(ConfigError::MirrorNotHttp { url });
            }
            if u.scheme() == "http" {
                // docker speaks plain HTTP to a mirror given as http://.
                self.insecure.push(authority.clone());
            }
            mirrors.push(Mirror { location: authority, by_digest: true, by_tag: true });
        }
        if !mirrors.is_empty() {
            match self.rules.iter_mut().find(|r| r.prefix == "docker.io") {
                Some(r) => r.mirrors.extend(mirrors),
                None => self.rules.push(Rule {
                    prefix: "docker.io".into(),
                    location: "docker.io".into(),
                    blocked: false,
                    mirrors,
                }),
            }
        }
        Ok(())
    }

    /// Every host that serves as a mirror somewhere (a dead one is skipped at once, not
    /// retried like the registry itself).
    pub fn is_mirror(&self, registry: &str) -> bool {
        self.rules.iter().flat_map(|r| &r.mirrors).any(|m| host_of(&m.location) == registry)
    }

    /// Where to ask for `repository` of `registry`: the longest matching prefix's rule
    /// (podman's choice), its mirrors that serve this kind of request (`by_digest`: the
    /// manifest or blob is asked for by digest), then the registry.
    pub fn route(&self, registry: &str, repository: &str, by_digest: bool) -> Result<Route, RegistryError> {
        let name = format!("{}/{repository}", normalise(registry));
        let rule = self
            .rules
            .iter()
            .filter(|r| name == r.prefix || name.starts_with(&format!("{}/", r.prefix)))
            .max_by_key(|r| r.prefix.len());
        let Some(rule) = rule else {
            return Ok(Route { mirrors: vec![], origin: (registry.to_string(), repository.to_string()) });
        };
        if rule.blocked {
            return Err(RegistryError::InvalidInput {
                reason: format!("registry {} is blocked in registries.conf", rule.prefix),
            });
        }
        let rest = &name[rule.prefix.len()..];
        let at = |location: &str| {
            let full = format!("{location}{rest}");
            match full.split_once('/') {
                Some((r, repo)) => (r.to_string(), repo.to_string()),
                None => (full, String::new()),
            }
        };
        let mirrors = rule
            .mirrors
            .iter()
            .filter(|m| if by_digest { m.by_digest } else { m.by_tag })
            .map(|m| at(&m.location))
            .collect();
        let origin = if rule.location == rule.prefix {
            (registry.to_string(), repository.to_string())
        } else {
            at(&rule.location)
        };
        Ok(Route { mirrors, origin })
    }
}

/// The file's text, or None when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, RegistryError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(config_error(path, ConfigError::Read(e))),
    }
}

fn config_error(path: &Path, source: ConfigError) -> RegistryError {
    RegistryError::Config { path: path.to_path_buf(), source }
}

/// `host[:port]` of a `host[:port][/namespace]` location.
fn host_of(location: &str) -> &str {
    location.split('/').next().unwrap_or(location)
}

/// Docker Hub goes by several names; rules and references meet on `docker.io`.
fn normalise(name: &str) -> String {
    let host = host_of(name);
    if endpoint::is_docker_hub(host) {
        format!("docker.io{}", &name[host.len()..])
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: &Mirrors, reg: &str, repo: &str, by_digest: bool) -> Route {
        m.route(reg, repo, by_digest).unwrap()
    }

    #[test]
    fn registries_conf_mirrors_come_first_longest_prefix_wins() {
        let mut m = Mirrors::default();
        m.add_registries_conf(
            r#"
unqualified-search-registries = ["docker.io"]
[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "mirror.lan:5000/hub"
insecure = true
[[registry.mirror]]
location = "digests.lan"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "docker.io/special"
location = "internal.lan/special-copy"
"#,
        )
        .unwrap();
        let r = route(&m, "docker.io", "library/alpine", false);
        assert_eq!(r.mirrors, vec![("mirror.lan:5000".into(), "hub/library/alpine".into())]);
        assert_eq!(r.origin, ("docker.io".into(), "library/alpine".into()));
        let r = route(&m, "index.docker.io", "library/alpine", true);
        assert_eq!(r.mirrors.len(), 2);
        assert_eq!(r.mirrors[1], ("digests.lan".into(), "library/alpine".into()));
        let r = route(&m, "docker.io", "special/x", false);
        assert!(r.mirrors.is_empty());
        assert_eq!(r.origin, ("internal.lan".into(), "special-copy/x".into()));
        let r = route(&m, "ghcr.io", "a/b", false);
        assert_eq!(r, Route { mirrors: vec![], origin: ("ghcr.io".into(), "a/b".into()) });
        assert_eq!(m.insecure, vec!["mirror.lan:5000".to_string()]);
        assert!(m.is_mirror("mirror.lan:5000") && !m.is_mirror("docker.io"));
    }

    #[test]
    fn daemon_json_mirrors_serve_docker_hub_only() {
        let mut m = Mirrors::default();
        m.add_daemon_json(r#"{"registry-mirrors":["https://m1.lan","http://127.0.0.1:5001/"],"debug":true}"#).unwrap();
        let r = route(&m, "docker.io", "library/busybox", false);
        let names: Vec<&str> = r.mirrors.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(names, ["m1.lan", "127.0.0.1:5001"]);
        assert!(route(&m, "quay.io", "x/y", false).mirrors.is_empty());
        assert_eq!(m.insecure, vec!["127.0.0.1:5001".to_string()]);
        assert!(m.add_daemon_json(r#"{"registry-mirrors":"https://m"}"#).is_err());
        assert!(m.add_daemon_json(r#"{"registry-mirrors":["ftp://m"]}"#).is_err());
    }

    #[test]
    fn blocked_and_malformed_configurations_are_refused() {
        let mut m = Mirrors::default();
        m.add_registries_conf("[[registry]]\nlocation = \"bad.lan\"\nblocked = true\n").unwrap();
        assert!(m.route("bad.lan", "x", false).unwrap_err().to_string().contains("blocked"));
        assert!(Mirrors::default().add_registries_conf("[[registry]\n").is_err());
        assert!(Mirrors::default().add_registries_conf("[[registry]]\ninsecure = true\n").is_err());
        let mut m = Mirrors::default();
        m.add_registries_conf("[[registry]]\nprefix = \"*.lan\"\n[[registry.mirror]]\nlocation = \"m.lan\"\n").unwrap();
        assert!(m.route("a.lan", "x", false).unwrap().mirrors.is_empty());
    }
}
