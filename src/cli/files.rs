//! `imgfs files [-R] [-l] [--format F] REF [PATH]`: the entries of a directory of an
//! image (with `-R` everything below it), with no mount. One path per line; `-l` adds
//! type and mode, owner, size, mtime and link target as `tar -tv` shows them;
//! `--format` takes the same templates as `ls` (`json`: one object per line).

use super::opening::{open, ImageOptions};
use super::Context;
use crate::layer::Kind;
use crate::template::Format;
use crate::tree::NodeInfo;
use crate::walk::{self, entries, join, resolve, Resolved};
use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub image: ImageOptions,
    /// List everything below PATH, not only its entries
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Long listing: type and mode, owner, size, mtime, link target
    #[arg(short = 'l', long)]
    pub long: bool,
    /// Format each entry with a Go-style template, `table TEMPLATE`, or `json` (fields
    /// .Path .Name .Type .Mode .Perms .UID .GID .Size .Mtime .Nlink .Link .Rdev .Xattrs)
    #[arg(long)]
    pub format: Option<String>,
    /// Image reference or ID
    #[arg(value_name = "REF")]
    pub reference: String,
    /// A directory (or file) inside the image
    #[arg(value_name = "PATH", default_value = "/")]
    pub path: std::ffi::OsString,
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let format =
        args.format.as_deref().map(|f| Format::parse(Some(f), "", true)).transpose().context("invalid --format")?;
    let image = open(ctx, &args.reference, &args.image)?;
    let top = resolve(&image.fs, args.path.as_bytes(), true)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut table_rows = Vec::new();
    let mut emit = |node: &Resolved| -> Result<()> {
        match &format {
            None if args.long => out.write_all(&long_line(node))?,
            None => {
                out.write_all(&node.path)?;
                out.write_all(b"\n")?;
            }
            Some(Format::Table(_)) => table_rows.push(value(node)),
            Some(f) => out.write_all(f.render(&[value(node)], &Value::Null).context("invalid --format")?.as_bytes())?,
        }
        Ok(())
    };
    if !top.is_dir() {
        emit(&top)?;
    } else if args.recursive {
        walk::walk(&image.fs, &top, |rel, node| if rel.is_empty() { Ok(()) } else { emit(node) })?;
    } else {
        for (name, info) in entries(&image.fs, &top)? {
            emit(&Resolved { info, path: join(&top.path, &name) })?;
        }
    }
    if let Some(f @ Format::Table(_)) = &format {
        out.write_all(f.render(&table_rows, &titles()).context("invalid --format")?.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::File | Kind::Hardlink => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Char => "char",
        Kind::Block => "block",
        Kind::Fifo => "fifo",
    }
}

/// `ls -l`'s ten characters: the type, then rwx for user, group and others with
/// setuid, setgid and sticky shown as `ls` shows them.
pub fn perms(info: &NodeInfo) -> String {
    let t = match info.kind {
        Kind::File | Kind::Hardlink => '-',
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::Char => 'c',
        Kind::Block => 'b',
        Kind::Fifo => 'p',
    };
    let m = info.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special = |x: u32, s: u32, lower: char, upper: char| match (m & x != 0, m & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

fn mtime_text(mtime: i64, layout: &str) -> String {
    jiff::Timestamp::from_second(mtime).map(|t| t.strftime(layout).to_string()).unwrap_or_else(|_| mtime.to_string())
}

/// `tar -tv`'s line: `-rw-r--r-- 0/0 11 2020-09-13 12:26 /etc/hostname`.
fn long_line(node: &Resolved) -> Vec<u8> {
    let i = &node.info;
    let size = match i.kind {
        Kind::Char | Kind::Block => format!("{},{}", i.rdev.0, i.rdev.1),
        Kind::Dir => "0".into(),
        _ => i.size.to_string(),
    };
    let mut line =
        format!("{} {}/{} {size:>10} {} ", perms(i), i.uid, i.gid, mtime_text(i.mtime, "%Y-%m-%d %H:%M")).into_bytes();
    line.extend_from_slice(&node.path);
    if let (Kind::Symlink, Some(target)) = (i.kind, &i.link) {
        line.extend_from_slice(b" -> ");
        line.extend_from_slice(target);
    }
    line.push(b'\n');
    line
}

fn value(node: &Resolved) -> Value {
    let i = &node.info;
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let xattrs: serde_json::Map<String, Value> =
        i.xattrs.iter().map(|(k, v)| (lossy(k), Value::String(lossy(v)))).collect();
    json!({
        "Path": lossy(&node.path),
        "Name": lossy(node.name()),
        "Type": type_name(i.kind),
        "Mode": format!("{:04o}", i.mode & 0o7777),
        "Perms": perms(i),
        "UID": i.uid,
        "GID": i.gid,
        "Size": if i.kind == Kind::Dir { 0 } else { i.size },
        "Mtime": mtime_text(i.mtime, "%Y-%m-%dT%H:%M:%SZ"),
        "Nlink": i.nlink,
        "Link": i.link.as_deref().filter(|_| i.kind == Kind::Symlink).map(lossy).unwrap_or_default(),
        "Rdev": format!("{},{}", i.rdev.0, i.rdev.1),
        "Xattrs": xattrs,
    })
}

fn titles() -> Value {
    json!({
        "Path": "PATH", "Name": "NAME", "Type": "TYPE", "Mode": "MODE", "Perms": "PERMS",
        "UID": "UID", "GID": "GID", "Size": "SIZE", "Mtime": "MTIME", "Nlink": "NLINK",
        "Link": "LINK", "Rdev": "RDEV", "Xattrs": "XATTRS",
    })
}
