#!/usr/bin/env bash
# fulmen on several core maps, the same workloads on each, in one run:
# sync-send latency at one in flight, sustained throughput at 32 in flight,
# and a paced run at half of the best sustained rate (p99 under load).
#
#   benches/coremaps.sh
#   TXS=50000 benches/coremaps.sh
#
# Maps (2-CPU machine): all roles on CPU 0; net+exec | net+seq+storage (the
# default: an acceptor on each CPU); net+exec | seq+storage; net |
# seq+storage+exec (state-root worker on the seq core).
set -euo pipefail
cd "$(dirname "$0")/.."

TXS=${TXS:-20000}
LAT_TXS=${LAT_TXS:-2000}
cargo build --release --quiet -p fulmen -p fulmen-benches
LOAD=target/release/fulmen-load
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# shellcheck source=benches/lib.sh
source benches/lib.sh
run_map() { # name, toml
  local port; port=$(free_port)
  printf '%b' "$2" >"$WORK/$1.toml"
  target/release/fulmen run --dev --config "$WORK/$1.toml" --rpc-addr "127.0.0.1:$port" \
    --datadir "$WORK/data-$1" >"$WORK/$1.log" 2>&1 &
  echo $! >"$WORK/pid"
  for _ in $(seq 100); do grep -q listening "$WORK/$1.log" && break; sleep 0.1; done
  local url="http://127.0.0.1:$port"
  local lat tps paced
  lat=$($LOAD --rpc "$url" --txs "$LAT_TXS" --concurrency 1 --sync --accounts 16 --json)
  tps=$($LOAD --rpc "$url" --txs "$TXS" --concurrency 32 --accounts 1024 --seed 2 --json)
  local half; half=$(python3 -c "import json,sys; print(int(json.loads(sys.argv[1])['tps_preconfirmed']/2))" "$tps")
  paced=$($LOAD --rpc "$url" --txs "$TXS" --rate "$half" --sync --accounts 1024 --seed 3 --json)
  kill "$(cat "$WORK/pid")"; wait "$(cat "$WORK/pid")" 2>/dev/null || true
  python3 - "$1" "$lat" "$tps" "$paced" "$half" <<'PY'
import json, sys
name, lat, tps, paced, half = sys.argv[1], *(json.loads(x) for x in sys.argv[2:5]), sys.argv[5]
errs = sum(paced["errors"].values())
print(f"| {name} | {lat['p50_ms']:.3f} | {lat['p99_ms']:.3f} | {tps['tps_preconfirmed']:,.0f} | {half} | {paced['p50_ms']:.3f} | {paced['p99_ms']:.3f} | {errs} |")
PY
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%FT%TZ)"
echo "| core map | sync p50 ms (1 in flight) | sync p99 ms | transfers/s preconfirmed (32 in flight) | paced rate /s | paced sync p50 ms | paced sync p99 ms | paced errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
run_map "all-on-cpu0" '[cores]\nnet = [0]\nseq = 0\nexec = []\nstorage = [0]\n'
run_map "net+exec-0_net+seq+storage-1" '[cores]\nnet = [0, 1]\nseq = 1\nexec = [0]\nstorage = [1]\n'
run_map "net+exec-0_seq+storage-1" '[cores]\nnet = [0]\nseq = 1\nexec = [0]\nstorage = [1]\n'
run_map "net-0_seq+storage+exec-1" '[cores]\nnet = [0]\nseq = 1\nexec = []\nstorage = [1]\n'
