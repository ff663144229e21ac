# Shared by scripts/bench-compress.sh and scripts/bench-delta.sh (sourced, not
# run): builds gfast, starts gfast-netem between two network namespaces with the
# link given by $rate (Mbit/s) and $delay (one-way ms), a gfast daemon into
# $work/dst in the far namespace and an sshd there for scp and rsync; defines
# timed (a command's rate over $mib MiB) and check (compare, then remove).
# Expects $mib, $rate, $delay (and optionally $SERVE_EXTRA, more serve flags);
# sets gf, work, A, B, key, sshopt.
cargo build --release --quiet
gf=$PWD/target/release/gfast
nm=$PWD/target/release/gfast-netem
work=$(mktemp -d /dev/shm/gfast-netem-env.XXXXXX)
export GFAST_TOKEN=bench GFAST_JOBS_DIR= GFAST_KNOWN_HOSTS=/dev/null
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; rm -rf "$work"; }
trap cleanup EXIT

A=gfzA$$; B=gfzB$$
"$nm" --ns-a $A --ns-b $B --duration 900 --rate-mbit "$rate" --delay-ms "$delay" > "$work/netem.out" 2> "$work/netem.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q ready "$work/netem.out" 2>/dev/null && break; sleep 0.05; done
grep -q ready "$work/netem.out" || { echo "gfast-netem did not start" >&2; cat "$work/netem.err" >&2; exit 1; }

mkdir -p "$work/dst" /run/sshd
ip netns exec $B "$gf" serve --root "$work/dst" --listen 10.99.0.2:7447 --key-file "$work/k" ${SERVE_EXTRA:-} > "$work/serve.out" 2> "$work/serve.err" &
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
