//! `imgfs login`: check a user name and password against a registry, then keep them in
//! docker's `config.json` (or the credential helper it names) as `docker login` does.
//! The password comes from `--password-stdin`, `-p`, or a prompt on the terminal
//! without echo; it is never printed.

use super::Context;
use crate::registry::login::{self, Saved};
use anyhow::{bail, Context as _, Result};
use std::io::{BufRead, Read, Write};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// User name (asked on the terminal if not given)
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password or token (visible to other users in the process list: prefer
    /// --password-stdin)
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password or token from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// Registry host[:port] [default: Docker Hub]
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let registry = login::registry_of(args.server.as_deref())?;
    let username = match args.username {
        Some(u) => u,
        None if args.password_stdin => bail!("--password-stdin needs --username"),
        None => ask_line("Username: ")?,
    };
    if username.is_empty() {
        bail!("the user name is empty");
    }
    let password = if args.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read the password from stdin")?;
        // `echo $TOKEN | imgfs login` ends it with a newline that is not part of it.
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else {
        ask_secret("Password: ").context("cannot ask for the password (no terminal?): use --password-stdin")?
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let client = ctx.client()?;
    // Nothing is saved unless the registry took the credentials.
    client.check_login(&registry, &username, &password)?;
    let dir = match &ctx.client_options().docker_config_dir {
        Some(d) => d.clone(),
        None => login::docker_config_dir()?,
    };
    match login::save(&dir, &registry, &username, &password)? {
        Saved::File(path) => eprintln!("Credentials for {} saved in {}", login::server_key(&registry), path.display()),
        Saved::Helper(helper) => eprintln!("Credentials for {} saved by {helper}", login::server_key(&registry)),
    }
    println!("Login Succeeded");
    Ok(())
}

/// One line typed on the terminal with echo off, as getpass(3) reads it: echo goes off
/// (and typeahead is dropped) *before* the prompt is written. Writing the prompt first,
/// as the `rpassword` crate does, echoed a password typed as soon as the prompt showed
/// (`login_asks_on_the_terminal_without_echo` caught it, now and then).
fn ask_secret(prompt: &str) -> std::io::Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let mut tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let saved = tcgetattr(&tty)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&tty, OptionalActions::Flush, &quiet)?;
    let line = tty.write_all(prompt.as_bytes()).and_then(|()| {
        let mut line = String::new();
        std::io::BufReader::new(&tty).read_line(&mut line).map(|_| line)
    });
    // The terminal gets its echo back whatever the read gave.
    let _ = tcsetattr(&tty, OptionalActions::Flush, &saved);
    Ok(line?.trim_end_matches(['\n', '\r']).to_string())
}

/// One line typed on the terminal (not stdin, which may be a pipe).
fn ask_line(prompt: &str) -> Result<String> {
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask for the user name on: give --username")?;
    tty.write_all(prompt.as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(tty).read_line(&mut line)?;
    Ok(line.trim().to_string())
}
