//! `imgfs ls` (alias `images`): list images as `docker image ls` does: one row per tag,
//! newest image first, docker's filters, columns, human sizes and ages, and
//! `--format` (a template, `table TEMPLATE`, or `json`).
//!
//! The pieces `prune` shares with listing (reading `KEY=VALUE` filters, matching labels,
//! an image's creation time, human sizes) are defined here, where docker defines them.

use super::Context;
use crate::digest::Digest;
use crate::image::ImageConfig;
use crate::reference::{familiar_name, Reference};
use crate::store::db::{Db, ImageRecord};
use crate::store::Store;
use crate::template::Format;
use anyhow::{anyhow, bail, Context as _, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show all images (no intermediate images exist here; accepted for docker compatibility)
    #[arg(short, long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output: dangling=true|false, before=REF, since=REF, label=KEY[=VALUE], reference=PATTERN
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Format output with a Go-style template, `table TEMPLATE`, or `json`
    #[arg(long)]
    pub format: Option<String>,
    /// Only list this repository (every tag), or this REPO:TAG; the tag may be a glob
    #[arg(value_name = "REPO[:TAG]")]
    pub repository: Option<String>,
}

const DEFAULT_TABLE: &str = "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";
const DEFAULT_TABLE_DIGESTS: &str = "{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    // Parse the format before touching the store, so a bad template fails fast.
    let output = Output::choose(&args)?;
    let db = ctx.store.db()?;
    let images = load_images(&ctx.store, &db);
    let mut filter = ListFilter::parse(&args.filters, &db, &images)?;
    filter.repository = args.repository.as_deref().map(repository_pattern).transpose()?;

    let mut order: Vec<&Listed> = images.values().collect();
    order.sort_by(|a, b| b.time().cmp(&a.time()).then(b.rec.added.cmp(&a.rec.added)).then(a.rec.id.cmp(&b.rec.id)));
    let now = Utc::now();
    let mut rows = Vec::new();
    for img in order {
        rows.extend(filter.rows(&db, img));
    }
    let values: Vec<Value> = rows.iter().map(|r| r.to_value(args.no_trunc, now)).collect();

    let text = match output {
        Output::Quiet => {
            let mut seen = HashSet::new();
            let mut out = String::new();
            for r in &rows {
                let id = if args.no_trunc { r.id.to_string() } else { r.id.short().to_string() };
                if seen.insert(id.clone()) {
                    out.push_str(&id);
                    out.push('\n');
                }
            }
            out
        }
        Output::Format(f) => f.render(&values, &column_titles()).context("invalid --format")?,
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    Ok(())
}

/// What `ls` prints, decided from `--format` and `-q` as docker does: an explicit
/// format wins over `-q`.
enum Output {
    Quiet,
    Format(Format),
}

impl Output {
    fn choose(args: &Args) -> Result<Output> {
        let default_table = if args.digests { DEFAULT_TABLE_DIGESTS } else { DEFAULT_TABLE };
        if args.quiet && matches!(args.format.as_deref().map(|f| f.trim_matches(' ')), None | Some("") | Some("table"))
        {
            return Ok(Output::Quiet);
        }
        let format = Format::parse(args.format.as_deref(), default_table, true);
        Ok(Output::Format(format.context("invalid --format")?))
    }
}

/// The column title of each field, for the header row of a `table` format.
fn column_titles() -> Value {
    json!({
        "Containers": "CONTAINERS",
        "CreatedAt": "CREATED AT",
        "CreatedSince": "CREATED",
        "Digest": "DIGEST",
        "ID": "IMAGE ID",
        "Repository": "REPOSITORY",
        "SharedSize": "SHARED SIZE",
        "Size": "SIZE",
        "Tag": "TAG",
        "UniqueSize": "UNIQUE SIZE",
        "VirtualSize": "VIRTUAL SIZE",
    })
}

/// An image record with what its config says about labels and creation time.
pub(crate) struct Listed {
    pub rec: ImageRecord,
    pub created: Option<DateTime<Utc>>,
    pub labels: BTreeMap<String, String>,
    /// The unpacked size (`ImageRecord::unpacked_size`).
    pub size: u64,
}

impl Listed {
    /// When the image was made, for sorting and the time filters: the config's
    /// `created`, or when it entered the store if the config does not say.
    pub fn time(&self) -> i64 {
        self.created.map(|t| t.timestamp()).unwrap_or(self.rec.added)
    }
}

/// Every image with its config. A config that cannot be read (it should always be in
/// the store) leaves the image listed without labels or creation time rather than
/// hiding it, so that it can still be seen and removed.
pub(crate) fn load_images(store: &Store, db: &Db) -> BTreeMap<Digest, Listed> {
    db.images
        .values()
        .map(|rec| {
            let config: ImageConfig =
                store.read_blob(&rec.id).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
            let size = rec.unpacked_size(store);
            let listed = Listed { rec: rec.clone(), created: config.created_at(), labels: config.labels(), size };
            (rec.id.clone(), listed)
        })
        .collect()
}

/// Split a `--filter` argument at its first `=` (so `label=a=b` is key `label`, value
/// `a=b`, and `label!=a` is key `label!`).
pub(crate) fn split_filter(arg: &str) -> Result<(&str, &str)> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => bail!("bad filter {arg:?}: expected KEY=VALUE"),
    }
}

/// `label=KEY` (the image has the label) or `label=KEY=VALUE` (with that value).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LabelFilter {
    key: String,
    value: Option<String>,
}

impl LabelFilter {
    pub fn parse(s: &str) -> Result<LabelFilter> {
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (s, None),
        };
        if key.is_empty() {
            bail!("bad label filter {s:?}: expected KEY or KEY=VALUE");
        }
        Ok(LabelFilter { key: key.to_string(), value })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match (labels.get(&self.key), &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
        }
    }
}

/// The `ls` filters, parsed and checked. Different keys must all hold; repeated
/// `label`s must all match; repeated `reference`s need only one to match.
#[derive(Default)]
struct ListFilter {
    dangling: Option<bool>,
    before: Option<i64>,
    since: Option<i64>,
    labels: Vec<LabelFilter>,
    references: Vec<String>,
    /// The `REPO[:TAG]` argument as a `reference` pattern; it must hold besides the filters.
    repository: Option<String>,
}

impl ListFilter {
    fn parse(args: &[String], db: &Db, images: &BTreeMap<Digest, Listed>) -> Result<ListFilter> {
        let mut f = ListFilter::default();
        let time_of = |kind: &str, v: &str| -> Result<i64> {
            let (id, _) = db.find(v).with_context(|| format!("invalid {kind} filter"))?;
            images.get(&id).map(Listed::time).ok_or_else(|| anyhow!("invalid {kind} filter: no such image: {v}"))
        };
        for arg in args {
            let (key, value) = split_filter(arg)?;
            match key {
                "dangling" => {
                    let b = match value.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => bail!("invalid dangling filter value {value:?}: expected true or false"),
                    };
                    if f.dangling.is_some_and(|d| d != b) {
                        bail!("conflicting dangling filters: dangling=true and dangling=false");
                    }
                    f.dangling = Some(b);
                }
                // Repeated, the strictest bound wins (every filter must hold).
                "before" => {
                    let t = time_of("before", value)?;
                    f.before = Some(f.before.map_or(t, |b| b.min(t)));
                }
                "since" => {
                    let t = time_of("since", value)?;
                    f.since = Some(f.since.map_or(t, |s| s.max(t)));
                }
                "label" => f.labels.push(LabelFilter::parse(value)?),
                "reference" => {
                    check_glob(value).map_err(|e| anyhow!("invalid reference filter {value:?}: {e}"))?;
                    f.references.push(value.to_string());
                }
                other => bail!("invalid filter {other:?}: ls accepts dangling, before, since, label and reference"),
            }
        }
        Ok(f)
    }

    /// The rows `img` contributes: none if a filter rejects it.
    fn rows(&self, db: &Db, img: &Listed) -> Vec<Row> {
        let dangling = db.is_dangling(&img.rec);
        if self.dangling.is_some_and(|d| d != dangling)
            || self.before.is_some_and(|b| img.time() >= b)
            || self.since.is_some_and(|s| img.time() <= s)
            || !self.labels.iter().all(|l| l.matches(&img.labels))
        {
            return Vec::new();
        }
        // Docker matches a pattern against the familiar name and against the familiar
        // reference (`name:tag` or `name@digest`), and shows only the matching names.
        let matches = |p: &String, name: &str, full: &str| glob_match(p, full) || glob_match(p, name);
        let wanted = |name: &str, full: &str| {
            (self.references.is_empty() || self.references.iter().any(|p| matches(p, name, full)))
                && self.repository.iter().all(|p| matches(p, name, full))
        };
        let mut rows = Vec::new();
        let mut tagged_repos = HashSet::new();
        for key in db.tags_of(&img.rec.id) {
            let Some((name, tag)) = key.rsplit_once(':') else { continue };
            let repo = familiar_name(name);
            tagged_repos.insert(name.to_string());
            if wanted(&repo, &format!("{repo}:{tag}")) {
                rows.push(Row::new(img, repo, tag.to_string(), repo_digest(&img.rec, name)));
            }
        }
        // A repository the image is only pinned in (by digest) gets one row with no tag.
        let mut pinned_repos = HashSet::new();
        for pin in &img.rec.pinned {
            let Some((name, digest)) = pin.split_once('@') else { continue };
            if tagged_repos.contains(name) || !pinned_repos.insert(name.to_string()) {
                continue;
            }
            let repo = familiar_name(name);
            if wanted(&repo, &format!("{repo}@{digest}")) {
                let digest = repo_digest(&img.rec, name).unwrap_or_else(|| digest.to_string());
                rows.push(Row::new(img, repo, "<none>".into(), Some(digest)));
            }
        }
        if rows.is_empty() && dangling && self.references.is_empty() && self.repository.is_none() {
            rows.push(Row::new(img, "<none>".into(), "<none>".into(), None));
        }
        rows
    }
}

/// The `REPO[:TAG]` argument of `ls` as a `reference` pattern over familiar names, as
/// `docker images REPO[:TAG]` turns it into one: the repository is normalised as a
/// reference is (`docker.io/library/app` is `app`), so both spellings find the same
/// rows; the tag (or `@digest`) part is kept as written and may be a glob.
fn repository_pattern(arg: &str) -> Result<String> {
    let (rest, digest) = match arg.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (arg, None),
    };
    // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    // A name with glob characters cannot be parsed; it is matched as written.
    let name =
        if name.contains(['*', '?', '[', '\\']) { name.to_string() } else { Reference::parse(name)?.familiar_name() };
    let pattern = match (tag, digest) {
        (Some(t), _) => format!("{name}:{t}"),
        (None, Some(d)) => format!("{name}@{d}"),
        (None, None) => name,
    };
    check_glob(&pattern).map_err(|e| anyhow!("invalid repository {arg:?}: {e}"))?;
    Ok(pattern)
}

/// The digest part of the image's RepoDigests entry for repository `name`.
fn repo_digest(rec: &ImageRecord, name: &str) -> Option<String> {
    rec.repo_digests
        .iter()
        .chain(&rec.pinned)
        .find_map(|r| r.split_once('@').filter(|(n, _)| *n == name).map(|(_, d)| d.to_string()))
}

struct Row {
    repo: String,
    tag: String,
    digest: Option<String>,
    id: Digest,
    created: Option<DateTime<Utc>>,
    size: u64,
}

impl Row {
    fn new(img: &Listed, repo: String, tag: String, digest: Option<String>) -> Row {
        Row { repo, tag, digest, id: img.rec.id.clone(), created: img.created, size: img.size }
    }

    /// The row as docker's image context presents it to templates (and to `json`).
    fn to_value(&self, no_trunc: bool, now: DateTime<Utc>) -> Value {
        let size = human_size(self.size, 3);
        json!({
            "Containers": "N/A",
            "CreatedAt": self.created.map(created_at).unwrap_or_else(|| "N/A".into()),
            "CreatedSince": self.created.map(|t| created_since(t, now)).unwrap_or_else(|| "N/A".into()),
            "Digest": self.digest.clone().unwrap_or_else(|| "<none>".into()),
            "ID": if no_trunc { self.id.to_string() } else { self.id.short().to_string() },
            "Repository": self.repo,
            "SharedSize": "N/A",
            "Size": size,
            "Tag": self.tag,
            "UniqueSize": "N/A",
            "VirtualSize": size,
        })
    }
}

/// Docker's `CreatedAt`: Go's `time.Time.String()` layout, in UTC.
pub(crate) fn created_at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string()
}

/// Docker's `CreatedSince`: "2 hours ago".
pub(crate) fn created_since(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ago", human_duration((now - t).num_seconds()))
}

/// go-units `HumanDuration`, the wording docker uses for ages.
pub(crate) fn human_duration(seconds: i64) -> String {
    let minutes = seconds / 60;
    // Hours are rounded to the nearest, as Go's `d.Round(time.Hour)`.
    let hours = (seconds + 1800) / 3600;
    match () {
        _ if seconds < 1 => "Less than a second".into(),
        _ if seconds == 1 => "1 second".into(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// go-units `HumanSizeWithPrecision`: decimal units and Go's `%.{precision}g`, so
/// "12.3MB", "1.2kB", "999B" (`ls` uses 3 digits, `prune`'s total 4, as docker).
pub(crate) fn human_size(bytes: u64, precision: usize) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    format!("{}{}", go_format_g(size, precision), UNITS[unit])
}

/// Go's `%.{p}g` for a non-negative number: `p` significant digits, no trailing zeros,
/// exponent form when the exponent is below -4 or at least `p`.
fn go_format_g(x: f64, p: usize) -> String {
    let p = p.max(1);
    let sci = format!("{:.*e}", p - 1, x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= p as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        trim(&format!("{:.*}", (p as i32 - 1 - exp).max(0) as usize, x))
    }
}

/// Check a `reference` pattern's syntax (Go's `path.Match` rules).
fn check_glob(pattern: &str) -> Result<(), String> {
    let p: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' if i + 1 == p.len() => return Err("trailing backslash".into()),
            '\\' => i += 2,
            '[' => i += 1 + CharClass::parse(&p[i + 1..]).ok_or("malformed character class")?.len,
            _ => i += 1,
        }
    }
    Ok(())
}

/// Go's `path.Match`: `*` is any run of characters other than `/`, `?` one character
/// other than `/`, `[a-z]` / `[^…]` a class, `\` escapes. A malformed pattern matches
/// nothing (patterns are checked by `check_glob` first).
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob(&p, &n)
}

/// Go's `path.Match` algorithm: the pattern is a series of chunks, each after a run of
/// stars; a chunk is matched at the first place that works, never backtracked into,
/// so a pattern costs at most its length times the name's, whatever its stars (a
/// backtracking matcher takes exponential time on `*a*a*a*a…b`), and no recursion.
fn glob(mut p: &[char], mut n: &[char]) -> bool {
    'chunks: while !p.is_empty() {
        let star = p[0] == '*';
        while p.first() == Some(&'*') {
            p = &p[1..];
        }
        let chunk_len = chunk_end(p);
        let (chunk, after) = p.split_at(chunk_len);
        p = after;
        if star && chunk.is_empty() {
            // Trailing star: the rest of the name, if it has no '/'.
            return !n.contains(&'/');
        }
        // At the current position; the last chunk must also use up the name.
        if let Some(rest) = match_chunk(chunk, n) {
            if rest.is_empty() || !p.is_empty() {
                n = rest;
                continue;
            }
        }
        if star {
            // After skipping 1, 2, … characters, never a '/'.
            let mut i = 0;
            while i < n.len() && n[i] != '/' {
                if let Some(rest) = match_chunk(chunk, &n[i + 1..]) {
                    if rest.is_empty() || !p.is_empty() {
                        n = rest;
                        continue 'chunks;
                    }
                }
                i += 1;
            }
        }
        return false;
    }
    n.is_empty()
}

/// Where the chunk at the start of `p` ends: at the next unescaped `*` outside a class.
fn chunk_end(p: &[char]) -> usize {
    let mut in_class = false;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => i += 1,
            '[' => in_class = true,
            ']' => in_class = false,
            '*' if !in_class => return i,
            _ => {}
        }
        i += 1;
    }
    p.len()
}

/// Match a star-free chunk at the start of `n`; what is left of `n` after it.
fn match_chunk<'a>(mut chunk: &[char], mut n: &'a [char]) -> Option<&'a [char]> {
    while let Some(&c) = chunk.first() {
        let &first = n.first()?;
        match c {
            '?' => {
                if first == '/' {
                    return None;
                }
                chunk = &chunk[1..];
            }
            '[' => {
                let class = CharClass::parse(&chunk[1..])?;
                if first == '/' || !class.matches(first) {
                    return None;
                }
                chunk = &chunk[1 + class.len..];
            }
            '\\' if chunk.len() > 1 => {
                if first != chunk[1] {
                    return None;
                }
                chunk = &chunk[2..];
            }
            _ => {
                if first != c {
                    return None;
                }
                chunk = &chunk[1..];
            }
        }
        n = &n[1..];
    }
    Some(n)
}

/// A `[…]` character class.
struct CharClass {
    negate: bool,
    ranges: Vec<(char, char)>,
    /// Pattern characters it takes after the `[`, its `]` included.
    len: usize,
}

impl CharClass {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != self.negate
    }

    /// Parse the class that starts after a `[`; None if it is malformed.
    fn parse(p: &[char]) -> Option<CharClass> {
        let mut i = 0;
        let negate = p.first() == Some(&'^');
        if negate {
            i = 1;
        }
        let mut ranges = Vec::new();
        let esc = |i: &mut usize| -> Option<char> {
            let mut c = *p.get(*i)?;
            if c == '-' || c == ']' {
                return None;
            }
            if c == '\\' {
                *i += 1;
                c = *p.get(*i)?;
            }
            *i += 1;
            Some(c)
        };
        loop {
            if p.get(i) == Some(&']') && !ranges.is_empty() {
                return Some(CharClass { negate, ranges, len: i + 1 });
            }
            let lo = esc(&mut i)?;
            let hi = if p.get(i) == Some(&'-') {
                i += 1;
                esc(&mut i)?
            } else {
                lo
            };
            if hi < lo {
                return None;
            }
            ranges.push((lo, hi));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_prints_them() {
        assert_eq!(human_size(0, 3), "0B");
        assert_eq!(human_size(999, 3), "999B");
        assert_eq!(human_size(1000, 3), "1kB");
        assert_eq!(human_size(1234, 3), "1.23kB");
        assert_eq!(human_size(1200, 3), "1.2kB");
        assert_eq!(human_size(12_345_678, 3), "12.3MB");
        assert_eq!(human_size(12_345_678, 4), "12.35MB");
        assert_eq!(human_size(123_456_789, 3), "123MB");
        assert_eq!(human_size(7_800_000_000, 3), "7.8GB");
        // Go's %g switches to exponent form when rounding reaches the next power.
        assert_eq!(human_size(999_999, 3), "1e+03kB");
    }

    #[test]
    fn ages_as_docker_words_them() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(119), "About a minute");
        assert_eq!(human_duration(120), "2 minutes");
        assert_eq!(human_duration(59 * 60), "59 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(2 * 3600 + 5), "2 hours");
        assert_eq!(human_duration(47 * 3600), "47 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(20 * 86400), "2 weeks");
        assert_eq!(human_duration(90 * 86400), "3 months");
        assert_eq!(human_duration(3 * 365 * 86400), "3 years");
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z").unwrap().with_timezone(&Utc);
        assert_eq!(created_at(t), "2024-01-02 03:04:05 +0000 UTC");
        assert_eq!(created_since(t, t + chrono::Duration::hours(2)), "2 hours ago");
    }

    #[test]
    fn globs_follow_path_match() {
        assert!(glob_match("app*", "app"));
        assert!(glob_match("app*", "app:1"));
        assert!(glob_match("app*", "apple"));
        assert!(!glob_match("app*", "x/app"));
        assert!(glob_match("*/app:1", "127.0.0.1:5000/app:1"));
        assert!(!glob_match("*/app:1", "a/b/app:1"), "* does not cross /");
        assert!(glob_match("*/*/app", "a/b/app"));
        assert!(glob_match("app:?", "app:1"));
        assert!(!glob_match("app:?", "app:10"));
        assert!(glob_match("app:[0-9]", "app:7"));
        assert!(glob_match("app:[^0-9]", "app:x"));
        assert!(!glob_match("app:[^0-9]", "app:7"));
        assert!(glob_match(r"a\*", "a*"));
        assert!(!glob_match(r"a\*", "ab"));
        assert!(check_glob("[").is_err());
        assert!(check_glob("a[]").is_err());
        assert!(check_glob("a[z-a]").is_err());
        assert!(check_glob("a\\").is_err());
        assert!(check_glob("*/app:[0-9]*").is_ok());
        assert!(glob_match("*", "app"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
        assert!(glob_match("[a-c]*[0-9]", "b77"));
        assert!(glob_match("**", "ab"));
    }

    #[test]
    fn a_pattern_of_many_stars_takes_linear_time_and_no_stack() {
        // A backtracking matcher takes about 60^12 steps on this.
        let name = "a".repeat(60);
        assert!(!glob_match(&format!("{}b", "*a".repeat(12)), &name));
        assert!(glob_match(&format!("{}a", "*a".repeat(12)), &name));
        // One stack frame per star overflowed the stack.
        assert!(glob_match(&"*".repeat(1_000_000), "app"));
        assert!(!glob_match(&"?".repeat(1_000_000), "app"));
    }

    #[test]
    fn label_filters() {
        let labels: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        assert!(LabelFilter::parse("a").unwrap().matches(&labels));
        assert!(LabelFilter::parse("a=1").unwrap().matches(&labels));
        assert!(!LabelFilter::parse("a=2").unwrap().matches(&labels));
        assert!(!LabelFilter::parse("b").unwrap().matches(&labels));
        assert!(LabelFilter::parse("=x").is_err());
        assert_eq!(split_filter("label=a=b").unwrap(), ("label", "a=b"));
        assert_eq!(split_filter("label!=a").unwrap(), ("label!", "a"));
        assert!(split_filter("dangling").is_err());
    }
}
