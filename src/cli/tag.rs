//! `imgfs tag SOURCE TARGET`: give a local image another name. SOURCE is anything
//! `Db::find` resolves (a reference or an ID); TARGET must be a tag reference. Moving a
//! tag that named another image leaves that image dangling if it was its last name,
//! as in docker; `prune` removes it later.

use super::Context;
use crate::reference::Reference;
use anyhow::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Image to name (reference or ID)
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// The new name ([registry/]name[:tag])
    #[arg(value_name = "TARGET")]
    pub target: String,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let target = Reference::parse(&args.target)?;
    if target.digest.is_some() {
        bail!("invalid target {:?}: a tag cannot contain a digest", args.target);
    }
    // parse() gives every reference without a digest a tag (`latest` by default).
    let tag = target.tag.as_deref().unwrap_or(crate::reference::DEFAULT_TAG);
    let key = format!("{}:{tag}", target.name());
    // Resolve the source under the same lock as the change, so a concurrent rm or
    // pull cannot make us tag an image that is gone.
    ctx.store.update_db(|db| {
        let (id, _) = db.find(&args.source)?;
        db.set_tag(&key, &id);
        Ok(())
    })
}
