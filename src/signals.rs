//! SIGINT, SIGTERM and SIGHUP handled on a thread of their own, for the processes that
//! must finish something before they end: a mount server (unmount, drop its record)
//! and a pull drawing progress lines (end them cleanly).
//!
//! A thread is created with its creator's signal mask, and the kernel hands a signal
//! sent to the process to any thread that doesn't block it. A thread started before the
//! mask was set (the blocking HTTP client's runtime) would take the default action and
//! end the process mid-way. So the signals are blocked before any other thread exists,
//! and one thread waits for them with `sigwait` and runs the handler.
//!
//! A signal the process was started with ignored stays ignored, as in any program:
//! `nohup` ignores SIGHUP, a script's background job SIGINT. (Blocked, it would be
//! queued for `sigwait` instead of being dropped.)
//!
//! These calls stay libc's: rustix has signal masks and sigwait only in its `runtime`
//! module (`kernel_sigprocmask`, `kernel_sigwait`), which is for implementing a libc and
//! bypasses the signals libc reserves for itself.

/// Block SIGINT, SIGTERM and SIGHUP (those not ignored) in this thread, and so in every
/// thread started after it, and call `handler` with each one that comes, on a thread of
/// its own. Call it before any other thread starts. If that thread can't be started,
/// the signals are unblocked again (they keep their default actions) and the error
/// comes back.
pub fn handle(handler: impl Fn(i32) + Send + 'static) -> std::io::Result<()> {
    // SAFETY: signal-set calls on a zeroed sigset_t, which sigemptyset initialises;
    // sigaction with a null new action only reads the current one.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let mut old: libc::sigaction = std::mem::zeroed();
            let ignored = libc::sigaction(s, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN;
            if !ignored {
                libc::sigaddset(&mut set, s);
            }
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || loop {
        let mut sig = 0;
        // SAFETY: set is an initialised sigset_t and sig a writable int.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            handler(sig);
        }
    });
    if let Err(e) = spawned {
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
        return Err(e);
    }
    Ok(())
}
