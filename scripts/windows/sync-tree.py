#!/usr/bin/env python3
"""Makes DEST a copy of the files named on stdin (NUL-separated, relative to SRC), leaving DEST/target
alone: a file whose content is unchanged keeps its modification time, a changed or new one gets the
current time, and files or directories no longer named are removed. So cargo in the chroot rebuilds
exactly what changed, whatever the checkout's own mtimes are (a copy that kept them could restore an
older file under an older time, which cargo would not notice).

usage: git ls-files -z ... | sync-tree.py SRC DEST
"""
import os
import shutil
import sys

src, dest = sys.argv[1], sys.argv[2]
names = [n for n in sys.stdin.buffer.read().decode().split("\0") if n]
wanted = set()
copied = 0
for name in names:
    s = os.path.join(src, name)
    if not os.path.isfile(s) or name == "target" or name.startswith("target/"):
        continue
    wanted.add(name)
    d = os.path.join(dest, name)
    if os.path.isfile(d) and not os.path.islink(d) and os.path.getsize(d) == os.path.getsize(s):
        with open(s, "rb") as a, open(d, "rb") as b:
            if a.read() == b.read():
                if (os.stat(s).st_mode & 0o111) != (os.stat(d).st_mode & 0o111):
                    shutil.copymode(s, d)
                continue
    os.makedirs(os.path.dirname(d) or dest, exist_ok=True)
    if os.path.lexists(d) and not os.path.isfile(d):
        shutil.rmtree(d) if os.path.isdir(d) and not os.path.islink(d) else os.remove(d)
    shutil.copyfile(s, d)
    shutil.copymode(s, d)
    copied += 1
removed = 0
for root, dirs, files in os.walk(dest, topdown=True):
    rel = os.path.relpath(root, dest)
    if rel == ".":
        dirs[:] = [x for x in dirs if x != "target"]
    for f in files:
        name = os.path.normpath(os.path.join(rel, f))
        if name not in wanted:
            os.remove(os.path.join(root, f))
            removed += 1
for root, dirs, files in os.walk(dest, topdown=False):
    if root != dest and not os.listdir(root) and not os.path.relpath(root, dest).startswith("target"):
        os.rmdir(root)
print(f"{len(wanted)} files: {copied} copied, {removed} removed")
