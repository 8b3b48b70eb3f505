//! `imgfs ls` (alias `images`): list images as `docker image ls` does: one row per tag,
//! newest image first, docker's filters, columns, human sizes and ages, and
//! `--format` (a template, `table TEMPLATE`, or `json`).
//!
//! The filters themselves are the library's (`filter`, shared with `prune`); the
//! docker-exact human sizes and ages `prune` shares are defined here. They stay ours
//! rather than a crate's: docker's wording ("About an hour ago", Go's `%.3g` sizes
//! such as "1e+03kB") is what scripts and users compare with, and no time or size
//! crate words them that way.

use super::Context;
use crate::digest::Digest;
use crate::filter::{candidates, Candidate, ListFilter};
use crate::reference::familiar_name;
use crate::store::db::{Db, ImageRecord};
use crate::store::Store;
use crate::template::Format;
use anyhow::{Context as _, Result};
use jiff::Timestamp;
use serde_json::{json, Value};
use std::collections::HashSet;

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
    let images = candidates(&ctx.store, &db);
    let mut filter = ListFilter::parse(&args.filters, &db, &images)?;
    if let Some(repository) = &args.repository {
        filter.only_repository(repository)?;
    }

    let mut order: Vec<&Candidate> = images.values().collect();
    order.sort_by(|a, b| b.time().cmp(&a.time()).then(b.rec.added.cmp(&a.rec.added)).then(a.rec.id.cmp(&b.rec.id)));
    let now = Timestamp::now();
    let mut rows = Vec::new();
    for img in order {
        rows.extend(rows_of(&ctx.store, &filter, &db, img));
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

/// The rows `img` contributes: none if a filter rejects it, one per tag and per
/// repository it is only pinned in, and `<none>` if it has no name at all.
fn rows_of(store: &Store, filter: &ListFilter, db: &Db, img: &Candidate) -> Vec<Row> {
    if !filter.admits(db, img) {
        return Vec::new();
    }
    // The unpacked size reads every layer's index: only for an image that is listed,
    // and once however many rows it has.
    let unpacked = std::cell::OnceCell::new();
    let size = || *unpacked.get_or_init(|| img.rec.unpacked_size(|l| crate::layer::ingest::unpacked_size(store, l)));
    let wanted = |name: &str, full: &str| filter.wants_name(name, full);
    let mut rows = Vec::new();
    let mut tagged_repos = HashSet::new();
    for key in db.tags_of(&img.rec.id) {
        let Some((name, tag)) = key.rsplit_once(':') else { continue };
        let repo = familiar_name(name);
        tagged_repos.insert(name.to_string());
        if wanted(&repo, &format!("{repo}:{tag}")) {
            rows.push(Row::new(img, size(), repo, tag.to_string(), repo_digest(&img.rec, name)));
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
            rows.push(Row::new(img, size(), repo, "<none>".into(), Some(digest)));
        }
    }
    if rows.is_empty() && db.is_dangling(&img.rec) && !filter.filters_names() {
        rows.push(Row::new(img, size(), "<none>".into(), "<none>".into(), None));
    }
    rows
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
    created: Option<Timestamp>,
    size: u64,
}

impl Row {
    fn new(img: &Candidate, size: u64, repo: String, tag: String, digest: Option<String>) -> Row {
        Row { repo, tag, digest, id: img.rec.id.clone(), created: img.created, size }
    }

    /// The row as docker's image context presents it to templates (and to `json`).
    fn to_value(&self, no_trunc: bool, now: Timestamp) -> Value {
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
pub(crate) fn created_at(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC").to_string()
}

/// Docker's `CreatedSince`: "2 hours ago".
pub(crate) fn created_since(t: Timestamp, now: Timestamp) -> String {
    format!("{} ago", human_duration(now.duration_since(t).as_secs()))
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
        let t: Timestamp = "2024-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(created_at(t), "2024-01-02 03:04:05 +0000 UTC");
        assert_eq!(created_since(t, t + jiff::SignedDuration::from_hours(2)), "2 hours ago");
    }
}
