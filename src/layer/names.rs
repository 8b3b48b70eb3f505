//! The names of a layer's entries: tar paths normalised as containerd and umoci do, and
//! the bounds a name must keep for a kernel to serve it. The layer builder, the eStargz
//! reader and the TOC reader all check names here, so a name one of them accepts the
//! others accept too.

/// Longest name component Linux (and so FUSE) can serve, and longest whole path.
pub const NAME_MAX: usize = 255;
pub const PATH_MAX: usize = 4096;

/// Why `check_name` refused a name.
#[derive(Debug, thiserror::Error)]
pub enum BadName {
    #[error("the name holds a NUL byte")]
    Nul,
    #[error("the name is longer than {PATH_MAX} bytes")]
    TooLong,
    #[error("a name component is longer than {NAME_MAX} bytes")]
    ComponentTooLong,
}

/// Refuse a name no kernel could serve: a component over 255 bytes, a path over 4096,
/// or a NUL byte (a PAX name can hold one; a C string ends there).
pub fn check_name(path: &[u8]) -> Result<(), BadName> {
    if path.contains(&0) {
        return Err(BadName::Nul);
    }
    if path.len() >= PATH_MAX {
        return Err(BadName::TooLong);
    }
    if path.split(|&b| b == b'/').any(|c| c.len() > NAME_MAX) {
        return Err(BadName::ComponentTooLong);
    }
    Ok(())
}

/// Normalise a tar path as containerd and umoci do (as if joined to `/` and cleaned):
/// strip `./` and leading `/`, collapse `//` and `.`, and apply `..` lexically, never
/// above the root (`../../etc` is `etc`).
pub fn normalise(raw: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join(&b'/')
}

/// Normalise a hard link's target; `None` if a `..` would climb above the root.
pub fn normalise_inside(raw: &[u8]) -> Option<Vec<u8>> {
    let mut depth = 0usize;
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => depth = depth.checked_sub(1)?,
            _ => depth += 1,
        }
    }
    Some(normalise(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_paths() {
        assert_eq!(normalise(b"./a/b/"), b"a/b");
        assert_eq!(normalise(b"/a//b"), b"a/b");
        assert_eq!(normalise(b"./"), b"");
        assert_eq!(normalise(b"a/../b"), b"b");
        assert_eq!(normalise(b"../../etc/passwd"), b"etc/passwd");
        assert_eq!(normalise_inside(b"a/../b").as_deref(), Some(&b"b"[..]));
        assert_eq!(normalise_inside(b"/etc/passwd").as_deref(), Some(&b"etc/passwd"[..]));
        assert_eq!(normalise_inside(b"a/../../etc/passwd"), None);
    }
}
