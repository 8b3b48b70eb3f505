"""Pushing to the test registry with skopeo, and checking what it serves back: the
manifest's and layers' media types (manifests.tsv) and that a push kept the config.
"""

import json
import subprocess
import sys

from .oci import OCI_INDEX, OCI_MANIFEST
from .tools import run


class Registry:
    def __init__(self, addr):
        self.addr = addr

    def push(self, src, repo_tag, *flags):
        run("skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false", *flags,
            src, "docker://%s/%s" % (self.addr, repo_tag))

    def raw(self, repo_tag):
        out = run("skopeo", "--insecure-policy", "inspect", "--tls-verify=false", "--raw",
                  "docker://%s/%s" % (self.addr, repo_tag), stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE).stdout
        return json.loads(out)


def media_summary(reg, repo_tag):
    m = reg.raw(repo_tag)
    mt = m.get("mediaType") or "(none; OCI manifest without mediaType)"
    if "manifests" in m:
        parts = ["%s/%s%s=%s" % (d["platform"]["os"], d["platform"]["architecture"],
                                 "/" + d["platform"]["variant"] if d["platform"].get("variant") else "",
                                 d["mediaType"]) for d in m["manifests"]]
    else:
        parts = [l["mediaType"] for l in m["layers"]]
    return m, mt, parts


def expect(reg, repo_tag, manifest_mt, layer_mts, config_digest=None):
    m, mt, parts = media_summary(reg, repo_tag)
    if m.get("mediaType", OCI_MANIFEST if "layers" in m else OCI_INDEX) != manifest_mt:
        sys.exit("build-test-images: %s: manifest media type %s, wanted %s" % (repo_tag, mt, manifest_mt))
    if "layers" in m:
        got = [l["mediaType"] for l in m["layers"]]
        want = layer_mts if isinstance(layer_mts, list) else [layer_mts] * len(got)
        if got != want:
            sys.exit("build-test-images: %s: layer media types %s, wanted %s" % (repo_tag, got, want))
        if config_digest and m["config"]["digest"] != config_digest:
            sys.exit("build-test-images: %s: config %s, wanted %s (content changed in the push?)"
                     % (repo_tag, m["config"]["digest"], config_digest))
    return "%s\t%s\t%s" % (repo_tag, mt, ",".join(parts))


def short(summary_line):
    """A manifests.tsv line for the log: media types without their common prefix, runs
    of the same one counted."""
    ref, mt, parts = summary_line.split("\t")
    out = []
    for p in parts.split(","):
        p = p.replace("application/vnd.", "")
        if out and out[-1][0] == p:
            out[-1][1] += 1
        else:
            out.append([p, 1])
    return "%-15s %-48s %s" % (ref, mt.replace("application/vnd.", ""),
                               ", ".join(p if n == 1 else "%d x %s" % (n, p) for p, n in out))
