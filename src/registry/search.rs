//! Docker Hub's search API, which is not part of the distribution API: docker asks
//! `GET https://index.docker.io/v1/search?q=TERM&n=LIMIT` and gets
//! `{num_results, query, results: [{name, description, star_count, is_official,
//! is_automated}]}`. `IMGFS_SEARCH_INDEX` names another base URL that answers the
//! same way (a mirror of the index, or a test server), since the Hub is often out of
//! reach.

use super::client::Client;
use super::error::{RegistryError, Subject};
use super::lists::LIST_LIMIT;
use super::transport::{fail, read_body};
use reqwest::header::HeaderMap;
use reqwest::Url;
use serde::Deserialize;

/// Where docker sends searches of Docker Hub.
pub const DOCKER_HUB_INDEX: &str = "https://index.docker.io";
/// The environment variable that names another index to search.
pub const INDEX_VAR: &str = "IMGFS_SEARCH_INDEX";

/// One repository as the search API describes it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SearchResult {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub star_count: u64,
    #[serde(default)]
    pub is_official: bool,
    #[serde(default)]
    pub is_automated: bool,
}

#[derive(Deserialize)]
struct SearchPage {
    // Some answers say `"results": null` for no results.
    #[serde(default)]
    results: Option<Vec<SearchResult>>,
}

/// The base URL of the index to search: `IMGFS_SEARCH_INDEX`, else Docker Hub's.
pub fn index_url() -> Result<Url, RegistryError> {
    let base = std::env::var(INDEX_VAR).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| DOCKER_HUB_INDEX.into());
    let url = match Url::parse(&base) {
        Ok(url) => url,
        Err(source) => return Err(RegistryError::InvalidUrl { name: INDEX_VAR, value: base, source }),
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(RegistryError::InvalidInput { reason: format!("{INDEX_VAR}={base:?} is not an http(s) URL") });
    }
    Ok(url)
}

impl Client {
    /// Ask the index at `index` for up to `limit` repositories matching `term`.
    pub fn hub_search(&self, index: &Url, term: &str, limit: usize) -> Result<Vec<SearchResult>, RegistryError> {
        let mut url = index.join("v1/search").map_err(|source| RegistryError::InvalidUrl {
            name: INDEX_VAR,
            value: index.to_string(),
            source,
        })?;
        url.query_pairs_mut().append_pair("q", term).append_pair("n", &limit.to_string());
        let host = super::endpoint::authority(index);
        let subject = Subject::Search { term };
        let resp = self.get(&host, subject, &url, &HeaderMap::new())?;
        if !resp.status().is_success() {
            return Err(fail(&host, subject, resp));
        }
        let what = subject.describe(&host);
        let body = read_body(&host, &what, resp, LIST_LIMIT)?;
        let page: SearchPage = serde_json::from_slice(&body).map_err(|source| RegistryError::InvalidJson {
            registry: host.clone(),
            what,
            reason: "not a search answer",
            source,
        })?;
        Ok(page.results.unwrap_or_default())
    }
}
