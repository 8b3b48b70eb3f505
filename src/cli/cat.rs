//! `imgfs cat REF PATH…`: the bytes of files of an image on stdout, read through the
//! same union a mount serves, with no mount. Every path is resolved before anything is
//! written, so a directory or a missing path fails with nothing on stdout.

use super::opening::{open, ImageOptions};
use super::Context;
use crate::layer::{show, Kind};
use crate::walk::{resolve, FileReader};
use anyhow::{bail, Result};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub image: ImageOptions,
    /// Image reference or ID (`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
    /// `docker-archive:FILE[:REF]` read from there)
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Files inside the image (absolute, or relative to its root); links are followed
    /// inside the image
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<std::ffi::OsString>,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let image = open(ctx, &args.reference, &args.image)?;
    let mut files = Vec::new();
    for p in &args.paths {
        let node = resolve(&image.fs, p.as_bytes(), true)?;
        match node.info.kind {
            Kind::File => files.push(node),
            Kind::Dir => bail!("{}: is a directory", show(p.as_bytes())),
            _ => bail!("{}: not a regular file", show(p.as_bytes())),
        }
    }
    let mut out = std::io::stdout().lock();
    for node in &files {
        let mut reader = FileReader::new(&image.fs, node);
        while let Some(chunk) = reader.next_chunk()? {
            out.write_all(&chunk)?;
        }
    }
    out.flush()?;
    Ok(())
}
