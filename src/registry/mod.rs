//! A blocking client for the Docker Registry HTTP API v2 (the OCI distribution spec):
//! ping, manifests, blobs (whole and by Range), tag lists and the catalog. It is called
//! from FUSE worker threads, never from async code, so it uses reqwest's blocking
//! client; one `Client` is shared by all threads (tokens are cached inside it).
//!
//! Requests that fail for a reason that may pass (no connection, a broken body, a
//! timeout, 5xx, 429) are tried again under one policy, in retry.rs.
//!
//! Everything fetched by digest is verified against that digest before it is handed
//! out. Redirects are followed by hand so that credentials only ever go to the
//! registry's own origin, never to the CDN a registry sends blob downloads to.
//!
//! Transport: one HTTP client per host (tls.rs: that host's CAs and client certificate
//! from certs.d; trust.rs: what certificate is trusted), the scheme for loopback and
//! insecure hosts found by trying (endpoint.rs), and manifests and blobs asked of the
//! configured mirrors before the registry itself (mirrors.rs).

mod auth;
pub mod blob;
mod client;
mod credentials;
mod endpoint;
mod error;
mod lazy;
mod lists;
pub mod login;
mod manifests;
mod mirrors;
mod names;
mod push;
mod requests;
mod retry;
pub mod search;
mod tls;
mod transport;
mod trust;

pub use client::{Client, ClientOptions};
pub use error::RegistryError;
pub use lazy::LazyClient;
pub use manifests::FetchedManifest;
