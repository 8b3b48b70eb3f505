//! `imgfs check [--repair]`: verify the store from the bytes up and report each damaged
//! item on a line of its own: every blob against its digest, every layer TOC against
//! its layer (format, the digest it was built for, every page's checksum, its re-encoded
//! copy against the TOC's block checksums), every image
//! record against the blobs it must have (config, and for each manifest the image is
//! known by, the manifest and its index; layers are fetched lazily, so one that is
//! absent is not damage), tags against the records, and the
//! mount records against their servers. It fails when anything is damaged.
//!
//! With `--repair` each damaged item is removed instead, and the command fails only
//! when a removal does: a removed blob or index is fetched or rebuilt by the next pull
//! or mount that needs it; a removed image record by pulling the image again.
//!
//! The whole check holds a GC lease, so no sweep removes a file while it is looked at;
//! pulls and mounts go on meanwhile (they only add complete, verified files).

use super::Context;
use crate::digest::{digest_reader, Digest};
use crate::image::ImageConfig;
use crate::layer::data::Sums;
use crate::layer::toc::{AccessKind, Toc};
use crate::store::mounts::{process_start_ticks, MountRecord};
use crate::store::Store;
use anyhow::{bail, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove what is damaged (a later pull or mount fetches it again)
    #[arg(long)]
    pub repair: bool,
}

/// One pass of the check over one kind of item.
type Step = fn(&Store, &mut Counts) -> Result<Vec<Damage>>;

/// One damaged item: what to say, and how to remove it.
struct Damage {
    what: String,
    remove: Removal,
}

enum Removal {
    /// A file, with the files derived from it.
    Files(Vec<PathBuf>),
    /// An image record and the tags and pins that name it.
    Image(Digest),
    /// A tag that names an image without a record.
    Tag(String),
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let store = &ctx.store;
    let _lease = store.writer_guard()?;
    let mut counts = Counts::default();
    let mut out = std::io::stdout().lock();
    let mut damaged = 0;
    let mut failed = 0;
    // Blobs first: with --repair a damaged blob is gone before the records that name
    // it are checked, so those are reported (and removed) too.
    let steps: [Step; 4] = [blobs, indexes, records, mounts];
    for step in steps {
        for d in step(store, &mut counts)? {
            damaged += 1;
            if !args.repair {
                writeln!(out, "damaged: {}", d.what)?;
                continue;
            }
            match remove(store, &d.remove) {
                Ok(()) => writeln!(out, "removed: {}", d.what)?,
                Err(e) => {
                    failed += 1;
                    writeln!(out, "damaged: {} (cannot remove: {e:#})", d.what)?;
                }
            }
        }
    }
    let Counts { blobs, indexes, images, mounts } = counts;
    let summary = format!("{blobs} blobs, {indexes} layer TOCs, {images} images, {mounts} mount records");
    if damaged == 0 {
        writeln!(out, "store {} is consistent: {summary}", store.root().display())?;
        return Ok(());
    }
    out.flush()?;
    if !args.repair {
        bail!("{damaged} damaged items in the store {} ({summary}); imgfs check --repair removes them", root(store));
    }
    if failed > 0 {
        bail!("{failed} of {damaged} damaged items in the store {} could not be removed", root(store));
    }
    Ok(())
}

fn root(store: &Store) -> String {
    store.root().display().to_string()
}

#[derive(Default)]
struct Counts {
    blobs: usize,
    indexes: usize,
    images: usize,
    mounts: usize,
}

/// Names in a store directory, sorted, without the temp files of writers at work.
fn names(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with(".tmp-") {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// A blob and what was derived from it, all to go together.
fn blob_files(store: &Store, d: &Digest) -> Vec<PathBuf> {
    vec![store.blob_path(d), store.toc_path(d), store.reframed_path(d)]
}

fn blobs(store: &Store, counts: &mut Counts) -> Result<Vec<Damage>> {
    let dir = store.root().join("blobs/sha256");
    let mut damage = Vec::new();
    for name in names(&dir)? {
        counts.blobs += 1;
        let path = dir.join(&name);
        let Ok(d) = format!("sha256:{name}").parse::<Digest>() else {
            damage.push(Damage {
                what: format!("blob file {name}: not named by a sha256 digest"),
                remove: Removal::Files(vec![path]),
            });
            continue;
        };
        let actual = fs::File::open(&path).and_then(digest_reader);
        let what = match actual {
            Ok((a, _)) if a == d => continue,
            Ok((a, n)) => format!("blob {d}: its {n} bytes hash to {a}"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // removed by a repair meanwhile
            Err(e) => format!("blob {d}: cannot be read: {e}"),
        };
        damage.push(Damage { what, remove: Removal::Files(blob_files(store, &d)) });
    }
    Ok(damage)
}

fn indexes(store: &Store, counts: &mut Counts) -> Result<Vec<Damage>> {
    let dir = store.root().join("toc/sha256");
    let mut damage = Vec::new();
    // Layers of images read from an OCI layout are indexed where they are, their blobs
    // never copied into the store: those indexes are fine while the layout has the blob.
    let in_layouts: std::collections::HashSet<Digest> = store
        .db()?
        .images
        .values()
        .flat_map(|rec| rec.manifests())
        .filter_map(|m| {
            let dir = crate::origin::Origin::parse(&m.source).ok()?.layout_dir()?.to_path_buf();
            Some(
                m.layers
                    .iter()
                    .filter(move |l| dir.join("blobs/sha256").join(l.digest.hex()).is_file())
                    .map(|l| l.digest.clone())
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect();
    for name in names(&dir)? {
        counts.indexes += 1;
        let path = dir.join(&name);
        let d = name.strip_suffix(".toc").and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok());
        let Some(d) = d else {
            damage.push(Damage {
                what: format!("TOC file {name}: not named by a layer digest"),
                remove: Removal::Files(vec![path]),
            });
            continue;
        };
        let what = if !store.has_blob(&d) && !in_layouts.contains(&d) {
            format!("TOC of layer {d}: the layer blob is not in the store")
        } else {
            match Toc::open(&path, d.as_str()).and_then(|t| t.verify().map(|()| t)) {
                // A re-encoded copy has no digest of its own: its block sums vouch for it.
                Ok(toc) if toc.access() == AccessKind::Reframed => {
                    match Sums::Toc(std::sync::Arc::new(toc)).verify(&store.reframed_path(&d)) {
                        Ok(()) => continue,
                        Err(e) => format!("TOC of layer {d}: its re-encoded copy: {e}"),
                    }
                }
                Ok(_) => continue,
                Err(e) => format!("TOC of layer {d}: {}", crate::log::Chain(&e)),
            }
        };
        // The blob stays: the next pull or mount indexes it again.
        damage.push(Damage { what, remove: Removal::Files(vec![path, store.reframed_path(&d)]) });
    }
    Ok(damage)
}

fn records(store: &Store, counts: &mut Counts) -> Result<Vec<Damage>> {
    let db = store.db()?;
    let mut damage = Vec::new();
    for (id, rec) in &db.images {
        counts.images += 1;
        let names = db.tags_of(id);
        let shown = if names.is_empty() { id.to_string() } else { format!("{id} ({})", names.join(", ")) };
        // Every manifest the image is known by, each with its index if it came from one.
        let manifests = rec.manifests();
        let must_have = std::iter::once(&rec.id)
            .chain(manifests.iter().flat_map(|m| std::iter::once(&m.manifest).chain(m.image_index.as_ref())));
        let problem = if &rec.id != id || rec.config.digest != rec.id {
            Some("its ID, key and config digest differ".to_string())
        } else if let Some(missing) = must_have.into_iter().find(|d| !store.has_blob(d)) {
            Some(format!("blob {missing} it names is not in the store"))
        } else {
            match store.read_blob(&rec.id).map(|b| serde_json::from_slice::<ImageConfig>(&b)) {
                Ok(Ok(c)) => manifests.iter().find(|m| m.layers.len() != c.rootfs.diff_ids.len()).map(|m| {
                    format!(
                        "its config lists {} diff_ids for the {} layers of manifest {}",
                        c.rootfs.diff_ids.len(),
                        m.layers.len(),
                        m.manifest
                    )
                }),
                Ok(Err(e)) => Some(format!("its config is not valid: {e}")),
                Err(e) => Some(format!("{e:#}")),
            }
        };
        if let Some(p) = problem {
            damage.push(Damage { what: format!("image {shown}: {p}"), remove: Removal::Image(id.clone()) });
        }
    }
    for (tag, id) in &db.tags {
        if !db.images.contains_key(id) {
            damage.push(Damage {
                what: format!("tag {tag}: names image {id}, which has no record"),
                remove: Removal::Tag(tag.clone()),
            });
        }
    }
    Ok(damage)
}

fn mounts(store: &Store, counts: &mut Counts) -> Result<Vec<Damage>> {
    let dir = store.root().join("mounts");
    let db = store.db()?;
    let mut damage = Vec::new();
    for name in names(&dir)? {
        counts.mounts += 1;
        let path = dir.join(&name);
        let rec = fs::read(&path).ok().and_then(|b| serde_json::from_slice::<MountRecord>(&b).ok());
        let what = match rec {
            None if !path.exists() => continue, // its server ended meanwhile
            None => format!("mount record {name}: not a mount record"),
            Some(m) if process_start_ticks(m.pid) != Some(m.start_ticks) => {
                format!("mount record {name}: its server (pid {}, at {}) is not running", m.pid, m.mountpoint.display())
            }
            Some(m) if !db.images.contains_key(&m.image) => {
                format!("mount record {name}: image {} mounted at {} has no record", m.image, m.mountpoint.display())
            }
            Some(_) => continue,
        };
        damage.push(Damage { what, remove: Removal::Files(vec![path]) });
    }
    Ok(damage)
}

fn remove(store: &Store, r: &Removal) -> Result<()> {
    match r {
        Removal::Files(paths) => {
            for p in paths {
                match fs::remove_file(p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
            Ok(())
        }
        Removal::Image(id) => store.update_db(|db| {
            db.images.remove(id);
            db.tags.retain(|_, v| v != id);
            Ok(())
        }),
        Removal::Tag(tag) => store.update_db(|db| {
            db.tags.remove(tag);
            Ok(())
        }),
    }
}
