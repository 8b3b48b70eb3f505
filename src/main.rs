//! The `imgfs` command: parse arguments, set up logging, run, print the error chain on
//! one line and choose the exit code. Everything else lives in the library.

// Every unsafe operation, inside an `unsafe fn` too, sits in its own `unsafe` block
// with a SAFETY comment that says why it holds.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io::{ErrorKind, IsTerminal};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = imgfs::cli::parse();
    // A mount server handles its signals on one thread of its own; the mask that
    // keeps them from every other thread must be set before any thread exists.
    let mut server = false;
    if let imgfs::cli::Command::Mount(args) = &cli.command {
        if imgfs::cli::mount::is_server(args) {
            imgfs::server::handle_signals();
            server = true;
        }
    }
    // A server whose stderr is not a terminal writes its log file (see `mount`): there
    // the time of each line says what happened when.
    imgfs::log::init(server && !std::io::stderr().is_terminal());
    match imgfs::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read our output stopped (`imgfs ls | head -1`): end quietly, as
        // other Unix tools do.
        Err(e) if closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the context chain with ": ", keeping the error on one line.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("imgfs: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Did the command fail only because its output pipe was closed? A broken pipe from
/// elsewhere (a registry connection) is a real error, so stdout itself must be a pipe
/// nobody reads any more.
fn closed_stdout(e: &anyhow::Error) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    // No waiting; poll reports POLLERR on the write end of a pipe whose read end is closed.
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(&stdout, PollFlags::OUT)];
    let reader_gone = matches!(poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 0 })), Ok(1))
        && fds[0].revents().contains(PollFlags::ERR);
    reader_gone
        && e.chain().any(|c| {
            let kind = match c.downcast_ref::<std::io::Error>() {
                Some(io) => Some(io.kind()),
                // serde_json wraps the write error of a serialisation to stdout.
                None => c.downcast_ref::<serde_json::Error>().and_then(|j| j.io_error_kind()),
            };
            kind == Some(ErrorKind::BrokenPipe)
        })
}
