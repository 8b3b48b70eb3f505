//! imgfs mounts container images (Docker and OCI) as read-only directory trees and
//! manages a local content-addressed store of them with a docker-style CLI.
//!
//! An image is resolved from its registry (or read from a local source), recorded in
//! the store, and opened: each of its layers comes, on first use, from the store, a
//! published index, an eStargz TOC or a download, and becomes a table of contents with
//! random access to its data; the layers are stacked into the OCI union, which answers
//! filesystem operations for a FUSE mount or for the commands that read an image
//! without one. The module map, and how data flows between the modules, is
//! docs/architecture.md; each module's header says what it is for.

// Every unsafe operation, inside an `unsafe fn` too, sits in its own `unsafe` block
// with a SAFETY comment that says why it holds.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod digest;
pub mod extract;
pub mod filter;
pub mod fs;
pub mod fuse;
pub mod fusermount;
pub mod image;
pub mod image_diff;
pub mod index_artifact;
pub mod layer;
pub mod layer_changes;
pub mod layer_source;
pub mod layer_stats;
pub mod local_source;
pub mod log;
pub mod opened_image;
pub mod origin;
pub mod pending_file;
pub mod reference;
pub mod referrers;
pub mod register;
pub mod registry;
pub mod resolve;
pub mod server;
pub mod signals;
pub mod store;
pub mod tar_stream;
pub mod template;
pub mod tree;
pub mod walk;
