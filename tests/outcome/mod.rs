//! What the tests expect of an `imgfs` run, and where the test registry is; shared by
//! the test binaries (`tests/` and `mount-tests/`) through `#[path]`. A success is read
//! for its stdout; a failure must keep the CLI's contract: exit status 1 and one line on
//! stderr, `imgfs: error: …`.
//!
//! The test environment (the registry and images `scripts/test` prepares) is named by
//! `IMGFS_TEST_ENV`. A test that needs it starts with
//! `let Some(_) = outcome::test_env() else { return };`, so a bare `cargo test` runs
//! the tests that need nothing and skips the others, one line each, instead of failing.

#![allow(dead_code)] // each test binary uses a different part

use std::io::Write;
use std::path::PathBuf;
use std::process::Output;

const ENV_VAR: &str = "IMGFS_TEST_ENV";

/// The test environment's state directory (registry.addr, registry.log, images.tsv,
/// the reference unpacks), or None, after saying on stderr that the calling test is
/// skipped, when `IMGFS_TEST_ENV` is not set. scripts/test always sets it, so there
/// nothing is skipped, and a directory it names that lacks the registry fails loudly
/// where a file in it is read.
pub fn test_env() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_VAR) {
        return Some(PathBuf::from(dir));
    }
    // libtest names the thread after the test.
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    // Straight to stderr, not eprintln!: libtest captures that for a passing test, and a
    // skip must show.
    let _ = writeln!(std::io::stderr(), "skipping {test}: {ENV_VAR} is not set; scripts/test sets it");
    None
}

/// The test environment's directory, for helpers that run after the test's
/// `test_env()` check; a test that forgot the check fails here, saying why.
pub fn env_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(ENV_VAR).unwrap_or_else(|| {
        panic!("{ENV_VAR} is not set: run the tests through scripts/test, which starts the registry")
    }))
}

/// `HOST:PORT` of the registry `scripts/test` started.
pub fn registry_addr() -> String {
    std::fs::read_to_string(env_dir().join("registry.addr")).expect("registry.addr").trim().to_string()
}

/// The stdout of a run that must have succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "imgfs failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The one-line error of a run that must have failed, without its newline.
pub fn fails(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(out.status.code(), Some(1), "expected exit status 1: {err}\n{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(err.lines().count(), 1, "the error is one line: {err}");
    assert!(err.starts_with("imgfs: error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}
