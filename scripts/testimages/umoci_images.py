"""The images made with umoci: base:1, app:1, app:2, lazy:1, the two images of multi:1
and its index, v2s2:1, zstd:1 and plain:1 (before skopeo converts them), and the two
contents of retag.
"""

import json
import os
import shutil

from .oci import OCI_INDEX
from .tools import log
from .umoci import copy_host, mkdir, put


def base_layer(root):
    for d in ("etc", "usr/bin", "usr/share/doc", "var/log", "home"):
        mkdir(root, d)
    copy_host(root, "/etc/debian_version", "etc/debian_version")
    copy_host(root, "/etc/issue", "etc/issue")
    copy_host(root, "/usr/bin/true", "usr/bin/true")  # a small real ELF binary
    put(root, "etc/hostname", "imgfs-test\n")
    put(root, "etc/secret", "root only\n", mode=0o600)
    put(root, "usr/bin/suid-tool", "#!/bin/sh\necho setuid\n", mode=0o4755)
    put(root, "usr/share/doc/README", "base image for imgfs tests\n" * 20)
    mkdir(root, "tmp", mode=0o1777)
    mkdir(root, "home/user", uid=1234, gid=5678, mode=0o750)
    put(root, "home/user/owned.txt", "owned by 1234:5678\n", uid=1234, gid=5678)
    os.symlink("issue", os.path.join(root, "etc/issue.link"))  # relative symlink
    os.symlink("/usr/bin", os.path.join(root, "bin"))  # absolute symlink
    put(root, "var/log/empty.log", "")


def app1_layer2(root):
    put(root, "app/bin/run.sh", "#!/bin/sh\nexec echo app \"$@\"\n", mode=0o755)
    put(root, "app/config.json", json.dumps({"role": "app", "tier": "web"}) + "\n")
    put(root, "etc/hostname", "app-1\n")  # replaces base's file
    os.remove(os.path.join(root, "etc/debian_version"))  # umoci writes a .wh. marker


def app1_layer3(root):
    put(root, "app/data/x.txt", "layer three of app:1\n")
    put(root, "srv/www/index.html", "<html><body>app:1</body></html>\n")
    shutil.rmtree(os.path.join(root, "usr/share/doc"))  # whiteout of a whole dir


def app2_layer(root):
    put(root, "app/db/schema.sql", "CREATE TABLE t (id INTEGER PRIMARY KEY);\n")
    put(root, "etc/hostname", "app-2\n")


def build(u):
    """Every umoci image but layered:1 (layered_image.py) and retag's contents."""
    log("umoci: base:1, app:1, app:2")
    u.new("base-1")
    u.layer("base-1", "base-1", base_layer, "base layer")
    u.layer("base-1", "app-1", app1_layer2, "app:1 layer 2")
    u.layer("app-1", "app-1", app1_layer3, "app:1 layer 3")
    u.config("app-1",
             "--config.label", "org.example.role=app", "--config.label", "tier=web",
             "--config.env", "PATH=/usr/local/bin:/usr/bin:/bin", "--config.env", "APP_MODE=web",
             "--config.entrypoint", "/app/bin/run.sh", "--config.cmd", "--serve",
             "--config.cmd", "8080", "--config.workingdir", "/app", "--config.user", "1234:5678",
             "--config.exposedports", "8080/tcp", "--config.exposedports", "9090/udp")
    u.layer("base-1", "app-2", app2_layer, "app:2 layer 2")
    u.config("app-2", "--config.label", "org.example.role=app", "--config.label", "tier=db",
             "--config.cmd", "/bin/true")

    log("umoci: lazy:1")
    u.new("lazy-1")
    u.layer("lazy-1", "lazy-1", lambda r: put(r, "bottom/a.txt", "bottom layer: a\n" * 3), "bottom")
    u.layer("lazy-1", "lazy-1", lambda r: put(r, "middle/b.txt", "middle layer: b\n" * 5), "middle")
    u.layer("lazy-1", "lazy-1", lambda r: put(r, "top/c.txt", "top layer: c\n" * 7), "top")

    log("umoci: multi:1 (amd64 + arm64)")
    for arch in ("amd64", "arm64"):
        tag = "multi-" + arch
        u.new(tag)
        u.layer(tag, tag, lambda r, a=arch: (put(r, "etc/arch", a + "\n"),
                                             put(r, "common.txt", "same in both\n")), arch)
        u.config(tag, "--architecture", arch, "--os", "linux")

    # Each of these has its own content: skopeo would reuse (not recompress) a blob that
    # is already in the registry, e.g. base's gzip layer in zstd:1.
    for name in ("v2s2", "zstd", "plain"):
        log("umoci: %s:1" % name)
        tag = name + "-1"
        u.new(tag)
        u.layer(tag, tag, lambda r, n=name: (put(r, "etc/%s-release" % n, "%s layer 1\n" % n),
                                             put(r, "data/one.txt", ("%s one\n" % n) * 50)), "one")
        u.layer(tag, tag, lambda r, n=name: (put(r, "data/two.txt", ("%s two\n" % n) * 50),
                                             os.remove(os.path.join(r, "data/one.txt"))), "two")


def build_retag_a(u):
    log("umoci: retag A")
    u.layer("base-1", "retag-a", lambda r: put(r, "retag/content.txt", "content A\n"), "A")


def build_retag_b(u):
    u.layer("base-1", "retag-b", lambda r: (put(r, "retag/content.txt", "content B\n"),
                                             put(r, "retag/only-in-b.txt", "B\n")), "B")


def multi_index(layout):
    """An OCI index over multi-amd64 and multi-arm64 (built by umoci)."""
    ms = []
    for arch in ("amd64", "arm64"):
        d = dict(layout.lookup("multi-" + arch))
        d.pop("annotations", None)
        d["platform"] = {"architecture": arch, "os": "linux"}
        if arch == "arm64":
            d["platform"]["variant"] = "v8"
        ms.append(d)
    desc = layout.put_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": ms}, OCI_INDEX)
    layout.tag("multi-1", desc)
