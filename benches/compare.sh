#!/usr/bin/env bash
# Side by side: fulmen and anvil on loopback, same accounts (the standard test
# mnemonic), same pre-signed workloads from fulmen-load, in one run.
#
#   benches/compare.sh                 # default sizes
#   TXS=50000 CONCURRENCY=64 benches/compare.sh
#   FULMEN_ARGS="--durability memory" benches/compare.sh   # flags for fulmen run
#
# Latency: eth_sendRawTransactionSync at one request in flight; anvil in its
# default automine. Throughput: eth_sendRawTransaction, closed loop; anvil in
# its fastest configuration (--block-time 1 --gas-limit 1000000000), with each
# node's CPU time per transaction. Latency under load: sync sends paced at
# half each node's sustained rate, next to the disk's bare fdatasync p99.
# The last two lines are `ratio fulmen/anvil tps=<x> p50=<y>` and
# `cpu_us_per_tx fulmen=<a> anvil=<b>`.
# Needs the pinned anvil from `scripts/test.sh` (tools/node_modules).
set -euo pipefail
cd "$(dirname "$0")/.."

TXS=${TXS:-30000}
LAT_TXS=${LAT_TXS:-2000}
HALF_TXS=${HALF_TXS:-4000}
CONCURRENCY=${CONCURRENCY:-32}
WORKLOAD=${WORKLOAD:-transfers}
# The native binary: killing the .bin/anvil node wrapper would leave anvil running.
ANVIL=tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
[ -x "$ANVIL" ] || (cd tools && npm install --no-audit --no-fund --loglevel=error)

cargo build --release --quiet -p fulmen -p fulmen-benches
LOAD=target/release/fulmen-load
WORK=$(mktemp -d)
PIDFILE="$WORK/pids"
touch "$PIDFILE"
# Servers start inside $(...) subshells, so their PIDs go through a file.
cleanup() {
  while read -r p; do kill "$p" 2>/dev/null || true; done <"$PIDFILE"
  : >"$PIDFILE"
  sleep 0.5
}
trap 'cleanup; rm -rf "$WORK"' EXIT

# shellcheck source=benches/lib.sh
source benches/lib.sh
start_fulmen() {
  local port; port=$(free_port)
  # shellcheck disable=SC2086 # FULMEN_ARGS is a list of flags
  target/release/fulmen run --dev --rpc-addr "127.0.0.1:$port" --datadir "$WORK/data-$port" ${FULMEN_ARGS:-} >"$WORK/fulmen-$port.log" 2>&1 &
  echo $! >>"$PIDFILE"; wait_rpc "http://127.0.0.1:$port"; echo "http://127.0.0.1:$port"
}
start_anvil() {
  local port; port=$(free_port)
  "$ANVIL" --host 127.0.0.1 --port "$port" --silent "$@" >"$WORK/anvil-$port.log" 2>&1 &
  echo $! >>"$PIDFILE"; wait_rpc "http://127.0.0.1:$port"; echo "http://127.0.0.1:$port"
}
stop_all() { cleanup; }
# Half the preconfirmed rate of a throughput run's JSON report.
half_rate() { python3 -c "import json,sys; print(max(1, int(json.loads(sys.argv[1])['tps_preconfirmed'] / 2)))" "$1"; }
show() { python3 -c "
import json,sys
r=json.loads(sys.argv[2])
print(f'{sys.argv[1]:<34} tps {r[\"tps\"]:>9.0f}  preconf {r[\"tps_preconfirmed\"]:>9.0f}  sealed {r[\"tps_sealed\"]:>9.0f}  p50 {r[\"p50_ms\"]:>7.3f} ms  p99 {r[\"p99_ms\"]:>7.3f} ms  errors {sum(r[\"errors\"].values())}')
" "$1" "$2"; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%FT%TZ)"
echo "workload: $WORKLOAD; latency: $LAT_TXS sync sends at 1 in flight; throughput: $TXS sends at $CONCURRENCY in flight"

# The node's CPU time (utime + stime of its process, per thread too) over
# the throughput run's send phase, per transaction: the figure that carries
# over to a bigger box. fulmen-load reads it (--node-pid) around the sends,
# so the accounts' funding before them is left out. The PID is the last
# server started.
last_pid() { tail -n1 "$PIDFILE"; }

url=$(start_fulmen)
f_lat=$($LOAD --rpc "$url" --workload "$WORKLOAD" --txs "$LAT_TXS" --concurrency 1 --sync --accounts 16 --json)
f_tps=$($LOAD --rpc "$url" --workload "$WORKLOAD" --txs "$TXS" --concurrency "$CONCURRENCY" --accounts 1024 --seed 2 --node-pid "$(last_pid)" --json)
# Latency under load: sync sends paced (open loop) at half the rate the
# node just sustained, on the same chain.
f_half=$($LOAD --rpc "$url" --workload "$WORKLOAD" --txs "$HALF_TXS" --rate "$(half_rate "$f_tps")" --sync --accounts 64 --seed 3 --json)
stop_all

url=$(start_anvil)
a_lat=$($LOAD --rpc "$url" --workload "$WORKLOAD" --txs "$LAT_TXS" --concurrency 1 --sync --accounts 16 --json)
stop_all
url=$(start_anvil --block-time 1 --gas-limit 1000000000)
a_tps=$($LOAD --rpc "$url" --workload "$WORKLOAD" --txs "$TXS" --concurrency "$CONCURRENCY" --accounts 1024 --seed 2 --node-pid "$(last_pid)" --json)
stop_all
# anvil's sync sends at half its sustained rate, in automine (with a block
# time each would wait up to a second, and the open loop's connections
# would cap the rate long before).
url=$(start_anvil)
a_half=$($LOAD --rpc "$url" --workload "$WORKLOAD" --txs "$HALF_TXS" --rate "$(half_rate "$a_tps")" --sync --accounts 64 --seed 3 --json)
stop_all
# The disk's bare write + fdatasync in the same run: the floor of a durable
# sync send's latency (it varies several-fold from day to day).
fsync_p99=$(target/release/fulmen-storage-bench log --dir "$WORK/fsync" --flushes 1000 --records 2000 |
  awk -F'|' '/bare write \+ fdatasync/ { gsub(/ /, "", $5); print $5 }')
[ -n "$fsync_p99" ] || { echo "fulmen-storage-bench log printed no bare fdatasync row" >&2; exit 1; }

show "fulmen  sync, 1 in flight" "$f_lat"
show "anvil   sync, 1 in flight (automine)" "$a_lat"
show "fulmen  async, $CONCURRENCY in flight" "$f_tps"
show "anvil   async, $CONCURRENCY in flight (bt=1s)" "$a_tps"
show "fulmen  sync, half load (open loop)" "$f_half"
show "anvil   sync, half load (automine)" "$a_half"
python3 - "$f_lat" "$a_lat" "$f_tps" "$a_tps" "$f_half" "$a_half" "$fsync_p99" <<'PY'
import json, sys
fl, al, ft, at, fh, ah = (json.loads(x) for x in sys.argv[1:7])
fc, ac = ft["node_cpu"], at["node_cpu"]
fsync_p99 = float(sys.argv[7])
tps = ft["tps_preconfirmed"] / max(at["tps_preconfirmed"], 1e-9)
p50 = fl["p50_ms"] / max(al["p50_ms"], 1e-9)
def cpu(c):
    return f"{c['cpu_us_per_tx']:.1f} (user {c['user_us_per_tx']:.1f} + kernel {c['sys_us_per_tx']:.1f})"
print(f"node CPU-us per tx (throughput run): fulmen {cpu(fc)}, anvil {cpu(ac)}")
print("  fulmen by thread (user + kernel): " + ", ".join(
    f"{n} {t:.1f} ({u:.1f} + {k:.1f})"
    for n, (t, u, k) in sorted(fc["threads"].items(), key=lambda kv: -kv[1][0])))
print(f"sync p99 at half load: fulmen {fh['p99_ms']:.3f} ms, anvil {ah['p99_ms']:.3f} ms; "
      f"bare write + fdatasync p99 {fsync_p99:.3f} ms (fulmen/fsync {fh['p99_ms'] / max(fsync_p99, 1e-9):.2f})")
print(f"ratio fulmen/anvil tps={tps:.2f} p50={p50:.3f}")
print(f"cpu_us_per_tx fulmen={fc['cpu_us_per_tx']:.1f} anvil={ac['cpu_us_per_tx']:.1f}")
PY
