//! How a layer fetch shows on a terminal: `pull`'s line per layer (`Waiting`, a bar
//! while it downloads, a spinner while it is verified and indexed), and the same lines
//! for the commands that fetch layers on demand (`cat`, `export`, …), which clear each
//! line when its fetch ends so that only the command's own output stays. Nothing is
//! drawn when stderr is not a terminal.

use crate::image::Descriptor;
use crate::layer::ingest::LayerProgress;
use crate::layer_source::ReportFn;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

pub(crate) fn plain_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}: {msg}").expect("a valid template")
}

/// One layer's line; the fetch reports to it through `LayerProgress`.
pub(crate) struct LayerLine {
    bar: Option<ProgressBar>,
    /// Fetched by this pull (not `Already exists`).
    missing: bool,
}

impl LayerLine {
    pub(crate) fn new(bar: Option<ProgressBar>, missing: bool) -> LayerLine {
        LayerLine { bar, missing }
    }

    pub(crate) fn complete(&self) {
        if let Some(bar) = &self.bar {
            if self.missing {
                bar.disable_steady_tick();
                bar.set_style(plain_style());
                bar.finish_with_message("Pull complete");
            }
        }
    }

    pub(crate) fn failed(&self) {
        if let Some(bar) = &self.bar {
            bar.disable_steady_tick();
            bar.set_style(plain_style());
            bar.abandon_with_message("Failed");
        }
    }
}

impl LayerProgress for LayerLine {
    fn downloading(&self, done: u64, total: u64) {
        let Some(bar) = &self.bar else { return };
        if bar.length() != Some(total) {
            // The first bytes: from `Waiting` to a bar.
            bar.set_style(
                ProgressStyle::with_template("{prefix}: {msg} [{bar:40}] {decimal_bytes}/{decimal_total_bytes}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_message("Downloading");
            bar.set_length(total);
        }
        bar.set_position(done);
    }

    fn verifying(&self) {
        let Some(bar) = &self.bar else { return };
        // Indexing can trail the download by seconds: a spinner shows it is alive.
        bar.set_style(ProgressStyle::with_template("{prefix}: {msg} {spinner}").expect("a valid template"));
        bar.set_message(if bar.length() == Some(0) { "Indexing" } else { "Verifying and indexing" });
        bar.enable_steady_tick(Duration::from_millis(120));
    }
}

/// A line for a layer a command fetches, gone from the screen once the fetch is over.
struct Transient(LayerLine);

impl LayerProgress for Transient {
    fn downloading(&self, done: u64, total: u64) {
        self.0.downloading(done, total)
    }
    fn verifying(&self) {
        self.0.verifying()
    }
}

impl Drop for Transient {
    fn drop(&mut self) {
        if let Some(bar) = &self.0.bar {
            bar.finish_and_clear();
        }
    }
}

/// The lines of the layers a command fetches, on stderr when it is a terminal.
pub(crate) fn fetch_lines() -> Box<ReportFn> {
    if !std::io::stderr().is_terminal() {
        return Box::new(|_, _| Box::new(Transient(LayerLine::new(None, true))));
    }
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    Box::new(move |_, layer: &Descriptor| {
        let bar =
            multi.add(ProgressBar::new(0).with_style(plain_style()).with_prefix(layer.digest.short().to_string()));
        bar.set_message("Waiting");
        Box::new(Transient(LayerLine::new(Some(bar), true)))
    })
}
