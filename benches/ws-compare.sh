#!/usr/bin/env bash
# Preconfirmation-to-subscriber latency, fulmen and anvil side by side in one
# run: a transaction that emits a log is sent (one in flight), and each of N
# WebSocket `logs` subscribers times its arrival. N = 1, 100, 1000; idle and
# under a background load of transfers.
#
#   benches/ws-compare.sh
#   TXS=1000 LOAD_TPS=2000 SUBSCRIBERS=1,10,100,1000 benches/ws-compare.sh
#   FULMEN_ARGS="--durability memory" benches/ws-compare.sh
#
# anvil runs in its default automine (each tx mined, and its logs published,
# at once). Needs the pinned anvil from `scripts/test.sh` (tools/node_modules).
set -euo pipefail
cd "$(dirname "$0")/.."

TXS=${TXS:-300}
LOAD_TPS=${LOAD_TPS:-100}
SUBSCRIBERS=${SUBSCRIBERS:-1,100,1000}
ANVIL=tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
[ -x "$ANVIL" ] || (cd tools && npm install --no-audit --no-fund --loglevel=error)

cargo build --release --quiet -p fulmen -p fulmen-benches
BENCH=target/release/fulmen-ws-bench
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; PIDS=(); sleep 0.5; }
trap 'cleanup; rm -rf "$WORK"' EXIT

# shellcheck source=benches/lib.sh
source benches/lib.sh

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%FT%TZ)"
echo "one tx in flight, $TXS measured per point; load = $LOAD_TPS transfers/s"
for load in 0 "$LOAD_TPS"; do
  for node in fulmen anvil; do
    port=$(free_port)
    if [ "$node" = fulmen ]; then
      # shellcheck disable=SC2086 # FULMEN_ARGS is a list of flags
      target/release/fulmen run --dev --rpc-addr "127.0.0.1:$port" --datadir "$WORK/data-$port" ${FULMEN_ARGS:-} >"$WORK/$node.log" 2>&1 &
    else
      "$ANVIL" --host 127.0.0.1 --port "$port" --silent >"$WORK/$node.log" 2>&1 &
    fi
    PIDS+=($!)
    wait_rpc "http://127.0.0.1:$port"
    echo "measuring $node, load $load tx/s" >&2
    "$BENCH" --rpc "http://127.0.0.1:$port" --subscribers "$SUBSCRIBERS" --txs "$TXS" --load-tps "$load" --json >"$WORK/$node-$load.json"
    cleanup
  done
  python3 - "$WORK/fulmen-$load.json" "$WORK/anvil-$load.json" "$load" <<'PY'
import json, sys
f = [json.loads(l) for l in open(sys.argv[1])]
a = [json.loads(l) for l in open(sys.argv[2])]
achieved = [r.get("load_tps_achieved", 0) for r in f + a if "error" not in r]
print(f"\nload {sys.argv[3]} tx/s (achieved {min(achieved, default=0):.0f}..{max(achieved, default=0):.0f})   subscribers | fulmen p50 / p99 / last-p99 ms | anvil p50 / p99 / last-p99 ms | ratio p50 anvil/fulmen")
def cells(r):
    if "error" in r:
        return f"{'failed':>25}   "
    return f"{r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f} {r['last_p99_ms']:>8.3f}   "
for x, y in zip(f, a):
    ratio = "-" if "error" in x or "error" in y else f"{y['p50_ms']/max(x['p50_ms'],1e-9):.2f}"
    print(f"{'':>14} {x['subscribers']:>11} | {cells(x)}| {cells(y)}| {ratio:>6}")
for r in f + a:
    if "error" in r:
        print(f"  failed point: {r}")
PY
done
