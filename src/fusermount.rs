//! Mounting through `fusermount3` when `/dev/fuse` is not open to us.
//!
//! fuser's own mount opens `/dev/fuse` first and gives up if it can't, and only falls
//! back to `fusermount3` when the mount(2) call itself is refused. libfuse goes to the
//! setuid-root `fusermount3` in that case too: `_FUSE_COMMFD` names our end of a socket
//! pair, fusermount3 opens the device, mounts, and sends the descriptor back with
//! SCM_RIGHTS, and we serve on it. (Debian's fusermount3 opens the device with the
//! user's rights, so a device closed to the user fails there as well: the admin's
//! permissions on /dev/fuse decide, and the caller's error says how to change them.)

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
    // SAFETY: only fcntl(2) between fork and exec, on a descriptor we own; it keeps
    // fusermount3's end of the socket open across exec.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(theirs_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(theirs_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
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
            Err(io::Error::other(format!("fusermount3 failed too ({why})")))
        }
    }
}

/// The descriptor fusermount3 sends in one SCM_RIGHTS message, after one data byte.
fn receive_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // Room for one cmsg header and one int, aligned as CMSG_SPACE wants.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer in it points at a live local buffer
    // of the length given, and CMSG_* only walk inside `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = loop {
            let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break n;
            }
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "fusermount3 sent no descriptor"));
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "fusermount3 sent no descriptor"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
        if fd < 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "fusermount3 sent a bad descriptor"));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}
