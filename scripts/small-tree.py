#!/usr/bin/env python3
"""small-tree.py DIR N: N files of 4 KiB in directories of 1,000 (d000/f000000, ...),
each a different slice of one random blob. Shared by the sync benchmarks."""
import os
import sys

d, n = sys.argv[1], int(sys.argv[2])
blob = os.urandom(4096 * 64)
for i in range(n):
    sub = os.path.join(d, "d%03d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(sub, exist_ok=True)
    o = (i * 4099) % (len(blob) - 4096)
    with open(os.path.join(sub, "f%06d" % i), "wb") as f:
        f.write(blob[o:o + 4096])
