//! The command line: global options, the subcommand list, and the context every
//! subcommand runs with. Each subcommand lives in its own module with its clap `Args`
//! and its `run`.

pub mod cat;
pub mod check;
pub mod cp;
pub mod diff;
pub mod export;
pub mod files;
pub mod history;
pub mod index;
pub mod inspect;
pub mod layers;
pub mod login;
pub mod logout;
pub mod ls;
pub mod mount;
pub mod opening;
pub mod progress;
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
    /// Store directory [default: /var/lib/imgfs for root, else $XDG_DATA_HOME/imgfs]
    #[arg(long, global = true, env = "IMGFS_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Talk plain HTTP to this registry host (repeatable; loopback hosts always are)
    #[arg(long = "insecure-registry", global = true, value_name = "HOST")]
    pub insecure_registries: Vec<String>,

    /// Give up on a registry that stays silent this long (to connect, answer, or send
    /// more of a body) [default: 60]
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
    /// List repositories of a registry whose name contains a term
    Search(search::Args),
    /// Log in to a registry (keeps the credentials as `docker login` does)
    Login(login::Args),
    /// Log out from a registry (removes the kept credentials)
    Logout(logout::Args),
    /// Verify the store (blobs, indexes, records, mounts); --repair removes what is damaged
    Check(check::Args),
    /// Publish layer indexes next to an image in its registry, or inspect them
    Index(index::Args),
    /// Print files of an image to stdout, without a mount
    Cat(cat::Args),
    /// Copy a file or directory out of an image (`docker cp`), without a mount
    Cp(cp::Args),
    /// List the files of an image, without a mount
    Files(files::Args),
    /// Write an image's flattened tree as a tar stream (`docker export`)
    Export(export::Args),
    /// Show the paths that differ between two images
    Diff(diff::Args),
    /// Show an image's history (`docker history`)
    History(history::Args),
    /// Show what each layer adds, changes, removes and wastes (dive's figures)
    Layers(layers::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout
    Man,
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
        Command::Man => return man_page(),
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
        Command::Cat(a) => cat::run(&ctx, a),
        Command::Cp(a) => cp::run(&ctx, a),
        Command::Files(a) => files::run(&ctx, a),
        Command::Export(a) => export::run(&ctx, a),
        Command::Diff(a) => diff::run(&ctx, a),
        Command::History(a) => history::run(&ctx, a),
        Command::Layers(a) => layers::run(&ctx, a),
        Command::Logout(a) => logout::run(&ctx, a),
        // Returned above, before the store was opened.
        Command::Completions(a) => completions(a),
        Command::Man => man_page(),
    }
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

/// `imgfs man`: the roff man page, from the same definitions; each subcommand's
/// options are on its `--help`.
fn man_page() -> Result<()> {
    use clap::CommandFactory;
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    std::io::Write::flush(&mut out)?;
    Ok(())
}
