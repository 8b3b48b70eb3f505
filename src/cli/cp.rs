//! `imgfs cp [-L] REF:PATH DEST`: copy a file or directory out of an image with
//! `docker cp`'s semantics, with no container and no mount:
//! - a file to a DEST that is a directory lands in it under its own name, else it
//!   becomes (or replaces) the file DEST; a DEST ending in `/` must be a directory;
//! - a directory to a DEST that does not exist becomes DEST; to an existing directory
//!   it lands in it under its own name, or, for a SRC ending in `/.`, its contents are
//!   copied into it; a directory is never copied onto a file;
//! - DEST `-` writes a tar stream of SRC to stdout (under SRC's name, or `./` for `/.`);
//! - `-L` follows SRC when it is a symbolic link (inside the image), else the link
//!   itself is copied; either way SRC's name is the last one of the PATH given.
//!
//! What is copied to a new name is made under a temporary name beside it (`extract`)
//! and renamed into place once complete, so a failure leaves nothing at DEST. A merge
//! into an existing directory is made in a temporary directory inside it and moved in
//! entry by entry: a failure midway leaves the entries moved so far (each complete)
//! and nothing else.

use super::opening::{open, ImageOptions};
use super::Context;
use crate::extract::{extract, extract_deferred};
use crate::local_source::LocalRef;
use crate::pending_file::{temp_beside, temp_in};
use crate::tar_stream::{self, Naming};
use crate::walk::resolve;
use anyhow::{bail, Context as _, Result};
use std::ffi::{OsStr, OsString};
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub image: ImageOptions,
    /// Follow SRC when it is a symbolic link
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// REF:PATH, the image and the path inside it (PATH is what follows the last `:/`
    /// after REF's transport, or the last `:` for a path relative to the image's root)
    #[arg(value_name = "REF:PATH")]
    pub source: OsString,
    /// Where to copy to on the host, or `-` for a tar stream on stdout
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

/// Split `REF:PATH`. An absolute PATH starts at the last `:/`; else the path is what
/// follows the last `:`. Neither is the `:` of a local source's transport
/// (`oci:/srv/layout:v2:etc/hostname`).
pub fn split_source(source: &[u8]) -> Option<(&[u8], &[u8])> {
    let not_transport = |at: &usize| !is_transport(&source[..*at]);
    let at = source
        .windows(2)
        .rposition(|w| w == b":/")
        .filter(not_transport)
        .or_else(|| source.iter().rposition(|&b| b == b':').filter(not_transport))?;
    let (reference, path) = (&source[..at], &source[at + 1..]);
    (!reference.is_empty() && !path.is_empty()).then_some((reference, path))
}

/// Is `prefix` a local source's transport alone (`oci`, `oci-archive`, `docker-archive`)?
fn is_transport(prefix: &[u8]) -> bool {
    let with_colon = [prefix, b":"].concat();
    std::str::from_utf8(&with_colon).is_ok_and(|p| matches!(LocalRef::parse(p), Some(Err(_))))
}

/// The name SRC is copied under: the last component of the PATH given, as `docker cp`
/// names it (a link followed with `-L` keeps its own name). `None` for `.` and `..`,
/// which take the name of the directory they resolve to.
fn given_name(path: &[u8]) -> Option<&[u8]> {
    let last = path.split(|&b| b == b'/').rfind(|c| !c.is_empty())?;
    (last != b"." && last != b"..").then_some(last)
}

pub fn run(ctx: &Context, args: Args) -> Result<()> {
    let Some((reference, path)) = split_source(args.source.as_bytes()) else {
        bail!("{}: not REF:PATH (an image and a path inside it)", args.source.to_string_lossy());
    };
    let reference = std::str::from_utf8(reference).context("the image reference is not UTF-8")?;
    let contents_only = path.ends_with(b"/.") || path == b".";
    let must_be_dir = contents_only || path.ends_with(b"/");
    let to_stdout = args.dest.as_os_str() == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        bail!("refusing to write a tar stream to a terminal; redirect stdout");
    }
    let image = open(ctx, reference, &args.image)?;
    let src = resolve(&image.fs, path, args.follow_link || must_be_dir)?;
    let shown = String::from_utf8_lossy(path);
    if must_be_dir && !src.is_dir() {
        bail!("{shown}: not a directory");
    }
    let name = given_name(path).unwrap_or(src.name());
    if to_stdout {
        let naming = if contents_only || src.path == b"/" { Naming::Relative } else { Naming::Under(name) };
        let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        tar_stream::write(&image.fs, &src, naming, out)?.flush()?;
        return Ok(());
    }
    let dest = &args.dest;
    let dest_meta = std::fs::metadata(dest).ok();
    let dest_is_dir = dest_meta.as_ref().is_some_and(|m| m.is_dir());
    let dest_trailing_slash = dest.as_os_str().as_bytes().ends_with(b"/");
    let name = OsStr::from_bytes(name);
    if !src.is_dir() {
        if dest_meta.is_none() && dest_trailing_slash {
            bail!("destination directory {} does not exist", dest.display());
        }
        let target = if dest_is_dir { dest.join(name) } else { dest.clone() };
        if target.is_dir() {
            bail!("cannot overwrite directory {} with non-directory {shown}", target.display());
        }
        return copy_new(&image.fs, &src, &target, true);
    }
    match dest_meta {
        Some(_) if !dest_is_dir => bail!("cannot copy a directory to a file: {}", dest.display()),
        None => copy_new(&image.fs, &src, dest, false),
        Some(_) if contents_only || src.path == b"/" => merge_copy(&image.fs, &src, dest),
        Some(_) => {
            let target = dest.join(name);
            // Not followed: a link there (`rootfs/var/run -> /run`) must not take the
            // copy somewhere else on the host.
            match target.symlink_metadata() {
                Ok(m) if m.is_dir() => merge_copy(&image.fs, &src, &target),
                Ok(_) => bail!("cannot overwrite non-directory {} with directory {shown}", target.display()),
                Err(_) => copy_new(&image.fs, &src, &target, false),
            }
        }
    }
}

/// Copy `src` to `target` through a temporary name beside it; `replace`: a file
/// already there is replaced (a directory never is).
fn copy_new(fs: &crate::fs::Fs, src: &crate::walk::Resolved, target: &Path, replace: bool) -> Result<()> {
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!("destination directory {} does not exist", parent.display());
    }
    if !replace && target.symlink_metadata().is_ok() {
        bail!("{} exists", target.display());
    }
    let (temp, made) = at_free_temp(|| temp_beside(target), |temp| extract(fs, src, temp));
    let result = made
        .map_err(|e| anyhow::Error::from(e.shown_at(&temp, target)))
        .and_then(|()| std::fs::rename(&temp, target).with_context(|| format!("cannot write {}", target.display())));
    if result.is_err() {
        let _ = remove_any(&temp);
    }
    result
}

/// Run `make` (an extraction, which makes its top first) at a temporary name from
/// `name`. A name taken already (EEXIST for the top) is someone else's: it is left
/// alone and another is tried. The name used and the outcome; after a failure, what
/// is at that name is this process's to remove.
fn at_free_temp<T>(
    name: impl Fn() -> PathBuf,
    make: impl Fn(&Path) -> Result<T, crate::extract::Error>,
) -> (PathBuf, Result<T, crate::extract::Error>) {
    loop {
        let temp = name();
        match make(&temp) {
            Err(crate::extract::Error::Io { path, source })
                if path == temp && source.kind() == std::io::ErrorKind::AlreadyExists => {}
            outcome => return (temp, outcome),
        }
    }
}

/// Copy directory `src`'s contents into the existing directory `dest`, as `docker cp`
/// and tar do: what is there and not in `src` stays, files are replaced, directories
/// merged, and `dest` takes `src`'s attributes. All is first made in a temporary
/// directory inside `dest` (where the caller can write, unlike beside it in `~`'s
/// parent), then moved in entry by entry; the directories get their attributes last,
/// once moved (a read-only one could not move to another parent).
fn merge_copy(fs: &crate::fs::Fs, src: &crate::walk::Resolved, dest: &Path) -> Result<()> {
    let (temp, made) = at_free_temp(|| temp_in(dest), |temp| extract_deferred(fs, src, temp));
    let moved = made
        .map_err(|e| anyhow::Error::from(e.shown_at(&temp, dest)))
        .and_then(|dirs| move_into(&temp, dest).map(|()| dirs));
    let removed = remove_any(&temp).with_context(|| format!("cannot remove {}", temp.display()));
    let dirs = moved?;
    removed?;
    // After the removal, which moves `dest`'s mtime.
    Ok(dirs.apply(dest)?)
}

/// Move everything in `from` into the directory `to`, merging directories.
fn move_into(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let src_is_dir = entry.file_type()?.is_dir();
        match dst.symlink_metadata() {
            Ok(m) if m.is_dir() && src_is_dir => move_into(&src, &dst)?,
            Ok(m) if m.is_dir() => bail!("cannot overwrite directory {} with non-directory", dst.display()),
            Ok(_) if src_is_dir => bail!("cannot overwrite non-directory {} with directory", dst.display()),
            _ => std::fs::rename(&src, &dst).with_context(|| format!("cannot write {}", dst.display()))?,
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            // A copy of a read-only directory: make it writable again to empty it.
            make_writable(path);
            std::fs::remove_dir_all(path)
        }
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_source;

    #[test]
    fn source_splits_at_the_last_colon_slash_or_colon() {
        let s = |x: &str| split_source(x.as_bytes()).map(|(r, p)| (r.to_vec(), p.to_vec()));
        let pair = |r: &str, p: &str| Some((r.as_bytes().to_vec(), p.as_bytes().to_vec()));
        assert_eq!(s("debian:bookworm:/etc/os-release"), pair("debian:bookworm", "/etc/os-release"));
        assert_eq!(s("localhost:5000/app:1:/etc"), pair("localhost:5000/app:1", "/etc"));
        assert_eq!(s("oci:/tmp/layout:tag:/etc/."), pair("oci:/tmp/layout:tag", "/etc/."));
        assert_eq!(s("app@sha256:abcd:etc/hostname"), pair("app@sha256:abcd", "etc/hostname"));
        assert_eq!(s("app:/"), pair("app", "/"));
        assert_eq!(s("app"), None);
        assert_eq!(s(":/etc"), None);
        // A relative PATH after a local source: not split at the transport's `:/`.
        assert_eq!(s("oci:/srv/layout:v2:etc/hostname"), pair("oci:/srv/layout:v2", "etc/hostname"));
        assert_eq!(s("oci-archive:/srv/a.tar:etc"), pair("oci-archive:/srv/a.tar", "etc"));
        assert_eq!(
            s("docker-archive:/x/d.tar:busybox:latest:etc/hostname"),
            pair("docker-archive:/x/d.tar:busybox:latest", "etc/hostname")
        );
        assert_eq!(s("oci:/srv/layout"), None);
    }

    #[test]
    fn the_copy_is_named_after_the_last_name_given() {
        use super::given_name;
        assert_eq!(given_name(b"/etc/issue.link"), Some(&b"issue.link"[..]));
        assert_eq!(given_name(b"etc/ssl/"), Some(&b"ssl"[..]));
        assert_eq!(given_name(b"/etc/.."), None);
        assert_eq!(given_name(b"/etc/."), None);
        assert_eq!(given_name(b"/"), None);
    }
}
