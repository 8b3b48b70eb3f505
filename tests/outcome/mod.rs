//! What the tests expect of an `imgfs` run, and where the test registry is; shared by
//! the test binaries through `#[path]`. A success is read for its stdout; a failure must
//! keep the CLI's contract: exit status 1 and one line on stderr, `imgfs: error: …`.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::process::Output;

/// `HOST:PORT` of the registry `scripts/test` started (named by `IMGFS_TEST_ENV`).
pub fn registry_addr() -> String {
    let dir = PathBuf::from(
        std::env::var("IMGFS_TEST_ENV")
            .expect("IMGFS_TEST_ENV is not set: run the tests through scripts/test, which starts the registry"),
    );
    std::fs::read_to_string(dir.join("registry.addr")).expect("registry.addr").trim().to_string()
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
