#!/usr/bin/env bash
# Delta on an emulated WAN link: a file whose old version stands at the
# destination, changed in a few scattered places, pushed by gfast whole, by
# gfast --delta (1 MiB and 8 MiB chunks) and by rsync (its rolling-checksum
# delta, and --whole-file), across gfast-netem into /dev/shm. Every result is
# compared with the source. Needs root, iproute2, openssh-server, rsync.
# Usage: bash scripts/bench-delta.sh [MiB, default 512] [link Mbit/s, default 1000] [one-way delay ms, default 10] [changes, default 16]
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-512}; rate=${2:-1000}; delay=${3:-10}; changes=${4:-16}
SERVE_EXTRA=--allow-pull  # a daemon takes --delta on a push only when token holders may read
source scripts/netem-env.sh

mkdir -p "$work/new" "$work/rs"
head -c $((mib << 20)) /dev/urandom > "$work/old.bin"
cp "$work/old.bin" "$work/new/data.bin"
python3 - "$work/new/data.bin" "$changes" <<'PY'
import os, random, sys
random.seed(11)
path, n = sys.argv[1], int(sys.argv[2])
size = os.path.getsize(path)
with open(path, "r+b") as f:
    for _ in range(n):
        f.seek(random.randrange(size - 4096))
        f.write(os.urandom(4096))
PY
src="$work/new/data.bin"
reset() { cp "$work/old.bin" "$work/dst/data.bin"; cp "$work/old.bin" "$work/rs/data.bin"; }
gfast_run() { # args -> "MB/s bytes_sent"
  reset
  local t0 t1 j; t0=$(date +%s.%N)
  j=$(ip netns exec $A "$gf" push -q --json --fingerprint "$key" "$@" "$src" gfast://10.99.0.2:7447/)
  t1=$(date +%s.%N)
  cmp -s "$src" "$work/dst/data.bin" || { echo "MISMATCH (gfast $*)" >&2; exit 1; }
  echo "$(echo "scale=1; $mib * 1.048576 / ($t1 - $t0)" | bc) $(echo "$j" | python3 -c 'import sys,json; print(json.load(sys.stdin)["bytes_sent"])')"
}
rsync_run() { # args -> "MB/s bytes_sent"
  reset
  local t0 t1 out; t0=$(date +%s.%N)
  out=$(ip netns exec $A rsync --stats "$@" -e "ssh -p 2222 $sshopt" "$src" "10.99.0.2:$work/rs/")
  t1=$(date +%s.%N)
  cmp -s "$src" "$work/rs/data.bin" || { echo "MISMATCH (rsync $*)" >&2; exit 1; }
  echo "$(echo "scale=1; $mib * 1.048576 / ($t1 - $t0)" | bc) $(echo "$out" | sed -n 's/^Total bytes sent: \([0-9,]*\).*/\1/p' | tr -d ,)"
}

echo "# delta on an emulated link: $rate Mbit/s, $((2 * delay)) ms RTT ($(nproc) cores, kernel $(uname -r), $(date -u +%F)); a $mib MiB file with $changes scattered 4 KiB changes, its old version at the destination"
echo
echo "| tool | rate over the file | bytes sent | vs gfast whole |"
echo "|---|---|---|---|"
read -r g gb < <(gfast_run)
echo "| gfast (whole file) | $g MB/s | $gb | 1.00 |"
for cs in 1M 8M; do
  read -r d db < <(gfast_run --delta --chunk-size $cs)
  echo "| gfast --delta --chunk-size $cs | $d MB/s | $db | $(echo "scale=2; $d / $g" | bc) |"
done
read -r r rb < <(rsync_run)
echo "| rsync -e ssh (delta) | $r MB/s | $rb | $(echo "scale=2; $r / $g" | bc) |"
read -r w wb < <(rsync_run --whole-file)
echo "| rsync -e ssh --whole-file | $w MB/s | $wb | $(echo "scale=2; $w / $g" | bc) |"
