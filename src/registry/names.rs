//! What may go into a request's path: repository names and tags or digests as the
//! distribution spec writes them, so that no name can bend the URL (`..`, `?`, `#`).

use super::error::RegistryError;
use crate::digest::Digest;

/// Repository names go into URL paths: only the spec's characters are let through.
pub(super) fn check_repository(repository: &str) -> Result<(), RegistryError> {
    let ok = !repository.is_empty()
        && !repository.starts_with('/')
        && !repository.ends_with('/')
        && !repository.contains("//")
        && repository.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/'))
        && !repository.split('/').any(|c| c == "." || c == "..");
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidInput { reason: format!("invalid repository name {repository:?}") })
    }
}

/// A tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) or a sha256 digest.
pub(super) fn check_manifest_reference(reference: &str) -> Result<(), RegistryError> {
    let b = reference.as_bytes();
    let tag = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if tag || reference.parse::<Digest>().is_ok() {
        Ok(())
    } else {
        Err(RegistryError::InvalidInput { reason: format!("invalid tag or digest {reference:?}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_bend_the_url_are_refused() {
        assert!(check_repository("library/alpine").is_ok());
        for bad in ["", "a/../b", "a?b", "/a", "A", "a//b", "a#b"] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
        assert!(check_manifest_reference("v1.2-rc_3").is_ok());
        assert!(check_manifest_reference(Digest::of(b"").as_str()).is_ok());
        for bad in ["", ".x", "a/b", "a?b", "sha512:abc", "x y"] {
            assert!(check_manifest_reference(bad).is_err(), "{bad}");
        }
    }
}
