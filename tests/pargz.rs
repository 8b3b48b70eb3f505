//! The parallel gzip decoder on real layers: every gzip layer of the test images, as the
//! test registry serves it, decoded in small chunks (so each layer has many, and chunks
//! start next to back-references into windows they lack) must give flate2's bytes, and
//! the one-core decoder's checkpoints, which then decode every span to the same bytes.

use imgfs::layer::arriving::Arriving;
use imgfs::layer::checkpoints::{Checkpoints, Format};
use imgfs::layer::indexing::IndexingDecoder;
use imgfs::layer::pargz::ParallelGzip;
use imgfs::layer::workers;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::Arc;

#[path = "outcome/mod.rs"]
mod outcome;
use outcome::registry_addr;

// Indexes and lists are asked for too, and skipped (their images are listed apart).
const ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";

fn get(http: &reqwest::blocking::Client, url: &str) -> Vec<u8> {
    let r = http.get(url).header("accept", ACCEPT).send().unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.bytes().unwrap().to_vec()
}

/// The gzip layers of the single-platform test images, each once.
fn gzip_layers(http: &reqwest::blocking::Client, addr: &str) -> Vec<(String, Vec<u8>)> {
    let images = std::fs::read_to_string(outcome::env_dir().join("images.tsv")).unwrap();
    let mut seen = BTreeSet::new();
    let mut layers = Vec::new();
    for line in images.lines() {
        let name = line.split('\t').next().unwrap();
        let (repo, tag) = name.split_once(':').unwrap();
        let manifest: Value =
            serde_json::from_slice(&get(http, &format!("http://{addr}/v2/{repo}/manifests/{tag}"))).unwrap();
        let Some(list) = manifest["layers"].as_array() else { continue };
        for l in list {
            let digest = l["digest"].as_str().unwrap();
            if l["mediaType"].as_str().unwrap_or("").ends_with("gzip") && seen.insert(digest.to_string()) {
                layers
                    .push((format!("{name} {digest}"), get(http, &format!("http://{addr}/v2/{repo}/blobs/{digest}"))));
            }
        }
    }
    layers
}

fn parallel(blob: &[u8], span: u64, chunk: u64) -> std::io::Result<(Vec<u8>, Checkpoints)> {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(blob).unwrap();
    let mut dec = ParallelGzip::new(Arc::new(Arriving::whole(file).unwrap()), span, chunk, workers::global())?;
    let mut out = Vec::new();
    dec.read_to_end(&mut out)?;
    Ok((out, dec.finish().map_err(std::io::Error::other)?))
}

#[test]
fn every_gzip_layer_of_the_test_images_decodes_as_flate2_and_the_one_core_decoder_do() {
    let Some(_) = outcome::test_env() else { return };
    let http = reqwest::blocking::Client::new();
    let layers = gzip_layers(&http, &registry_addr());
    assert!(layers.len() >= 20, "only {} gzip layers found", layers.len());
    let mut many_chunks = 0;
    for (what, blob) in &layers {
        let mut expected = Vec::new();
        if flate2::read::MultiGzDecoder::new(&blob[..]).read_to_end(&mut expected).is_err() {
            // A hostile image's layer (truncated on purpose): an error, as flate2's.
            assert!(parallel(blob, 64 << 10, 16 << 10).is_err(), "{what}: decoded though flate2 fails");
            continue;
        }
        let (span, chunk) = (64 << 10, 16 << 10);
        let (out, cps) = parallel(blob, span, chunk).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(out == expected, "{what}: bytes differ from flate2's");
        let mut seq = IndexingDecoder::new(&blob[..], Format::Gzip, span).unwrap();
        std::io::copy(&mut seq, &mut std::io::sink()).unwrap();
        assert_eq!(cps, seq.finish().unwrap(), "{what}: checkpoints differ from the one-core decoder's");
        for i in 0..cps.span_count() {
            let (s, e) = cps.span_range(i);
            let (cs, ce) = cps.compressed_range(i);
            let span = cps.decode_span_from(i, &blob[cs as usize..ce as usize]).unwrap();
            assert!(span == expected[s as usize..e as usize], "{what}: span {i}");
        }
        if blob.len() as u64 > 8 * chunk {
            many_chunks += 1;
        }
    }
    assert!(many_chunks >= 1, "no layer spans many chunks");
}
