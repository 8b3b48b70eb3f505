#!/usr/bin/env python3
# Compare two directory trees entry by entry: a mounted image against its reference
# unpack (`umoci unpack`), or any two trees.
#
#   treecmp.py A B [--no-dir-mtime] [--ignore-dir-mtime-of PATHS_FILE] [--root-attrs]
#   treecmp.py --list A [--no-dir-mtime] [--ignore-dir-mtime-of PATHS_FILE]
#
# Per relative path it compares: type, permission bits (incl. setuid/setgid/sticky), uid,
# gid, size (regular files and symlinks), sha256 of the content (regular files), symlink
# target, device major/minor, user.* xattrs (names and values), mtime in whole seconds
# (directories too, unless --no-dir-mtime or listed in PATHS_FILE, one path relative to
# the tree per line, "." for the root), and hardlink groups: non-directories grouped by
# st_ino must partition the paths the same way in both trees, and each st_nlink must equal
# its group's size. Symlinks are never followed. The root itself is compared for mode,
# uid and gid (and mtime, as a directory).
#
# Prints one line per difference, `path: field: A_value != B_value`, and exits 1; or
# prints `trees equal (N entries)` and exits 0. Exit 2 on usage errors, 3 if it fails
# (an exception: a tree that cannot be read, say). --list prints one line per entry
# instead (directory mtimes that are not compared shown as "*"); the golden listings in
# scripts/testimages/golden/ are in that form.
import argparse
import errno
import hashlib
import os
import stat
import sys

TYPES = [
    (stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
    (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "chardev"), (stat.S_ISBLK, "blockdev"),
    (stat.S_ISSOCK, "socket"),
]


def kind(mode):
    for test, name in TYPES:
        if test(mode):
            return name
    return "unknown"


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        # No xattrs here at all (a filesystem without them). Any other failure (EIO from
        # a broken mount) leaves nothing to compare: the comparison fails (exit 3)
        # rather than read it as an empty set that compares equal.
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out = {}
    for n in sorted(names):
        if not n.startswith("user."):
            continue
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            out[n] = "<error %s>" % e.strerror
    return out


def show(v):
    if isinstance(v, bytes):
        try:
            return repr(v.decode())
        except UnicodeDecodeError:
            return repr(v)
    if isinstance(v, dict):
        return "{" + ", ".join("%s=%s" % (k, show(x)) for k, x in v.items()) + "}"
    return str(v)


def scan(root):
    """Returns {relpath: (attrs dict, st_ino, st_nlink)}; relpath "." is the root."""
    entries = {}

    def visit(rel, path):
        st = os.lstat(path)
        k = kind(st.st_mode)
        a = {
            "type": k,
            "mode": "%04o" % stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime": int(st.st_mtime),
            "xattrs": xattrs(path),
        }
        if k == "file":
            a["size"] = st.st_size
            a["sha256"] = file_sha256(path)
        elif k == "symlink":
            target = os.readlink(path)
            a["size"] = st.st_size
            a["target"] = target
        elif k in ("chardev", "blockdev"):
            a["rdev"] = "%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        entries[rel] = (a, st.st_ino, st.st_nlink)
        if k == "dir":
            try:
                names = sorted(os.listdir(path))
            except OSError as e:
                a["listdir"] = "error: " + e.strerror
                return
            for n in names:
                visit(n if rel == "." else rel + "/" + n, os.path.join(path, n))

    visit(".", root)
    return entries


def link_groups(entries):
    """{relpath: sorted tuple of the paths sharing its inode} for non-directories."""
    by_ino = {}
    for rel, (a, ino, _) in entries.items():
        if a["type"] != "dir":
            by_ino.setdefault(ino, []).append(rel)
    out = {}
    for paths in by_ino.values():
        g = tuple(sorted(paths))
        for p in g:
            out[p] = g
    return out


FIELDS = ["type", "mode", "uid", "gid", "size", "sha256", "target", "rdev", "xattrs", "mtime"]


def compare(a_root, b_root, skip_dir_mtime, ignore_dir_mtime):
    A, B = scan(a_root), scan(b_root)
    diffs = []
    for rel in sorted(set(A) - set(B)):
        diffs.append("%s: presence: %s != missing" % (rel, A[rel][0]["type"]))
    for rel in sorted(set(B) - set(A)):
        diffs.append("%s: presence: missing != %s" % (rel, B[rel][0]["type"]))
    ga, gb = link_groups(A), link_groups(B)
    for rel in sorted(set(A) & set(B)):
        a, b = A[rel][0], B[rel][0]
        for f in FIELDS:
            if f == "mtime" and a["type"] == "dir" and b["type"] == "dir" and (
                    skip_dir_mtime or rel in ignore_dir_mtime):
                continue
            if f == "type" or a["type"] == b["type"]:
                va, vb = a.get(f), b.get(f)
                if va != vb:
                    diffs.append("%s: %s: %s != %s" % (rel, f, show(va), show(vb)))
            if f == "type" and a["type"] != b["type"]:
                break
        for f in ("listdir",):
            if a.get(f) or b.get(f):
                diffs.append("%s: %s: %s != %s" % (rel, f, a.get(f, "ok"), b.get(f, "ok")))
        if a["type"] != "dir" and b["type"] != "dir":
            if ga[rel] != gb[rel]:
                diffs.append("%s: hardlinks: %s != %s" % (rel, " ".join(ga[rel]), " ".join(gb[rel])))
            for side, E, G in (("A", A, ga), ("B", B, gb)):
                if E[rel][2] != len(G[rel]):
                    diffs.append("%s: nlink: %s has st_nlink %d but %d visible name(s)"
                                 % (rel, side, E[rel][2], len(G[rel])))
    return diffs, len(set(A) | set(B))


def list_tree(root, skip_dir_mtime, ignore_dir_mtime):
    E = scan(root)
    groups = link_groups(E)
    for rel in sorted(E):
        a, ino, nlink = E[rel]
        mtime = a["mtime"]
        if a["type"] == "dir" and (skip_dir_mtime or rel in ignore_dir_mtime):
            mtime = "*"
        parts = [a["type"], a["mode"], "%d:%d" % (a["uid"], a["gid"]), "mtime=%s" % mtime]
        for f in ("size", "sha256", "target", "rdev"):
            if f in a:
                parts.append("%s=%s" % (f, show(a[f]) if f == "target" else a[f]))
        if a["xattrs"]:
            parts.append("xattrs=" + show(a["xattrs"]))
        if a["type"] != "dir":
            parts.append("nlink=%d" % nlink)
            if len(groups[rel]) > 1:
                parts.append("links=" + ",".join(groups[rel]))
        print("%s  %s" % (rel, " ".join(parts)))


def main():
    # Names need not be UTF-8: never fail on printing one.
    sys.stdout.reconfigure(errors="backslashreplace")
    ap = argparse.ArgumentParser(description="compare two directory trees (see the header)")
    ap.add_argument("trees", nargs="+", metavar="TREE")
    ap.add_argument("--list", action="store_true", help="print one line per entry of one tree")
    ap.add_argument("--no-dir-mtime", action="store_true", help="never compare directory mtimes")
    ap.add_argument("--ignore-dir-mtime-of", metavar="PATHS_FILE",
                    help="file of directories (relative, one a line) whose mtime is not compared")
    args = ap.parse_args()
    for t in args.trees:
        if not os.path.isdir(t):
            ap.error("not a directory: " + t)
    ignore = set()
    if args.ignore_dir_mtime_of:
        with open(args.ignore_dir_mtime_of, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                line = line.rstrip("\n").strip("/")
                while line.startswith("./"):
                    line = line[2:]
                if line:
                    ignore.add(line)
    if args.list:
        if len(args.trees) != 1:
            ap.error("--list takes one tree")
        list_tree(args.trees[0], args.no_dir_mtime, ignore)
        return 0
    if len(args.trees) != 2:
        ap.error("give two trees")
    diffs, n = compare(args.trees[0], args.trees[1], args.no_dir_mtime, ignore)
    for d in diffs:
        print(d)
    if diffs:
        print("%d difference(s) in %d entries" % (len(diffs), n), file=sys.stderr)
        return 1
    print("trees equal (%d entries)" % n)
    return 0


if __name__ == "__main__":
    # Python ends with 1 on an uncaught exception, which callers would read as "trees
    # differ" (with no difference printed); a crash is 3.
    try:
        sys.exit(main())
    except Exception:
        import traceback
        traceback.print_exc()
        sys.exit(3)
