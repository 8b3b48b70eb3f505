//! What a mount server tells its log while it fetches a layer on first use: progress
//! with bytes and total at each tenth of the layer, not a line per chunk.

use super::*;

/// The first read of big:1 fetches its one layer (about 13 MB of gzip, a thousand or
/// so chunks off the wire): the log names the layer when the fetch starts, then shows
/// its progress at each tenth (bytes of total, percent), then says it is verifying.
#[test]
fn a_first_fetch_under_a_mount_logs_its_progress_in_steps() {
    let Some(_) = outcome::test_env() else { return };
    let store = Store::new();
    let image = format!("{}/big:1", env().addr);
    let m = mount(store.root(), &image, &[]);
    let want = reference_file("big:1", "data/small.txt");
    assert!(fs::read(m.path("data/small.txt")).unwrap() == want, "data/small.txt differs from the reference");
    let logs = server_logs(store.root());
    let digest = &layer_digests("big:1")[0];
    assert!(logs.contains(&format!("imgfs: fetching layer 0 ({digest}, ")), "{logs}");
    // Each line of the log file starts with its time, then the message.
    let steps: Vec<&str> = logs.lines().filter(|l| l.contains(" imgfs: layer 0: ") && l.contains("%) in ")).collect();
    // A line at each of 10%, 20% … 90% (and one every 5 s besides, on a slow machine).
    assert!(steps.len() >= 9, "want a line per tenth of the layer: {logs}");
    assert!(steps.len() < 40, "a line per chunk, or close to it: {logs}");
    for s in &steps {
        assert!(s.contains(" MB of ") && s.contains(" MB ("), "not bytes of total: {s}");
    }
    assert!(logs.contains("imgfs: layer 0: ") && logs.contains("downloaded in"), "{logs}");
    assert!(logs.contains("verifying and indexing"), "{logs}");
}
