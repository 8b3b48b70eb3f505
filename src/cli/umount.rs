//! `imgfs umount [-l] DIR`: unmount an imgfs mount and wait for its server to exit (the
//! `server` module does it). A busy mount is refused, as umount(8) refuses it, unless
//! `--lazy` detaches it. A mountpoint left behind by a killed server is detached too.
//! Any other mount, FUSE or not, is refused: as root an unmount would succeed on
//! anything, an sshfs mount included, and that is not this command's business.

use super::Context;
use crate::server;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Detach the mount now even if it is busy; its server serves the files open in it
    /// until the last is closed, then exits
    #[arg(short, long)]
    pub lazy: bool,
    /// Mountpoint of an imgfs mount
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    Ok(server::unmount(&ctx.store, &args.dir, args.lazy)?)
}
