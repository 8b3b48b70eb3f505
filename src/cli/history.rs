//! `imgfs history [-H] [--no-trunc] [-q] [--format F] REF`: an image's history as
//! `docker history` shows it: newest first, the columns IMAGE, CREATED, CREATED BY,
//! SIZE and COMMENT, the image ID on the top row and `<missing>` on the others (their
//! steps made no image of their own here), sizes the layers' uncompressed sizes (what
//! `docker history` and `podman history` show). A size comes from the layer's table of
//! contents, in the store or in its published index; a layer with neither is fetched
//! and its table of contents built.

use super::ls::{created_since, human_size};
use super::opening::{open, ImageOptions};
use super::search::ellipsis;
use super::Context;
use crate::template::Format;
use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub image: ImageOptions,
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true)]
    pub human: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output with a Go-style template, `table TEMPLATE`, or `json` (fields .ID
    /// .CreatedSince .CreatedAt .CreatedBy .Size .Comment)
    #[arg(long)]
    pub format: Option<String>,
    /// Image reference or ID
    #[arg(value_name = "REF")]
    pub reference: String,
}

const DEFAULT_TABLE: &str = "{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";
/// Docker cuts CREATED BY to this many characters without --no-trunc.
const CREATED_BY_WIDTH: usize = 45;

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let quiet = args.quiet && matches!(args.format.as_deref().map(str::trim), None | Some("") | Some("table"));
    let format = Format::parse(args.format.as_deref(), DEFAULT_TABLE, true).context("invalid --format")?;
    let image = open(ctx, &args.reference, &args.image)?;
    let report = super::progress::fetch_lines();
    let layers = image.layers.descriptors();
    let now = jiff::Timestamp::now();
    let id = if args.no_trunc { image.record.id.to_string() } else { image.record.id.short().to_string() };
    let mut rows = Vec::new();
    let mut next_layer = 0;
    for step in &image.config.history {
        let size = if step.empty_layer || next_layer >= layers.len() {
            0
        } else {
            let progress = report(next_layer, &layers[next_layer]);
            next_layer += 1;
            image.layers.unpacked_size(next_layer - 1, &*progress)?
        };
        let created = step.created.as_deref().and_then(|c| c.parse::<jiff::Timestamp>().ok());
        let created_at = created.map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
        let since = match created {
            Some(t) if args.human => created_since(t, now),
            Some(_) => created_at.clone(),
            None => "N/A".into(),
        };
        let by = step.created_by.clone().unwrap_or_default().replace('\t', " ");
        rows.push(json!({
            "ID": "<missing>",
            "CreatedSince": since,
            "CreatedAt": created_at,
            "CreatedBy": if args.no_trunc { by } else { ellipsis(&by, CREATED_BY_WIDTH) },
            "Size": if args.human { human_size(size, 3) } else { size.to_string() },
            "Comment": step.comment.clone().unwrap_or_default(),
        }));
    }
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top["ID"] = Value::String(id);
    }
    let mut out = std::io::stdout().lock();
    if quiet {
        for r in &rows {
            writeln!(out, "{}", r["ID"].as_str().unwrap_or_default())?;
        }
        return Ok(());
    }
    let titles = json!({
        "ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY",
        "Size": "SIZE", "Comment": "COMMENT",
    });
    out.write_all(format.render(&rows, &titles).context("invalid --format")?.as_bytes())?;
    Ok(())
}
