"""Hostile images: hand-made layers a careless or malicious builder could push.
hostile:1 pulls and mounts (its bad entries are served as documented); each of
HOSTILE_FAILING must make `imgfs pull` fail with a clear error; the mount tests'
hostile module checks both.
"""

import gzip
import io
import random
import tarfile

from .clock import T0
from .oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, compress, iso, sha256, write_image
from .tarstream import Tar


def hostile_image(layout):
    """layer 1: /etc/hostname, /lowdir/f
    layer 2: two names one byte apart in meaning (latin-1 e-acute vs U+10FFE9), hard
             links to a missing file, to a later name, to a directory (each fails alone),
             one that works across layers, a name climbing out with "..", symlinks out
             of the image (served as they are), invalid whiteouts (bare .wh., .wh..)"""
    L1, L2 = T0 + 1000, T0 + 2000
    a = Tar(mtime=L1)
    a.dir("etc"); a.file("etc/hostname", "hostile\n")
    a.dir("lowdir"); a.file("lowdir/f", "still here\n")
    b = Tar(mtime=L2)
    b.dir("names"); b.file("names/caf\udce9", "latin-1\n"); b.file("names/caf\U0010ffe9", "private use\n")
    b.dir("links")
    b.hardlink("links/passwd", "/etc/passwd")
    b.hardlink("links/early", "links/later"); b.file("links/later", "written after the link\n")
    b.dir("links/d"); b.hardlink("links/to-dir", "links/d")
    b.hardlink("links/ok", "etc/hostname")
    b.file("../../../escaped", "climbed\n")
    b.dir("sym"); b.symlink("sym/passwd", "/etc/passwd"); b.symlink("sym/up", "../../../../etc")
    b.dir("lowdir"); b.file("lowdir/.wh.", ""); b.file("lowdir/.wh..", "")
    write_image(layout, "hostile-1", [(a.bytes(), "gzip", "hostile: base"),
                                      (b.bytes(), "gzip", "hostile: bad entries")])


def write_raw_image(layout, ref, blob, media_type, tar_bytes):
    """One layer given as its blob (maybe damaged) and the tar its diff_id is of."""
    cfg = {"architecture": "amd64", "os": "linux", "created": iso(T0),
           "rootfs": {"type": "layers", "diff_ids": [sha256(tar_bytes)]}}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": layout.put_json(cfg, OCI_CONFIG),
                "layers": [{"mediaType": media_type, "digest": layout.put_blob(blob), "size": len(blob)}]}
    layout.tag(ref, layout.put_json(manifest, OCI_MANIFEST))


# (layout ref, repo:tag, layer media type); built by hostile_failing_images.
HOSTILE_FAILING = [
    ("hostile-bomb-1", "hostile-bomb:1", OCI_LAYER + "+gzip"),
    ("hostile-nottar-1", "hostile-nottar:1", OCI_LAYER + "+gzip"),
    ("hostile-truncgz-1", "hostile-truncgz:1", OCI_LAYER + "+gzip"),
    ("hostile-trunczst-1", "hostile-trunczst:1", OCI_LAYER + "+zstd"),
    ("hostile-longname-1", "hostile-longname:1", OCI_LAYER + "+gzip"),
    ("hostile-hardout-1", "hostile-hardout:1", OCI_LAYER + "+gzip"),
    ("hostile-sparse-1", "hostile-sparse:1", OCI_LAYER + "+gzip"),
    ("hostile-fulldisk-1", "hostile-fulldisk:1", OCI_LAYER + "+zstd"),
]


def hostile_failing_images(layout):
    # 3000 empty files, then 64 MiB of zeros (about 64 KiB of gzip): over a small
    # IMGFS_MAX_LAYER_ENTRIES, or a small IMGFS_MAX_LAYER_SIZE.
    t = Tar()
    t.dir("many")
    for i in range(3000):
        t.file("many/%04d" % i, b"")
    t.file("zeros", bytes(64 << 20))
    write_image(layout, "hostile-bomb-1", [(t.bytes(), "gzip", "hostile: entries and a gzip bomb")])
    text = b"this is not a tar archive\n" * 100
    write_raw_image(layout, "hostile-nottar-1", gzip.compress(text, mtime=0), OCI_LAYER + "+gzip", text)
    t = Tar()
    t.file("counting", b"".join(b"%08d\n" % i for i in range(200000)))
    tar_bytes = t.bytes()
    for ref, how in (("hostile-truncgz-1", "gzip"), ("hostile-trunczst-1", "zstd")):
        blob, mt = compress(tar_bytes, how)
        write_raw_image(layout, ref, blob[:len(blob) // 2], mt, tar_bytes)
    t = Tar(); t.file("n" * 256, "a name component no kernel can serve\n")
    write_image(layout, "hostile-longname-1", [(t.bytes(), "gzip", "hostile: 256-byte name")])
    t = Tar(); t.dir("d"); t.hardlink("d/out", "../../etc/passwd")
    write_image(layout, "hostile-hardout-1", [(t.bytes(), "gzip", "hostile: hard link out of the image")])
    # A PAX 1.0 sparse file as GNU tar writes it: the real name in GNU.sparse.name, the
    # data a sparse map then the data blocks; served as-is it would be a wrong name.
    t = Tar()
    ti = tarfile.TarInfo("GNUSparseFile.0/sparse")
    ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "sparse",
                      "GNU.sparse.realsize": "1048576"}
    data = b"1\n0\n512\n".ljust(512, b"\0") + b"x" * 512
    ti.size = len(data)
    t.tf.addfile(ti, io.BytesIO(data))
    write_image(layout, "hostile-sparse-1", [(t.bytes(), "gzip", "hostile: PAX sparse file")])
    # One zstd frame of a 1 MiB random block written 8 times: about 1 MiB of blob (the
    # repeats are within zstd's window), but its copy in 1 MiB frames (re-encoded to be
    # read midway) is about 8 MiB: a small disk fills while that copy is written.
    block = random.Random(8).randbytes(1 << 20)
    t = Tar(); t.file("repeated", block * 8)
    write_image(layout, "hostile-fulldisk-1", [(t.bytes(), "zstd", "hostile: zstd, re-encoded copy 8 x the blob")])
