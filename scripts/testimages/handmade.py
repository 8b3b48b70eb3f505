"""Images whose layers are tar streams written here entry by entry: many:1 (45 layers),
big:1 (a 24 MiB file), and edge:1, edge-extra:1 and pax-global:1, one case of the
union rules or of the tar formats each. Notes on how umoci 0.4.7 (the reference)
treats each edge case are next to it.
"""

import random
import tarfile

from .clock import T0, T1990
from .oci import write_image
from .tarstream import Tar


def many_image(layout):
    """45 layers: layer NN adds /layers/NN and rewrites /shared.txt."""
    layers = []
    for n in range(1, 46):
        t = Tar(mtime=T0 + n * 1000)
        t.dir("layers")
        t.file("layers/%02d" % n, "layer %02d\n" % n)
        t.file("shared.txt", "shared.txt as written by layer %02d\n" % n)
        layers.append((t.bytes(), "gzip", "layer %02d" % n))
    write_image(layout, "many-1", layers)


def big_image(layout):
    """One layer with a 24 MiB file (half random, half text) and a 1 MiB one, for reads at
    offsets far into a compressed layer."""
    rnd = random.Random(42)
    chunks = []
    for i in range(24):
        if i % 2 == 0:
            chunks.append(rnd.randbytes(1 << 20))
        else:
            line = b"line %08d of the text part of big.bin\n"
            chunks.append(b"".join(line % (i * 100000 + k) for k in range(1 << 20 // 40))[: 1 << 20].ljust(1 << 20, b"."))
    t = Tar()
    t.dir("data")
    t.file("data/big.bin", b"".join(chunks))
    t.file("data/small.txt", "small file after the big one\n" * 100)
    t.file("data/1m.bin", rnd.randbytes(1 << 20))
    write_image(layout, "big-1", [(t.bytes(), "gzip", "big")])


LONG_DIR = "d" * 60 + "/" + "e" * 70  # makes paths well over 100 bytes


def edge_image(layout):
    """Hand-made layers, one case per top-level directory.

    layer 1: gzip, PAX format: the lower state of every case
    layer 2: zstd, GNU format: GNU long names / long link targets (././@LongLink)
    layer 3: uncompressed, PAX format: whiteouts, opaque dirs, replacements
    Each layer has explicit entries for the directories it changes, except where a case
    says otherwise (those directories are in dir-mtime-ignore).
    """
    L1, L2, L3 = T0 + 1000, T0 + 2000, T0 + 3000
    a = Tar(tarfile.PAX_FORMAT, mtime=L1)

    # whiteout of a file
    a.dir("wh-file"); a.file("wh-file/keep.txt", "kept\n"); a.file("wh-file/gone.txt", "gone\n")
    # whiteout of a whole directory (subtree)
    a.dir("wh-dir"); a.file("wh-dir/keep.txt", "kept\n"); a.dir("wh-dir/gone")
    a.file("wh-dir/gone/a.txt", "a\n"); a.dir("wh-dir/gone/sub"); a.file("wh-dir/gone/sub/b.txt", "b\n")
    # opaque dirs: marker before / after the layer's own entries
    for c in ("opq-before", "opq-after"):
        a.dir(c); a.dir(c + "/d"); a.file(c + "/d/old.txt", "old\n"); a.dir(c + "/d/olddir")
        a.file(c + "/d/olddir/x.txt", "x\n"); a.file(c + "/d/same.txt", "lower version\n")
        a.file(c + "/sibling.txt", "outside the opaque dir: stays\n")
    # a directory replaced by a regular file / by a symlink; a file replaced by a dir
    a.dir("dir-to-file"); a.dir("dir-to-file/victim"); a.file("dir-to-file/victim/a.txt", "a\n")
    a.dir("dir-to-file/victim/sub"); a.file("dir-to-file/victim/sub/b.txt", "b\n")
    a.dir("dir-to-symlink"); a.dir("dir-to-symlink/victim"); a.file("dir-to-symlink/victim/a.txt", "a\n")
    a.dir("dir-to-symlink/target"); a.file("dir-to-symlink/target/t.txt", "t\n")
    a.dir("file-to-dir"); a.file("file-to-dir/victim", "was a file\n")
    # a file whited out and re-added in the same (upper) layer, in both orders; umoci
    # shows the upper version in both (it ignores a whiteout of a name the same layer made)
    a.dir("readd-wh-first"); a.file("readd-wh-first/f.txt", "lower version\n")
    a.dir("readd-file-first"); a.file("readd-file-first/f.txt", "lower version\n")
    # hardlinks: a group of three names
    a.dir("hardlinks"); a.file("hardlinks/a", "shared by a, b and c\n")
    a.hardlink("hardlinks/b", "hardlinks/a"); a.dir("hardlinks/sub")
    a.hardlink("hardlinks/sub/c", "hardlinks/a")
    # a hardlink whose original name is whited out later: "alias" keeps the content
    # (umoci: alias has st_nlink 1)
    a.dir("hardlink-wh"); a.file("hardlink-wh/orig", "content of orig, kept by alias\n")
    a.hardlink("hardlink-wh/alias", "hardlink-wh/orig")
    # PAX long names, long symlink target, long hardlink name
    a.dir("long-pax"); a.dir("long-pax/" + LONG_DIR.split("/")[0]); a.dir("long-pax/" + LONG_DIR)
    long_pax_file = "long-pax/" + LONG_DIR + "/" + "f" * 90 + ".txt"
    a.file(long_pax_file, "long PAX name\n")
    a.symlink("long-pax/symlink", "/" + LONG_DIR + "/" + "t" * 100)
    a.hardlink("long-pax/" + LONG_DIR + "/" + "h" * 90, long_pax_file)
    # fifo and devices
    a.dir("special"); a.fifo("special/fifo", mode=0o640); a.chr("special/null", 1, 3, mode=0o666)
    a.blk("special/loop0", 7, 0, mode=0o660, gid=6)
    # unicode and spaces
    a.dir("unicode"); a.file("unicode/héllo wörld ✓.txt", "unicode name\n")
    a.dir("unicode/dir with spaces"); a.file("unicode/dir with spaces/file name.txt", "spaces\n")
    a.symlink("unicode/→link", "héllo wörld ✓.txt")
    # the same path twice in one layer: the second wins (umoci: content, mode 0644)
    a.dir("dup"); a.file("dup/f.txt", "first\n", mode=0o600); a.file("dup/f.txt", "second wins\n", mode=0o644)
    # xattrs, one with an empty value. umoci does not set user.empty: Go's archive/tar
    # skips PAX records with an empty value (POSIX: a zero-length value deletes the
    # keyword), so the reference has user.foo and user.unicode only.
    a.dir("xattrs", xattrs={"user.dir": "on a directory"})
    a.file("xattrs/file", "has xattrs\n", xattrs={"user.foo": "bar", "user.empty": "",
                                                   "user.unicode": "välue ✓"})
    a.symlink("xattrs/plain-link", "file")
    # special mode bits
    a.dir("modes"); a.dir("modes/setgid-dir", mode=0o2775, gid=50); a.dir("modes/sticky-dir", mode=0o1777)
    a.file("modes/setuid-file", "#!/bin/sh\n", mode=0o4755); a.file("modes/setgid-file", "x\n", mode=0o2711)
    a.file("modes/no-perms", "mode 0\n", mode=0o000); a.file("modes/0600", "secret\n", mode=0o600)
    # old mtime
    a.dir("mtime"); a.file("mtime/1990.txt", "from 1990\n", mtime=T1990)
    a.dir("mtime/dir-1990", mtime=T1990); a.symlink("mtime/link-1990", "1990.txt", mtime=T1990)
    # uid/gid not in /etc/passwd; numbers win over names
    a.dir("ids", uid=31337, gid=31338)
    a.file("ids/file", "4242:4343\n", uid=4242, gid=4343)
    a.file("ids/named-nobody", "uid 4242 though uname says nobody\n", uid=4242, gid=4343,
           uname="nobody", gname="nogroup")
    a.symlink("ids/link", "file", uid=777, gid=888)
    # a file whose parents have no entries. umoci creates implicit/ and implicit/dir/
    # as root:root 0755 with the mtime of unpacking (so both are in dir-mtime-ignore).
    a.file("implicit/dir/f", "parents have no tar entries\n")
    # a directory that layer 3 changes without an entry of its own
    a.dir("no-dir-entry"); a.file("no-dir-entry/a.txt", "whited out in layer 3\n")
    a.file("no-dir-entry/b.txt", "stays\n")

    # layer 2: GNU format (long names through ././@LongLink entries)
    g = Tar(tarfile.GNU_FORMAT, mtime=L2)
    g.dir("long-gnu"); g.dir("long-gnu/" + LONG_DIR.split("/")[0]); g.dir("long-gnu/" + LONG_DIR)
    long_gnu_file = "long-gnu/" + LONG_DIR + "/" + "g" * 90 + ".txt"
    g.file(long_gnu_file, "long GNU name\n")
    g.symlink("long-gnu/symlink", "/" + LONG_DIR + "/" + "u" * 100)
    g.hardlink("long-gnu/" + LONG_DIR + "/" + "k" * 90, long_gnu_file)
    g.file("long-gnu/ünï cödé.txt", "utf-8 name in a GNU header\n")
    g.dir("long-gnu/big-ids"); g.file("long-gnu/big-ids/f", "uid 3000000 (base-256 in GNU)\n",
                                      uid=3000000, gid=3000001)

    c = Tar(tarfile.PAX_FORMAT, mtime=L3)
    c.dir("wh-file"); c.whiteout("wh-file/gone.txt")
    c.dir("wh-dir"); c.whiteout("wh-dir/gone")
    c.dir("opq-before"); c.dir("opq-before/d"); c.opaque("opq-before/d")
    c.file("opq-before/d/new.txt", "new\n"); c.file("opq-before/d/same.txt", "upper version\n")
    c.dir("opq-after"); c.dir("opq-after/d")
    c.file("opq-after/d/new.txt", "new\n"); c.file("opq-after/d/same.txt", "upper version\n")
    c.opaque("opq-after/d")
    c.dir("dir-to-file"); c.file("dir-to-file/victim", "now a file\n")
    c.dir("dir-to-symlink"); c.symlink("dir-to-symlink/victim", "target")
    c.dir("file-to-dir"); c.dir("file-to-dir/victim", mode=0o750); c.file("file-to-dir/victim/inner.txt", "inner\n")
    c.dir("readd-wh-first"); c.whiteout("readd-wh-first/f.txt"); c.file("readd-wh-first/f.txt", "upper version\n")
    c.dir("readd-file-first"); c.file("readd-file-first/f.txt", "upper version\n"); c.whiteout("readd-file-first/f.txt")
    c.dir("hardlink-wh"); c.whiteout("hardlink-wh/orig")
    # no entry for no-dir-entry/ itself: umoci leaves its mtime at unpack time
    c.whiteout("no-dir-entry/a.txt"); c.file("no-dir-entry/c.txt", "added in layer 3\n")

    write_image(layout, "edge-1", [(a.bytes(), "gzip", "edge: lower states (PAX, gzip)"),
                                   (g.bytes(), "zstd", "edge: GNU long names (zstd)"),
                                   (c.bytes(), "none", "edge: whiteouts and replacements (tar)")])


def edge_extra_image(layout):
    """More cases, kept apart from edge:1 so its failures stay easy to read.

    layer 1: gzip, GNU format, every name written as "./NAME", a "./" entry for the root
             (so the root's mtime is defined), a name that is not UTF-8
    layer 2: gzip, PAX format, one absolute name "/abs-path/..."
    A global PAX header is in pax-global:1 instead: umoci refuses the whole layer.
    """
    L1, L2 = T0 + 1000, T0 + 2000
    a = Tar(tarfile.GNU_FORMAT, mtime=L1)
    a.dir("./", mode=0o755)
    # a hardlink in layer 2 to a file of layer 1: one inode, nlink 2
    a.dir("./xlayer-link"); a.file("./xlayer-link/base.txt", "from layer 1\n")
    # a hardlink, then its target's name written again in the same layer: the link keeps
    # the first content (it resolves to the target as it was at that point of the stream)
    a.dir("./hl-rewrite"); a.file("./hl-rewrite/f", "v1: the link keeps this\n")
    a.hardlink("./hl-rewrite/l", "./hl-rewrite/f"); a.file("./hl-rewrite/f", "v2: f is a new file\n")
    # a directory whited out and made again in the same upper layer, marker first / last:
    # only the new children show (the whiteout hides lower layers only)
    for c in ("redo-wh-first", "redo-wh-last"):
        a.dir("./" + c); a.dir("./%s/d" % c); a.file("./%s/d/old.txt" % c, "old\n")
    # a symlink replaced by a directory
    a.dir("./sym-to-dir"); a.symlink("./sym-to-dir/x", "elsewhere")
    # a name that is not valid UTF-8 (latin-1 e-acute)
    a.dir("./non-utf8"); a.file("./non-utf8/caf\udce9", "latin-1 name\n")

    g = Tar(tarfile.PAX_FORMAT, mtime=L2)
    g.dir("xlayer-link"); g.hardlink("xlayer-link/new", "xlayer-link/base.txt")
    g.dir("redo-wh-first"); g.whiteout("redo-wh-first/d"); g.dir("redo-wh-first/d")
    g.file("redo-wh-first/d/new.txt", "new\n")
    g.dir("redo-wh-last"); g.dir("redo-wh-last/d"); g.file("redo-wh-last/d/new.txt", "new\n")
    g.whiteout("redo-wh-last/d")
    g.dir("sym-to-dir"); g.dir("sym-to-dir/x"); g.file("sym-to-dir/x/inside.txt", "inside\n")
    # a whiteout of a name no lower layer has: a no-op, and never shown
    g.dir("wh-missing"); g.whiteout("wh-missing/nothing"); g.file("wh-missing/f", "f\n")
    # an opaque marker in a directory that is new in this layer
    g.dir("opq-new"); g.opaque("opq-new"); g.file("opq-new/a", "a\n")
    # an absolute name
    g.dir("/abs-path"); g.file("/abs-path/f", "absolute name in the tar\n")

    write_image(layout, "edge-extra-1", [(a.bytes(), "gzip", "edge-extra: GNU, ./ names"),
                                         (g.bytes(), "gzip", "edge-extra: PAX, global header")])


def pax_global_image(layout):
    """One layer opening with a global PAX header (typeflag g; `git archive` writes one).
    It is not an entry and must not show. umoci 0.4.7 refuses such a layer ("unknown
    typeflag '\\x67'"), so the reference unpack is of a twin image whose layer has the
    same entries without the global header. Returns that twin's layout ref."""
    layers = []
    for glob in ({"comment": "a global PAX header, not an entry"}, None):
        t = Tar(tarfile.PAX_FORMAT, mtime=T0 + 1000)
        if glob:
            t.tf = tarfile.open(fileobj=t.buf, mode="w", format=tarfile.PAX_FORMAT,
                                encoding="utf-8", pax_headers=glob)
        t.dir("pax-global"); t.file("pax-global/f.txt", "after a global header\n")
        t.file("pax-global/long-" + "n" * 120, "long name after a global header\n")
        layers.append([(t.bytes(), "gzip", "pax-global")])
    write_image(layout, "pax-global-1", layers[0])
    write_image(layout, "pax-global-1-ref-twin", layers[1])
    return "pax-global-1-ref-twin"
