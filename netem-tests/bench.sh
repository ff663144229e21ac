#!/usr/bin/env bash
# Emulated-WAN benchmark: for each scenario, starts gfast-netem (two namespaces,
# userspace link), then measures in the same run iperf3 (the baseline) and gfast
# with default flags (push of a file to a --discard daemon in the far namespace),
# and prints ratios. Needs root, iproute2, iperf3. Results: netem-tests/RESULTS.md.
# gfast runs twice per scenario: TCP (default) and --transport quic.
# Usage: bash netem-tests/bench.sh [MiB per gfast run, default 1024] [ONLY]
#   ONLY: run just the scenarios whose title contains it (e.g. "loss")
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}
only=${2:-}
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
port=5300
iperf() { # iperf() P CC SECS -> Mbit/s (a fresh port each time: the last server may still be exiting)
  port=$((port + 1))
  ip netns exec $B iperf3 -s -1 -D -p $port > /dev/null; sleep 0.5
  ip netns exec $A iperf3 -c 10.99.0.2 -p $port -P "$1" -C "$2" -t "$3" -J \
    | python3 -c 'import sys,json; d=json.load(sys.stdin); print(round(d["end"]["sum_received"]["bits_per_second"]/1e6) if "sum_received" in d.get("end", {}) else "n/a")'
}
# scp and rsync over an sshd in the far namespace (keys made here), to /dev/shm.
ssh-keygen -q -t ed25519 -N "" -f "$work/hk"; ssh-keygen -q -t ed25519 -N "" -f "$work/uk"; cp "$work/uk.pub" "$work/ak"
mkdir -p /run/sshd "$work/dst"
printf 'Port 2222\nListenAddress 10.99.0.2\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nSubsystem sftp internal-sftp\n' \
  "$work/hk" "$work/ak" "$work/sshd.pid" > "$work/sshd_config"
sshopt="-p 2222 -i $work/uk -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
copy() { # copy scp|rsync -> Mbit/s
  ip netns exec $B /usr/sbin/sshd -f "$work/sshd_config"; sleep 0.5
  local t0 t1; rm -f "$work/dst/src.bin"; t0=$(date +%s.%N)
  if [ "$1" = scp ]; then
    ip netns exec $A scp -q -P 2222 ${sshopt#-p 2222} "$work/src.bin" "10.99.0.2:$work/dst/"
  else
    ip netns exec $A rsync -a --whole-file -e "ssh $sshopt" "$work/src.bin" "10.99.0.2:$work/dst/"
  fi
  t1=$(date +%s.%N)
  kill "$(cat "$work/sshd.pid")" 2>/dev/null || true
  echo "$mib * 8 * 1.048576 / ($t1 - $t0)" | bc -l | cut -d. -f1
}
gfast_push() { # [push args] -> "Mbit/s-from-the-first-byte Mbit/s-whole-run first-byte-s handshake_rtt_ms lanes"
  ip netns exec $B "$gf" serve --discard --listen 10.99.0.2:7447 --key-file "$work/k" > "$work/serve.out" 2>"$work/serve.err" &
  local s=$! key=""
  # Wait for its banner (the previous daemon may still be releasing the port).
  for _ in $(seq 1 100); do
    key=$(sed -n 's/.*, key \(sha256:[0-9a-f]*\).*/\1/p' "$work/serve.out")
    [ -n "$key" ] && break
    sleep 0.1
  done
  [ -n "$key" ] || { echo "gfast serve did not start:" >&2; cat "$work/serve.err" >&2; }
  local out
  out=$(ip netns exec $A "$gf" push --json --fingerprint "$key" "$@" "$work/src.bin" gfast://10.99.0.2:7447/ \
    | python3 -c 'import sys,json; d=json.load(sys.stdin); print(round(d["data_bytes_per_second"]*8/1e6), round(d["bytes_per_second"]*8/1e6), round(d["first_byte_seconds"], 2), d["handshake_rtt_ms"], d["streams"])') || true
  # Stop the daemon before answering: the caller starts the next one as soon as
  # it reads this line (it reads through a process substitution).
  kill $s; wait $s 2>/dev/null || true
  echo "$out"
}

echo "# gfast on emulated WAN links ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(date -u +%F))"
echo "gfast: default flags (TLS, lanes chosen from the handshake RTT), ${mib} MiB from /dev/shm to --discard; gfast's rate is from its first data byte to the end (slow start included; iperf3 also starts its clock once connected), the whole command's rate (handshakes included) beside it."
echo

if [ -z "$only" ]; then
  echo "## Emulator ceiling (no delay, no rate limit, MTU 9000)"
  link
  echo "iperf3 -P 4 bbr: $(iperf 4 bbr 5) Mbit/s"
  unlink
  echo
fi

scenario() { # name, netem args...
  local name=$1; shift
  case "$name" in *"$only"*) ;; *) return 0 ;; esac
  echo "## $name"
  link "$@"
  local i8; i8=$(iperf 8 bbr 10)
  read -r g gw g1 rtt lanes < <(gfast_push)
  echo "| iperf3 -P 8 bbr | $i8 Mbit/s |"
  echo "| gfast ($lanes lanes, handshake RTT $rtt ms) | $g Mbit/s (whole run $gw, first byte at $g1 s) | $(echo "scale=2; $g / $i8" | bc) x iperf3 (whole run $(echo "scale=2; $gw / $i8" | bc)) |"
  read -r q qw qf qrtt qlanes < <(gfast_push --transport quic)
  echo "| gfast --transport quic ($qlanes streams) | $q Mbit/s (whole run $qw, first byte at $qf s) | $(echo "scale=2; $q / $i8" | bc) x iperf3 (whole run $(echo "scale=2; $qw / $i8" | bc)) |"
  local r; r=$(echo "$*" | sed -n 's/.*--rate-mbit \([0-9]*\).*/\1/p')
  echo "| of the link rate ($r Mbit/s) | iperf3 $(echo "scale=2; $i8 / $r" | bc), gfast $(echo "scale=2; $g / $r" | bc), QUIC $(echo "scale=2; $q / $r" | bc) | |"
  if [ -n "${WITH_SSH:-}" ]; then
    local sc rs; sc=$(copy scp); rs=$(copy rsync)
    echo "| scp | $sc Mbit/s | gfast = $(echo "scale=1; $gw / $sc" | bc) x scp (whole runs, ssh login in both) |"
    echo "| rsync -e ssh --whole-file | $rs Mbit/s | |"
  fi
  unlink
  echo
}
WITH_SSH=1 scenario "1 Gbit/s, 50 ms RTT" --rate-mbit 1000 --delay-ms 25
loss_scenario() {
  case "1 Gbit/s, 100 ms RTT, 0.1 % loss" in *"$only"*) ;; *) return 0 ;; esac
  echo "## 1 Gbit/s, 100 ms RTT, 0.1 % loss"
  link --rate-mbit 1000 --delay-ms 50 --loss 0.001
  for cc in cubic bbr; do for p in 1 8; do echo "| iperf3 -P $p $cc | $(iperf $p $cc 10) Mbit/s |"; done; done
  read -r g gw g1 rtt lanes < <(gfast_push)
  echo "| gfast ($lanes lanes, handshake RTT $rtt ms) | $g Mbit/s (whole run $gw, first byte at $g1 s) | $(echo "scale=2; $g / 1000" | bc) x link rate (whole run $(echo "scale=2; $gw / 1000" | bc)) |"
  read -r q qw qf qrtt qlanes < <(gfast_push --transport quic)
  echo "| gfast --transport quic ($qlanes streams) | $q Mbit/s (whole run $qw, first byte at $qf s) | $(echo "scale=2; $q / 1000" | bc) x link rate (whole run $(echo "scale=2; $qw / 1000" | bc)) |"
  unlink
  echo
}
loss_scenario
scenario "500 Mbit/s, 200 ms RTT" --rate-mbit 500 --delay-ms 100
WITH_SSH=1 scenario "2 Gbit/s, 100 ms RTT" --rate-mbit 2000 --delay-ms 50
