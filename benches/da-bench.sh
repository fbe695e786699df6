#!/usr/bin/env bash
# The DA batcher under real traffic: fulmen posting to the pinned anvil as
# L1 (1 s blocks), loaded by fulmen-load. Per workload it prints the bytes
# per L2 tx in blobs beside their plain EIP-2718 size, the compression and
# blob fill ratios, L1 blob gas per L2 tx, and the batcher's CPU per tx
# (the fulmen-da thread's utime+stime, KZG included) beside the whole node's.
#
#   benches/da-bench.sh                                  # transfers, then erc20
#   TXS=100000 WORKLOADS=erc20 HARDFORK=osaka benches/da-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TXS=${TXS:-40000}
CONCURRENCY=${CONCURRENCY:-32}
ACCOUNTS=${ACCOUNTS:-1024}
WORKLOADS=${WORKLOADS:-"transfers erc20"}
HARDFORK=${HARDFORK:-prague}
ANVIL=tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
[ -x "$ANVIL" ] || (cd tools && npm install --no-audit --no-fund --loglevel=error)

cargo build --release --quiet -p fulmen -p fulmen-benches
LOAD=target/release/fulmen-load
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; PIDS=(); sleep 0.5; }
trap 'cleanup; rm -rf "$WORK"' EXIT
# shellcheck source=benches/lib.sh
source benches/lib.sh

metric() { curl -s "http://$METRICS/metrics" | awk -v m="$1" '$1==m {print $2}'; }
# utime+stime in seconds: of one thread (by name) or of the whole process.
cpu_s() {
  local pid=$1 name=${2:-}
  local stat=/proc/$pid/stat
  if [ -n "$name" ]; then
    for t in /proc/"$pid"/task/*; do
      if [ "$(cat "$t/comm")" = "$name" ]; then stat=$t/stat; fi
    done
  fi
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "$stat"
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%FT%TZ)"
echo "L1: anvil --hardfork $HARDFORK --block-time 1; load: $TXS txs at $CONCURRENCY in flight, $ACCOUNTS accounts"
for workload in $WORKLOADS; do
  port=$(free_port)
  "$ANVIL" --host 127.0.0.1 --port "$port" --silent --hardfork "$HARDFORK" --block-time 1 >"$WORK/anvil.log" 2>&1 &
  PIDS+=($!)
  l1="http://127.0.0.1:$port"
  wait_rpc "$l1"
  rpc_port=$(free_port)
  METRICS=127.0.0.1:$(free_port)
  cat >"$WORK/node.toml" <<EOF
metrics_addr = "$METRICS"
[da]
confirmation_depth = 2
channel_timeout_ms = 2000
poll_ms = 200
EOF
  target/release/fulmen run --dev --rpc-addr "127.0.0.1:$rpc_port" --datadir "$WORK/data-$workload" \
    --config "$WORK/node.toml" --l1-rpc "$l1" >"$WORK/fulmen.log" 2>&1 &
  node=$!
  PIDS+=("$node")
  wait_rpc "http://127.0.0.1:$rpc_port"
  # The batcher is up once it has seen L1 (after loading the KZG setup).
  for _ in $(seq 1 100); do [ "$(metric fulmen_da_l1_head)" != "0" ] && break; sleep 0.2; done
  da0=$(cpu_s "$node" fulmen-da); node0=$(cpu_s "$node"); txs0=$(metric fulmen_da_txs_total)
  result=$($LOAD --rpc "http://127.0.0.1:$rpc_port" --workload "$workload" --txs "$TXS" \
    --concurrency "$CONCURRENCY" --accounts "$ACCOUNTS" --json)
  head=$(python3 -c "import json,sys,urllib.request as u; r=json.load(u.urlopen(u.Request(sys.argv[1], b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_blockNumber\"}', {'content-type':'application/json'}))); print(int(r['result'],16))" "http://127.0.0.1:$rpc_port")
  echo "$workload: load done at L2 block $head; waiting for L1 to hold it" >&2
  for _ in $(seq 1 600); do
    [ "$(metric fulmen_da_safe_block)" -gt "$head" ] 2>/dev/null && break
    sleep 0.5
  done
  da1=$(cpu_s "$node" fulmen-da); node1=$(cpu_s "$node")
  python3 - "$workload" "$result" "$da0" "$da1" "$node0" "$node1" "$txs0" \
    "$(metric fulmen_da_txs_total)" "$(metric fulmen_da_plain_tx_bytes_total)" \
    "$(metric fulmen_da_rlp_bytes_total)" "$(metric fulmen_da_channel_bytes_total)" \
    "$(metric fulmen_da_blobs_total)" "$(metric fulmen_da_blob_data_bytes_total)" \
    "$(metric fulmen_da_channels_total)" "$(metric fulmen_da_safe_block)" "$head" "$ACCOUNTS" <<'PY'
import json, math, sys
(w, result, da0, da1, n0, n1, txs0, txs, plain, rlp, chan, blobs, blob_data, channels, safe, head, accounts) = sys.argv[1:]
r = json.loads(result)
txs, txs0 = float(txs), float(txs0)
plain, rlp, chan, blobs, blob_data = map(float, (plain, rlp, chan, blobs, blob_data))
# The floor of one tx: its signature (r, s: 64 bytes, y parity: a bit) plus
# the fields that differ between txs: the recipient, one of `accounts`.
floor = 64 + 1 / 8 + math.log2(float(accounts)) / 8
da_us = (float(da1) - float(da0)) * 1e6 / max(txs - txs0, 1)
node_us = (float(n1) - float(n0)) * 1e6 / max(txs - txs0, 1)
print(f"{w}: {int(txs)} L2 txs in {int(channels)} channels, {int(blobs)} blobs; safe {safe} > head {head}: {int(safe) > int(head)}")
print(f"  load: {r['tps_preconfirmed']:.0f} preconfirmed/s")
print(f"  plain 2718 B/tx {plain / txs:.1f}  span batch B/tx {rlp / txs:.1f}  channel B/tx {chan / txs:.1f}"
      f"  ({chan / plain:.3f} of plain; floor {floor:.1f} B, {chan / txs / floor:.2f}x)")
print(f"  compression {chan / rlp:.3f}  blob fill {blob_data / (blobs * 130044):.3f}"
      f"  L1 blob gas per L2 tx {blobs * 131072 / txs:.1f}")
print(f"  batcher CPU {da_us:.1f} us/tx (one core: {1e6 / max(da_us, 1e-9):,.0f} tx/s, KZG included)"
      f"  node CPU {node_us:.1f} us/tx")
PY
  # A verifier from scratch on the same L1: how fast it derives and
  # re-executes everything posted so far.
  safe=$(metric fulmen_da_safe_block)
  vport=$(free_port)
  started=$(date +%s.%N)
  target/release/fulmen run --dev --verifier --rpc-addr "127.0.0.1:$vport" --datadir "$WORK/verifier-$workload" \
    --config "$WORK/node.toml" --metrics-addr "127.0.0.1:$(free_port)" --l1-rpc "$l1" >"$WORK/verifier.log" 2>&1 &
  verifier=$!
  PIDS+=("$verifier")
  wait_rpc "http://127.0.0.1:$vport"
  for _ in $(seq 1 1200); do
    vhead=$(python3 -c "import json,sys,urllib.request as u; r=json.load(u.urlopen(u.Request(sys.argv[1], b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_blockNumber\"}', {'content-type':'application/json'}))); print(int(r['result'],16))" "http://127.0.0.1:$vport")
    [ "$vhead" -ge "$safe" ] && break
    sleep 0.2
  done
  python3 - "$started" "$(date +%s.%N)" "$(cpu_s "$verifier")" "$(metric fulmen_da_txs_total)" "$vhead" "$safe" <<'PY'
import sys
t0, t1, cpu, txs, vhead, safe = map(float, sys.argv[1:])
wall = t1 - t0
print(f"  verifier from scratch: L2 blocks 0..{int(vhead)} (sequencer safe {int(safe)}) in {wall:.1f} s wall, {cpu:.1f} s CPU"
      f" (start-up and KZG setup included): {txs / wall:,.0f} L2 txs/s, {cpu * 1e6 / txs:.1f} CPU-us per tx")
PY
  cleanup
done
