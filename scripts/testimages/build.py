"""The whole build: every image, its push and check, the reference unpacks, and
images.tsv and manifests.tsv; or, with --repush-retag, retag:latest moved to content B.
"""

import argparse
import os
import shutil
import sys
import time

from . import handmade, hostile_images, layered_image, scale, umoci_images
from .oci import DOCKER_LAYER_GZIP, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, Layout
from .push import Registry, expect, short
from .tools import ensure_tools, log, run
from .umoci import Umoci
from .unpack import check_golden, unpack


def replace_line(path, repo_tag, new):
    with open(path) as f:
        lines = [new + "\n" if l.startswith(repo_tag + "\t") else l for l in f]
    with open(path, "w") as f:
        f.writelines(lines)


def main():
    ap = argparse.ArgumentParser(description="build, push and unpack the imgfs test images")
    ap.add_argument("state_dir")
    ap.add_argument("--repush-retag", action="store_true",
                    help="push retag:latest again, now with content B")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("build-test-images: run as root (umoci unpack must keep owners and devices)")
    state = os.path.abspath(args.state_dir)
    with open(os.path.join(state, "registry.addr")) as f:
        reg = Registry(f.read().strip())
    ensure_tools()
    work = os.path.join(state, "work")
    layout_path = os.path.join(work, "oci")
    layout = Layout(layout_path)
    u = Umoci(layout_path, work)
    t_start = time.time()

    if args.repush_retag:
        if not os.path.exists(os.path.join(state, "images.tsv")):
            sys.exit("build-test-images: --repush-retag needs a full run on %s first" % state)
        try:
            layout.lookup("retag-b")
        except (KeyError, FileNotFoundError):
            umoci_images.build_retag_b(u)
        reg.push("oci:%s:retag-b" % layout_path, "retag:latest")
        line = expect(reg, "retag:latest", OCI_MANIFEST, OCI_LAYER + "+gzip",
                      layout.manifest("retag-b")["config"]["digest"])
        replace_line(os.path.join(state, "images.tsv"), "retag:latest",
                     "retag:latest\t-\tcontent B, re-pushed by --repush-retag (retag:old is still A)")
        replace_line(os.path.join(state, "manifests.tsv"), "retag:latest", line)
        log("retag:latest now points at content B")
        return

    for d in (work, os.path.join(state, "unpacked")):
        if os.path.exists(d):
            shutil.rmtree(d)
    os.makedirs(work)
    run("umoci", "init", "--layout", layout_path)

    umoci_images.build(u)
    layered_image.build(u)
    umoci_images.build_retag_a(u)
    layered_image.check(layout)
    log("python: multi index, many:1, big:1, edge:1, edge-extra:1, pax-global:1, scale:1")
    umoci_images.multi_index(layout)
    handmade.many_image(layout)
    handmade.big_image(layout)
    handmade.edge_image(layout)
    handmade.edge_extra_image(layout)
    twins = {"pax-global-1": handmade.pax_global_image(layout)}
    scale.scale_image(layout)
    hostile_images.hostile_image(layout)
    hostile_images.hostile_failing_images(layout)
    log("built in %.1fs" % (time.time() - t_start))

    t_push = time.time()
    oci = lambda ref: "oci:%s:%s" % (layout_path, ref)
    cfg = lambda ref: layout.manifest(ref)["config"]["digest"]
    GZ, ZS = OCI_LAYER + "+gzip", OCI_LAYER + "+zstd"
    summary = []
    images = []  # (repo:tag, unpack name or None, source ref, description)

    def push(ref, repo_tag, flags, manifest_mt, layer_mts, unpack_name, desc, src=None):
        """Push layout ref (or the transport string src) to repo_tag, check the media types
        (and that the config, so the diff_ids, did not change) as the registry has them."""
        reg.push(src or oci(ref), repo_tag, *flags)
        summary.append(expect(reg, repo_tag, manifest_mt, layer_mts, cfg(ref)))
        images.append((repo_tag, unpack_name, ref, desc))

    push("base-1", "base:1", [], OCI_MANIFEST, GZ, "base-1",
         "umoci, 1 layer: setuid, sticky /tmp, 0600 file, 1234:5678 owner, symlinks")
    push("app-1", "app:1", [], OCI_MANIFEST, GZ, "app-1",
         "umoci, base + 2 layers (umoci whiteouts), labels/env/cmd/entrypoint/user/ports")
    push("app-2", "app:2", [], OCI_MANIFEST, GZ, "app-2", "umoci, base + 1 layer, label tier=db")
    push("layered-1", "layered:1", [], OCI_MANIFEST, GZ, "layered-1",
         "umoci, real shape: busybox base with ./, apt-like, config, top layer (no ./ above the base)")
    push("lazy-1", "lazy:1", [], OCI_MANIFEST, GZ, "lazy-1",
         "umoci, 3 layers: /bottom/a.txt, /middle/b.txt, /top/c.txt")
    reg.push(oci("multi-1"), "multi:1", "--all", "--preserve-digests")
    summary.append(expect(reg, "multi:1", OCI_INDEX, None))
    images.append(("multi:1", "multi-amd64", "multi-amd64",
                   "OCI index linux/amd64 + linux/arm64/v8 (/etc/arch); arm64 unpack: multi-arm64"))
    # The same two images as a Docker manifest list of schema 2 manifests.
    reg.push(oci("multi-1"), "multi-docker:1", "--all", "--format", "v2s2")
    summary.append(expect(reg, "multi-docker:1", DOCKER_LIST, None))
    images.append(("multi-docker:1", "multi-amd64", "multi-amd64",
                   "Docker manifest list (v2s2) of multi:1's two images; arm64 unpack: multi-arm64"))
    push("v2s2-1", "v2s2:1", ["--format", "v2s2"], DOCKER_MANIFEST, DOCKER_LAYER_GZIP, "v2s2-1",
         "umoci, 2 layers, pushed as Docker schema 2 (gzip)")
    push("zstd-1", "zstd:1", ["--dest-compress-format", "zstd"], OCI_MANIFEST, ZS, "zstd-1",
         "umoci, 2 layers, re-compressed to zstd by skopeo")
    # The same image (config, so ID) under another manifest: its gzip layers as umoci
    # made them. --preserve-digests keeps skopeo from reusing zstd:1's blobs instead.
    push("zstd-1", "zstd-gzip:1", ["--preserve-digests"], OCI_MANIFEST, GZ, "zstd-1",
         "zstd:1's image with umoci's gzip layers: one image ID, two manifests")
    # plain:1: skopeo decompresses into a dir: copy, then pushes that as it is.
    plain_dir = os.path.join(work, "plain-dir")
    run("skopeo", "--insecure-policy", "copy", "-q", "--dest-decompress", oci("plain-1"), "dir:" + plain_dir)
    push("plain-1", "plain:1", ["--preserve-digests"], OCI_MANIFEST, OCI_LAYER, "plain-1",
         "umoci, 2 layers, uncompressed (skopeo --dest-decompress)", src="dir:" + plain_dir)
    push("retag-a", "retag:latest", [], OCI_MANIFEST, GZ, "retag-a",
         "content A (base + /retag/content.txt); --repush-retag moves it to B")
    push("retag-a", "retag:old", [], OCI_MANIFEST, GZ, "retag-a", "content A (what retag:latest was before --repush-retag)")
    push("many-1", "many:1", ["--preserve-digests"], OCI_MANIFEST, GZ, "many-1",
         "45 gzip layers: /layers/NN, /shared.txt rewritten by each")
    push("big-1", "big:1", ["--preserve-digests"], OCI_MANIFEST, GZ, "big-1",
         "1 gzip layer: /data/big.bin 24 MiB (random + text), /data/1m.bin")
    push("edge-1", "edge:1", ["--preserve-digests"], OCI_MANIFEST, [GZ, ZS, OCI_LAYER], "edge-1",
         "hand-made layers (gzip PAX, zstd GNU, plain PAX): union-rule edge cases")
    push("edge-extra-1", "edge-extra:1", ["--preserve-digests"], OCI_MANIFEST, GZ, "edge-extra-1",
         "more hand-made cases: ./ names and root entry, cross-layer hardlink, dir re-made after its whiteout, non-UTF-8 name, absolute name")
    push("pax-global-1", "pax-global:1", ["--preserve-digests"], OCI_MANIFEST, GZ, "pax-global-1",
         "1 layer opening with a global PAX header (unpack: same layer without it)")
    push("scale-1", "scale:1", ["--preserve-digests"], OCI_MANIFEST, GZ, "scale-1",
         "2 gzip layers, 200,000 entries node_modules-like, then rewrites, whiteouts, an opaque dir")
    push("hostile-1", "hostile:1", ["--preserve-digests"], OCI_MANIFEST, GZ, None,
         "hand-made bad entries, served as documented: non-UTF-8 names, broken hard links, .., symlinks out")
    for ref, repo_tag, mt in hostile_images.HOSTILE_FAILING:
        push(ref, repo_tag, ["--preserve-digests"], OCI_MANIFEST, mt, None,
             "hand-made layer that pull must refuse with a clear error (fulldisk: on a small disk)")
    log("pushed in %.1fs" % (time.time() - t_push))

    t_unpack = time.time()
    unpacked = os.path.join(state, "unpacked")
    os.makedirs(unpacked)
    done = set()
    for repo_tag, name, ref, _ in images:
        if name and name not in done:
            unpack(layout_path, layout, ref, os.path.join(unpacked, name), twins)
            check_golden(os.path.join(unpacked, name), name)
            done.add(name)
    unpack(layout_path, layout, "multi-arm64", os.path.join(unpacked, "multi-arm64"), twins)
    log("unpacked in %.1fs" % (time.time() - t_unpack))

    with open(os.path.join(state, "images.tsv"), "w") as f:
        for repo_tag, name, _, desc in images:
            f.write("%s\t%s\t%s\n" % (repo_tag, os.path.join(unpacked, name) if name else "-", desc))
    with open(os.path.join(state, "manifests.tsv"), "w") as f:
        f.write("".join(l + "\n" for l in summary))
    for l in summary:
        log("  " + short(l))
    log("done in %.1fs; see %s" % (time.time() - t_start, os.path.join(state, "images.tsv")))
