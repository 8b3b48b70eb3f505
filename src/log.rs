//! How imgfs logs: through `tracing`, so the library says what happened at a level
//! (warn for something degraded but still served, error for an operation that failed)
//! and whoever runs it decides what is shown and how. `init` is the one subscriber,
//! installed by `main`: `IMGFS_LOG` picks the level (default `info`), and each event is
//! one line, `imgfs: warning: …`, as users read the CLI's own messages; a mount
//! server writing to its log file puts a timestamp first. `Chain` shows an error with
//! its causes on that one line.

use std::error::Error;
use std::fmt;
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
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!(
                "imgfs: warning: {LEVEL_VAR}={v:?} is not a level (error, warn, info, debug, trace, off); using info"
            );
            tracing::level_filters::LevelFilter::INFO
        }),
        Err(_) => tracing::level_filters::LevelFilter::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .event_format(Line { timestamps })
        .try_init();
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
            write!(w, "{} ", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"))?;
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

    #[test]
    fn a_chain_shows_every_cause_on_one_line() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(Chain(&e).to_string(), "layer 2: connection refused");
    }
}
