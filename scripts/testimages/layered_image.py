"""layered:1, shaped as real images are: a busybox base whose layer carries "./" (as
docker's, BuildKit's and umoci's base layers do), then layers made by `umoci unpack`,
changes in the rootfs and `umoci repack`, which list only the paths that changed
(directories whose mtime the change moved included) and never "./".
"""

import gzip
import io
import os
import random
import subprocess
import sys
import tarfile

from .clock import T0, T1990
from .oci import layer_tars
from .tarstream import norm
from .tools import log
from .umoci import copy_host, mkdir, put


LAYERED_MTIME = T1990 + 86400  # every entry of the base tree; nothing like "now"


def busybox_root(root):
    """A busybox root as a distribution would build it (layer 0 of layered:1)."""
    for d, mode, gid in (("bin", 0o755, 0), ("sbin", 0o755, 0), ("usr/bin", 0o755, 0),
                         ("usr/sbin", 0o755, 0), ("usr/share/misc", 0o755, 0),
                         ("usr/local/bin", 0o755, 0), ("usr/local/lib", 0o755, 0),
                         ("usr/local/share", 0o755, 0), ("etc", 0o755, 0), ("var/log", 0o755, 0),
                         ("var/lib", 0o755, 0), ("home", 0o755, 0), ("dev", 0o755, 0),
                         ("proc", 0o555, 0), ("sys", 0o555, 0)):
        mkdir(root, d, mode=mode, gid=gid)
    # Attributes a provisional answer (0755 root:root) gets wrong, on directories the
    # upper layers only pass through: Debian's /usr/local is 2775 root:staff.
    mkdir(root, "usr/local", mode=0o2775, gid=50)
    mkdir(root, "usr", mode=0o755)
    mkdir(root, "root", mode=0o700)
    mkdir(root, "tmp", mode=0o1777)
    copy_host(root, "/bin/busybox", "bin/busybox")
    os.chmod(os.path.join(root, "bin/busybox"), 0o755)
    out = subprocess.run(["/bin/busybox", "--list-full"], check=True, stdout=subprocess.PIPE).stdout
    applets = [l for l in out.decode().split() if l and not l.endswith("/busybox") and "/" in l]
    if len(applets) < 100:
        sys.exit("build-test-images: busybox --list-full gave %d applets" % len(applets))
    for a in applets:  # what `busybox --install -s` makes
        p = os.path.join(root, a)
        if not os.path.lexists(p):
            os.symlink("/bin/busybox", p)
    put(root, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    put(root, "etc/group", "root:x:0:\ndaemon:x:1:\nstaff:x:50:\nnogroup:x:65534:\n")
    put(root, "etc/shadow", "root:*:19000:0:99999:7:::\n", mode=0o640, gid=42)
    put(root, "etc/os-release", 'NAME="imgfs busybox"\nID=busybox\nVERSION_ID=1.35\n')
    put(root, "etc/hostname", "layered\n")
    put(root, "etc/shells", "/bin/sh\n/bin/ash\n")
    put(root, "etc/motd", "Welcome to the layered test image.\n")
    # Incompressible data, so that the base layer is the big one (a few MiB, like a
    # real base) and a held download of it is the slow one.
    put(root, "usr/share/misc/base.dat", random.Random(7).randbytes(3 << 20))
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            os.utime(os.path.join(dirpath, n), (LAYERED_MTIME, LAYERED_MTIME), follow_symlinks=False)
    os.utime(root, (LAYERED_MTIME, LAYERED_MTIME))


def touched(root, t, *dirs):
    """Give the directories a layer changed the mtime its build step left them with:
    fixed (T0 + 1000 * layer), so that umoci repack always sees them changed (its
    mtree compares whole seconds: a step within the second of the last unpack could
    leave a changed directory out of the layer) and the image is the same every time."""
    for d in dirs:
        os.utime(os.path.join(root, d), (t, t))


def layered_apt(root):
    """Layer 1, as `apt-get install hello` leaves it: a binary, its docs, dpkg's
    records, a changed etc file and a removed one."""
    copy_host(root, "/usr/bin/true", "usr/bin/hello")  # a real ELF binary
    put(root, "usr/bin/hello-wrapper", "#!/bin/sh\nexec /usr/bin/hello \"$@\"\n", mode=0o755)
    put(root, "usr/share/doc/hello/copyright", "hello: GPL-3+\n" * 40)
    put(root, "usr/share/doc/hello/changelog.gz", gzip.compress(b"hello (2.10-3) unstable\n" * 50, mtime=0))
    put(root, "var/lib/dpkg/status", "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\n")
    put(root, "var/lib/dpkg/info/hello.list", "/usr/bin/hello\n/usr/share/doc/hello\n")
    with open(os.path.join(root, "etc/shells"), "a") as f:
        f.write("/usr/bin/hello-wrapper\n")
    os.remove(os.path.join(root, "etc/motd"))  # umoci writes etc/.wh.motd
    touched(root, T0 + 1000, "etc", "usr/bin", "usr/share", "usr/share/doc", "usr/share/doc/hello",
            "var/lib", "var/lib/dpkg", "var/lib/dpkg/info")


def layered_config(root):
    """Layer 2: a little configuration."""
    put(root, "etc/hello/hello.conf", "greeting = hi\n")
    put(root, "etc/hostname", "layered-app\n")
    touched(root, T0 + 2000, "etc", "etc/hello")


def layered_top(root):
    """Layer 3: the application. A file in an existing directory whose parents this
    layer passes through without entries (usr/, usr/local/), and a hard-link group of
    three names: two in a directory new in this layer, one in an existing one."""
    put(root, "etc/app.conf", "listen = 8080\nworkers = 4\n")
    put(root, "usr/local/bin/app", "#!/bin/sh\necho app from the top layer\n" * 8, mode=0o755)
    put(root, "usr/local/lib/app/tool", "#!/bin/sh\necho tool: three names, one inode\n" * 16, mode=0o755)
    os.link(os.path.join(root, "usr/local/lib/app/tool"), os.path.join(root, "usr/local/lib/app/tool-alias"))
    os.link(os.path.join(root, "usr/local/lib/app/tool"), os.path.join(root, "usr/bin/app-tool"))
    put(root, "usr/local/lib/app/README", "not linked\n")
    touched(root, T0 + 3000, "etc", "usr/bin", "usr/local/bin", "usr/local/lib", "usr/local/lib/app")


def build(u):
    log("umoci: layered:1 (busybox base with ./, three umoci repack layers)")
    u.new("layered-1")
    u.layer("layered-1", "layered-1", busybox_root, "busybox base")
    u.layer("layered-1", "layered-1", layered_apt, "apt-get install hello")
    u.layer("layered-1", "layered-1", layered_config, "configure hello")
    u.layer("layered-1", "layered-1", layered_top, "the application")
    u.config("layered-1", "--config.cmd", "/usr/local/bin/app", "--config.workingdir", "/")


def check(layout):
    """The shape the tests rely on, from the tar streams: "./" in the base layer only,
    the top layer without entries for usr/ and usr/local/, the hard-link group there."""
    tars = list(layer_tars(layout, "layered-1"))
    names = []
    for t in tars:
        with tarfile.open(fileobj=io.BytesIO(t), mode="r:", encoding="utf-8") as tf:
            names.append({norm(m.name): m for m in tf.getmembers()})
    problems = []
    if len(tars) != 4:
        problems.append("%d layers, want 4" % len(tars))
    if "." not in names[0]:
        problems.append("the base layer has no ./ entry")
    for i, n in enumerate(names[1:], 1):
        if "." in n:
            problems.append("layer %d has a ./ entry" % i)
    top = names[-1]
    for p in ("usr", "usr/local"):
        if p in top:
            problems.append("the top layer has an entry for %s/" % p)
    for p in ("etc/app.conf", "usr/local/bin/app", "usr/local/lib/app"):
        if p not in top:
            problems.append("the top layer lacks %s" % p)
    group = ["usr/bin/app-tool", "usr/local/lib/app/tool", "usr/local/lib/app/tool-alias"]
    links = [p for p in group if p in top and top[p].islnk()]
    if len(links) != 2 or not all(p in top for p in group):
        problems.append("the top layer should hold %s as one file and two hard links" % group)
    if ".wh.motd" not in [os.path.basename(p) for p in names[1]]:
        problems.append("layer 1 has no whiteout for etc/motd")
    if problems:
        sys.exit("build-test-images: layered:1 is not shaped as intended: " + "; ".join(problems))
