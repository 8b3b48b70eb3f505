"""A tar stream written entry by entry, in exactly the order of the calls, so that each
entry of a hand-made layer is what the test wants; and a tar entry's name as the path
it stands for.
"""

import io
import os
import tarfile

from .clock import T0


class Tar:
    """A tar stream built entry by entry, in exactly the order the calls are made."""

    def __init__(self, fmt=tarfile.PAX_FORMAT, mtime=T0):
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=fmt, encoding="utf-8")
        self.mtime = mtime

    def _add(self, name, typ, data=None, mode=0o644, uid=0, gid=0, mtime=None, linkname="",
             devmajor=0, devminor=0, xattrs=None, uname="", gname=""):
        ti = tarfile.TarInfo(name)
        ti.type = typ
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname, ti.gname = uname, gname
        ti.mtime = self.mtime if mtime is None else mtime
        ti.linkname = linkname
        ti.devmajor, ti.devminor = devmajor, devminor
        if xattrs:
            ti.pax_headers = {"SCHILY.xattr." + k: v for k, v in xattrs.items()}
        if data is not None:
            ti.size = len(data)
            self.tf.addfile(ti, io.BytesIO(data))
        else:
            self.tf.addfile(ti)

    def dir(self, name, mode=0o755, **kw):
        self._add(name, tarfile.DIRTYPE, mode=mode, **kw)

    def file(self, name, data, mode=0o644, **kw):
        if isinstance(data, str):
            data = data.encode()
        self._add(name, tarfile.REGTYPE, data=data, mode=mode, **kw)

    def symlink(self, name, target, **kw):
        self._add(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **kw)

    def hardlink(self, name, target, **kw):
        self._add(name, tarfile.LNKTYPE, linkname=target, **kw)

    def fifo(self, name, **kw):
        self._add(name, tarfile.FIFOTYPE, **kw)

    def chr(self, name, major, minor, **kw):
        self._add(name, tarfile.CHRTYPE, devmajor=major, devminor=minor, **kw)

    def blk(self, name, major, minor, **kw):
        self._add(name, tarfile.BLKTYPE, devmajor=major, devminor=minor, **kw)

    def whiteout(self, path, **kw):
        d, base = os.path.split(path)
        self.file(os.path.join(d, ".wh." + base), b"", **kw)

    def opaque(self, dirpath, **kw):
        self.file(os.path.join(dirpath, ".wh..wh..opq"), b"", **kw)

    def bytes(self):
        self.tf.close()
        return self.buf.getvalue()


def norm(name):
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts) or "."
