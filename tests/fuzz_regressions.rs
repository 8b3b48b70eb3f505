//! Every input that once crashed a fuzz target, replayed through the same check the
//! target runs (fuzz/checks.rs), so that a fixed crash stays fixed without running the
//! fuzzer: files under fuzz/regressions/<target>/, one input each (scripts/fuzz copies
//! new crash inputs there).

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    files.sort();
    for f in files {
        let input = std::fs::read(&f).unwrap();
        // A panic names the file through the message below.
        eprintln!("replaying {}", f.display());
        check(&input);
    }
}

#[test]
fn reference_inputs() {
    replay("reference", checks::reference);
}

#[test]
fn manifest_inputs() {
    replay("manifest", checks::manifest);
}

#[test]
fn template_inputs() {
    replay("template", checks::template);
}

#[test]
fn layer_inputs() {
    replay("layer", checks::layer);
}

#[test]
fn gzip_inputs() {
    replay("gzip", checks::gzip);
}

#[test]
fn toc_inputs() {
    replay("toc", checks::toc);
}
