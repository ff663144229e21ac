#!/usr/bin/env bash
# Compression on an emulated WAN link: gfast with and without -z, scp -C and
# rsync -z, pushing the same data into /dev/shm across gfast-netem (two network
# namespaces joined by a userspace link), for data that compresses (synthetic
# log lines) and data that does not (random bytes). Prints rates and ratios
# measured in the same run. Needs root, iproute2, openssh-server, rsync.
# Usage: bash scripts/bench-compress.sh [MiB per data set, default 256] [link Mbit/s, default 1000] [one-way delay ms, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-256}; rate=${2:-1000}; delay=${3:-10}
source scripts/netem-env.sh

# Data: log lines (timestamps, hosts, paths, numbers: compresses about 4-6 x
# with zstd) and random bytes (does not compress at all).
python3 - "$work/logs.txt" "$mib" <<'PY'
import random, sys
random.seed(7)
path, mib = sys.argv[1], int(sys.argv[2])
verbs = ["GET", "POST", "PUT", "DELETE"]
paths = ["/api/v1/items", "/api/v1/users", "/static/app.js", "/healthz", "/api/v2/search"]
with open(path, "w") as f:
    n = 0
    while n < mib << 20:
        line = "2026-11-22T%02d:%02d:%02d.%03dZ host-%02d web[%d]: %s %s/%d %d %dms user=u%05d\n" % (
            random.randrange(24), random.randrange(60), random.randrange(60), random.randrange(1000),
            random.randrange(40), random.randrange(1000, 60000), random.choice(verbs), random.choice(paths),
            random.randrange(100000), random.choice([200, 200, 200, 404, 500]), random.randrange(900),
            random.randrange(100000))
        f.write(line)
        n += len(line)
PY
head -c $((mib << 20)) /dev/urandom > "$work/random.bin"


echo "# compression on an emulated link: $rate Mbit/s, $((2 * delay)) ms RTT ($(nproc) cores, kernel $(uname -r), $(date -u +%F)); $mib MiB per data set, into /dev/shm"
echo
echo "| data | gfast | gfast -z | scp -C | rsync -z --whole-file | gfast -z / gfast | gfast -z / rsync -z | bytes on the wire with -z |"
echo "|---|---|---|---|---|---|---|---|"
for data in logs.txt random.bin; do
  src="$work/$data"
  g=$(timed ip netns exec $A "$gf" push -q --fingerprint "$key" "$src" gfast://10.99.0.2:7447/); check "$src" "$work/dst/$data"
  z=$(timed ip netns exec $A "$gf" push -q -z --fingerprint "$key" "$src" gfast://10.99.0.2:7447/); check "$src" "$work/dst/$data"
  zj=$(ip netns exec $A "$gf" push -q -z --json --fingerprint "$key" "$src" gfast://10.99.0.2:7447/)
  wire=$(echo "$zj" | python3 -c "import sys,json; d=json.load(sys.stdin); print('%.0f %%' % (100 * d['bytes_compressed'] / d['bytes_sent']))")
  check "$src" "$work/dst/$data"
  s=$(timed ip netns exec $A scp -q -C -P 2222 $sshopt "$src" "10.99.0.2:$work/dst/"); check "$src" "$work/dst/$data"
  r=$(timed ip netns exec $A rsync -z --whole-file -e "ssh -p 2222 $sshopt" "$src" "10.99.0.2:$work/dst/"); check "$src" "$work/dst/$data"
  echo "| $data | $g MB/s | $z MB/s | $s MB/s | $r MB/s | $(echo "scale=2; $z / $g" | bc) | $(echo "scale=2; $z / $r" | bc) | $wire |"
done
