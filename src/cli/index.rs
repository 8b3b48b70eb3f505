//! `imgfs index push REF` publishes, next to an image in its registry, the image's
//! published index (per layer its table of contents, decompression checkpoints and span
//! digests: see `index_artifact`) as an OCI referrer of the image (`referrers`); `imgfs
//! index inspect REF` finds it again from the registry alone and says what it holds.

use super::Context;
use crate::image::{Descriptor, Platform};
use crate::index_artifact::{IndexArtifact, Spans};
use crate::layer::ingest::LayerProgress;
use crate::layer_source::ImageLayers;
use crate::reference::Reference;
use crate::referrers::{self, Image};
use crate::register;
use anyhow::{Context as _, Result};
use serde_json::json;
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: IndexCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum IndexCommand {
    /// Pull an image if needed and publish its index (each layer's table of contents and
    /// checkpoints) to its registry as an OCI referrer
    Push(PushArgs),
    /// Find the published index of an image and show what it holds
    Inspect(InspectArgs),
}

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Platform to use from a multi-arch image (OS/ARCH[/VARIANT])
    #[arg(long, env = "DOCKER_DEFAULT_PLATFORM")]
    pub platform: Option<String>,
    /// Image reference ([registry/]name[:tag][@sha256:…]); the published index goes to its repository
    #[arg(value_name = "REF")]
    pub reference: String,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Platform to use from a multi-arch image (OS/ARCH[/VARIANT])
    #[arg(long, env = "DOCKER_DEFAULT_PLATFORM")]
    pub platform: Option<String>,
    /// Print everything as JSON: per layer its entries (paths), and each span's blob range and SHA-256
    #[arg(long)]
    pub json: bool,
    /// Image reference ([registry/]name[:tag][@sha256:…])
    #[arg(value_name = "REF")]
    pub reference: String,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    match args.command {
        IndexCommand::Push(a) => push(ctx, a),
        IndexCommand::Inspect(a) => inspect(ctx, a),
    }
}

fn parse(reference: &str, platform: Option<&str>) -> Result<(Reference, Option<Platform>)> {
    let r = Reference::parse(reference)?;
    let platform = platform.filter(|p| !p.is_empty()).map(Platform::parse).transpose()?;
    Ok((r, platform))
}

/// A pull that shows nothing: `index push` prints only the artifact's digest.
struct Quiet;
impl LayerProgress for Quiet {}

fn push(ctx: &Context, args: PushArgs) -> Result<()> {
    let (r, platform) = parse(&args.reference, args.platform.as_deref())?;
    let client = ctx.client()?;
    let store = &ctx.store;
    // The index is built from what a pull stores, so the image is pulled first (a
    // no-op for layers already stored and indexed) and kept under its name.
    let resolved = register::resolve(&client, store, &r, platform.as_ref())?;
    let layers = resolved.record.layers.clone();
    let diff_ids = resolved.config.rootfs.diff_ids.clone();
    let sourcing = ImageLayers::new(store.clone(), ctx.lazy_client(), &resolved.record, &resolved.config, "")?;
    for i in 0..layers.len() {
        sourcing.prepare(i, &Quiet)?;
    }
    register::register(store, &resolved, &r)?;
    let manifest = Descriptor {
        media_type: resolved.record.manifest_media_type.clone(),
        size: store.read_blob(&resolved.record.manifest)?.len() as u64,
        digest: resolved.record.manifest.clone(),
        platform: None,
        annotations: None,
    };
    // Built while the pull's lease still holds the blobs; pushed after it is let go,
    // so that a prune need not wait for the network.
    let mut blobs = Vec::new();
    for (l, diff_id) in layers.iter().zip(&diff_ids) {
        let artifact = IndexArtifact::build(store, l, diff_id)
            .with_context(|| format!("cannot build the index of layer {}", l.digest))?;
        blobs.push(artifact.encode()?);
    }
    drop(resolved);
    let image = Image { registry: r.registry.clone(), repository: r.repository.clone(), manifest, layers, diff_ids };
    let digest = referrers::publish(&client, &image, &blobs)?;
    for (l, b) in image.layers.iter().zip(&blobs) {
        eprintln!("{}: index of {} bytes for a layer of {} bytes", l.digest.short(), b.len(), l.size);
    }
    println!("{digest}");
    Ok(())
}

fn inspect(ctx: &Context, args: InspectArgs) -> Result<()> {
    let (r, platform) = parse(&args.reference, args.platform.as_deref())?;
    let client = ctx.client()?;
    let image = referrers::remote_image(&client, &r, platform.as_ref())?;
    let (digest, found) = referrers::find(&client, &image)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let layers = image
            .layers
            .iter()
            .zip(&found)
            .map(|(l, f)| -> Result<serde_json::Value> {
                let a = &f.artifact;
                let c = &a.contents()?;
                let spans: Vec<_> = (0..a.span_count())
                    .map(|i| {
                        let (start, end) = a.compressed_range(i);
                        let sha: String = a.span_digests[i].iter().map(|b| format!("{b:02x}")).collect();
                        let mut span = json!({ "start": start, "end": end, "sha256": sha });
                        if let Spans::Checkpoints(cp) = &a.spans {
                            let (us, ue) = cp.span_range(i);
                            span["uncompressed"] = json!([us, ue]);
                        }
                        span
                    })
                    .collect();
                Ok(json!({
                    "layer": l.digest,
                    "diff_id": a.diff_id,
                    "media_type": l.media_type,
                    "compressed_size": a.compressed_size,
                    "uncompressed_size": a.uncompressed_size,
                    "index_size": f.blob_size,
                    "head_size": f.head_size,
                    "span_kind": a.span_kind(),
                    "entries": c.entries.iter().map(|e| String::from_utf8_lossy(&e.path)).collect::<Vec<_>>(),
                    "whiteouts": c.whiteouts.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>(),
                    "opaque": c.opaque.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>(),
                    "spans": spans,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        let doc = json!({ "index": digest, "subject": image.manifest.digest, "layers": layers });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "INDEX {digest} for {}", image.manifest.digest)?;
    writeln!(
        out,
        "{:<14} {:<7} {:>9} {:>7} {:>12} {:>12} {:>7} {:>10} {:>7}",
        "LAYER", "KIND", "ENTRIES", "SPANS", "LAYER SIZE", "INDEX SIZE", "RATIO", "HEAD SIZE", "RATIO"
    )?;
    for (l, f) in image.layers.iter().zip(&found) {
        let a = &f.artifact;
        writeln!(
            out,
            "{:<14} {:<7} {:>9} {:>7} {:>12} {:>12} {:>6.2}% {:>10} {:>6.2}%",
            l.digest.short(),
            a.span_kind(),
            a.contents()?.entries.len(),
            a.span_count(),
            a.compressed_size,
            f.blob_size,
            100.0 * f.blob_size as f64 / a.compressed_size.max(1) as f64,
            f.head_size,
            100.0 * f.head_size as f64 / a.compressed_size.max(1) as f64
        )?;
    }
    Ok(())
}
