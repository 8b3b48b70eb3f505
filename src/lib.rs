//! imgfs mounts container images (Docker and OCI) as read-only directory trees and
//! manages a local content-addressed store of them with a docker-style CLI.
//!
//! Data flows from a reference to the kernel like this: `reference` parses what the
//! user typed (`local_source` reads OCI layouts and archives instead of a registry);
//! `registry` speaks the distribution API; `image` models manifests,
//! indexes and configs and picks a platform; `fetch` brings manifests, configs and
//! layers into the `store`, verified; `layer` turns a layer blob into a table of
//! contents with random access to file data; `tree` stacks the layers into the OCI
//! union, lazily; `fs` answers filesystem operations with plain values and errnos;
//! `fuse` adapts that to the kernel through `fuser` (`fusermount` mounts through
//! fusermount3 when /dev/fuse is closed to the user). `server` owns a mount's life
//! (resolving and holding the image, the background server, signals, mount records,
//! teardown); `filter` holds the image filters of `ls` and `prune`, and the store
//! decides what may be deleted (`store::remove`). `cli` holds one module per
//! subcommand: it parses arguments and prints; `log` is how the library's messages
//! reach the user.

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
pub mod store;
pub mod tar_stream;
pub mod template;
pub mod tree;
pub mod walk;
