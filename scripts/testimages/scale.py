"""scale:1, an image of 200,000 entries, shaped like a node_modules-heavy layer: what
the TOC of a big layer must serve exactly (directories of thousands of children, names
sharing long prefixes, hard links, symlinks), with an upper layer that rewrites,
whites out and makes a directory opaque across it. Written here entry by entry: a few
seconds, where umoci would take minutes to repack that many files.
"""

from .clock import T0
from .oci import write_image
from .tarstream import Tar

PACKAGES = 2000
FILES = 96          # per package's lib/
BINS = 2000         # symlinks in node_modules/.bin: one directory of many children
PREFIX = "a-package-with-a-long-shared-name-"


def scale_image(layout):
    base = Tar(mtime=T0)
    base.dir("./")
    base.dir("node_modules")
    base.dir("node_modules/.bin")
    count = 3
    for p in range(PACKAGES):
        pkg = "node_modules/%s%04d" % (PREFIX, p)
        base.dir(pkg)
        base.file(pkg + "/package.json", '{"name":"%s%04d"}\n' % (PREFIX, p))
        base.dir(pkg + "/lib")
        count += 3
        for f in range(FILES):
            base.file("%s/lib/file-%02d.js" % (pkg, f), "module.exports = %d;\n" % (p * FILES + f))
            count += 1
        # Every tenth package links one file under a second name.
        if p % 10 == 0:
            base.hardlink(pkg + "/lib/index.js", pkg + "/lib/file-00.js")
            count += 1
    for b in range(BINS):
        base.symlink("node_modules/.bin/tool-%04d" % b, "../%s%04d/lib/file-01.js" % (PREFIX, b % PACKAGES))
        count += 1
    while count < 200000:
        base.file("node_modules/.bin/pad-%06d" % count, "")
        count += 1

    upper = Tar(mtime=T0 + 1000)
    for p in range(0, PACKAGES, 50):
        pkg = "node_modules/%s%04d" % (PREFIX, p)
        upper.file(pkg + "/lib/file-03.js", "rewritten by the upper layer %d\n" % p)
        upper.whiteout(pkg + "/lib/file-04.js")
        # A hard link in the upper layer to a file of the base layer.
        upper.hardlink(pkg + "/lib/again.js", pkg + "/lib/file-05.js")
    # As umoci repack writes it: the directory's own entry next to its opaque marker.
    upper.dir("node_modules/%s0007/lib" % PREFIX)
    upper.opaque("node_modules/%s0007/lib" % PREFIX)
    upper.file("node_modules/%s0007/lib/only.js" % PREFIX, "all that is left\n")
    upper.whiteout("node_modules/%s0009" % PREFIX)
    upper.file("node_modules/.bin/zz-new", "#!/bin/sh\n", mode=0o755)
    write_image(layout, "scale-1", [(base.bytes(), "gzip", "200,000 entries"), (upper.bytes(), "gzip", "changes")])
