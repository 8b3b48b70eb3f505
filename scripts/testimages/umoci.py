"""Layers made by umoci: unpack an image, change its rootfs, repack it as one new layer;
and the helpers that change a rootfs (files and directories with their owners and
modes, copies of host files).
"""

import os
import shutil
import subprocess

from .tools import run


class Umoci:
    """Layers are made with `umoci unpack` + `umoci repack`. Not `umoci insert`: in 0.4.7
    it writes a tar stream that stops right after the last entry's data, with neither
    the padding to 512 bytes nor the end-of-archive blocks (GNU tar: "Unexpected EOF")."""

    def __init__(self, layout_path, work):
        self.layout = layout_path
        self.work = work
        self.n = 0

    def img(self, tag):
        return "%s:%s" % (self.layout, tag)

    def new(self, tag):
        run("umoci", "new", "--image", self.img(tag))

    def layer(self, src_tag, dst_tag, populate, comment):
        """Unpack src_tag, let populate(rootfs) change the tree, repack as dst_tag (one new
        layer on top of src_tag's layers, which stay byte-identical)."""
        self.n += 1
        bundle = os.path.join(self.work, "bundle-%d" % self.n)
        run("umoci", "unpack", "--image", self.img(src_tag), bundle, stdout=subprocess.DEVNULL)
        populate(os.path.join(bundle, "rootfs"))
        run("umoci", "repack", "--image", self.img(dst_tag), "--history.comment", comment, bundle)
        shutil.rmtree(bundle)

    def config(self, tag, *args):
        run("umoci", "config", "--image", self.img(tag), *args)


def put(root, rel, data, mode=0o644, uid=0, gid=0):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chown(p, uid, gid)
    os.chmod(p, mode)  # after chown: chown clears setuid/setgid


def mkdir(root, rel, mode=0o755, uid=0, gid=0):
    p = os.path.join(root, rel)
    os.makedirs(p, exist_ok=True)
    os.chown(p, uid, gid)
    os.chmod(p, mode)


def copy_host(root, host_path, rel):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    shutil.copy2(host_path, p)
