#!/usr/bin/env bash
# gfast sync against rsync, like with like, on loopback into the disk, all in one
# run: over ssh (one sshd this script starts on a free loopback port with fresh
# keys) gfast sync against rsync -a -e ssh; to a daemon (gfast serve --allow-pull)
# against an rsync daemon (rsync://, started here); locally gfast sync against
# cp -a. Cases: the first copy of N small files (and tar | tar into the same file
# system: the floor for creating them), the same command again with nothing
# changed (M files), again after 1 % of those files changed, and locally one big
# file. An ssh login is measured in the same run (`ssh host true`) and taken off
# every ssh time before dividing. Prints medians of REPS runs and the ratios.
# Usage: bash scripts/bench-sync.sh [SMALL=20000] [MANY=100000] [BIG_MIB=4096] [REPS=3]
# (a count of 0 leaves its section out: `bash scripts/bench-sync.sh 20000 0 0` times first copies only)
# (needs root for sshd; rsync, openssh-server: .ci/run installs them)
set -euo pipefail
cd "$(dirname "$0")/.."
small=${1:-20000}
many=${2:-100000}
big_mib=${3:-4096}
reps=${4:-3}
cargo build --release --quiet
gf=$PWD/target/release/gfast
work=$(mktemp -d /var/tmp/gfast-bench-sync.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
export GFAST_TOKEN=bench-sync GFAST_JOBS_DIR= GFAST_KNOWN_HOSTS=/dev/null

# sshd on loopback.
ssh-keygen -q -t ed25519 -N "" -f "$work/hk"
ssh-keygen -q -t ed25519 -N "" -f "$work/uk"
cp "$work/uk.pub" "$work/ak"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(freeport)
mkdir -p /run/sshd
printf 'Port %s\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n' \
  "$port" "$work/hk" "$work/ak" "$work/sshd.pid" > "$work/sshd_config"
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2>/dev/null &
pids+=($!)
sshopt="-p $port -i $work/uk -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
for _ in $(seq 1 100); do ssh $sshopt 127.0.0.1 true 2>/dev/null && break; sleep 0.1; done

# The destinations, all on the same file system.
mkdir -p "$work/dst"
# A gfast daemon and an rsync daemon on the same root.
"$gf" serve --root "$work/dst" --listen 127.0.0.1:0 --allow-pull --key-file "$work/server.key" > "$work/serve.out" 2> "$work/serve.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q listening "$work/serve.out" && break; sleep 0.05; done
gaddr=$(sed -n 's/.*listening on \([^,]*\),.*/\1/p' "$work/serve.out")
gkey=$(sed -n 's/.*, key \(sha256:[0-9a-f]*\).*/\1/p' "$work/serve.out")
rport=$(freeport)
printf 'use chroot = no\nuid = root\ngid = root\n[dst]\npath = %s\nread only = no\n' "$work/dst" > "$work/rsyncd.conf"
rsync --daemon --no-detach --address=127.0.0.1 --port="$rport" --config="$work/rsyncd.conf" &
pids+=($!)
sleep 0.5

# tree DIR N: N files of 4 KiB in directories of 1,000.
tree() { python3 scripts/small-tree.py "$1" "$2"; }
# touch1pct DIR N: rewrites every 100th file (same size, new bytes and time).
touch1pct() {
  python3 - "$1" "$2" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(0, n, 100):
    with open(os.path.join(d, "d%03d" % (i // 1000), "f%06d" % i), "wb") as f:
        f.write(os.urandom(4096))
PY
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
# secs CMD...: seconds of one run (stdout discarded).
# The sources are read once, untimed, before each run: this VM's reclaimer evicts
# page-cache pages idle for about a minute, and a cold source is read from the disk.
warm() { for d in "$work/small" "$work/many" "$work/big.bin"; do [ -e "$d" ] && find "$d" -type f -print0 | xargs -0 cat > /dev/null; done; true; }
secs() { local t0 t1; warm; t0=$(now); "$@" > /dev/null; t1=$(now); echo "$t1 - $t0" | bc -l; }

login=$(for _ in 1 2 3 4 5; do secs ssh $sshopt 127.0.0.1 true; done | median)

declare -A T
# A first copy goes into a file system of its own, made afresh for every run
# (root, mkfs.ext4, a loop device): on ext4, files created within minutes of
# many deletions cost a scan past each recently deleted inode (the kernel's
# recently_deleted(); perf: 58 % of the time), so copies into a directory
# emptied by the previous run measured the last run's rm -rf (tar | tar of the
# same 20,000 files: 15-21 s there, 1.2-2.3 s on a fresh file system).
fresh_img=$work/fresh.img
fresh_ok=0
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 > /dev/null && truncate -s 12G "$fresh_img" \
  && mkfs.ext4 -q -F -E nodiscard "$fresh_img" && mkdir -p "$work/probe" && mount -o loop "$fresh_img" "$work/probe"; then
  umount "$work/probe"; rm -f "$fresh_img"; fresh_ok=1
fi
mounted=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done; rm -rf "$work"; }
# empty_dest DIR: DIR empty, on a fresh file system when that can be made.
# (A daemon may still hold the last run's directory for a moment: the old file
# system is detached lazily, and each run gets an image of its own, unlinked
# once mounted.)
fresh_n=0
empty_dest() {
  local d=$1
  if mountpoint -q "$d"; then umount -l "$d"; fi
  rm -rf "$d"; mkdir -p "$d"
  if [ "$fresh_ok" = 1 ]; then
    fresh_n=$((fresh_n + 1))
    local img=$work/fresh-$fresh_n.img
    truncate -s 12G "$img" && mkfs.ext4 -q -F -E nodiscard "$img" && mount -o loop "$img" "$d" && mounted+=("$d")
    rm -f "$img"
  fi
  sync
}
# time_fresh NAME DESTDIR CMD...: median over REPS of CMD into an emptied DESTDIR.
time_fresh() {
  local name=$1 d=$2; shift 2
  local s=()
  for _ in $(seq 1 "$reps"); do
    empty_dest "$d"; s+=("$(secs "$@")")
    # $check, when set, looks at the result before its file system goes.
    if [ -n "${check:-}" ]; then eval "$check"; fi
  done
  if mountpoint -q "$d"; then umount -l "$d"; fi
  T[$name]=$(printf '%s\n' "${s[@]}" | median)
}
# time_again NAME CMD...: median over REPS of CMD run again on what is there.
time_again() {
  local name=$1; shift
  local s=()
  for _ in $(seq 1 "$reps"); do s+=("$(secs "$@")"); done
  T[$name]=$(printf '%s\n' "${s[@]}" | median)
}
# time_changed NAME SRC N CMD...: median over REPS of CMD after 1 % of SRC changed.
time_changed() {
  local name=$1 src=$2 n=$3; shift 3
  local s=()
  for _ in $(seq 1 "$reps"); do touch1pct "$src" "$n"; s+=("$(secs "$@")"); done
  T[$name]=$(printf '%s\n' "${s[@]}" | median)
}
less_login() { echo "x = $1 - $login; if (x < 0.001) x = 0.001; x" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }
f2() { printf '%.2f' "$1"; }

gssh=("$gf" sync -q -e "ssh $sshopt" --remote-cmd "$gf")
rssh=(rsync -a -e "ssh $sshopt")
gd=("$gf" sync -q --fingerprint "$gkey")
gl=("$gf" sync -q)

echo "## gfast sync vs rsync, $(date -u +%F), $(nproc) vCPU $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)"
where=$([ "$fresh_ok" = 1 ] && echo "first copies into a fresh ext4 (loop device) each run, re-runs into $(df --output=fstype "$work" | tail -1)" || echo "into $(df --output=fstype "$work" | tail -1)")
echo "loopback, $where under /var/tmp; ssh login $(f2 "$login") s (taken off every ssh time); median of $reps"
echo

# 1. First copy of the small tree.
if [ "$small" -gt 0 ]; then
tree "$work/small" "$small"
time_fresh tar "$work/dst/t" bash -c "tar -C '$work/small' -cf - . | tar -C '$work/dst/t' -xf -"
time_fresh g_ssh "$work/dst/s" "${gssh[@]}" "$work/small/" "127.0.0.1:$work/dst/s/"
time_fresh r_ssh "$work/dst/s" "${rssh[@]}" "$work/small/" "127.0.0.1:$work/dst/s/"
time_fresh g_d "$work/dst/d" "${gd[@]}" "$work/small/" "gfast://$gaddr/d/"
time_fresh r_d "$work/dst/d" rsync -a "$work/small/" "rsync://127.0.0.1:$rport/dst/d/"
time_fresh g_l "$work/dst/l" "${gl[@]}" "$work/small/" "$work/dst/l/"
time_fresh cp_l "$work/dst/l" cp -a "$work/small/." "$work/dst/l/"
rm -rf "$work/dst"/*
echo "| first copy, $small x 4 KiB | gfast | baseline | gfast files/s | baseline files/s | gfast / baseline (speed) |"
echo "|---|---|---|---|---|---|"
row() { # label gfast_secs base_secs
  printf '| %s | %.2f s | %.2f s | %.0f | %.0f | %s |\n' "$1" "$2" "$3" "$(echo "$small / $2" | bc -l)" "$(echo "$small / $3" | bc -l)" "$(ratio "$3" "$2")"
}
row "ssh: gfast sync vs rsync -a -e ssh (login off)" "$(less_login "${T[g_ssh]}")" "$(less_login "${T[r_ssh]}")"
row "daemon: gfast serve vs rsync daemon" "${T[g_d]}" "${T[r_d]}"
row "local: gfast sync vs cp -a" "${T[g_l]}" "${T[cp_l]}"
row "floor: gfast daemon vs tar \| tar (same file system)" "${T[g_d]}" "${T[tar]}"
row "floor: gfast local vs tar \| tar" "${T[g_l]}" "${T[tar]}"
echo
fi

# 2. The many-file tree: first copy (not timed), unchanged re-run, 1 % changed.
if [ "$many" -gt 0 ]; then
tree "$work/many" "$many"
echo "| $many x 4 KiB | gfast | rsync | rsync / gfast (speed) | bytes gfast sent |"
echo "|---|---|---|---|---|"
# over ssh
"${gssh[@]}" "$work/many/" "127.0.0.1:$work/dst/gs/"
rsync -a -e "ssh $sshopt" "$work/many/" "127.0.0.1:$work/dst/rs/"
time_again g_same "${gssh[@]}" "$work/many/" "127.0.0.1:$work/dst/gs/"
time_again r_same "${rssh[@]}" "$work/many/" "127.0.0.1:$work/dst/rs/"
gbytes=$("$gf" sync -q --json -e "ssh $sshopt" --remote-cmd "$gf" "$work/many/" "127.0.0.1:$work/dst/gs/" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_sent"])')
a=$(less_login "${T[g_same]}"); b=$(less_login "${T[r_same]}")
printf '| ssh, unchanged re-run (login off) | %.2f s | %.2f s | %s | %s |\n' "$a" "$b" "$(ratio "$b" "$a")" "$gbytes"
time_changed g_chg "$work/many" "$many" "${gssh[@]}" "$work/many/" "127.0.0.1:$work/dst/gs/"
rsync -a -e "ssh $sshopt" "$work/many/" "127.0.0.1:$work/dst/rs/"
time_changed r_chg "$work/many" "$many" "${rssh[@]}" "$work/many/" "127.0.0.1:$work/dst/rs/"
touch1pct "$work/many" "$many"
gbytes=$("$gf" sync -q --json -e "ssh $sshopt" --remote-cmd "$gf" "$work/many/" "127.0.0.1:$work/dst/gs/" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_sent"])')
a=$(less_login "${T[g_chg]}"); b=$(less_login "${T[r_chg]}")
printf '| ssh, 1 %% changed (login off) | %.2f s | %.2f s | %s | %s (%d files x 4096 = %d) |\n' "$a" "$b" "$(ratio "$b" "$a")" "$gbytes" $((many / 100)) $((many / 100 * 4096))
rm -rf "$work/dst/gs" "$work/dst/rs"
# to the daemons
"${gd[@]}" "$work/many/" "gfast://$gaddr/gd/"
rsync -a "$work/many/" "rsync://127.0.0.1:$rport/dst/rd/"
time_again g_same "${gd[@]}" "$work/many/" "gfast://$gaddr/gd/"
time_again r_same rsync -a "$work/many/" "rsync://127.0.0.1:$rport/dst/rd/"
printf '| daemon, unchanged re-run | %.2f s | %.2f s | %s | 0 |\n' "${T[g_same]}" "${T[r_same]}" "$(ratio "${T[r_same]}" "${T[g_same]}")"
time_changed g_chg "$work/many" "$many" "${gd[@]}" "$work/many/" "gfast://$gaddr/gd/"
rsync -a "$work/many/" "rsync://127.0.0.1:$rport/dst/rd/"
time_changed r_chg "$work/many" "$many" rsync -a "$work/many/" "rsync://127.0.0.1:$rport/dst/rd/"
printf '| daemon, 1 %% changed | %.2f s | %.2f s | %s | |\n' "${T[g_chg]}" "${T[r_chg]}" "$(ratio "${T[r_chg]}" "${T[g_chg]}")"
rm -rf "$work/dst/gd" "$work/dst/rd"
# locally: a fresh copy of the many-file tree against cp -a
time_fresh g_l "$work/dst/l" "${gl[@]}" "$work/many/" "$work/dst/l/"
time_fresh cp_l "$work/dst/l" cp -a "$work/many/." "$work/dst/l/"
printf '| local first copy: gfast sync vs cp -a | %.2f s | %.2f s (cp -a) | %s | |\n' "${T[g_l]}" "${T[cp_l]}" "$(ratio "${T[cp_l]}" "${T[g_l]}")"
rm -rf "$work/dst/l" "$work/many"
echo
fi

# 3. Locally, one big file.
if [ "$big_mib" -gt 0 ]; then
  head -c $((big_mib << 20)) /dev/urandom > "$work/big.bin"
  check="cmp '$work/big.bin' '$work/dst/b/big.bin'" time_fresh g_big "$work/dst/b" "${gl[@]}" "$work/big.bin" "$work/dst/b/"
  time_fresh cp_big "$work/dst/b" cp -a "$work/big.bin" "$work/dst/b/"
  echo "| local, one $big_mib MiB file | gfast | cp -a | gfast / cp -a (speed) |"
  echo "|---|---|---|---|"
  printf '| first copy | %.2f s | %.2f s | %s |\n' "${T[g_big]}" "${T[cp_big]}" "$(ratio "${T[cp_big]}" "${T[g_big]}")"
fi
