//! A mount whose registry goes away in the middle of a lazy layer fetch (through the
//! fault proxy of tests/faultproxy): the operation that needed the layer fails with
//! EIO, the mount stays up, nothing half-fetched is kept, and the same operation
//! succeeds once the registry is back.

use super::faultproxy::{Fault, FaultProxy, Rule};
use super::*;

#[test]
fn registry_gone_midway_through_a_lazy_fetch_gives_eio_then_recovers() {
    let proxy = FaultProxy::start(&env().addr);
    let layer = layer_digests("big:1").remove(0);
    let store = Store::new();
    let m = mount(store.root(), &format!("{}/big:1", proxy.addr), &[]);
    let pid = m.server();

    // The first megabyte of the 13 MB layer arrives, then the registry is gone.
    proxy.add(Rule::new(&layer, Fault::DieAfter(1 << 20)).times(1));
    let e = errno_of("read data/1m.bin with the registry gone midway", fs::read(m.path("data/1m.bin")));
    assert_eq!(e, libc::EIO, "errno {e}, want EIO");
    assert_eq!(proxy.seen_for(&layer)[0].range, None);
    assert!(!pid_gone(pid), "the server died");
    assert!(mountinfo(&m.dir).is_some(), "the mount went away");
    assert!(!blob_file(store.root(), &layer).exists(), "a half-fetched layer was kept");

    proxy.set_down(false);
    let got = fs::read(m.path("data/1m.bin")).expect("read data/1m.bin once the registry is back");
    assert!(got == reference_file("big:1", "data/1m.bin"), "data/1m.bin differs from the reference");
    assert!(blob_file(store.root(), &layer).exists());
}
