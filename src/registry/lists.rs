//! Tag lists and the catalog: every page, following `?n=` and the `Link: <…>; rel="next"`
//! header, refusing a next-page link that leads back to a page already read or away to
//! another host.

use super::client::Client;
use super::endpoint;
use super::error::{RegistryError, Subject};
use super::names::check_repository;
use super::transport::{fail, read_body};
use reqwest::header::{HeaderMap, LINK};
use reqwest::Url;
use std::collections::HashSet;

/// One page of tags or repositories.
pub(super) const LIST_LIMIT: usize = 32 << 20;

impl Client {
    /// All tags, following pagination (`?n=` and the `Link: <...>; rel="next"` header).
    pub fn list_tags(&self, registry: &str, repository: &str) -> Result<Vec<String>, RegistryError> {
        check_repository(repository)?;
        let url = self.url(registry, &format!("v2/{repository}/tags/list?n={}", self.page_size))?;
        self.paginate(registry, Subject::Tags { repository }, url, "tags")
    }

    /// All repositories from /v2/_catalog, paginated the same way.
    pub fn catalog(&self, registry: &str) -> Result<Vec<String>, RegistryError> {
        let url = self.url(registry, &format!("v2/_catalog?n={}", self.page_size))?;
        self.paginate(registry, Subject::Catalog, url, "repositories")
    }

    /// Collect `field` (an array of strings) from every page, following `rel="next"`.
    pub(super) fn paginate(
        &self,
        registry: &str,
        subject: Subject<'_>,
        first: Url,
        field: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let what = subject.describe(registry);
        let invalid = |reason: String| RegistryError::InvalidResponse {
            registry: registry.to_string(),
            what: what.clone(),
            reason,
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut url = first;
        loop {
            if !seen.insert(url.to_string()) {
                return Err(invalid(format!("the next-page link leads back to {}", endpoint::redacted(&url))));
            }
            let resp = self.get(registry, subject, &url, &HeaderMap::new())?;
            if !resp.status().is_success() {
                return Err(fail(registry, subject, resp));
            }
            let next = match next_link(resp.headers()) {
                Some(link) => {
                    let next = url.join(&link).map_err(|source| RegistryError::InvalidLink {
                        registry: registry.to_string(),
                        what: what.clone(),
                        kind: "next-page link",
                        link: link.clone(),
                        source,
                    })?;
                    // The next page is asked for with this registry's credentials, so it
                    // must be on this registry: a link to another host would hand them over.
                    if next.origin() != url.origin() {
                        return Err(invalid(format!(
                            "the next-page link leads to another host: {}",
                            endpoint::redacted(&next)
                        )));
                    }
                    Some(next)
                }
                None => None,
            };
            let body = read_body(registry, &what, resp, LIST_LIMIT)?;
            let page: serde_json::Value =
                serde_json::from_slice(&body).map_err(|source| RegistryError::InvalidJson {
                    registry: registry.to_string(),
                    what: what.clone(),
                    reason: "not valid JSON",
                    source,
                })?;
            match page.get(field) {
                // distribution answers `"tags": null` for a repository with no tags left.
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Array(items)) => {
                    for item in items {
                        let s = item.as_str().ok_or_else(|| invalid(format!("`{field}` holds a non-string")))?;
                        out.push(s.to_string());
                    }
                }
                Some(_) => return Err(invalid(format!("`{field}` is not an array"))),
            }
            match next {
                Some(n) => url = n,
                None => return Ok(out),
            }
        }
    }
}

/// The target of `rel="next"` in the Link headers (RFC 8288), as written (maybe relative).
pub(super) fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK).iter().filter_map(|v| v.to_str().ok()) {
        let mut rest = value;
        while let Some(start) = rest.find('<') {
            let after = &rest[start + 1..];
            let end = after.find('>')?;
            let target = &after[..end];
            // Parameters run up to the next link (`, <`), or the end.
            let params_all = &after[end + 1..];
            let params_end = params_all.find('<').unwrap_or(params_all.len());
            let params = &params_all[..params_end];
            let is_next = params.split(';').any(|p| {
                let Some((k, v)) = p.split_once('=') else { return false };
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim().trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next"))
            });
            if is_next {
                return Some(target.to_string());
            }
            rest = &params_all[params_end..];
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn next_link_is_found_among_several() {
        let mut h = HeaderMap::new();
        h.insert(LINK, HeaderValue::from_static(r#"</v2/_catalog?last=b&n=2>; rel="next""#));
        assert_eq!(next_link(&h).as_deref(), Some("/v2/_catalog?last=b&n=2"));
        let mut h = HeaderMap::new();
        h.insert(LINK, HeaderValue::from_static(r#"<https://x/a?p=1,2>; rel="prev", <https://x/b?last=c>;rel=next"#));
        assert_eq!(next_link(&h).as_deref(), Some("https://x/b?last=c"));
        let mut h = HeaderMap::new();
        h.insert(LINK, HeaderValue::from_static(r#"</x>; rel="prev""#));
        assert_eq!(next_link(&h), None);
    }
}
