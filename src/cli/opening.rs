//! What the mount-free commands (`cat`, `cp`, `files`, `export`, `diff`, `history`,
//! `layers`) share: the options that say which image and how to read it (as `pull`
//! and `mount` take them), and opening it through `opened_image`, with layer fetches
//! shown as `pull` shows them when stderr is a terminal.

use super::Context;
use crate::image::Platform;
use crate::opened_image::{OpenedImage, Reading};
use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct ImageOptions {
    /// Platform to read from a multi-arch image (OS/ARCH[/VARIANT])
    // Docker's variable for the default platform; the flag wins over it.
    #[arg(long, env = "DOCKER_DEFAULT_PLATFORM")]
    pub platform: Option<String>,
    /// Don't look for a published index (`imgfs index push`) nor read eStargz layers by
    /// Range: fetch each layer that is needed whole
    #[arg(long)]
    pub no_index: bool,
}

impl ImageOptions {
    fn platform(&self) -> Result<Option<Platform>> {
        // An empty value (`DOCKER_DEFAULT_PLATFORM=`) means no platform, as in docker.
        Ok(self.platform.as_deref().filter(|p| !p.is_empty()).map(Platform::parse).transpose()?)
    }
}

/// Memory for decoded spans of compressed layers: a command reads each file once, in
/// order, so a few spans ahead of the reader are all it can use.
const READ_CACHE: u64 = 32 << 20;
/// The bound of the disk cache of spans fetched by Range, as `mount`'s default.
const CACHE_SIZE: u64 = 1 << 30;

/// Open `reference` (from the store, else its registry or local source) for reading.
pub fn open(ctx: &Context, reference: &str, options: &ImageOptions) -> Result<OpenedImage> {
    let platform = options.platform()?;
    let reading = Reading { read_cache: READ_CACHE, cache_size: CACHE_SIZE, no_index: options.no_index };
    Ok(OpenedImage::open(
        &ctx.store,
        ctx.lazy_client(),
        reference,
        platform.as_ref(),
        &reading,
        super::progress::fetch_lines(),
    )?)
}
