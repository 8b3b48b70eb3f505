"""An OCI image layout written by hand (it shares the directory with umoci's images):
blobs, the tags in index.json, manifests and configs for layers given as tar streams,
and the layers read back as tar streams.
"""

import gzip
import hashlib
import json
import os
import subprocess
import time

from .clock import T0


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    def __init__(self, path):
        self.path = path

    def put_blob(self, data):
        d = sha256(data)
        p = os.path.join(self.path, "blobs", "sha256", d[7:])
        if not os.path.exists(p):
            with open(p + ".tmp", "wb") as f:
                f.write(data)
            os.rename(p + ".tmp", p)
        return d

    def blob(self, digest):
        with open(os.path.join(self.path, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as f:
            return f.read()

    def put_json(self, obj, media_type):
        data = json.dumps(obj, indent=None, separators=(",", ":")).encode()
        return {"mediaType": media_type, "digest": self.put_blob(data), "size": len(data)}

    def _index(self):
        with open(os.path.join(self.path, "index.json")) as f:
            return json.load(f)

    def tag(self, ref, desc):
        idx = self._index()
        ms = [m for m in idx.get("manifests") or []
              if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != ref]
        d = dict(desc)
        d["annotations"] = {"org.opencontainers.image.ref.name": ref}
        ms.append(d)
        idx["manifests"] = ms
        with open(os.path.join(self.path, "index.json.tmp"), "w") as f:
            json.dump(idx, f)
        os.rename(os.path.join(self.path, "index.json.tmp"), os.path.join(self.path, "index.json"))

    def lookup(self, ref):
        for m in self._index().get("manifests") or []:
            if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref:
                return m
        raise KeyError(ref)

    def manifest(self, ref):
        return json.loads(self.blob(self.lookup(ref)["digest"]))


def compress(tar_bytes, how):
    """Returns (blob, media type) for one of 'gzip', 'zstd', 'none'."""
    if how == "gzip":
        return gzip.compress(tar_bytes, compresslevel=6, mtime=0), OCI_LAYER + "+gzip"
    if how == "zstd":
        out = subprocess.run(["zstd", "-q", "-c", "-3"], input=tar_bytes, check=True,
                             stdout=subprocess.PIPE).stdout
        return out, OCI_LAYER + "+zstd"
    if how == "none":
        return tar_bytes, OCI_LAYER
    raise ValueError(how)


def write_image(layout, ref, layers, config=None, created=T0, arch="amd64"):
    """layers: list of (tar bytes, compression, history comment). Tags ref; returns the
    manifest descriptor."""
    descs, diff_ids, history = [], [], []
    for i, (tar_bytes, how, comment) in enumerate(layers):
        blob, mt = compress(tar_bytes, how)
        descs.append({"mediaType": mt, "digest": layout.put_blob(blob), "size": len(blob)})
        diff_ids.append(sha256(tar_bytes))
        history.append({"created": iso(created + i), "created_by": "scripts/build-test-images",
                        "comment": comment})
    cfg = {
        "created": iso(created + len(layers)),
        "architecture": arch,
        "os": "linux",
        "config": config or {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": layout.put_json(cfg, OCI_CONFIG),
        "layers": descs,
    }
    desc = layout.put_json(manifest, OCI_MANIFEST)
    layout.tag(ref, desc)
    return desc


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def layer_tars(layout, ref):
    """Yields the uncompressed tar bytes of each layer of ref (OCI or twin)."""
    for l in layout.manifest(ref)["layers"]:
        blob = layout.blob(l["digest"])
        if l["mediaType"].endswith("+gzip"):
            blob = gzip.decompress(blob)
        elif l["mediaType"].endswith("+zstd"):
            blob = subprocess.run(["zstd", "-q", "-d", "-c"], input=blob, check=True,
                                  stdout=subprocess.PIPE).stdout
        yield blob
