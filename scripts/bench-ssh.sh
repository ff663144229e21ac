#!/usr/bin/env bash
# ssh-mode benchmark on loopback, all in one run against one sshd that this script
# starts on a free port with fresh keys (and stops): gfast over ssh (TLS), gfast
# over ssh with --transport quic, gfast daemon with --no-encrypt, scp, rsync -e
# ssh and qcp (when a qcp binary is found: on PATH or in $QCP; install it with
# `cargo install --root /tmp/qcp qcp` and QCP=/tmp/qcp/bin/qcp), on the same file; then the time
# to move a 1-byte file (ssh round trips dominate). Reports MB/s, CPU seconds per
# GiB for the whole machine (both ends, kernel included, from /proc/stat), and
# ratios against scp.
# Usage: bash scripts/bench-ssh.sh [SIZE_MIB=4096] [REPS=3]   (needs root, sshd, scp, rsync)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-4096}
reps=${2:-3}
cargo build --release --quiet
gf=$PWD/target/release/gfast
work=$(mktemp -d /dev/shm/gfast-bench-ssh.XXXXXX)
dst=$(mktemp -d /var/tmp/gfast-bench-ssh-dst.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work" "$dst"; }
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N "" -f "$work/hk"
ssh-keygen -q -t ed25519 -N "" -f "$work/uk"
cp "$work/uk.pub" "$work/ak"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p /run/sshd
# scp speaks SFTP: use the sftp-server the distribution's sshd_config names (like
# gfast's remote command, it starts through the login shell); SFTP=internal-sftp
# measures sshd's built-in one, which starts no process.
sftp_server=${SFTP:-$(sed -n 's/^Subsystem[[:space:]]\+sftp[[:space:]]\+//p' /etc/ssh/sshd_config 2>/dev/null | head -1)}
sftp_server=${sftp_server:-internal-sftp}
cat > "$work/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $work/hk
AuthorizedKeysFile $work/ak
PidFile $work/sshd.pid
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PasswordAuthentication no
Subsystem sftp $sftp_server
CFG
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2>/dev/null &
pids+=($!)
sleep 0.5
sshopt="-p $port -i $work/uk -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
scpopt="-P $port -i $work/uk -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"

head -c $((size_mib << 20)) /dev/urandom > "$work/src.bin"
echo "tiny" | head -c 1 > "$work/one"

cpu_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat; }
hz=$(getconf CLK_TCK)
# run NAME CMD...: prints "seconds cpu_seconds" of one run, after clearing the destination.
run() {
  rm -rf "${dst:?}"/*; sync; cat "$work/src.bin" > /dev/null
  local c0 t0 t1 c1
  c0=$(cpu_ticks); t0=$(date +%s.%N)
  if ! "$@" > /dev/null; then echo "fail fail"; return; fi
  t1=$(date +%s.%N); c1=$(cpu_ticks)
  cmp -s "$work/src.bin" "$dst/src.bin" || { echo "MISMATCH after: $*" >&2; exit 1; }
  echo "$(echo "$t1 - $t0" | bc -l) $(echo "($c1 - $c0) / $hz" | bc -l)"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A rate cpu fails
measure() {
  local name=$1; shift
  local secs=() cpus=()
  for _ in $(seq 1 "$reps"); do
    read -r s c < <(run "$@")
    # A failed run (qcp lost its connection a few times here) is reported, not timed.
    if [ "$s" = fail ]; then echo "$name: a run failed: $*" >&2; fails[$name]=$(( ${fails[$name]:-0} + 1 )); continue; fi
    secs+=("$s"); cpus+=("$c")
  done
  if [ ${#secs[@]} = 0 ]; then rate[$name]=0; cpu[$name]=0; return; fi
  local ms mc
  ms=$(printf '%s\n' "${secs[@]}" | median)
  mc=$(printf '%s\n' "${cpus[@]}" | median)
  rate[$name]=$(echo "$size_mib * 1.048576 / $ms" | bc -l)
  cpu[$name]=$(echo "$mc / ($size_mib / 1024)" | bc -l)
}

measure "gfast (ssh, TLS)" "$gf" push -q -e "ssh $sshopt" --remote-cmd "$gf" "$work/src.bin" "127.0.0.1:$dst/"
measure "gfast (ssh, --transport quic)" "$gf" push -q --transport quic -e "ssh $sshopt" --remote-cmd "$gf" "$work/src.bin" "127.0.0.1:$dst/"
# The daemon, for the unencrypted comparison (same machine, same disk).
export GFAST_TOKEN=bench-token
"$gf" serve --root "$dst" --listen 127.0.0.1:0 --allow-no-encrypt --key-file "$work/server.key" > "$work/serve.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 1 100); do grep -q listening "$work/serve.out" && break; sleep 0.05; done
gaddr=$(sed -n 's/.*listening on \([^,]*\),.*/\1/p' "$work/serve.out")
measure "gfast --no-encrypt (daemon)" "$gf" push -q --no-encrypt "$work/src.bin" "gfast://$gaddr/"
measure "scp" scp -q $scpopt "$work/src.bin" "127.0.0.1:$dst/"
measure "rsync -e ssh --whole-file" rsync -a --whole-file -e "ssh $sshopt" "$work/src.bin" "127.0.0.1:$dst/"
# What the disk itself takes (no network, no ssh): the ceiling of this table.
measure "cp to the same disk (reference)" cp "$work/src.bin" "$dst/"
qcp=${QCP:-$(command -v qcp || true)}
tools=("gfast (ssh, TLS)" "gfast (ssh, --transport quic)" "gfast --no-encrypt (daemon)" "scp" "rsync -e ssh --whole-file" "cp to the same disk (reference)")
if [ -n "$qcp" ]; then
  # qcp needs the link's bandwidth (bytes/s) to size its windows: loopback, 4 GB/s.
  qssh=(); for o in $sshopt; do qssh+=(-S "$o"); done
  measure "qcp" "$qcp" -q --rx 4G --tx 4G --remote-qcp-binary "$qcp" "${qssh[@]}" "$work/src.bin" "127.0.0.1:$dst/"
  tools+=("qcp")
fi

# The same to tmpfs, for the transports themselves (qcp cannot write to /dev/null).
disk_dst=$dst
dst="$work/dst-tmpfs"; mkdir -p "$dst"
measure "tmpfs: gfast (ssh, TLS)" "$gf" push -q -e "ssh $sshopt" --remote-cmd "$gf" "$work/src.bin" "127.0.0.1:$dst/"
measure "tmpfs: gfast (ssh, --transport quic)" "$gf" push -q --transport quic -e "ssh $sshopt" --remote-cmd "$gf" "$work/src.bin" "127.0.0.1:$dst/"
measure "tmpfs: scp" scp -q $scpopt "$work/src.bin" "127.0.0.1:$dst/"
measure "tmpfs: rsync -e ssh --whole-file" rsync -a --whole-file -e "ssh $sshopt" "$work/src.bin" "127.0.0.1:$dst/"
ttools=("tmpfs: gfast (ssh, TLS)" "tmpfs: gfast (ssh, --transport quic)" "tmpfs: scp" "tmpfs: rsync -e ssh --whole-file")
if [ -n "$qcp" ]; then
  measure "tmpfs: qcp" "$qcp" -q --rx 4G --tx 4G --remote-qcp-binary "$qcp" "${qssh[@]}" "$work/src.bin" "127.0.0.1:$dst/"
  ttools+=("tmpfs: qcp")
fi
rm -rf "$dst"; dst=$disk_dst

one() {
  local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l
}
tiny_g=$(for _ in $(seq 1 5); do one "$gf" push -q -e "ssh $sshopt" --remote-cmd "$gf" "$work/one" "127.0.0.1:$dst/"; done | median)
tiny_s=$(for _ in $(seq 1 5); do one scp -q $scpopt "$work/one" "127.0.0.1:$dst/"; done | median)
tiny_t=$(for _ in $(seq 1 5); do one ssh $sshopt 127.0.0.1 true; done | median)

echo "# ssh-mode benchmark: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "# ${size_mib} MiB file from /dev/shm to $dst (disk), loopback sshd, median of $reps"
echo
echo "| tool | MB/s | vs scp | CPU s/GiB (both ends) |"
echo "|---|---|---|---|"
for k in "${tools[@]}"; do
  printf '| %s | %.0f | %.2f | %.2f |\n' "$k" "${rate[$k]}" "$(echo "${rate[$k]} / ${rate[scp]}" | bc -l)" "${cpu[$k]}"
done
for k in "${!fails[@]}"; do echo "$k: ${fails[$k]} of $reps runs failed (not timed)"; done
echo
echo "# the same ${size_mib} MiB to tmpfs (/dev/shm), median of $reps"
echo
echo "| tool | MB/s | vs scp | CPU s/GiB (both ends) |"
echo "|---|---|---|---|"
for k in "${ttools[@]}"; do
  printf '| %s | %.0f | %.2f | %.2f |\n' "${k#tmpfs: }" "${rate[$k]}" "$(echo "${rate[$k]} / ${rate[tmpfs: scp]}" | bc -l)" "${cpu[$k]}"
done
if [ -n "$qcp" ]; then
  printf 'gfast --transport quic / qcp (tmpfs): %.2f\n' "$(echo "${rate[tmpfs: gfast (ssh, --transport quic)]} / ${rate[tmpfs: qcp]}" | bc -l)"
fi
echo
printf '1-byte file, whole command: gfast %.3f s, scp %.3f s (ratio %.2f); `ssh host true` %.3f s; sftp subsystem: %s\n' "$tiny_g" "$tiny_s" "$(echo "$tiny_g / $tiny_s" | bc -l)" "$tiny_t" "$sftp_server"
[ -n "$qcp" ] || echo "qcp: not measured (not found: set QCP=path/to/qcp)"
