//! Where a registry name points: the API host to talk to (`docker.io` is served by
//! `registry-1.docker.io`), and whether to speak HTTPS or plain HTTP to it. Plain HTTP
//! only to loopback registries and to hosts the user listed as insecure, and there only
//! as one of two tries: a host named insecure is tried over HTTPS without certificate
//! checks first and plain HTTP after (docker's order, so credentials never go over plain
//! HTTP to a port that speaks TLS); a loopback one over plain HTTP first (what nearly
//! every local registry speaks, and no one can read loopback traffic) and over HTTPS,
//! unchecked, when its answer shows that the port speaks TLS.

use super::error::RegistryError;
use reqwest::Url;
use std::net::IpAddr;

/// The name the Docker Hub registry goes by in references, and the host that serves
/// its API. `index.docker.io` is accepted too: old configs and references use it.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// The host (and port) that serves `registry`'s API.
pub(crate) fn api_host(registry: &str) -> &str {
    if is_docker_hub(registry) {
        DOCKER_HUB_API
    } else {
        registry
    }
}

pub(crate) fn is_docker_hub(registry: &str) -> bool {
    matches!(registry, DOCKER_HUB | "index.docker.io" | DOCKER_HUB_API)
}

/// `http://host[:port]/` or `https://host[:port]/`, the root that API paths join onto,
/// with the scheme to try first (see `fallback_scheme` for the second).
pub(crate) fn base_url(registry: &str, insecure_registries: &[String]) -> Result<Url, RegistryError> {
    let host = api_host(registry);
    // A bare IPv6 address (`::1`) must be bracketed to become a URL authority.
    let authority = match host.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{host}]"),
        Err(_) => host.to_string(),
    };
    let scheme =
        if is_loopback(registry) && !is_listed_insecure(registry, insecure_registries) { "http" } else { "https" };
    let url = Url::parse(&format!("{scheme}://{authority}/"))
        .map_err(|e| RegistryError::InvalidHost { registry: registry.to_string(), source: Some(e) })?;
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err(RegistryError::InvalidHost { registry: registry.to_string(), source: None });
    }
    Ok(url)
}

/// The scheme to try when the first one (`base_url`'s) fails to give an answer, for
/// hosts where both are allowed: plain HTTP after HTTPS for a host named insecure,
/// HTTPS after plain HTTP for a loopback one. None: HTTPS only.
pub(crate) fn fallback_scheme(authority: &str, insecure_registries: &[String]) -> Option<&'static str> {
    if is_listed_insecure(authority, insecure_registries) {
        Some("http")
    } else if is_loopback(authority) {
        Some("https")
    } else {
        None
    }
}

/// Whether a TLS certificate from this host goes unchecked: it is on loopback or named
/// insecure (docker's `insecure-registries` means exactly that, too).
pub(crate) fn skips_verification(authority: &str, insecure_registries: &[String]) -> bool {
    is_loopback(authority) || is_listed_insecure(authority, insecure_registries)
}

/// Splits `host[:port]`, `[v6]:port`, `[v6]` or a bare `v6` into the host and the port.
fn split_host_port(registry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = registry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (registry, None),
        };
    }
    if registry.parse::<std::net::Ipv6Addr>().is_ok() {
        return (registry, None);
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => (host, Some(port)),
        _ => (registry, None),
    }
}

/// 127.0.0.0/8, `::1` and `localhost`, with any port: a registry on this machine,
/// where there is no certificate to check and nobody in between to read the traffic.
pub(crate) fn is_loopback(registry: &str) -> bool {
    let (host, _) = split_host_port(registry);
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// An entry matches with its port (`reg:5000` matches only that port) or without one
/// (`reg` matches every port of that host); a scheme on the entry is ignored.
fn is_listed_insecure(registry: &str, list: &[String]) -> bool {
    let (host, port) = split_host_port(registry);
    list.iter().any(|entry| {
        let entry = entry.trim();
        let entry = entry.strip_prefix("http://").or_else(|| entry.strip_prefix("https://")).unwrap_or(entry);
        let entry = entry.trim_end_matches('/');
        let (e_host, e_port) = split_host_port(entry);
        e_host.eq_ignore_ascii_case(host) && (e_port.is_none() || e_port == port)
    })
}

/// Same scheme, host and port: only then may a request carry the credentials that were
/// meant for `origin` (a registry must not leak its token to a CDN it redirects to).
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// A URL for a message: without the user name and password it may carry (a token
/// realm or a redirect can hold them, and errors end up in logs).
pub(crate) fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Whether credentials may travel to `url`: over HTTPS, or over plain HTTP to a
/// loopback host or one the user named insecure (where they chose plain HTTP).
pub(crate) fn may_carry_credentials(url: &Url, insecure_registries: &[String]) -> bool {
    let host = authority(url);
    url.scheme() == "https" || is_loopback(&host) || is_listed_insecure(&host, insecure_registries)
}

/// `host[:port]` of a URL, for messages.
pub(crate) fn authority(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(r: &str, insecure: &[&str]) -> String {
        let list: Vec<String> = insecure.iter().map(|s| s.to_string()).collect();
        base_url(r, &list).unwrap().to_string()
    }

    #[test]
    fn docker_hub_is_served_by_registry_1() {
        assert_eq!(base("docker.io", &[]), "https://registry-1.docker.io/");
        assert_eq!(base("index.docker.io", &[]), "https://registry-1.docker.io/");
        assert_eq!(base("ghcr.io", &[]), "https://ghcr.io/");
    }

    #[test]
    fn loopback_registries_use_plain_http() {
        assert_eq!(base("127.0.0.1:5000", &[]), "http://127.0.0.1:5000/");
        assert_eq!(base("127.1.2.3", &[]), "http://127.1.2.3/");
        assert_eq!(base("localhost:5000", &[]), "http://localhost:5000/");
        assert_eq!(base("LOCALHOST", &[]), "http://localhost/");
        assert_eq!(base("[::1]:5000", &[]), "http://[::1]:5000/");
        assert_eq!(base("::1", &[]), "http://[::1]/");
        assert_eq!(base("128.0.0.1:5000", &[]), "https://128.0.0.1:5000/");
        assert_eq!(base("localhost.example.com", &[]), "https://localhost.example.com/");
    }

    #[test]
    fn insecure_entries_match_with_or_without_port() {
        let fallback = |r: &str, insecure: &[&str]| {
            let list: Vec<String> = insecure.iter().map(|s| s.to_string()).collect();
            fallback_scheme(r, &list)
        };
        // Named insecure: HTTPS (unchecked) first, plain HTTP after.
        assert_eq!(base("reg.lan:5000", &["reg.lan"]), "https://reg.lan:5000/");
        assert_eq!(fallback("reg.lan:5000", &["reg.lan"]), Some("http"));
        assert_eq!(fallback("reg.lan:5000", &["reg.lan:5000"]), Some("http"));
        assert_eq!(fallback("reg.lan:5000", &["http://reg.lan:5000/"]), Some("http"));
        assert_eq!(fallback("reg.lan:5001", &["reg.lan:5000"]), None);
        assert_eq!(fallback("reg.lan", &["reg.lan:5000"]), None);
        assert_eq!(fallback("other.lan", &["reg.lan"]), None);
        // Loopback: plain HTTP first, HTTPS after; named insecure too: docker's order.
        assert_eq!(fallback("127.0.0.1:5000", &[]), Some("https"));
        assert_eq!(base("127.0.0.1:5000", &["127.0.0.1:5000"]), "https://127.0.0.1:5000/");
        assert!(skips_verification("127.0.0.1:5000", &[]));
        assert!(skips_verification("reg.lan:1", &["reg.lan".to_string()]));
        assert!(!skips_verification("reg.lan:1", &["other.lan".to_string()]));
    }

    #[test]
    fn credentials_go_over_plain_http_only_to_loopback_or_insecure_hosts() {
        let u = |s: &str| Url::parse(s).unwrap();
        let insecure = ["reg.lan:5000".to_string()];
        assert!(may_carry_credentials(&u("https://auth.example.com/token"), &[]));
        assert!(may_carry_credentials(&u("http://127.0.0.1:5001/token"), &[]));
        assert!(may_carry_credentials(&u("http://[::1]:5001/token"), &[]));
        assert!(may_carry_credentials(&u("http://reg.lan:5000/token"), &insecure));
        assert!(!may_carry_credentials(&u("http://reg.lan:5001/token"), &insecure));
        assert!(!may_carry_credentials(&u("http://auth.example.com/token"), &insecure));
    }

    #[test]
    fn redacted_urls_hold_no_userinfo() {
        let u = Url::parse("https://user:s3cret@auth.example.com/token?scope=x").unwrap();
        assert_eq!(redacted(&u), "https://auth.example.com/token?scope=x");
    }

    #[test]
    fn origins_differ_by_host_port_or_scheme() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(&u("https://r.io/v2/a"), &u("https://r.io:443/v2/b?x")));
        assert!(!same_origin(&u("https://r.io/v2/a"), &u("https://cdn.r.io/v2/a")));
        assert!(!same_origin(&u("http://127.0.0.1:1/"), &u("http://127.0.0.1:2/")));
        assert!(!same_origin(&u("https://r.io/"), &u("http://r.io:443/")));
    }
}
