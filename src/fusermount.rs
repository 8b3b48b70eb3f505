//! Mounting through `fusermount3`, as a user who may not call mount(2) does.
//!
//! As libfuse does, the setuid-root `fusermount3` mounts for us: `_FUSE_COMMFD` names
//! our end of a socket pair, fusermount3 opens the device, mounts, and sends the
//! descriptor back with SCM_RIGHTS, and we serve on it. (fuser's own mount opens
//! `/dev/fuse` first and gives up if it can't, and its session unmounts by path when
//! it ends; see `fuse::mount`. Debian's fusermount3 opens the device with the user's
//! rights, so a device closed to the user fails there as well: the admin's permissions
//! on /dev/fuse decide, and the caller's error says how to change them.)

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Mount a FUSE filesystem at `dir` with `options` (fusermount3's `-o`), returning the
/// `/dev/fuse` descriptor to serve it on. Fails with fusermount3's own message.
pub fn mount(dir: &Path, options: &str) -> io::Result<OwnedFd> {
    let (ours, theirs) = UnixStream::pair()?;
    let theirs_fd = theirs.as_raw_fd();
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-o")
        .arg(options)
        .arg("--")
        .arg(dir)
        .env("_FUSE_COMMFD", theirs_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: pre_exec's hook runs in the forked child, where only async-signal-safe
    // calls are allowed: it makes one fcntl(2) system call (rustix calls the kernel
    // directly, no allocation, no locks). `theirs_fd` stays open until after the spawn
    // (`theirs` is dropped below), so the child's copy of it is open too and borrowing it
    // there is sound. Clearing FD_CLOEXEC keeps fusermount3's end of the socket open
    // across exec; only this child gets it.
    unsafe {
        cmd.pre_exec(move || {
            let fd = std::os::fd::BorrowedFd::borrow_raw(theirs_fd);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(e.kind(), "fusermount3 is not installed")
        } else {
            io::Error::new(e.kind(), format!("cannot run fusermount3: {e}"))
        }
    })?;
    drop(theirs); // fusermount3 holds the only other end: EOF when it exits
    let received = receive_fd(&ours);
    drop(ours);
    let mut why = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut why);
    }
    let status = child.wait()?;
    match received {
        Ok(fd) => Ok(fd),
        Err(e) => {
            let why = why.trim().lines().last().unwrap_or("").trim_start_matches("fusermount3: ").to_string();
            let why = if why.is_empty() { format!("{status}, {e}") } else { why };
            Err(io::Error::other(format!("fusermount3 failed ({why})")))
        }
    }
}

/// The descriptor fusermount3 sends in one SCM_RIGHTS message, after one data byte.
fn receive_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut byte = [0u8; 1];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match recvmsg(socket, &mut [io::IoSliceMut::new(&mut byte)], &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r?,
        }
    };
    if received.bytes == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "fusermount3 sent no descriptor"));
    }
    // Any descriptor beyond the first (there should be none) is closed with the drain.
    let fd = control.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    fd.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "fusermount3 sent no descriptor"))
}
