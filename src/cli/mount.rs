//! `imgfs mount`: its arguments, and the list of running mounts it prints with none
//! (a mount detached by `umount --lazy` is listed, marked, until its server exits).
//!
//! A mount's life is the `server` module's: resolving the image, starting the
//! background server (without `-f`, a detached copy of this program in the foreground
//! mode, logging under the store root; the command returns once the mountpoint
//! answers), serving, signals and teardown.

use super::Context;
use crate::digest::Digest;
use crate::image::Platform;
use crate::registry::ClientOptions;
use crate::server;
use crate::template::Format;
use anyhow::{Context as _, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Platform to mount from a multi-arch image (OS/ARCH[/VARIANT])
    // Docker's variable for the default platform; the flag wins over it.
    #[arg(long, env = "DOCKER_DEFAULT_PLATFORM")]
    pub platform: Option<String>,
    /// Stay in the foreground and log to stderr
    #[arg(short, long)]
    pub foreground: bool,
    /// Let other users see the mount (for a non-root user this needs
    /// `user_allow_other` in /etc/fuse.conf)
    #[arg(long)]
    pub allow_other: bool,
    /// Memory for decoded data of compressed layers, shared by all reads (MiB)
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    pub read_cache: u64,
    /// Don't look for a published index (`imgfs index push`) nor read eStargz layers by
    /// Range: fetch each layer whole on first use
    #[arg(long)]
    pub no_index: bool,
    /// Bound of the disk cache (ROOT/cache) of spans fetched by Range through a
    /// published index, shared by all mounts of the store: 512M, 2G, … (`imgfs prune`
    /// empties it)
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_cache_size)]
    pub cache_size: u64,
    /// With no image: format the list of mounts with a Go-style template, `table
    /// TEMPLATE`, or `json` (fields .Image .ID .Mountpoint .PID .Detached)
    #[arg(long, conflicts_with = "reference")]
    pub format: Option<String>,
    /// The image ID the parent already resolved (internal, for the background server)
    #[arg(long, hide = true)]
    pub resolved_id: Option<String>,
    /// Image reference or ID
    #[arg(value_name = "REF", requires = "dir")]
    pub reference: Option<String>,
    /// Directory to mount at
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: Args, root: &Path) -> Result<()> {
    let (Some(reference), Some(dir)) = (args.reference.clone(), args.dir.clone()) else {
        return list(ctx, args.format.as_deref());
    };
    // An empty value (`DOCKER_DEFAULT_PLATFORM=`) means no platform, as in docker.
    let platform = args.platform.as_deref().filter(|p| !p.is_empty());
    let platform = platform.map(Platform::parse).transpose()?;
    let resolved_id = args.resolved_id.clone();
    let serving = if args.foreground {
        server::Serving::Foreground(server::Settings {
            allow_other: args.allow_other,
            read_cache: args.read_cache,
            cache_size: args.cache_size,
            no_index: args.no_index,
        })
    } else {
        let root = root.to_path_buf();
        let options = ctx.client_options().clone();
        let reference = reference.clone();
        server::Serving::Background(Box::new(move |id: &Digest, dir: &Path| {
            server_command(&options, &root, &reference, id, dir, &args)
        }))
    };
    let id = resolved_id.as_deref();
    Ok(server::mount(&ctx.store, ctx.lazy_client(), &reference, &dir, platform.as_ref(), id, serving)?)
}

/// The command line of the background server: this program in the foreground mode,
/// with the global options that matter to it and the image its parent resolved.
fn server_command(
    options: &ClientOptions,
    root: &Path,
    reference: &str,
    id: &Digest,
    dir: &Path,
    args: &Args,
) -> std::io::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--root").arg(root);
    for h in &options.insecure_registries {
        cmd.arg("--insecure-registry").arg(h);
    }
    if let Some(t) = options.timeout {
        cmd.arg("--timeout").arg(t.as_secs().to_string());
    }
    cmd.args(["mount", "-f", "--resolved-id", id.as_str()]);
    // The platform asked for, so that the server knows one was (`warn_if_foreign`).
    if let Some(p) = args.platform.as_deref().filter(|p| !p.is_empty()) {
        cmd.arg("--platform").arg(p);
    }
    if args.allow_other {
        cmd.arg("--allow-other");
    }
    cmd.arg("--read-cache").arg(args.read_cache.to_string());
    cmd.arg("--cache-size").arg(args.cache_size.to_string());
    if args.no_index {
        cmd.arg("--no-index");
    }
    cmd.arg(reference).arg(dir);
    Ok(cmd)
}

/// `--cache-size`: `1G`, `512M`, `2097152`, …
fn parse_cache_size(v: &str) -> Result<u64, String> {
    crate::layer::build::parse_size(v).ok_or_else(|| format!("{v:?} is not a size (like 512M or 2G)"))
}

/// Is this `mount` the server itself (`mount -f REF DIR`, also what the background
/// mount runs)?
pub fn is_server(args: &Args) -> bool {
    args.foreground && args.dir.is_some()
}

const LIST_TABLE: &str = "{{.Image}}\t{{.ID}}\t{{.Mountpoint}}{{if .Detached}} (detached){{end}}\t{{.PID}}";

fn list(ctx: &Context, format: Option<&str>) -> Result<()> {
    let format = Format::parse(format, LIST_TABLE, true).context("invalid --format")?;
    let (live, _dead) = ctx.store.mounts()?;
    let table = crate::store::mounts::mount_table();
    let rows: Vec<serde_json::Value> = live
        .into_iter()
        .filter(|m| !m.starting)
        .map(|m| {
            serde_json::json!({
                "Image": m.reference,
                "ID": m.image.short(),
                "Mountpoint": m.mountpoint.display().to_string(),
                "PID": m.pid,
                "Detached": m.is_detached(&table),
            })
        })
        .collect();
    // An empty title: `{{if .Detached}}` adds nothing to the header.
    let titles = serde_json::json!({
        "Image": "IMAGE", "ID": "IMAGE ID", "Mountpoint": "MOUNTPOINT", "PID": "PID", "Detached": ""
    });
    let text = format.render(&rows, &titles).context("invalid --format")?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    Ok(())
}
