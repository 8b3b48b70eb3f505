//! `imgfs layers [--format F] REF`: per layer, what dive shows for it (entries added,
//! changed and removed, the bytes its files hold, the bytes of them later layers
//! overwrite or remove), then the image's efficiency, wasted bytes and wasted share as
//! dive's CI mode computes them (`layer_stats`). It needs every layer's table of
//! contents: from the store, a published index, or, failing both, the layers fetched
//! whole (it says so first).

use super::ls::human_size;
use super::opening::{open, ImageOptions};
use super::search::ellipsis;
use super::Context;
use crate::layer_stats::figures;
use crate::template::Format;
use crate::tree::LayerSource;
use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub image: ImageOptions,
    /// Format each layer with a Go-style template or `table TEMPLATE` (fields .Index
    /// .Digest .Added .Changed .Removed .Size .Bytes .Wasted .WastedBytes .CreatedBy), or
    /// `json`: one object with the layers and the image's figures
    #[arg(long)]
    pub format: Option<String>,
    /// Image reference or ID
    #[arg(value_name = "REF")]
    pub reference: String,
}

const DEFAULT_TABLE: &str =
    "{{.Index}}\t{{.Digest}}\t{{.Added}}\t{{.Changed}}\t{{.Removed}}\t{{.Size}}\t{{.Wasted}}\t{{.CreatedBy}}";

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let format = Format::parse(args.format.as_deref(), DEFAULT_TABLE, true).context("invalid --format")?;
    let image = open(ctx, &args.reference, &args.image)?;
    let n = image.layers.layer_count();
    let whole = (0..n).filter(|&i| !image.layers.is_local(i)).count();
    if whole > 0 {
        tracing::info!("{whole} of {n} layers have no table of contents here or published: fetching them whole");
    }
    let all: Vec<usize> = (0..n).collect();
    let changes = crate::layer_changes::read_all(&*image.layers, &all)
        .map_err(|e| anyhow::anyhow!(e))
        .context("reading the layers' tables of contents")?;
    let f = figures(&changes);
    let created_by: Vec<String> = image
        .config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| h.created_by.clone().unwrap_or_default().replace('\t', " "))
        .collect();
    let descriptors = image.layers.descriptors();
    let rows: Vec<Value> = f
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let by = created_by.get(i).cloned().unwrap_or_default();
            json!({
                "Index": i,
                "Digest": descriptors[i].digest.short(),
                "Added": l.added,
                "Changed": l.changed,
                "Removed": l.removed,
                "Size": human_size(l.bytes, 3),
                "Bytes": l.bytes,
                "Wasted": human_size(l.wasted, 3),
                "WastedBytes": l.wasted,
                "CreatedBy": if format.is_json() { by } else { ellipsis(&by, 45) },
            })
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if format.is_json() {
        let doc = json!({
            "Layers": rows,
            "Efficiency": f.efficiency,
            "WastedBytes": f.wasted_bytes,
            "UserWastedPercent": f.wasted_user_share * 100.0,
            "SizeBytes": f.size_bytes,
            "UserSizeBytes": f.user_size_bytes,
        });
        writeln!(out, "{doc}")?;
        return Ok(());
    }
    let titles = json!({
        "Index": "LAYER", "Digest": "DIGEST", "Added": "ADDED", "Changed": "CHANGED", "Removed": "REMOVED",
        "Size": "SIZE", "Bytes": "BYTES", "Wasted": "WASTED", "WastedBytes": "WASTED BYTES", "CreatedBy": "CREATED BY",
    });
    out.write_all(format.render(&rows, &titles).context("invalid --format")?.as_bytes())?;
    if let Format::Table(_) = format {
        writeln!(out)?;
        writeln!(out, "efficiency: {:.4} %", f.efficiency * 100.0)?;
        writeln!(out, "wastedBytes: {} bytes ({})", f.wasted_bytes, human_size(f.wasted_bytes, 3))?;
        writeln!(out, "userWastedPercent: {:.4} %", f.wasted_user_share * 100.0)?;
    }
    Ok(())
}
