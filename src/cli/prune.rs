//! `imgfs prune`: remove dangling images (with `-a`, every image no live mount uses),
//! then sweep the blobs nothing refers to any more and stale temp files, and empty the
//! cache of spans fetched by Range (`store::cache`), printing what
//! went as `docker image prune` does. It asks first unless `-f`; the answer is read
//! from stdin even when that is not a terminal, so `echo y | imgfs prune` works and no
//! answer at all means no.

use super::ls::{human_size, load_images, split_filter, LabelFilter, Listed};
use super::rm::{delete_image, deleted_blobs};
use super::Context;
use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove all images not used by a mount, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Filter: until=TIMESTAMP|DURATION, label=KEY[=VALUE], label!=KEY[=VALUE]
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let filter = PruneFilter::parse(&args.filters, Utc::now())?;
    if !args.force && !confirm(args.all)? {
        return Ok(());
    }
    let store = &ctx.store;
    // Configs (labels, times) are read before taking the records lock; an image a
    // concurrent pull adds meanwhile is simply not considered.
    let images = load_images(store, &store.db()?);
    let (deleted, skipped) = store.update_db(|db| -> Result<_> {
        // Mounts are read under the records lock, where a mount server records itself
        // after checking its image is there: a mount starting now is either seen here
        // or finds its image gone and fails.
        let mounted: HashMap<_, _> = store.mounts()?.0.into_iter().map(|m| (m.image.clone(), m)).collect();
        let mut deleted = Vec::new();
        let mut skipped = Vec::new();
        for (id, listed) in &images {
            let Some(rec) = db.images.get(id) else { continue };
            if (!args.all && !db.is_dangling(rec)) || !filter.selects(listed) {
                continue;
            }
            if let Some(m) = mounted.get(id) {
                let names = db.tags_of(id).iter().map(|t| crate::reference::familiar_ref(t)).collect::<Vec<_>>();
                skipped.push((id.clone(), names, m.clone()));
                continue;
            }
            deleted.extend(delete_image(db, id));
        }
        Ok((deleted, skipped))
    })?;
    for (id, names, m) in &skipped {
        let what =
            if names.is_empty() { id.short().to_string() } else { format!("{} ({})", names.join(", "), id.short()) };
        eprintln!("imgfs: skipping image {what}: in use by the mount at {} (pid {})", m.mountpoint.display(), m.pid);
    }
    // Sweep even when no image went: unreferenced blobs and stale temp files remain
    // from interrupted pulls and earlier removals.
    let sweep = store.collect_garbage()?;
    // Spans fetched by Range are only a cache: a mount using them fetches them again.
    let cache = crate::store::cache::DiskCache::clear(store)?;
    let mut out = std::io::stdout().lock();
    if !deleted.is_empty() {
        writeln!(out, "Deleted Images:")?;
        for d in &deleted {
            for name in &d.names {
                writeln!(out, "untagged: {name}")?;
            }
            for blob in deleted_blobs(&d.record, &sweep) {
                writeln!(out, "deleted: {blob}")?;
            }
        }
        writeln!(out)?;
    }
    writeln!(out, "Total reclaimed space: {}", human_size(sweep.bytes + cache, 4))?;
    Ok(())
}

/// Docker's question; anything but y/yes is no. The prompt goes to stderr, so it never
/// lands in the report on stdout (`imgfs prune > report.txt` still asks on the screen).
fn confirm(all: bool) -> Result<bool> {
    let what = if all { "all images not used by a mount" } else { "all dangling images" };
    let prompt = format!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    eprint!("{prompt}");
    let mut answer = String::new();
    let read = stdin.lock().read_line(&mut answer).unwrap_or(0);
    if !terminal {
        eprintln!("{}", answer.trim_end());
    }
    let answer = answer.trim().to_ascii_lowercase();
    if answer == "y" || answer == "yes" {
        return Ok(true);
    }
    if read == 0 {
        eprintln!("imgfs: nothing pruned: no answer on stdin (use -f to prune without asking)");
    } else {
        eprintln!("imgfs: nothing pruned");
    }
    Ok(false)
}

/// The prune filters: every `label` must match; the image is spared if every `label!`
/// matches (docker's rule); `until` keeps images created at or after that time.
#[derive(Default, Debug)]
struct PruneFilter {
    until: Option<i64>,
    labels: Vec<LabelFilter>,
    not_labels: Vec<LabelFilter>,
}

impl PruneFilter {
    fn parse(args: &[String], now: DateTime<Utc>) -> Result<PruneFilter> {
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
                other => bail!("invalid filter {other:?}: prune accepts until, label and label!"),
            }
        }
        Ok(f)
    }

    fn selects(&self, img: &Listed) -> bool {
        self.until.is_none_or(|u| img.time() < u)
            && self.labels.iter().all(|l| l.matches(&img.labels))
            && (self.not_labels.is_empty() || !self.not_labels.iter().all(|l| l.matches(&img.labels)))
    }
}

/// An `until` value as docker reads it: a Go duration (`10m`, `1h30m`: that long
/// before now), an RFC 3339 time or date (`2006-01-02`, `2006-01-02T15:04:05`, local
/// time when no zone is given), or Unix seconds (`1700000000`, `1700000000.5`).
fn parse_until(v: &str, now: DateTime<Utc>) -> Result<i64> {
    let bad = || {
        anyhow!("invalid until filter {v:?}: expected a duration such as 10m or 24h, an RFC 3339 time, or Unix seconds")
    };
    if let Some(secs) = go_duration(v) {
        // Go's durations are int64 nanoseconds (about 292 years); beyond that Go, and
        // so docker, refuses the value, and the subtraction below could overflow.
        if !secs.is_finite() || secs.abs() > i64::MAX as f64 / 1e9 {
            bail!("invalid until filter {v:?}: the duration is out of range (at most about 292 years)");
        }
        return Ok(now.timestamp() - secs.round() as i64);
    }
    if v.contains('-') {
        if let Ok(t) = DateTime::parse_from_rfc3339(v) {
            return Ok(t.timestamp());
        }
        let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
            .or_else(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)));
        let t = naive.and_then(|n| Local.from_local_datetime(&n).earliest()).ok_or_else(bad)?;
        return Ok(t.timestamp());
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
        assert_eq!(go_duration("500ms"), Some(0.5));
        assert_eq!(go_duration("0"), Some(0.0));
        assert_eq!(go_duration("-1m"), Some(-60.0));
        assert_eq!(go_duration("10"), None);
        assert_eq!(go_duration("10x"), None);
        assert_eq!(go_duration("h"), None);
        assert_eq!(go_duration(""), None);
    }

    #[test]
    fn until_values() {
        let now = DateTime::parse_from_rfc3339("2024-06-01T00:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_until("24h", now).unwrap(), now.timestamp() - 86400);
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
    fn filter_keys_are_checked() {
        let now = Utc::now();
        let e = PruneFilter::parse(&["dangling=true".into()], now).unwrap_err().to_string();
        assert!(e.contains("invalid filter \"dangling\""), "{e}");
        assert!(PruneFilter::parse(&["label!=a=b".into(), "label=c".into(), "until=1h".into()], now).is_ok());
        assert!(PruneFilter::parse(&["until".into()], now).is_err());
    }
}
