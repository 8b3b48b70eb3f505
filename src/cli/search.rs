//! `imgfs search`: find repositories as `docker search` does. A plain term asks Docker
//! Hub's search API (or the index `IMGFS_SEARCH_INDEX` names); `HOST/TERM`, as docker
//! names another registry, matches the repository names of HOST's `/v2/_catalog`
//! (registries have no search API; docker would ask HOST's v1 search, which
//! distribution does not serve). Either way the results go through docker's filters and
//! columns: NAME, DESCRIPTION (cut to 45 characters unless `--no-trunc`), STARS,
//! OFFICIAL, and `--format`.

use super::Context;
use crate::registry::search::{index_url, SearchResult};
use crate::template::Format;
use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Max number of search results, 1 to 100
    #[arg(long, default_value_t = 25)]
    pub limit: i64,
    /// Filter output: stars=N (at least N stars), is-official=true|false, is-automated=true|false
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Don't truncate descriptions
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output with a Go-style template, `table TEMPLATE`, or `json`
    /// (fields .Name .Description .StarCount .IsOfficial .IsAutomated)
    #[arg(long)]
    pub format: Option<String>,
    /// Only print names
    #[arg(short, long)]
    pub quiet: bool,
    /// Registry whose catalog to search (host[:port]), as if the term were HOST/TERM
    #[arg(long, value_name = "HOST")]
    pub registry: Option<String>,
    /// What to search for; HOST/TERM searches the catalog of registry HOST
    #[arg(value_name = "TERM")]
    pub term: String,
}

const DEFAULT_TABLE: &str = "{{.Name}}\t{{.Description}}\t{{.StarCount}}\t{{.IsOfficial}}";
/// Docker's width for a description in the table (`formatter.Ellipsis(desc, 45)`).
const DESCRIPTION_WIDTH: usize = 45;

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    // Everything the user typed is checked before any request.
    if !(1..=100).contains(&args.limit) {
        bail!("limit {} is outside the range of [1, 100]", args.limit);
    }
    let limit = args.limit as usize;
    let filter = SearchFilter::parse(&args.filters)?;
    let format = if args.quiet && args.format.is_none() {
        Format::parse(Some("{{.Name}}"), DEFAULT_TABLE, true)
    } else {
        Format::parse(args.format.as_deref(), DEFAULT_TABLE, true)
    };
    let format = format.context("invalid --format")?;
    let titles = json!({
        "Name": "NAME",
        "Description": "DESCRIPTION",
        "StarCount": "STARS",
        "IsOfficial": "OFFICIAL",
        "IsAutomated": "AUTOMATED",
    });
    // A field that does not exist shows when a row is rendered: try one before asking
    // anybody, so that a typo costs no request.
    let sample = row(&SearchResult::default(), true, format.is_json());
    format.render(&[sample], &titles).context("invalid --format")?;

    let results = match target(&args) {
        Target::Hub(term) => ctx.client()?.hub_search(&index_url()?, &term, limit)?,
        Target::Registry(host, term) => catalog_matches(ctx, &host, &term, limit)?,
    };
    // As docker's daemon does: the filters apply to the results the index gave (no
    // more than were asked for, whatever it sent).
    let rows: Vec<Value> = results
        .iter()
        .take(limit)
        .filter(|r| filter.matches(r))
        .map(|r| row(r, !args.no_trunc, format.is_json()))
        .collect();
    let text = format.render(&rows, &titles).context("invalid --format")?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    Ok(())
}

enum Target {
    /// Docker Hub's search API, with this term.
    Hub(String),
    /// This registry's catalog, names containing this term.
    Registry(String, String),
}

/// Where to search, as docker splits a search term (`splitReposSearchTerm`): a first
/// component with a `.` or a `:`, or `localhost`, is a registry host; docker.io and
/// its aliases are the Hub.
fn target(args: &Args) -> Target {
    let (host, term) = match (&args.registry, args.term.split_once('/')) {
        (Some(host), _) => (Some(host.clone()), args.term.clone()),
        (None, Some((first, rest))) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first.to_string()), rest.to_string())
        }
        _ => (None, args.term.clone()),
    };
    match host {
        Some(h) if !matches!(h.as_str(), "docker.io" | "index.docker.io" | "registry-1.docker.io") => {
            Target::Registry(h, term)
        }
        // The Hub knows official images without `library/`.
        _ => Target::Hub(term.strip_prefix("library/").map(str::to_string).unwrap_or(term)),
    }
}

/// Repositories of `host`'s catalog whose name contains `term`, first `limit` of them,
/// named `host/repo` as docker shows another registry's results.
fn catalog_matches(ctx: &Context, host: &str, term: &str, limit: usize) -> Result<Vec<SearchResult>> {
    let repos = ctx.client()?.catalog(host)?;
    Ok(repos
        .iter()
        .filter(|r| r.contains(term))
        .take(limit)
        .map(|r| SearchResult { name: format!("{host}/{r}"), ..Default::default() })
        .collect())
}

/// One result as docker's search context presents it to templates: every field a
/// string, booleans as `[OK]` or empty in tables and as `true`/`false` in JSON.
fn row(r: &SearchResult, trunc: bool, json: bool) -> Value {
    let flag = |b: bool| match (b, json) {
        (true, true) => "true",
        (false, true) => "false",
        (true, false) => "[OK]",
        (false, false) => "",
    };
    let description = r.description.as_deref().unwrap_or("").replace(['\n', '\r'], " ");
    json!({
        "Name": r.name,
        "Description": if trunc { ellipsis(&description, DESCRIPTION_WIDTH) } else { description },
        "StarCount": r.star_count.to_string(),
        "IsOfficial": flag(r.is_official),
        "IsAutomated": flag(r.is_automated),
    })
}

/// Docker's `formatter.Ellipsis`: text longer than `width` characters is cut to
/// `width - 1` and ends in `…`.
pub(crate) fn ellipsis(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// The `--filter`s of docker's search; repeated keys must all hold.
#[derive(Default, Debug)]
struct SearchFilter {
    stars: Option<u64>,
    official: Option<bool>,
    automated: Option<bool>,
}

impl SearchFilter {
    fn parse(args: &[String]) -> Result<SearchFilter> {
        let mut f = SearchFilter::default();
        for arg in args {
            let (key, value) = crate::filter::split_filter(arg)?;
            let boolean = |v: &str| match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(anyhow!("invalid filter '{key}={v}': expected true or false")),
            };
            match key {
                "stars" => {
                    let n: u64 =
                        value.parse().map_err(|_| anyhow!("invalid filter 'stars={value}': expected a number"))?;
                    f.stars = Some(f.stars.map_or(n, |m| m.max(n)));
                }
                "is-official" => f.official = Some(boolean(value)?),
                "is-automated" => f.automated = Some(boolean(value)?),
                other => bail!("invalid filter '{other}': search accepts stars, is-official and is-automated"),
            }
        }
        Ok(f)
    }

    fn matches(&self, r: &SearchResult) -> bool {
        self.stars.is_none_or(|n| r.star_count >= n)
            && self.official.is_none_or(|o| r.is_official == o)
            && self.automated.is_none_or(|a| r.is_automated == a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_cut_as_docker_cuts_them() {
        let long = "a".repeat(46);
        assert_eq!(ellipsis(&long, 45), format!("{}…", "a".repeat(44)));
        assert_eq!(ellipsis(&"a".repeat(45), 45), "a".repeat(45));
        assert_eq!(ellipsis(&"é".repeat(50), 45).chars().count(), 45);
    }

    #[test]
    fn filters_are_checked_and_applied() {
        let f = SearchFilter::parse(&["stars=3".into(), "is-official=true".into()]).unwrap();
        let r = |stars, official| SearchResult { star_count: stars, is_official: official, ..Default::default() };
        assert!(f.matches(&r(3, true)) && !f.matches(&r(2, true)) && !f.matches(&r(9, false)));
        assert!(SearchFilter::parse(&["stars=x".into()]).unwrap_err().to_string().contains("'stars=x'"));
        assert!(SearchFilter::parse(&["is-official=maybe".into()]).is_err());
        assert!(SearchFilter::parse(&["color=red".into()]).unwrap_err().to_string().contains("'color'"));
    }
}
