//! A subtree of an image (the whole image included) as one tar stream, written the way
//! `docker export` and `crane export` write a flattened image: the union with whiteouts
//! applied (no markers), each name once, hard links as hard links to the first name of
//! their group in the stream, and PAX extended headers for what ustar can't hold (long
//! or non-ASCII names and link targets, xattrs as `SCHILY.xattr.*`, large ids, sizes
//! and times). Directories are named with a trailing `/`, entries depth first in byte
//! order of their names, so the same image always gives the same stream.

use crate::fs::Fs;
use crate::layer::Kind;
use crate::walk::{self, BufferedFile, Resolved};
use std::collections::HashMap;
use std::io::Write;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Walk(#[from] walk::Error),
    #[error("writing the tar stream")]
    Io(#[from] std::io::Error),
}

/// How the entries are named.
pub enum Naming<'a> {
    /// The top is `./` (or, for a non-directory, its own name); what is below it is
    /// named relative to it: `etc/`, `etc/hostname` (`export`, and `cp DIR/. -`).
    Relative,
    /// Everything under this name: `etc/`, `etc/hostname` for `/etc` named `etc`
    /// (`cp DIR -`; `cp -L LINK -` names what the link leads to after the link).
    Under(&'a [u8]),
}

/// Write `top` and everything below it to `out` as a tar stream, ending with the two
/// zero blocks of the end of an archive. A stream that fails midway ends where it
/// failed, without them, so that a reader sees a truncated archive rather than a
/// complete one with files missing.
pub fn write<W: Write>(fs: &Fs, top: &Resolved, naming: Naming<'_>, out: W) -> Result<W, Error> {
    let mut builder = tar::Builder::new(Cut { out, cut: false });
    // First name written of each hard-link group, by inode.
    let mut first: HashMap<u64, Vec<u8>> = HashMap::new();
    let base: Vec<u8> = match naming {
        Naming::Under(name) => name.to_vec(),
        Naming::Relative if !top.is_dir() => top.name().to_vec(),
        Naming::Relative => Vec::new(),
    };
    let walked = walk::walk(fs, top, |rel, node| -> Result<(), Error> {
        let mut name = if base.is_empty() {
            if rel.is_empty() {
                b".".to_vec()
            } else {
                rel.to_vec()
            }
        } else if rel.is_empty() {
            base.clone()
        } else {
            [&base[..], b"/", rel].concat()
        };
        let info = &node.info;
        let link_to = if info.kind != Kind::Dir && info.nlink > 1 {
            match first.get(&info.ino) {
                Some(n) => Some(n.clone()),
                None => {
                    first.insert(info.ino, name.clone());
                    None
                }
            }
        } else {
            None
        };
        if info.kind == Kind::Dir {
            name.push(b'/');
        }
        append(&mut builder, fs, node, &name, link_to.as_deref())
    });
    if let Err(e) = walked {
        // `tar::Builder` ends the archive when it is dropped: cut the output first.
        builder.get_mut().cut = true;
        return Err(e);
    }
    Ok(builder.into_inner()?.out)
}

/// The output of a stream, refusing every write once `cut`.
struct Cut<W> {
    out: W,
    cut: bool,
}

impl<W: Write> Write for Cut<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.cut {
            return Err(std::io::Error::other("the tar stream was cut off where it failed"));
        }
        self.out.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The largest number ustar's 8-byte octal fields hold (7 digits).
const USTAR_MAX_ID: u64 = 0o7777777;
/// The largest size ustar's 12-byte octal field holds (11 digits).
const USTAR_MAX_SIZE: u64 = 0o77777777777;

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    fs: &Fs,
    node: &Resolved,
    name: &[u8],
    hard_link_to: Option<&[u8]>,
) -> Result<(), Error> {
    let info = &node.info;
    let mut header = tar::Header::new_ustar();
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let (kind, size) = match (hard_link_to, info.kind) {
        (Some(_), _) => (tar::EntryType::Link, 0),
        (None, Kind::File | Kind::Hardlink) => (tar::EntryType::Regular, info.size),
        (None, Kind::Dir) => (tar::EntryType::Directory, 0),
        (None, Kind::Symlink) => (tar::EntryType::Symlink, 0),
        (None, Kind::Char) => (tar::EntryType::Char, 0),
        (None, Kind::Block) => (tar::EntryType::Block, 0),
        (None, Kind::Fifo) => (tar::EntryType::Fifo, 0),
    };
    header.set_entry_type(kind);
    set_name(&mut header.as_old_mut().name, name, "path", &mut pax);
    let link: Option<&[u8]> = match hard_link_to {
        Some(target) => Some(target),
        None => info.link.as_deref().filter(|_| info.kind == Kind::Symlink),
    };
    if let Some(target) = link {
        set_name(&mut header.as_old_mut().linkname, target, "linkpath", &mut pax);
    }
    header.set_mode(info.mode & 0o7777);
    for (value, key, set) in [
        (info.uid as u64, "uid", tar::Header::set_uid as fn(&mut tar::Header, u64)),
        (info.gid as u64, "gid", tar::Header::set_gid),
    ] {
        if value > USTAR_MAX_ID {
            pax.push((key.into(), value.to_string().into_bytes()));
            set(&mut header, 0);
        } else {
            set(&mut header, value);
        }
    }
    if info.mtime < 0 || info.mtime as u64 > USTAR_MAX_SIZE {
        pax.push(("mtime".into(), info.mtime.to_string().into_bytes()));
        header.set_mtime(0);
    } else {
        header.set_mtime(info.mtime as u64);
    }
    if size > USTAR_MAX_SIZE {
        pax.push(("size".into(), size.to_string().into_bytes()));
        // The header's own field is ignored by readers once PAX gives the size; tar's
        // `set_size` writes it in GNU's binary form, which they also read.
    }
    header.set_size(size);
    if matches!(info.kind, Kind::Char | Kind::Block) {
        header.set_device_major(info.rdev.0)?;
        header.set_device_minor(info.rdev.1)?;
    }
    for (k, v) in &info.xattrs {
        pax.push((format!("SCHILY.xattr.{}", String::from_utf8_lossy(k)), v.clone()));
    }
    if !pax.is_empty() {
        builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }
    header.set_cksum();
    if kind == tar::EntryType::Regular {
        builder.append(&header, BufferedFile::new(fs, node)).map_err(read_or_write)?;
    } else {
        builder.append(&header, std::io::empty())?;
    }
    Ok(())
}

/// A file's read failure comes back from `tar`'s copy as an `io::Error` holding the
/// walk's error: give it back as that (an image that cannot be read), not as a failure
/// to write the stream.
fn read_or_write(e: std::io::Error) -> Error {
    if !e.get_ref().is_some_and(|inner| inner.is::<walk::Error>()) {
        return Error::Io(e);
    }
    Error::Walk(*e.into_inner().and_then(|inner| inner.downcast().ok()).expect("holds a walk::Error"))
}

/// Put `value` in a ustar name field if it fits as ASCII, else a PAX record `key` (the
/// field then holds as much of it as fits, for readers that don't know PAX).
fn set_name(field: &mut [u8], value: &[u8], key: &str, pax: &mut Vec<(String, Vec<u8>)>) {
    let fits = value.len() <= field.len() && value.is_ascii();
    if !fits {
        pax.push((key.to_string(), value.to_vec()));
    }
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}
