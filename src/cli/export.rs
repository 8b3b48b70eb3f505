//! `imgfs export [-o FILE] REF [PATH]`: the image's flattened tree (or the subtree at
//! PATH) as one tar stream, as `docker export` and `crane export` write it (see
//! `tar_stream`). Extracted as root, it is the tree `umoci unpack` makes of the image.
//! With `-o`, the file appears only once the stream is complete.

use super::opening::{open, ImageOptions};
use super::Context;
use crate::pending_file::PendingFile;
use crate::tar_stream::{self, Naming};
use crate::walk::resolve;
use anyhow::{bail, Context as _, Result};
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub image: ImageOptions,
    /// Write to this file instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Image reference or ID
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Only this directory (or file) of the image, as the root of the stream
    #[arg(value_name = "PATH", default_value = "/")]
    pub path: std::ffi::OsString,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    if args.output.is_none() && std::io::stdout().is_terminal() {
        bail!("refusing to write a tar stream to a terminal; use -o FILE or redirect stdout");
    }
    if let Some(path) = args.output.as_ref().filter(|p| p.is_dir()) {
        bail!("cannot write {}: it is a directory", path.display());
    }
    let image = open(ctx, &args.reference, &args.image)?;
    let top = resolve(&image.fs, args.path.as_bytes(), true)?;
    match &args.output {
        Some(path) => {
            let file = PendingFile::create(path, 0o644).with_context(|| format!("cannot create {}", path.display()))?;
            let mut file = tar_stream::write(&image.fs, &top, Naming::Relative, file)?;
            file.flush()?;
            file.commit().with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            tar_stream::write(&image.fs, &top, Naming::Relative, out)?.flush()?;
        }
    }
    Ok(())
}
