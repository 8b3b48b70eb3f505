//! `imgfs logout`: remove a registry's credentials from docker's `config.json` and from
//! the credential helper that file names, as `docker logout` does.

use super::Context;
use crate::registry::login;
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Registry host[:port] [default: Docker Hub]
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let registry = login::registry_of(args.server.as_deref())?;
    let dir = match &ctx.client_options().docker_config_dir {
        Some(d) => d.clone(),
        None => login::docker_config_dir()?,
    };
    let key = login::server_key(&registry);
    if login::remove(&dir, &registry)? {
        println!("Removing login credentials for {key}");
    } else {
        // Not an error, as for docker: the goal (no credentials kept) holds.
        println!("Not logged in to {key}");
    }
    Ok(())
}
