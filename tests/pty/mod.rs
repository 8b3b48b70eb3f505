//! Running `imgfs` on a pseudoterminal of the test's own, for what it does only on a
//! terminal: `login`'s prompts, `pull`'s live progress lines and how a ^C ends them.
//! Shared by the test binaries through `#[path]`.

#![allow(dead_code)] // each test binary uses a different part

use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Start `cmd` with the slave of a new pty as its stdin, stdout, stderr and controlling
/// terminal (a session of its own, so the pty's ^C signals it, and `/dev/tty` is the
/// pty), the pty `cols` wide when given. Returns the child and the master: reading
/// the master ends (EIO) once the child exits, as only the child holds the slave.
pub fn spawn(mut cmd: Command, cols: Option<u16>) -> (Child, File) {
    // openpty(3), spelled out: a master, then its slave opened by name.
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("openpt");
    grantpt(&master).and_then(|()| unlockpt(&master)).expect("grantpt/unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(name.to_str().expect("a pty's name is ASCII"))
        .expect("open the pty's slave");
    if let Some(cols) = cols {
        let size = rustix::termios::Winsize { ws_row: 30, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        rustix::termios::tcsetwinsize(&slave, size).expect("set the pty's size");
    }
    cmd.stdin(slave.try_clone().unwrap()).stdout(slave.try_clone().unwrap()).stderr(slave.try_clone().unwrap());
    // SAFETY: pre_exec's hook runs in the forked child, where only async-signal-safe
    // calls are allowed: setsid(2) and ioctl(2), straight system calls through rustix,
    // no allocation. Descriptor 0 is the pty there (set up before the hook runs).
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(0))?;
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn imgfs on a pty");
    // Only the child may hold the terminal open. The Command keeps its copies until it
    // is dropped.
    drop(cmd);
    drop(slave);
    (child, File::from(master))
}
