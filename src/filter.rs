//! The image filters of `ls` and `prune`, as docker reads them: `--filter KEY=VALUE`
//! arguments parsed and checked before anything is listed or deleted, then applied to
//! each image with what its config says (labels, creation time).
//!
//! `ls` takes `dangling`, `before`, `since`, `label` and `reference` (a Go
//! `path.Match` glob, see `glob`); `prune` takes `until`, `label` and `label!`.
//! An `until` value is a Go duration (`10m`, `1h30m`), an RFC 3339 time or date, or
//! Unix seconds. Times are `jiff`'s (parsing, the local time zone of a time given
//! without one); the Go duration grammar is parsed here, because jiff's "friendly"
//! duration format is a different language: it refuses Go's `0` and `1.5h30m` and
//! accepts `10 minutes`, `1h 30m` and ISO 8601 `PT1H`, all of which docker refuses.

mod glob;

use crate::digest::Digest;
use crate::image::ImageConfig;
use crate::reference::Reference;
use crate::store::db::{Db, ImageRecord};
use crate::store::Store;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::collections::BTreeMap;

pub use glob::PatternError;

/// A filter argument that can't be used; the text names the argument.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad filter {0:?}: expected KEY=VALUE")]
    Syntax(String),
    #[error("invalid filter {key:?}: {command} accepts {accepted}")]
    UnknownKey { key: String, command: &'static str, accepted: &'static str },
    #[error("bad label filter {0:?}: expected KEY or KEY=VALUE")]
    Label(String),
    #[error("invalid dangling filter value {0:?}: expected true or false")]
    Dangling(String),
    #[error("conflicting dangling filters: dangling=true and dangling=false")]
    ConflictingDangling,
    /// `before=`/`since=` name no image the records know.
    #[error("invalid {kind} filter")]
    UnknownImage {
        kind: &'static str,
        #[source]
        source: crate::store::Error,
    },
    #[error("invalid reference filter {pattern:?}: {error}")]
    Reference { pattern: String, error: PatternError },
    /// The repository part of `ls REPO[:TAG]` is not a repository name.
    #[error(transparent)]
    RepositoryName(#[from] crate::reference::Error),
    #[error("invalid repository {arg:?}: {error}")]
    Repository { arg: String, error: PatternError },
    #[error("invalid until filter {0:?}: expected a duration such as 10m or 24h, an RFC 3339 time, or Unix seconds")]
    Until(String),
    #[error("invalid until filter {0:?}: the duration is out of range (at most about 292 years)")]
    UntilOutOfRange(String),
}

/// An image record with what its config says about labels and creation time: the
/// image as the filters (and `ls`) see it.
pub struct Candidate {
    pub rec: ImageRecord,
    pub created: Option<Timestamp>,
    pub labels: BTreeMap<String, String>,
}

impl Candidate {
    /// When the image was made, for sorting and the time filters: the config's
    /// `created`, or when it entered the store if the config does not say.
    pub fn time(&self) -> i64 {
        self.created.map(|t| t.as_second()).unwrap_or(self.rec.added)
    }
}

/// Every image with its config. A config that cannot be read (it should always be in
/// the store) leaves the image listed without labels or creation time rather than
/// hiding it, so that it can still be seen and removed.
pub fn candidates(store: &Store, db: &Db) -> BTreeMap<Digest, Candidate> {
    db.images
        .values()
        .map(|rec| {
            let config: ImageConfig =
                store.read_blob(&rec.id).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
            let c = Candidate { rec: rec.clone(), created: config.created_at(), labels: config.labels() };
            (rec.id.clone(), c)
        })
        .collect()
}

/// Split a `--filter` argument at its first `=` (so `label=a=b` is key `label`, value
/// `a=b`, and `label!=a` is key `label!`).
pub fn split_filter(arg: &str) -> Result<(&str, &str), Error> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(Error::Syntax(arg.to_string())),
    }
}

/// `label=KEY` (the image has the label) or `label=KEY=VALUE` (with that value).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelFilter {
    key: String,
    value: Option<String>,
}

impl LabelFilter {
    pub fn parse(s: &str) -> Result<LabelFilter, Error> {
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (s, None),
        };
        if key.is_empty() {
            return Err(Error::Label(s.to_string()));
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
pub struct ListFilter {
    dangling: Option<bool>,
    before: Option<i64>,
    since: Option<i64>,
    labels: Vec<LabelFilter>,
    references: Vec<String>,
    /// The `REPO[:TAG]` argument as a `reference` pattern; it must hold besides the filters.
    repository: Option<String>,
}

impl ListFilter {
    /// Parse `ls`'s filters; `before` and `since` name images among `images`.
    pub fn parse(args: &[String], db: &Db, images: &BTreeMap<Digest, Candidate>) -> Result<ListFilter, Error> {
        let mut f = ListFilter::default();
        let time_of = |kind: &'static str, v: &str| -> Result<i64, Error> {
            let (id, _) = db.find(v).map_err(|e| Error::UnknownImage { kind, source: e })?;
            // `images` holds every record of `db`, and `find` only names recorded images.
            Ok(images[&id].time())
        };
        for arg in args {
            let (key, value) = split_filter(arg)?;
            match key {
                "dangling" => {
                    let b = match value.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(Error::Dangling(value.to_string())),
                    };
                    if f.dangling.is_some_and(|d| d != b) {
                        return Err(Error::ConflictingDangling);
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
                    glob::check(value).map_err(|error| Error::Reference { pattern: value.to_string(), error })?;
                    f.references.push(value.to_string());
                }
                other => {
                    return Err(Error::UnknownKey {
                        key: other.to_string(),
                        command: "ls",
                        accepted: "dangling, before, since, label and reference",
                    })
                }
            }
        }
        Ok(f)
    }

    /// Only list names that match the `REPO[:TAG]` argument of `ls`, which docker turns
    /// into a `reference` pattern over familiar names: the repository is normalised as
    /// a reference is (`docker.io/library/app` is `app`), so both spellings find the
    /// same rows; the tag (or `@digest`) part is kept as written and may be a glob.
    pub fn only_repository(&mut self, arg: &str) -> Result<(), Error> {
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
        let name = if name.contains(['*', '?', '[', '\\']) {
            name.to_string()
        } else {
            Reference::parse(name)?.familiar_name()
        };
        let pattern = match (tag, digest) {
            (Some(t), _) => format!("{name}:{t}"),
            (None, Some(d)) => format!("{name}@{d}"),
            (None, None) => name,
        };
        glob::check(&pattern).map_err(|error| Error::Repository { arg: arg.to_string(), error })?;
        self.repository = Some(pattern);
        Ok(())
    }

    /// Does the image pass the filters that are about the image itself (all but the
    /// name patterns)?
    pub fn admits(&self, db: &Db, img: &Candidate) -> bool {
        !(self.dangling.is_some_and(|d| d != db.is_dangling(&img.rec))
            || self.before.is_some_and(|b| img.time() >= b)
            || self.since.is_some_and(|s| img.time() <= s)
            || !self.labels.iter().all(|l| l.matches(&img.labels)))
    }

    /// Is one of an image's names wanted? Docker matches a pattern against the
    /// familiar name (`name`) and against the familiar reference (`full`: `name:tag`
    /// or `name@digest`), and shows only the matching names.
    pub fn wants_name(&self, name: &str, full: &str) -> bool {
        let matches = |p: &String| glob::matches(p, full) || glob::matches(p, name);
        (self.references.is_empty() || self.references.iter().any(matches)) && self.repository.iter().all(matches)
    }

    /// Do name patterns apply (so an image with no name is not listed)?
    pub fn filters_names(&self) -> bool {
        !self.references.is_empty() || self.repository.is_some()
    }
}

/// The prune filters: every `label` must match; the image is spared if every `label!`
/// matches (docker's rule); `until` keeps images created at or after that time.
#[derive(Default, Debug)]
pub struct PruneFilter {
    until: Option<i64>,
    labels: Vec<LabelFilter>,
    not_labels: Vec<LabelFilter>,
}

impl PruneFilter {
    /// Parse `prune`'s filters; an `until` duration counts back from `now`.
    pub fn parse(args: &[String], now: Timestamp) -> Result<PruneFilter, Error> {
        let mut f = PruneFilter::default();
        for arg in args {
            let (key, value) = split_filter(arg)?;
            match key {
                "until" => {
                    let t = parse_until(value, now)?;
                    f.until = Some(f.until.map_or(t, |u| u.min(t)));
                }
                "label" => f.labels.push(LabelFilter::parse(value)?),
                "label!" => f.not_labels.push(LabelFilter::parse(value)?),
                other => {
                    return Err(Error::UnknownKey {
                        key: other.to_string(),
                        command: "prune",
                        accepted: "until, label and label!",
                    })
                }
            }
        }
        Ok(f)
    }

    pub fn selects(&self, img: &Candidate) -> bool {
        self.until.is_none_or(|u| img.time() < u)
            && self.labels.iter().all(|l| l.matches(&img.labels))
            && (self.not_labels.is_empty() || !self.not_labels.iter().all(|l| l.matches(&img.labels)))
    }
}

/// An `until` value as docker reads it: a Go duration (`10m`, `1h30m`: that long
/// before now), an RFC 3339 time or date (`2006-01-02`, `2006-01-02T15:04:05`, local
/// time when no zone is given), or Unix seconds (`1700000000`, `1700000000.5`).
fn parse_until(v: &str, now: Timestamp) -> Result<i64, Error> {
    let bad = || Error::Until(v.to_string());
    if let Some(secs) = go_duration(v) {
        // Go's durations are int64 nanoseconds (about 292 years); beyond that Go, and
        // so docker, refuses the value, and the subtraction below could overflow.
        if !secs.is_finite() || secs.abs() > i64::MAX as f64 / 1e9 {
            return Err(Error::UntilOutOfRange(v.to_string()));
        }
        return Ok(now.as_second() - secs.round() as i64);
    }
    if v.contains('-') {
        if let Ok(t) = v.parse::<Timestamp>() {
            return Ok(t.as_second());
        }
        let civil = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
            .iter()
            .find_map(|f| DateTime::strptime(f, v).ok())
            .or_else(|| Date::strptime("%Y-%m-%d", v).ok().map(|d| d.to_datetime(jiff::civil::Time::midnight())));
        // A time repeated by a clock change is its first occurrence.
        let t = civil.and_then(|dt| dt.to_zoned(TimeZone::system()).ok()).ok_or_else(bad)?;
        return Ok(t.timestamp().as_second());
    }
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !whole.is_empty() && digits(whole) && digits(frac) {
        return whole.parse().map_err(|_| bad());
    }
    Err(bad())
}

/// Go's `time.ParseDuration`, in seconds: `[-+]` then one or more `NUMBER UNIT`
/// (units ns, us, µs, ms, s, m, h); `0` alone is allowed.
fn go_duration(s: &str) -> Option<f64> {
    let (neg, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." {
            return None;
        }
        let n: f64 = num.parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("10m"), Some(600.0));
        assert_eq!(go_duration("24h"), Some(86400.0));
        assert_eq!(go_duration("1h30m"), Some(5400.0));
        assert_eq!(go_duration("1.5h"), Some(5400.0));
        assert_eq!(go_duration("1.5h30m"), Some(7200.0));
        assert_eq!(go_duration("500ms"), Some(0.5));
        assert_eq!(go_duration("0"), Some(0.0));
        assert_eq!(go_duration("-1m"), Some(-60.0));
        assert_eq!(go_duration("10"), None);
        assert_eq!(go_duration("10x"), None);
        assert_eq!(go_duration("h"), None);
        assert_eq!(go_duration(""), None);
        // What jiff's friendly format would take and Go refuses.
        assert_eq!(go_duration("10 minutes"), None);
        assert_eq!(go_duration("1h 30m"), None);
        assert_eq!(go_duration("PT1H"), None);
    }

    #[test]
    fn until_values() {
        let now: Timestamp = "2024-06-01T00:00:00Z".parse().unwrap();
        assert_eq!(parse_until("24h", now).unwrap(), now.as_second() - 86400);
        assert_eq!(parse_until("2024-01-02T03:04:05Z", now).unwrap(), 1704164645);
        assert_eq!(parse_until("2024-01-02T03:04:05+01:00", now).unwrap(), 1704164645 - 3600);
        assert_eq!(parse_until("1704164645", now).unwrap(), 1704164645);
        assert_eq!(parse_until("1704164645.25", now).unwrap(), 1704164645);
        assert!(parse_until("2024-01-02", now).is_ok());
        assert!(parse_until("2024-01-02T03:04:05", now).is_ok());
        for bad in ["yesterday", "2024-13-01", "", "1e9", "1.2.3", "-9999999999999999h", "9999999999999999h"] {
            let e = parse_until(bad, now).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains("invalid until filter"), "{bad}: {e}");
        }
    }

    #[test]
    fn prune_filter_keys_are_checked() {
        let now = Timestamp::now();
        let e = PruneFilter::parse(&["dangling=true".into()], now).unwrap_err().to_string();
        assert!(e.contains("invalid filter \"dangling\""), "{e}");
        assert!(PruneFilter::parse(&["label!=a=b".into(), "label=c".into(), "until=1h".into()], now).is_ok());
        assert!(PruneFilter::parse(&["until".into()], now).is_err());
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
