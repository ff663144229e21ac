#!/usr/bin/env bash
# gfast sync against rsync on an emulated WAN link (gfast-netem: two network
# namespaces, default 1 Gbit/s and 50 ms RTT), like with like, into /dev/shm in
# the far namespace: over ssh (gfast sync -e ssh against rsync -a -e ssh, one
# sshd there) and to a daemon (gfast serve --allow-pull against an rsync daemon
# started here). Cases: the first copy of N files of 4 KiB and the same command
# again with nothing changed. An ssh login over the link (`ssh host true`) is
# measured in the same run and taken off every ssh time before dividing. The
# source is read once, untimed, before each repetition (this VM's reclaimer
# evicts page-cache pages idle for a minute). Prints medians of REPS runs.
# Usage: bash scripts/bench-sync-wan.sh [N=20000] [REPS=3] [Mbit/s=1000] [one-way ms=25]
# (root, iproute2, openssh-server, rsync: .ci/run installs them)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}; reps=${2:-3}; rate=${3:-1000}; delay=${4:-25}
mib=0
SERVE_EXTRA=--allow-pull
source scripts/netem-env.sh

printf 'use chroot = no\nuid = root\ngid = root\n[dst]\npath = %s\nread only = no\n' "$work/dst" > "$work/rsyncd.conf"
ip netns exec $B rsync --daemon --no-detach --address=10.99.0.2 --port=8730 --config="$work/rsyncd.conf" &
pids+=($!)
sleep 0.5

# The source stays on this side's disk; /dev/shm would share its memory with the destination.
src=$(mktemp -d /var/tmp/gfast-bench-sync-wan.XXXXXX)
trap 'cleanup; rm -rf "$src"' EXIT
python3 scripts/small-tree.py "$src/t" "$n"
warm() { find "$src/t" -type f -print0 | xargs -0 cat > /dev/null; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
secs() { local t0 t1; warm; t0=$(now); "$@" > /dev/null; t1=$(now); echo "$t1 - $t0" | bc -l; }
A_() { ip netns exec $A "$@"; }
sshp="-p 2222 $sshopt"
login=$(for _ in 1 2 3 4 5; do secs A_ ssh $sshp 10.99.0.2 true; done | median)

gssh=(A_ "$gf" sync -q -e "ssh $sshp" --remote-cmd "$gf")
rssh=(A_ rsync -a -e "ssh $sshp")
gd=(A_ "$gf" sync -q --fingerprint "$key")
rd=(A_ rsync -a)
declare -A T
# fresh NAME DIR CMD...: median over REPS of CMD into an emptied DIR.
fresh() {
  local name=$1 d=$2; shift 2; local s=()
  for _ in $(seq 1 "$reps"); do rm -rf "$d"; s+=("$(secs "$@")"); done
  T[$name]=$(printf '%s\n' "${s[@]}" | median)
}
again() {
  local name=$1; shift; local s=()
  for _ in $(seq 1 "$reps"); do s+=("$(secs "$@")"); done
  T[$name]=$(printf '%s\n' "${s[@]}" | median)
}
less_login() { echo "x = $1 - $login; if (x < 0.001) x = 0.001; x" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }

fresh g_ssh "$work/dst/gs" "${gssh[@]}" "$src/t/" "10.99.0.2:$work/dst/gs/"
again g_ssh2 "${gssh[@]}" "$src/t/" "10.99.0.2:$work/dst/gs/"
fresh r_ssh "$work/dst/rs" "${rssh[@]}" "$src/t/" "10.99.0.2:$work/dst/rs/"
again r_ssh2 "${rssh[@]}" "$src/t/" "10.99.0.2:$work/dst/rs/"
rm -rf "$work/dst/gs" "$work/dst/rs"
fresh g_d "$work/dst/gd" "${gd[@]}" "$src/t/" "gfast://10.99.0.2:7447/gd/"
again g_d2 "${gd[@]}" "$src/t/" "gfast://10.99.0.2:7447/gd/"
fresh r_d "$work/dst/rd" "${rd[@]}" "$src/t/" "rsync://10.99.0.2:8730/dst/rd/"
again r_d2 "${rd[@]}" "$src/t/" "rsync://10.99.0.2:8730/dst/rd/"
diff -r "$src/t" "$work/dst/gd" > /dev/null || { echo "MISMATCH: the daemon's copy differs" >&2; exit 1; }

echo "## gfast sync vs rsync on an emulated link: $rate Mbit/s, $((2 * delay)) ms RTT, $(date -u +%F), $(nproc) vCPU $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
printf 'gfast-netem between two namespaces, into /dev/shm; %s x 4 KiB files; ssh login %.2f s (taken off every ssh time); median of %s\n\n' "$n" "$login" "$reps"
echo "| case | gfast | rsync | rsync / gfast (speed) |"
echo "|---|---|---|---|"
row() { printf '| %s | %.2f s | %.2f s | %s |\n' "$1" "$2" "$3" "$(ratio "$3" "$2")"; }
row "ssh, first copy (login off)" "$(less_login "${T[g_ssh]}")" "$(less_login "${T[r_ssh]}")"
row "ssh, unchanged re-run (login off)" "$(less_login "${T[g_ssh2]}")" "$(less_login "${T[r_ssh2]}")"
row "daemon, first copy" "${T[g_d]}" "${T[r_d]}"
row "daemon, unchanged re-run" "${T[g_d2]}" "${T[r_d2]}"
