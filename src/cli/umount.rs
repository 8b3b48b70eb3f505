//! `imgfs umount DIR`: unmount an imgfs mount and wait for its server to exit. A
//! mountpoint left behind by a killed server is detached too.

use super::Context;
use crate::store::mounts::is_fuse_mountpoint;
use anyhow::{bail, Context as _, Result};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let dir = args.dir.canonicalize().unwrap_or_else(|_| args.dir.clone());
    let (live, _) = ctx.store.mounts()?;
    let server = live.iter().find(|m| m.mountpoint == dir).cloned();
    if !is_fuse_mountpoint(&dir) {
        bail!("{} is not mounted", dir.display());
    }
    detach(&dir)?;
    // Let the server see the session end and remove its record.
    if let Some(m) = server {
        let start = Instant::now();
        while crate::store::mounts::process_start_ticks(m.pid) == Some(m.start_ticks) {
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

/// Unmount `dir`: a plain unmount first, then a lazy detach if something holds it
/// busy. As root that is umount2(2) directly; otherwise fusermount3 does it.
pub fn detach(dir: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let c = CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
            return Ok(());
        }
        // SAFETY: as above.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return Ok(());
        }
        return Err(std::io::Error::last_os_error()).with_context(|| format!("cannot unmount {}", dir.display()));
    }
    let status = std::process::Command::new("fusermount3").arg("-u").arg(dir).status();
    if matches!(status, Ok(s) if s.success()) {
        return Ok(());
    }
    let status =
        std::process::Command::new("fusermount3").arg("-uz").arg(dir).status().context("cannot run fusermount3")?;
    if !status.success() {
        bail!("cannot unmount {}: fusermount3 failed", dir.display());
    }
    Ok(())
}
