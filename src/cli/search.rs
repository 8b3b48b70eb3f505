//! `imgfs search`: list a registry's repositories whose name contains a term, from
//! the registry's catalog (Docker Hub's search service is not part of the
//! distribution API, so only registries that serve `/v2/_catalog` are searchable).

use super::Context;
use anyhow::Result;
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Registry to search (host[:port])
    #[arg(long, default_value = "docker.io")]
    pub registry: String,
    /// Limit the number of results
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    /// Only print names
    #[arg(short, long)]
    pub quiet: bool,
    /// Text the repository names must contain
    #[arg(value_name = "TERM")]
    pub term: String,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let repos = ctx.client()?.catalog(&args.registry)?;
    let hits: Vec<&String> = repos.iter().filter(|r| r.contains(&args.term)).take(args.limit).collect();
    let mut out = std::io::stdout().lock();
    if !args.quiet {
        writeln!(out, "NAME")?;
    }
    for r in hits {
        writeln!(out, "{}", crate::reference::familiar_name(&format!("{}/{}", args.registry, r)))?;
    }
    Ok(())
}
