//! The command line: global options, the subcommand list, and the context every
//! subcommand runs with. Each subcommand lives in its own module with its clap `Args`
//! and its `run`.

pub mod check;
pub mod index;
pub mod inspect;
pub mod login;
pub mod logout;
pub mod ls;
pub mod mount;
pub mod prune;
pub mod pull;
pub mod rm;
pub mod search;
pub mod tag;
pub mod umount;

use crate::registry::{Client, ClientOptions, LazyClient};
use crate::store::Store;
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(name = "imgfs", version, about = "Mount container images as read-only directory trees")]
pub struct Cli {
    /// Store directory [default: /var/lib/imgfs for root, else $XDG_DATA_HOME/imgfs, or
    /// ~/.local/share/imgfs without XDG_DATA_HOME]
    #[arg(long, global = true, env = "IMGFS_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Registry host (HOST or HOST:PORT) to reach over HTTPS without checking its
    /// certificate, then over plain HTTP (repeatable; loopback hosts need no naming)
    /// [env: IMGFS_INSECURE_REGISTRIES=, comma-separated, added to these]
    // The variable is read in `run`, not by clap: it adds to the flags instead of
    // standing in for them.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST")]
    pub insecure_registries: Vec<String>,

    /// Time budget of one request to a registry, retries included: a registry silent
    /// this long (to connect, answer, or send more of a body) fails it [default: 60]
    #[arg(long, global = true, env = "IMGFS_TIMEOUT", value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pull an image (or every tag of a repository) into the store
    Pull(pull::Args),
    /// List images
    #[command(visible_alias = "images")]
    Ls(ls::Args),
    /// Show details of images as JSON
    Inspect(inspect::Args),
    /// Give an image another name
    Tag(tag::Args),
    /// Untag images and remove those no name refers to any more
    #[command(visible_alias = "rmi")]
    Rm(rm::Args),
    /// Remove dangling (with -a: all unused) images and unreferenced blobs
    Prune(prune::Args),
    /// Mount an image read-only at a directory (no arguments: list mounts)
    Mount(mount::Args),
    /// Unmount an imgfs mount
    Umount(umount::Args),
    /// Search Docker Hub for images (HOST/TERM: the repositories of registry HOST whose
    /// name contains TERM)
    Search(search::Args),
    /// Log in to a registry (keeps the credentials as `docker login` does)
    Login(login::Args),
    /// Log out from a registry (removes the kept credentials)
    Logout(logout::Args),
    /// Verify the store (blobs, indexes, records, mounts); --repair removes what is damaged
    Check(check::Args),
    /// Publish layer indexes next to an image in its registry, or inspect them
    Index(index::Args),
    /// Print a shell completion script (bash, elvish, fish, powershell, zsh)
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout, or write one page per command to a directory
    Man(ManArgs),
}

/// What every subcommand gets: the store and a lazily built registry client.
pub struct Context {
    pub store: Store,
    client: Arc<LazyClient>,
}

impl Context {
    pub fn client(&self) -> Result<Arc<Client>, crate::registry::RegistryError> {
        self.client.get()
    }

    /// The client, not built yet, for code that may never need it.
    pub fn lazy_client(&self) -> Arc<LazyClient> {
        Arc::clone(&self.client)
    }

    pub fn client_options(&self) -> &ClientOptions {
        self.client.options()
    }
}

pub fn run(cli: Cli) -> Result<()> {
    // These only print what clap knows: no store to open (it may not exist yet).
    match cli.command {
        Command::Completions(a) => return completions(a),
        Command::Man(a) => return man_pages(a),
        _ => {}
    }
    let root = cli.root.clone().unwrap_or_else(Store::default_root);
    let mut insecure = cli.insecure_registries.clone();
    if let Ok(env) = std::env::var("IMGFS_INSECURE_REGISTRIES") {
        insecure.extend(env.split([',', ' ']).filter(|s| !s.is_empty()).map(String::from));
    }
    let ctx = Context {
        store: Store::open(&root)?,
        client: Arc::new(LazyClient::new(ClientOptions {
            insecure_registries: insecure,
            docker_config_dir: None,
            timeout: cli.timeout.map(std::time::Duration::from_secs),
        })),
    };
    // A server killed with SIGKILL leaves its record and a dead mountpoint (ENOTCONN
    // to everything) behind: the next everyday command clears both. Not `umount`, which
    // does it itself so that it can say it unmounted that directory, nor a command that
    // inspects the store and wants to see them.
    let everyday = matches!(
        cli.command,
        Command::Pull(_)
            | Command::Ls(_)
            | Command::Inspect(_)
            | Command::Tag(_)
            | Command::Rm(_)
            | Command::Prune(_)
            | Command::Mount(_)
            | Command::Search(_)
    );
    if everyday {
        let _ = ctx.store.mounts();
    }
    match cli.command {
        Command::Pull(a) => pull::run(&ctx, a),
        Command::Ls(a) => ls::run(&ctx, a),
        Command::Inspect(a) => inspect::run(&ctx, a),
        Command::Tag(a) => tag::run(&ctx, a),
        Command::Rm(a) => rm::run(&ctx, a),
        Command::Prune(a) => prune::run(&ctx, a),
        Command::Mount(a) => mount::run(&ctx, a, &root),
        Command::Umount(a) => umount::run(&ctx, a),
        Command::Search(a) => search::run(&ctx, a),
        Command::Check(a) => check::run(&ctx, a),
        Command::Index(a) => index::run(&ctx, a),
        Command::Login(a) => login::run(&ctx, a),
        Command::Logout(a) => logout::run(&ctx, a),
        // Returned above, before the store was opened.
        Command::Completions(a) => completions(a),
        Command::Man(a) => man_pages(a),
    }
}

/// The command line as clap defines it, with each command's usage line fixed to the
/// one its help shows (`imgfs pull [OPTIONS] <REF>`). clap counts an option set from
/// the environment (`IMGFS_ROOT`, `DOCKER_DEFAULT_PLATFORM`) as given on the command
/// line, and would name it in a usage error: `Usage: imgfs pull --root <DIR> <REF>`.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    with_fixed_usage(Cli::command())
}

fn with_fixed_usage(mut cmd: clap::Command) -> clap::Command {
    fn fix(mut cmd: clap::Command) -> clap::Command {
        let usage = cmd.render_usage().to_string();
        let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage).to_string();
        cmd.override_usage(usage).mut_subcommands(fix)
    }
    // Built first, so that each subcommand's usage starts with its full name (`imgfs pull`).
    cmd.build();
    fix(cmd)
}

/// Parse the command line (see `command`), exiting as clap does on a usage error.
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `imgfs completions SHELL`: the completion script, generated from the same clap
/// definitions as the parser so that it cannot drift from it.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// Shell to complete for
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

fn completions(args: CompletionsArgs) -> Result<()> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "imgfs", &mut out);
    std::io::Write::flush(&mut out)?;
    Ok(())
}

/// `imgfs man [--dir DIR]`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write imgfs.1 and a page per command (imgfs-pull.1, imgfs-index-push.1, …) into
    /// DIR, e.g. /usr/local/share/man/man1, instead of printing imgfs.1
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `imgfs man`: roff man pages, from the same definitions as the parser. The main page
/// lists the commands as `imgfs-pull(1)` and so on: the pages `--dir` writes.
fn man_pages(args: ManArgs) -> Result<()> {
    use anyhow::Context as _;
    use clap::CommandFactory;
    // `imgfs help` is clap's own: no page of its own, so none to refer to.
    let cmd = with_fixed_usage(Cli::command().disable_help_subcommand(true));
    match args.dir {
        Some(dir) => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(cmd, &dir))
            .with_context(|| format!("cannot write the man pages in {}", dir.display())),
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            std::io::Write::flush(&mut out)?;
            Ok(())
        }
    }
}
