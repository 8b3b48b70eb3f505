//! `imgfs diff [--mtime] [--format F] REF1 REF2 [PATH]`: the paths that differ between
//! two images, one line each, sorted by path in byte order: `A /p` (only in REF2),
//! `D /p` (only in REF1), `C /p` (in both, different). The layers the two share are
//! never walked (`image_diff`); with published indexes no layer blob is fetched whole.

use super::opening::{open, ImageOptions};
use super::Context;
use crate::image_diff::{diff, Side};
use crate::template::Format;
use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub image: ImageOptions,
    /// A different mtime alone makes a path changed
    #[arg(long)]
    pub mtime: bool,
    /// Format each difference with a Go-style template, `table TEMPLATE`, or `json`
    /// (fields .Path .Kind .Size1 .Size2 .Changed)
    #[arg(long)]
    pub format: Option<String>,
    /// The first image
    #[arg(value_name = "REF1")]
    pub first: String,
    /// The second image
    #[arg(value_name = "REF2")]
    pub second: String,
    /// Only paths at or below this one
    #[arg(value_name = "PATH", default_value = "/")]
    pub path: std::ffi::OsString,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let format =
        args.format.as_deref().map(|f| Format::parse(Some(f), "", true)).transpose().context("invalid --format")?;
    let (a, b) = std::thread::scope(|s| {
        let first = s.spawn(|| open(ctx, &args.first, &args.image));
        let b = open(ctx, &args.second, &args.image);
        (first.join().expect("opening an image does not panic"), b)
    });
    let (a, b) = (a?, b?);
    let differences = diff(
        &Side { fs: &a.fs, layers: &a.layers },
        &Side { fs: &b.fs, layers: &b.layers },
        args.path.as_bytes(),
        args.mtime,
    )?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        None => {
            for d in &differences {
                write!(out, "{} ", d.change.letter())?;
                out.write_all(&d.path)?;
                out.write_all(b"\n")?;
            }
        }
        Some(f) => {
            let rows: Vec<Value> = differences
                .iter()
                .map(|d| {
                    json!({
                        "Path": String::from_utf8_lossy(&d.path),
                        "Kind": d.change.letter().to_string(),
                        "Size1": d.sizes.0,
                        "Size2": d.sizes.1,
                        "Changed": d.what,
                    })
                })
                .collect();
            let titles =
                json!({"Path": "PATH", "Kind": "KIND", "Size1": "SIZE1", "Size2": "SIZE2", "Changed": "CHANGED"});
            out.write_all(f.render(&rows, &titles).context("invalid --format")?.as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}
