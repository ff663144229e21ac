#!/usr/bin/env bash
# Emulated-WAN benchmark: for each scenario, starts gfast-netem (two namespaces,
# userspace link), then measures in the same run iperf3 (the baseline) and gfast
# with default flags (push of a file to a --discard daemon in the far namespace),
# and prints ratios. Needs root, iproute2, iperf3. Results: netem-tests/RESULTS.md.
# Usage: bash netem-tests/bench.sh [MiB per gfast run, default 1024]
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}
cargo build --release --quiet
gf=$PWD/target/release/gfast
nm=$PWD/target/release/gfast-netem
work=$(mktemp -d /dev/shm/gfast-netem-bench.XXXXXX)
head -c $((mib << 20)) /dev/urandom > "$work/src.bin"
export GFAST_TOKEN=bench GFAST_JOBS_DIR= GFAST_KNOWN_HOSTS=/dev/null
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; rm -rf "$work"; }
trap cleanup EXIT

A=gfbenchA$$; B=gfbenchB$$
link() { # args for gfast-netem; starts it and waits for ready
  "$nm" --ns-a $A --ns-b $B --duration 600 "$@" > "$work/netem.out" 2> "$work/netem.err" &
  netem=$!; pids+=($netem)
  for _ in $(seq 1 100); do grep -q ready "$work/netem.out" 2>/dev/null && return; sleep 0.05; done
  echo "gfast-netem did not start" >&2; cat "$work/netem.err" >&2; exit 1
}
unlink() { kill $netem; wait $netem 2>/dev/null || true; }
iperf() { # iperf() P CC SECS -> Mbit/s
  ip netns exec $B iperf3 -s -1 -D -p 5299 > /dev/null; sleep 0.3
  ip netns exec $A iperf3 -c 10.99.0.2 -p 5299 -P "$1" -C "$2" -t "$3" -J \
    | python3 -c 'import sys,json; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))'
}
gfast_push() { # -> "Mbit/s handshake_rtt_ms lanes"
  ip netns exec $B "$gf" serve --discard --listen 10.99.0.2:7447 --key-file "$work/k" > "$work/serve.out" 2>/dev/null &
  local s=$!; sleep 0.5
  local key; key=$(sed -n 's/.*, key \(sha256:[0-9a-f]*\).*/\1/p' "$work/serve.out")
  ip netns exec $A "$gf" push --json --fingerprint "$key" "$work/src.bin" gfast://10.99.0.2:7447/ \
    | python3 -c 'import sys,json; d=json.load(sys.stdin); print(round(d["bytes_per_second"]*8/1e6), d["handshake_rtt_ms"], d["streams"])'
  kill $s; wait $s 2>/dev/null || true
}

echo "# gfast on emulated WAN links ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(date -u +%F))"
echo "gfast: default flags (TLS, lanes chosen from the handshake RTT), ${mib} MiB from /dev/shm to --discard, rate from the first byte."
echo

echo "## Emulator ceiling (no delay, no rate limit, MTU 9000)"
link
echo "iperf3 -P 4 bbr: $(iperf 4 bbr 5) Mbit/s"
unlink
echo

scenario() { # name, netem args...
  local name=$1; shift
  echo "## $name"
  link "$@"
  local i8; i8=$(iperf 8 bbr 10)
  read -r g rtt lanes < <(gfast_push)
  echo "| iperf3 -P 8 bbr | $i8 Mbit/s |"
  echo "| gfast ($lanes lanes, handshake RTT $rtt ms) | $g Mbit/s | $(echo "scale=2; $g / $i8" | bc) x iperf3 |"
  unlink
  echo
}
scenario "1 Gbit/s, 50 ms RTT" --rate-mbit 1000 --delay-ms 25
echo "## 1 Gbit/s, 100 ms RTT, 0.1 % loss"
link --rate-mbit 1000 --delay-ms 50 --loss 0.001
for cc in cubic bbr; do for p in 1 8; do echo "| iperf3 -P $p $cc | $(iperf $p $cc 10) Mbit/s |"; done; done
read -r g rtt lanes < <(gfast_push)
echo "| gfast ($lanes lanes, handshake RTT $rtt ms) | $g Mbit/s | $(echo "scale=2; $g / 1000" | bc) x link rate |"
unlink
echo
scenario "500 Mbit/s, 200 ms RTT" --rate-mbit 500 --delay-ms 100
scenario "2 Gbit/s, 100 ms RTT" --rate-mbit 2000 --delay-ms 50
