//! Real FUSE mounts of the real `imgfs` binary against the real test registry that
//! `scripts/test` starts (IMGFS_TEST_ENV names its state directory: registry.addr,
//! registry.log, images.tsv and the `umoci unpack` reference trees).
//!
//! Every test has its own store (`--root` in a temp dir) and its own mountpoints, and
//! every mountpoint is held by a `Mount` guard whose Drop detaches it and ends its
//! server, so a failing assert never leaves a dead mount behind (see `harness`).
//!
//! Tests that count registry requests go through a private proxy (the fault proxy of
//! tests/faultproxy, shared with the pull tests, with no rule: a pass-through): the
//! registry logs each request's Host header, which is then the proxy's own address, so
//! requests made by tests running in parallel are never counted.
//!
//! Each test module takes the harness, the fault proxy and the std names below with
//! `use super::*`.

mod bad_input;
mod estargz;
#[path = "../tests/faultproxy/mod.rs"]
mod faultproxy;
mod faults;
mod fidelity;
mod fleet;
mod harness;
mod hostile;
mod layered;
mod laziness;
mod lifecycle;
mod local_sources;
#[path = "../tests/outcome/mod.rs"]
mod outcome;
mod posix;
mod progress;
mod published_index;
#[path = "../tests/pushing/mod.rs"]
mod pushing;
#[path = "../tests/registries/mod.rs"]
mod registries;
mod security;
mod store_safety;
mod unmounting;

use faultproxy::{Fault, FaultProxy, Rule};
use harness::*;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;
