//! How imgfs logs: through `tracing`, so the library says what happened at a level
//! (warn for something degraded but still served, error for an operation that failed)
//! and whoever runs it decides what is shown and how. `init` is the one subscriber,
//! installed by `main`: `IMGFS_LOG` picks the level (default `info`), and each event is
//! one line, `imgfs: warning: …`, as users read the CLI's own messages; a mount
//! server writing to its log file puts a timestamp first. `Chain` shows an error with
//! its causes on that one line.

use std::error::Error;
use std::fmt;
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The environment variable holding the level: `error`, `warn`, `info`, `debug`, `trace`
/// or `off`.
pub const LEVEL_VAR: &str = "IMGFS_LOG";

/// Install the subscriber that writes events to stderr. `timestamps`: begin each line
/// with the time (for a log file). A level `IMGFS_LOG` can't name is reported on stderr
/// and the default used: logging must not stop the command.
pub fn init(timestamps: bool) {
    let level = match std::env::var(LEVEL_VAR) {
        Ok(v) => level(&v).unwrap_or_else(|| {
            eprintln!(
                "imgfs: warning: {LEVEL_VAR}={v:?} is not a level (error, warn, info, debug, trace, off); using info"
            );
            LevelFilter::INFO
        }),
        Err(_) => LevelFilter::INFO,
    };
    let _ = tracing::subscriber::set_global_default(subscriber(level, timestamps, std::io::stderr));
}

/// What `IMGFS_LOG` names, if it names a level.
fn level(v: &str) -> Option<LevelFilter> {
    v.trim().parse().ok()
}

fn subscriber<W>(level: LevelFilter, timestamps: bool, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt().with_max_level(level).with_writer(writer).event_format(Line { timestamps }).finish()
}

/// One event, one line: `[time ]imgfs: [level: ]message[ field=value…]`. Info, the
/// level of what imgfs always said, has no level word.
struct Line {
    timestamps: bool,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if self.timestamps {
            write!(w, "{} ", jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))?;
        }
        let level = match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::INFO => "",
            Level::DEBUG => "debug: ",
            Level::TRACE => "trace: ",
        };
        write!(w, "imgfs: {level}")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// An error and its causes on one line, joined by ": " (as anyhow's `{:#}` shows them).
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("layer 2")]
    struct Outer(#[source] std::io::Error);

    /// What a subscriber wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(level: LevelFilter, timestamps: bool, events: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        tracing::subscriber::with_default(subscriber(level, timestamps, move || writer.clone()), events);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_read_as_the_cli_writes_them_and_the_level_filters() {
        let events = || {
            tracing::error!("read (inode 7): EIO: layer 0");
            tracing::warn!("\"x\" left out of its directory");
            tracing::info!("layer 1 is eStargz");
            tracing::debug!("detail");
        };
        assert_eq!(
            logged(LevelFilter::INFO, false, events),
            "imgfs: error: read (inode 7): EIO: layer 0\n\
             imgfs: warning: \"x\" left out of its directory\n\
             imgfs: layer 1 is eStargz\n"
        );
        assert_eq!(logged(LevelFilter::WARN, false, events).lines().count(), 2);
        assert_eq!(logged(LevelFilter::DEBUG, false, events).lines().last(), Some("imgfs: debug: detail"));
        assert_eq!(logged(LevelFilter::OFF, false, events), "");
        // In a server's log file: the time first, then the same line.
        let line = logged(LevelFilter::INFO, true, || tracing::warn!("w"));
        let (time, rest) = line.split_once(' ').unwrap();
        assert_eq!(rest, "imgfs: warning: w\n");
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{line}");
    }

    #[test]
    fn imgfs_log_takes_level_names() {
        assert_eq!(level("debug"), Some(LevelFilter::DEBUG));
        assert_eq!(level(" WARN "), Some(LevelFilter::WARN));
        assert_eq!(level("off"), Some(LevelFilter::OFF));
        assert_eq!(level("loud"), None);
    }

    #[test]
    fn a_chain_shows_every_cause_on_one_line() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(Chain(&e).to_string(), "layer 2: connection refused");
    }
}
