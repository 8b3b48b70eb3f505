//! The conventions every command line tool is expected to keep, checked on the real
//! `imgfs` binary: every argument documented, exit codes 0/1/2, results alone on stdout
//! and everything else on stderr, shell completions and a man page generated from the
//! same clap definitions.

use clap::CommandFactory;
use std::process::{Command, Output};

fn imgfs(root: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgfs")).arg("--root").arg(root).args(args).output().unwrap()
}

/// The subcommands, as clap knows them (so a new one is checked without editing here).
fn subcommands() -> Vec<String> {
    imgfs::cli::Cli::command().get_subcommands().map(|c| c.get_name().to_string()).collect()
}

#[test]
fn every_argument_has_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" || arg.is_hide_set() {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&imgfs::cli::Cli::command(), "imgfs", &mut missing);
    assert!(missing.is_empty(), "arguments without help: {missing:?}");
}

#[test]
fn usage_error_exits_2_with_nothing_on_stdout() {
    let root = tempfile::tempdir().unwrap();
    for args in [&["inspect"][..], &["--no-such-option"], &["no-such-command"], &["mount", "--read-cache", "x"]] {
        let out = imgfs(root.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", String::from_utf8_lossy(&out.stdout));
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

#[test]
fn failure_exits_1_with_one_error_line_on_stderr() {
    let root = tempfile::tempdir().unwrap();
    // Not `inspect`: like docker it prints `[]` beside its error (tests/cli_images.rs).
    let out = imgfs(root.path(), &["rm", "nosuchimage"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "stdout {:?}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err:?}");
    assert!(lines[0].starts_with("imgfs: error: ") && lines[0].contains("nosuchimage"), "{err:?}");
}

#[test]
fn bash_completion_is_valid_and_names_the_subcommands() {
    let root = tempfile::tempdir().unwrap();
    let out = imgfs(root.path(), &["completions", "bash"]);
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8(out.stdout).unwrap();
    for sub in subcommands() {
        assert!(script.contains(&sub), "bash completion does not mention {sub}");
    }
    let file = root.path().join("imgfs.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
}

#[test]
fn zsh_and_fish_completions_are_generated() {
    let root = tempfile::tempdir().unwrap();
    for shell in ["zsh", "fish"] {
        let out = imgfs(root.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        assert!(String::from_utf8(out.stdout).unwrap().contains("inspect"), "{shell} completion is empty");
    }
}

#[test]
fn man_page_is_roff_and_names_every_subcommand() {
    let root = tempfile::tempdir().unwrap();
    let out = imgfs(root.path(), &["man"]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.starts_with(".TH") || page.starts_with(".ie") && page.contains("\n.TH "), "{:.200}", page);
    for sub in subcommands() {
        assert!(page.contains(&sub), "man page does not mention {sub}");
    }
}
