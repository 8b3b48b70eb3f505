//! `imgfs umount DIR`: unmount an imgfs mount and wait for its server to exit. A
//! mountpoint left behind by a killed server is detached too. Any other mount, FUSE
//! or not, is refused: as root an unmount would succeed on anything, an sshfs mount
//! included, and that is not this command's business.

use super::Context;
use crate::store::mounts::{detach, mount_at, mountpoint_path, process_start_ticks};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Mountpoint of an imgfs mount
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let dir = mountpoint_path(&args.dir);
    let Some(entry) = mount_at(&dir) else { bail!("{} is not mounted", dir.display()) };
    if !entry.is_imgfs() {
        bail!(
            "{} is not an imgfs mount (it is {} from {}); unmount it with umount or fusermount3 -u",
            dir.display(),
            entry.fstype,
            entry.source
        );
    }
    detach(&dir)?;
    // Its server, if it is alive, is still running (it exits once it sees the session
    // end); the record of a dead one is dropped here.
    let (live, _) = ctx.store.mounts()?;
    let server = live.iter().find(|m| m.mountpoint == dir && !m.starting).cloned();
    // Let the server see the session end and remove its record.
    if let Some(m) = server {
        let start = Instant::now();
        while process_start_ticks(m.pid) == Some(m.start_ticks) {
            if start.elapsed() > Duration::from_secs(10) {
                eprintln!("imgfs: server {} still running after unmount", m.pid);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Listing clears the record of a server that died instead of exiting cleanly.
        ctx.store.mounts()?;
    }
    Ok(())
}
