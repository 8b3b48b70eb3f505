"""Running the outside tools the build needs (umoci, skopeo, zstd, busybox), installing
them with apt-get when one is missing, and the script's progress lines.
"""

import os
import shutil
import subprocess
import sys


def log(msg):
    print("build-test-images: " + msg, flush=True)


def run(*cmd, **kw):
    try:
        return subprocess.run(cmd, check=True, **kw)
    except subprocess.CalledProcessError as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        sys.exit("build-test-images: command failed (%d): %s\n%s" % (e.returncode, " ".join(cmd), err))


def ensure_tools():
    """Install what this script needs with apt-get, only if something is missing."""
    need = {"umoci": "umoci", "skopeo": "skopeo", "zstd": "zstd", "busybox": "busybox-static"}
    missing = [pkg for exe, pkg in need.items() if shutil.which(exe) is None]
    if missing:
        log("installing " + " ".join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run("apt-get", "update", "-qq", env=env)
        run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env)
