"""The reference trees: `umoci unpack` of each image (of a gzip twin where umoci cannot
read the image), the directories whose mtime the unpack does not give as imgfs does
(dir-mtime-ignore), and the check against scripts/testimages/golden/ where a golden list is.
"""

import difflib
import io
import os
import shutil
import subprocess
import sys
import tarfile

from .oci import OCI_MANIFEST, compress, layer_tars
from .tarstream import norm
from .tools import run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ref_twin(layout, ref, twins):
    """The layout ref to unpack for ref: its twin in twins (ref -> twin ref, for images
    umoci cannot read for another reason), else ref itself unless it has zstd layers.
    umoci 0.4.7 cannot read zstd layers: the reference unpack uses a twin image whose
    zstd layers are re-compressed as gzip (same diff_ids, same tar streams)."""
    if ref in twins:
        return twins[ref]
    m = layout.manifest(ref)
    if not any(l["mediaType"].endswith("+zstd") for l in m["layers"]):
        return ref
    layers = []
    for l in m["layers"]:
        if l["mediaType"].endswith("+zstd"):
            tar_bytes = subprocess.run(["zstd", "-q", "-d", "-c"], input=layout.blob(l["digest"]),
                                       check=True, stdout=subprocess.PIPE).stdout
            blob, mt = compress(tar_bytes, "gzip")
            l = {"mediaType": mt, "digest": layout.put_blob(blob), "size": len(blob)}
        layers.append(l)
    twin = dict(m, layers=layers)
    layout.tag(ref + "-gzip-twin", layout.put_json(twin, OCI_MANIFEST))
    return ref + "-gzip-twin"


def explicit_dir_mtimes(layout, ref):
    """{dir path: mtime of its topmost explicit tar entry} over all layers of ref."""
    out = {}
    for tar_bytes in layer_tars(layout, ref):
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:", encoding="utf-8") as tf:
            for m in tf.getmembers():
                if m.isdir():
                    out[norm(m.name)] = int(m.mtime)
    return out


def unpack(layout_path, layout, ref, dest, twins):
    """`umoci unpack` ref (or its twin, see ref_twin) into dest, and write
    dest/dir-mtime-ignore."""
    if os.path.exists(dest):
        shutil.rmtree(dest)
    src = ref_twin(layout, ref, twins)
    run("umoci", "unpack", "--image", "%s:%s" % (layout_path, src), dest, stdout=subprocess.DEVNULL)
    # dir-mtime-ignore: directories whose mtime in the unpack is not that of their
    # topmost explicit tar entry (which is what imgfs gives a directory). With umoci
    # 0.4.7 these are: directories with no entry of their own, which it creates with the
    # time of unpacking ("implicit/", "implicit/dir/"); the root of an image none of
    # whose layers has a "./" entry (mtime 0, or the time of unpacking once a layer made
    # an implicit directory); a directory that a layer makes and then whites out with
    # the marker last ("redo-wh-last/d": the time of unpacking). A directory that a
    # layer changes without an entry of its own keeps its mtime: umoci restores it.
    rootfs = os.path.join(dest, "rootfs")
    expected = explicit_dir_mtimes(layout, src)
    ignore = []
    dirs = [rootfs]
    for dirpath, dirnames, _ in os.walk(rootfs):  # os.walk lists symlinks to dirs too
        dirs += [os.path.join(dirpath, d) for d in dirnames
                 if not os.path.islink(os.path.join(dirpath, d))]
    for p in dirs:
        rel = norm(os.path.relpath(p, rootfs))
        if expected.get(rel) != int(os.lstat(p).st_mtime):
            ignore.append(rel)
    with open(os.path.join(dest, "dir-mtime-ignore"), "w", encoding="utf-8",
              errors="surrogateescape") as f:
        f.write("".join(d + "\n" for d in sorted(ignore)))


def check_golden(unpack_dir, name):
    """Compare the unpack with golden/NAME.list (beside this file), where there is one."""
    golden = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", name + ".list")
    if not os.path.exists(golden):
        return
    with open(golden, encoding="utf-8", errors="surrogateescape") as f:
        want = [l for l in f.read().splitlines() if not l.startswith("# ")]
    out = run(sys.executable, os.path.join(REPO, "scripts", "treecmp.py"), "--list",
              os.path.join(unpack_dir, "rootfs"), "--ignore-dir-mtime-of",
              os.path.join(unpack_dir, "dir-mtime-ignore"), stdout=subprocess.PIPE).stdout
    got = out.decode("utf-8", errors="surrogateescape").splitlines()
    if got != want:
        diff = difflib.unified_diff(want, got, golden, unpack_dir, lineterm="")
        sys.exit("build-test-images: the reference unpack of %s differs from %s:\n%s"
                 % (name, golden, "\n".join(diff)))
