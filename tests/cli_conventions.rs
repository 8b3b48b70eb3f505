//! The conventions every command line tool is expected to keep, checked on the real
//! `imgfs` binary: every argument documented, exit codes 0/1/2, results alone on stdout
//! and everything else on stderr, shell completions and a man page generated from the
//! same clap definitions.

use clap::CommandFactory;
use std::process::{Command, Output};

#[path = "outcome/mod.rs"]
mod outcome;

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

/// The README, its whitespace folded (its paragraphs are wrapped anywhere).
fn readme() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The README's usage-table rows for `imgfs NAME …` (both cells), joined.
fn readme_rows(name: &str) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = format!("| `imgfs {name}");
    text.lines()
        .filter(|l| l.starts_with(&start) && l[start.len()..].starts_with([' ', '`', '\\']))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `imgfs ARGS --help` prints, whitespace folded.
fn help(args: &[&str]) -> String {
    let root = tempfile::tempdir().unwrap();
    let out = imgfs(root.path(), &[args, &["--help"]].concat());
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Where the help and the README say the same thing, they say it alike: every
/// command's options (long or short) are in its row of the README's usage table, the
/// global options' variables and defaults are in both, `--insecure-registry` is
/// described as it behaves, the completion shells are clap's, and search names Docker
/// Hub as its default.
#[test]
fn help_and_readme_agree_where_they_overlap() {
    fn walk(cmd: &clap::Command, path: &[&str], out: &mut Vec<String>) {
        let name = path.first().copied().unwrap_or("");
        let rows = readme_rows(name);
        if !path.is_empty() {
            assert!(!rows.is_empty(), "no README usage row for imgfs {}", path.join(" "));
        }
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set() && !a.is_global_set()) {
            let id = arg.get_id().as_str();
            if path.is_empty() || id == "help" || id == "version" {
                continue;
            }
            let long = arg.get_long().map(|l| format!("--{l}"));
            let short = arg.get_short().map(|s| format!("-{s}"));
            let named = |flag: &Option<String>| {
                flag.as_ref().is_some_and(|f| {
                    rows.match_indices(f.as_str()).any(|(i, _)| {
                        let next = rows[i + f.len()..].chars().next();
                        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
                    })
                })
            };
            if (long.is_some() || short.is_some()) && !named(&long) && !named(&short) {
                out.push(format!("imgfs {} {}", path.join(" "), long.or(short).unwrap()));
            }
        }
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p = path.to_vec();
            p.push(sub.get_name());
            walk(sub, &p, out);
        }
    }
    let cmd = imgfs::cli::Cli::command();
    let mut missing = Vec::new();
    walk(&cmd, &[], &mut missing);
    assert!(missing.is_empty(), "options the README's usage table leaves out: {missing:?}");

    let (readme, top) = (readme(), help(&[]));
    for both in [
        "IMGFS_ROOT",
        "~/.local/share/imgfs",
        "$XDG_DATA_HOME/imgfs",
        "IMGFS_INSECURE_REGISTRIES",
        "over HTTPS without checking its certificate, then over plain HTTP",
        "IMGFS_TIMEOUT",
    ] {
        assert!(top.contains(both), "imgfs --help does not say {both:?}: {top}");
        assert!(readme.contains(both), "the README does not say {both:?}");
    }

    let shells: Vec<String> = cmd
        .find_subcommand("completions")
        .and_then(|c| c.get_arguments().find(|a| a.get_id() == "shell"))
        .expect("completions SHELL")
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_string())
        .collect();
    let row = readme_rows("completions");
    let listed = row.split('`').nth(1).and_then(|c| c.strip_prefix("imgfs completions ")).expect("the row's command");
    assert_eq!(listed.split("\\|").collect::<Vec<_>>(), shells, "{row}");
    assert!(help(&["completions"]).contains(&shells.join(", ")), "{}", help(&["completions"]));

    assert!(help(&["search"]).contains("Docker Hub"), "{}", help(&["search"]));
    assert!(readme_rows("search").contains("search Docker Hub"));
}

/// With `IMGFS_ROOT` (or any option's variable) set, a usage error shows the command's
/// usage as its help does: clap would count the variable as an option given and print
/// `Usage: imgfs pull --root <DIR> <REF>`.
#[test]
fn a_usage_error_with_options_from_the_environment_keeps_the_plain_usage() {
    for (args, usage) in [
        (&["pull"][..], "Usage: imgfs pull [OPTIONS] <REF>"),
        (&["index", "push"], "Usage: imgfs index push [OPTIONS] <REF>"),
        (&["mount", "--no-such-option"], "Usage: imgfs mount [OPTIONS] [REF] [DIR]"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_imgfs"))
            .args(args)
            .env("IMGFS_ROOT", "/nonexistent/imgfs-root")
            .env("IMGFS_TIMEOUT", "5")
            .env("DOCKER_DEFAULT_PLATFORM", "linux/amd64")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.lines().any(|l| l == usage), "{args:?}: {err}");
    }
}

/// `imgfs man --dir DIR` writes the main page and one per command, and every
/// `imgfs-…(1)` a page names is one of them.
#[test]
fn man_pages_are_written_per_command_and_their_references_resolve() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("man/man1");
    let out = imgfs(root.path(), &["man", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let mut pages: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    pages.sort();
    for sub in subcommands().iter().filter(|s| *s != "help") {
        assert!(pages.contains(&format!("imgfs-{sub}.1")), "no page for {sub}: {pages:?}");
    }
    assert!(pages.contains(&"imgfs.1".to_string()) && pages.contains(&"imgfs-index-push.1".to_string()), "{pages:?}");
    let main = String::from_utf8(imgfs(root.path(), &["man"]).stdout).unwrap();
    assert_eq!(main, std::fs::read_to_string(dir.join("imgfs.1")).unwrap(), "imgfs man prints imgfs.1");
    let mut named = 0;
    for page in &pages {
        let text = std::fs::read_to_string(dir.join(page)).unwrap().replace("\\-", "-");
        for (i, _) in text.match_indices("(1)") {
            let start = text[..i].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).map_or(0, |s| s + 1);
            let name = &text[start..i];
            if name.starts_with("imgfs") {
                named += 1;
                assert!(pages.contains(&format!("{name}.1")), "{page} names {name}(1), which has no page");
            }
        }
    }
    assert!(named >= subcommands().len() - 1, "the pages name {named} others");
}

/// The test registry's address (scripts/test starts it and exports IMGFS_TEST_ENV).
fn registry() -> String {
    outcome::registry_addr()
}

/// A bare `cargo test` (no IMGFS_TEST_ENV) skips a test that needs the registry, with
/// one line naming it and the reason, and passes: this test binary runs one such test of
/// its own without the variable.
#[test]
fn a_test_that_needs_the_registry_is_skipped_without_the_test_env() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "stdout_results_feed_other_commands", "--test-threads=1"])
        .env_remove("IMGFS_TEST_ENV")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the test did not run: {stdout}");
    let line = "skipping stdout_results_feed_other_commands: IMGFS_TEST_ENV is not set; scripts/test sets it";
    assert!(stderr.lines().any(|l| l == line), "{stderr}");
}

/// Run a shell pipeline with `imgfs` standing for this binary on this store.
fn shell(root: &std::path::Path, pipeline: &str) -> Output {
    let imgfs = format!("{} --root {}", env!("CARGO_BIN_EXE_imgfs"), root.display());
    Command::new("sh").arg("-c").arg(pipeline.replace("imgfs", &imgfs)).output().unwrap()
}

/// Results alone on stdout make pipelines work: the references `pull` prints feed
/// `inspect`, and `ls -q | xargs rm` removes every image, with nothing but results
/// on stdout and nothing on stderr along the way.
#[test]
fn stdout_results_feed_other_commands() {
    let Some(_) = outcome::test_env() else { return };
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let addr = registry();
    let out = shell(
        r,
        &format!("imgfs pull {addr}/base:1 && imgfs pull {addr}/app:1 | xargs imgfs inspect --format '{{{{.Id}}}}'"),
    );
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "the base reference, then the app image's ID: {lines:?}");
    assert_eq!(lines[0], format!("{addr}/base:1"));
    assert!(lines[1].starts_with("sha256:") && lines[1].len() == 71, "{lines:?}");

    let out = shell(r, "imgfs ls -q | xargs imgfs rm");
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let removed = String::from_utf8(out.stdout).unwrap();
    assert!(removed.lines().all(|l| l.starts_with("Untagged: ") || l.starts_with("Deleted: ")), "{removed}");
    assert!(imgfs(r, &["ls", "-q"]).stdout.is_empty(), "images left after ls -q | xargs rm");
}

/// `prune` asks on stderr even when stdin is a terminal, so a report redirected to a
/// file holds the report alone (the terminal is a pty from script(1)).
#[test]
fn prune_asks_on_stderr_when_its_report_goes_to_a_file() {
    let root = tempfile::tempdir().unwrap();
    let report = root.path().join("report.txt");
    let cmd = format!("{} --root {} prune > {}", env!("CARGO_BIN_EXE_imgfs"), root.path().display(), report.display());
    let mut child = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"y\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("Are you sure you want to continue? [y/N]"), "no prompt on the terminal: {screen:?}");
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "Total reclaimed space: 0B\n");
}
