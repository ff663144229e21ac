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
cargo build --release --quiet
gf=$PWD/target/release/gfast
nm=$PWD/target/release/gfast-netem
work=$(mktemp -d /dev/shm/gfast-zbench.XXXXXX)
export GFAST_TOKEN=bench GFAST_JOBS_DIR= GFAST_KNOWN_HOSTS=/dev/null
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; rm -rf "$work"; }
trap cleanup EXIT

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

A=gfzA$$; B=gfzB$$
"$nm" --ns-a $A --ns-b $B --duration 900 --rate-mbit "$rate" --delay-ms "$delay" > "$work/netem.out" 2> "$work/netem.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q ready "$work/netem.out" 2>/dev/null && break; sleep 0.05; done
grep -q ready "$work/netem.out" || { echo "gfast-netem did not start" >&2; cat "$work/netem.err" >&2; exit 1; }

mkdir -p "$work/dst" /run/sshd
ip netns exec $B "$gf" serve --root "$work/dst" --listen 10.99.0.2:7447 --key-file "$work/k" > "$work/serve.out" 2> "$work/serve.err" &
pids+=($!)
key=""
for _ in $(seq 1 100); do key=$(sed -n 's/.*, key \(sha256:[0-9a-f]*\).*/\1/p' "$work/serve.out"); [ -n "$key" ] && break; sleep 0.1; done
[ -n "$key" ] || { echo "gfast serve did not start" >&2; cat "$work/serve.err" >&2; exit 1; }
ssh-keygen -q -t ed25519 -N "" -f "$work/hk"; ssh-keygen -q -t ed25519 -N "" -f "$work/uk"; cp "$work/uk.pub" "$work/ak"
printf 'Port 2222\nListenAddress 10.99.0.2\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nSubsystem sftp internal-sftp\n' \
  "$work/hk" "$work/ak" "$work/sshd.pid" > "$work/sshd_config"
ip netns exec $B /usr/sbin/sshd -f "$work/sshd_config"; sleep 0.5
pids+=("$(cat "$work/sshd.pid")")
sshopt="-i $work/uk -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"

timed() { # command... -> MB/s over the whole command (the data set is $mib MiB)
  local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N)
  echo "scale=1; $mib * 1.048576 / ($t1 - $t0)" | bc
}
check() { cmp -s "$1" "$2" || { echo "MISMATCH: $2" >&2; exit 1; }; rm -f "$2"; }

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
