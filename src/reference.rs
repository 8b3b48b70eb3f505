//! Image references: parse and normalise `[registry/]name[:tag][@digest]` the way docker
//! does, so that `alpine`, `library/alpine` and `docker.io/library/alpine:latest` are
//! one and the same image in the store.
//!
//! The parser is ours, not `oci_spec::distribution::Reference` (0.10), which normalises
//! the same way for ordinary names but differs where users and tests notice: it refuses
//! bracketed IPv6 hosts (`[::1]:5000/x`), keeps `registry-1.docker.io` apart from
//! `docker.io`, counts the 255-character limit on the repository alone (ours, as the
//! distribution spec does, on `registry/repository`, so `docker.io/library/` counts),
//! takes Unicode word characters in tags and ports of any length, accepts sha384 and
//! sha512 digests that our store refuses, and answers every malformed reference with the
//! one "invalid reference format", where ours names the part that is wrong.

use crate::digest::Digest;
use std::fmt;

/// A reference that does not parse; the text names the input and the part that is
/// wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid reference {input:?}: empty")]
    Empty { input: String },
    #[error("invalid reference {input:?}")]
    Digest {
        input: String,
        #[source]
        source: crate::digest::Error,
    },
    #[error("invalid reference {input:?}: invalid tag {tag:?}")]
    Tag { input: String, tag: String },
    #[error("invalid reference {input:?}: invalid registry host (expected HOST[:PORT])")]
    Registry { input: String },
    #[error(
        "invalid reference {input:?}: repository names must be lowercase letters, digits and separators (. _ __ -)"
    )]
    Repository { input: String },
    #[error("invalid reference {input:?}: repository name is {len} characters, more than {MAX_NAME_LEN}")]
    TooLong { input: String, len: usize },
}

pub const DEFAULT_REGISTRY: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
/// The longest `registry/repository` name, as docker's reference grammar has it.
const MAX_NAME_LEN: usize = 255;

/// A normalised image reference. `tag` is `None` only when the reference was given by
/// digest alone (`name@sha256:…`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parse a reference as a user types it. A missing tag becomes `latest` unless a
    /// digest is given.
    pub fn parse(input: &str) -> Result<Reference, Error> {
        if input.is_empty() {
            return Err(Error::Empty { input: input.to_string() });
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                let d = d.parse::<Digest>().map_err(|e| Error::Digest { input: input.to_string(), source: e })?;
                (r, Some(d))
            }
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(Error::Tag { input: input.to_string(), tag: t.to_string() });
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        if !valid_registry(&registry) {
            return Err(Error::Registry { input: input.to_string() });
        }
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty() || !repository.split('/').all(valid_path_component) {
            return Err(Error::Repository { input: input.to_string() });
        }
        // The distribution spec's limit, on the name as the registry sees it.
        let name_len = registry.len() + 1 + repository.len();
        if name_len > MAX_NAME_LEN {
            return Err(Error::TooLong { input: input.to_string(), len: name_len });
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// `registry/repository`, the key under which tags are kept.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The repository as docker prints it: `alpine` for `docker.io/library/alpine`,
    /// `user/app` for other Docker Hub names, `host:port/name` elsewhere.
    pub fn familiar_name(&self) -> String {
        familiar_name(&self.name())
    }

    /// The whole reference as docker prints it: `alpine:3`, `user/app@sha256:…`,
    /// `127.0.0.1:5000/app:1`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference { tag: Some(tag.to_string()), digest: None, ..self.clone() }
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }
}

/// `docker.io/library/x` → `x`; `docker.io/u/x` → `u/x`; others unchanged.
pub fn familiar_name(full: &str) -> String {
    match full.strip_prefix("docker.io/") {
        Some(rest) => rest.strip_prefix("library/").filter(|r| !r.contains('/')).unwrap_or(rest).to_string(),
        None => full.to_string(),
    }
}

/// A stored reference key (`registry/repo:tag` or `registry/repo@sha256:…`, always
/// normalised) in docker's short form; a key that does not parse is shown as it is.
pub fn familiar_ref(stored: &str) -> String {
    Reference::parse(stored).map(|r| r.familiar()).unwrap_or_else(|_| stored.to_string())
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `host[:port]` as docker's grammar allows: DNS labels or an IPv4 address, or an
/// IPv6 address in brackets; a port of digits. Anything else would end up in a URL.
fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !r.ends_with(']') => (h, Some(p)),
        _ => (r, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()));
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => !v6.is_empty() && v6.bytes().all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.'),
        None => {
            !host.is_empty()
                && host.split('.').all(|label| {
                    let b = label.as_bytes();
                    !b.is_empty()
                        && b[0].is_ascii_alphanumeric()
                        && b[b.len() - 1].is_ascii_alphanumeric()
                        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                })
        }
    };
    port_ok && host_ok
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the distribution spec's path component.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn bare_names_normalise_as_docker_does() {
        assert_eq!(p("alpine").to_string(), "docker.io/library/alpine:latest");
        assert_eq!(p("library/alpine:3").to_string(), "docker.io/library/alpine:3");
        assert_eq!(p("user/app").to_string(), "docker.io/user/app:latest");
        assert_eq!(p("index.docker.io/alpine").to_string(), "docker.io/library/alpine:latest");
        assert_eq!(p("alpine").familiar_name(), "alpine");
        assert_eq!(p("user/app").familiar_name(), "user/app");
    }

    #[test]
    fn registry_with_port_and_tag() {
        let r = p("127.0.0.1:5000/a/b:v1.2");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("v1.2"));
        assert_eq!(r.familiar_name(), "127.0.0.1:5000/a/b");
        let r = p("localhost/x");
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn digest_references_have_no_default_tag() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = p(&format!("localhost:5000/x@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
        let r = p(&format!("x:1@{d}"));
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.manifest_reference(), d);
    }

    #[test]
    fn familiar_references() {
        assert_eq!(familiar_ref("docker.io/library/alpine:3"), "alpine:3");
        assert_eq!(familiar_ref("docker.io/user/app:latest"), "user/app:latest");
        assert_eq!(familiar_ref("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app:1");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(familiar_ref(&format!("docker.io/library/alpine@{d}")), format!("alpine@{d}"));
        assert_eq!(familiar_ref(&format!("localhost:5000/a/b@{d}")), format!("localhost:5000/a/b@{d}"));
    }

    #[test]
    fn malformed_references_are_refused_with_the_reason() {
        for bad in ["", "UPPER", "a//b", "x:", "x:-bad", "x@sha256:1234", "a/-b", "x y", "a__-b"] {
            let e = Reference::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid reference {bad:?}")), "{bad}: {e}");
        }
        // The digest's own complaint is the source, printed after it by the CLI.
        let e = anyhow::Error::from(Reference::parse("x@sha256:1234").unwrap_err());
        assert_eq!(
            format!("{e:#}"),
            r#"invalid reference "x@sha256:1234": invalid digest "sha256:1234": expected sha256: and 64 lowercase hex digits"#
        );
        let e = Reference::parse("x:-bad").unwrap_err().to_string();
        assert_eq!(e, r#"invalid reference "x:-bad": invalid tag "-bad""#);
    }

    #[test]
    fn over_long_names_and_odd_hosts_are_refused() {
        let ok = format!("127.0.0.1:5000/{}", "a".repeat(255 - 15));
        assert_eq!(p(&ok).repository.len(), 240);
        let long = format!("127.0.0.1:5000/{}", "a".repeat(256 - 15));
        let e = Reference::parse(&long).unwrap_err().to_string();
        assert!(e.contains("repository name is 256 characters, more than 255"), "{e}");
        // Docker Hub names count with their implied `docker.io/library/`.
        assert!(Reference::parse(&"a".repeat(237)).is_ok());
        assert!(Reference::parse(&"a".repeat(238)).is_err());
        for host in ["a?b.io", "a#b.io", "[::1", "h.io:99999999", "h.io:", "-h.io", "h..io", "h.io:80x"] {
            let e = Reference::parse(&format!("{host}/x")).unwrap_err().to_string();
            assert!(e.contains("invalid registry host"), "{host}: {e}");
        }
        for host in ["[::1]:5000", "localhost:5000", "my-reg.example.com", "10.0.0.1:443"] {
            assert_eq!(p(&format!("{host}/x")).registry, host);
        }
    }
}
