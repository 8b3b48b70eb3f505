//! Where an image was read from, as its record keeps it (`ImageRecord::source`): a
//! repository of a registry, or a local source (an OCI layout or an archive). The
//! string is parsed once, here, so that the code deciding where a layer comes from
//! asks this type for the registry or the layout instead of splitting the string again.

use crate::local_source::LocalRef;
use std::path::Path;

/// Where an image's layers can be fetched from when they are not in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `registry/repository`, as `Reference::name` writes it.
    Registry { registry: String, repository: String },
    /// An OCI layout or an archive (`oci:PATH`, `oci-archive:PATH`, `docker-archive:PATH`).
    Local(LocalRef),
}

/// A record whose source is neither: a store edited or damaged by hand.
#[derive(Debug, thiserror::Error)]
#[error("image source {0:?} names no registry repository or local source")]
pub struct Error(String);

impl Origin {
    /// Read a record's source.
    pub fn parse(source: &str) -> Result<Origin, Error> {
        if let Some(local) = LocalRef::parse(source) {
            return local.map(Origin::Local).map_err(|_| Error(source.to_string()));
        }
        match source.split_once('/') {
            Some((registry, repository)) if !registry.is_empty() && !repository.is_empty() => {
                Ok(Origin::Registry { registry: registry.to_string(), repository: repository.to_string() })
            }
            _ => Err(Error(source.to_string())),
        }
    }

    /// The registry and repository, for an image from a registry.
    pub fn registry(&self) -> Option<(&str, &str)> {
        match self {
            Origin::Registry { registry, repository } => Some((registry, repository)),
            Origin::Local(_) => None,
        }
    }

    /// The OCI layout whose blobs can be read where they are (`oci:`), if it is one.
    pub fn layout_dir(&self) -> Option<&Path> {
        match self {
            Origin::Local(l) => l.layout_dir(),
            Origin::Registry { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_read_back_as_what_wrote_them() {
        let r = Origin::parse("127.0.0.1:5000/team/app").unwrap();
        assert_eq!(r.registry(), Some(("127.0.0.1:5000", "team/app")));
        assert_eq!(r.layout_dir(), None);
        let l = Origin::parse("oci:/srv/layout").unwrap();
        assert_eq!(l.registry(), None);
        assert_eq!(l.layout_dir(), Some(Path::new("/srv/layout")));
        assert_eq!(Origin::parse("docker-archive:/x.tar").unwrap().layout_dir(), None);
        for bad in ["", "app", "/app", "host/", "oci:"] {
            assert!(Origin::parse(bad).is_err(), "{bad:?}");
        }
    }
}
