//! The client's one retry policy. A request that fails for a reason that may pass (the
//! connection failed or broke, 5xx, 408, 429) is tried again after a short, growing
//! pause, or after the pause the registry asked for with `Retry-After`, while its time
//! budget (`--timeout`) lasts: a registry that stays silent for the whole budget has
//! had its chance, and is not waited for again and again. A transfer that broke off
//! after making progress starts a fresh budget: a link that drops every few megabytes
//! still gets a large blob through, one stretch at a time.

use super::error::RegistryError;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use std::time::{Duration, Instant, SystemTime};

/// How many times one request (or one stretch of a transfer) is tried again.
const MAX_RETRIES: u32 = 5;
/// The pause before retry n is BACKOFF * 2^(n-1): 0.1, 0.2, 0.4, 0.8, 1.6 s. Long
/// enough for a registry's connection churn, short enough not to stall a FUSE read.
const BACKOFF: Duration = Duration::from_millis(100);
/// A registry asking us to come back later than this is treated as down: waiting a
/// quarter of an hour inside a `pull` or a FUSE read helps nobody.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Counts the retries of one request or transfer and waits before each.
pub(super) struct Retries<'a> {
    count: u32,
    /// Since the request started, or last made progress.
    started: Instant,
    /// The time a request may take without progress, its tries and pauses together.
    budget: Duration,
    registry: &'a str,
    what: &'a str,
}

impl<'a> Retries<'a> {
    pub fn new(registry: &'a str, what: &'a str, budget: Duration) -> Retries<'a> {
        Retries { count: 0, started: Instant::now(), budget, registry, what }
    }

    /// Wait before trying again (`retry_after` if the registry named a time); false
    /// when the retries or the time budget are spent (a try that waited out the
    /// whole budget spends it), or the registry wants us back too late.
    pub fn wait(&mut self, retry_after: Option<Duration>) -> bool {
        if self.count >= MAX_RETRIES || retry_after.is_some_and(|d| d > MAX_RETRY_AFTER) {
            return false;
        }
        let pause = retry_after.unwrap_or(BACKOFF * 2u32.pow(self.count));
        if self.started.elapsed() + pause >= self.budget {
            return false;
        }
        self.count += 1;
        std::thread::sleep(pause);
        true
    }

    /// `wait`, or the error that ends a transfer which kept breaking off.
    pub fn pause(&mut self, reason: String) -> Result<(), RegistryError> {
        if self.wait(None) {
            return Ok(());
        }
        Err(RegistryError::Interrupted {
            registry: self.registry.to_string(),
            what: self.what.to_string(),
            attempts: self.count + 1,
            reason,
        })
    }

    /// The last attempt got further than the one before: start a fresh budget.
    pub fn progressed(&mut self) {
        self.count = 0;
        self.started = Instant::now();
    }
}

/// Answers worth asking again for: the server's trouble, not ours. (501 Not
/// Implemented will not change by asking again.)
pub(super) fn retryable_status(status: StatusCode) -> bool {
    (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// `Retry-After` as seconds or as an HTTP date (RFC 9110 10.2.3), from now.
pub(super) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    Some(SystemTime::from(when).duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::from("2024-01-01T00:00:00Z".parse::<jiff::Timestamp>().unwrap());
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Mon, 01 Jan 2024 00:00:30 GMT"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Sun, 31 Dec 2023 23:00:00 GMT"));
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn a_registry_that_wants_us_back_too_late_is_not_waited_for() {
        let mut r = Retries::new("r", "x", Duration::from_secs(60));
        assert!(!r.wait(Some(MAX_RETRY_AFTER + Duration::from_secs(1))));
        assert!(retryable_status(StatusCode::SERVICE_UNAVAILABLE) && retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable_status(StatusCode::NOT_IMPLEMENTED) && !retryable_status(StatusCode::NOT_FOUND));
    }

    #[test]
    fn no_retry_once_the_time_budget_is_spent() {
        let mut r = Retries::new("r", "x", Duration::from_millis(50));
        assert!(r.wait(Some(Duration::ZERO)));
        std::thread::sleep(Duration::from_millis(60)); // a try that waited out the budget
        assert!(!r.wait(Some(Duration::ZERO)));
        // A pause that would end past the budget is not taken either.
        let mut r = Retries::new("r", "x", Duration::from_secs(5));
        assert!(!r.wait(Some(Duration::from_secs(6))));
        r.progressed();
        assert!(r.wait(Some(Duration::ZERO)));
    }

    #[test]
    fn progress_renews_the_budget() {
        let mut r = Retries::new("r", "x", Duration::from_secs(60));
        for _ in 0..20 {
            // Each stretch breaks once and then gets further.
            assert!(r.wait(Some(Duration::ZERO)));
            r.progressed();
        }
        for _ in 0..MAX_RETRIES {
            assert!(r.wait(Some(Duration::ZERO)));
        }
        assert!(r.pause("still broken".into()).is_err());
    }
}
