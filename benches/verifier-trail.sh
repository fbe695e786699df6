#!/usr/bin/env bash
# How far a verifier trails the sequencer under sustained load. One anvil
# as L1 (1 s blocks), a sequencer posting to it, and a verifier deriving
# from it, all from the start; fulmen-load drives the sequencer while a
# sampler reads, every 250 ms, the sequencer's head and safe block and the
# verifier's derived block. It prints how many L2 blocks (1 s each) the
# verifier is behind the sequencer's safe head and behind its head, p50,
# p99 and max over the load, the verifier's wall-clock lag, and how long
# after the load the verifier reaches the sequencer's last block.
# Every process shares the machine's CPUs (the load generator too). The
# verifier derives from L1 blocks as they come, without waiting for the
# confirmations the sequencer's `safe` needs, so it can be ahead of `safe`.
#
#   benches/verifier-trail.sh
#   TXS=400000 WORKLOAD=erc20 benches/verifier-trail.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TXS=${TXS:-200000}
CONCURRENCY=${CONCURRENCY:-32}
ACCOUNTS=${ACCOUNTS:-1024}
WORKLOAD=${WORKLOAD:-transfers}
ANVIL=tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
[ -x "$ANVIL" ] || (cd tools && npm install --no-audit --no-fund --loglevel=error)

cargo build --release --quiet -p fulmen -p fulmen-benches
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; PIDS=(); sleep 0.5; }
trap 'cleanup; rm -rf "$WORK"' EXIT
# shellcheck source=benches/lib.sh
source benches/lib.sh

port=$(free_port)
"$ANVIL" --host 127.0.0.1 --port "$port" --silent --hardfork prague --block-time 1 >"$WORK/anvil.log" 2>&1 &
PIDS+=($!)
l1="http://127.0.0.1:$port"
wait_rpc "$l1"
cat >"$WORK/node.toml" <<EOF
[da]
confirmation_depth = 2
channel_timeout_ms = 2000
poll_ms = 200
EOF
seq_rpc=127.0.0.1:$(free_port); seq_metrics=127.0.0.1:$(free_port)
ver_rpc=127.0.0.1:$(free_port); ver_metrics=127.0.0.1:$(free_port)
target/release/fulmen run --dev --rpc-addr "$seq_rpc" --metrics-addr "$seq_metrics" --datadir "$WORK/sequencer" \
  --config "$WORK/node.toml" --l1-rpc "$l1" >"$WORK/sequencer.log" 2>&1 &
PIDS+=($!)
wait_rpc "http://$seq_rpc"
target/release/fulmen run --dev --verifier --rpc-addr "$ver_rpc" --metrics-addr "$ver_metrics" --datadir "$WORK/verifier" \
  --config "$WORK/node.toml" --l1-rpc "$l1" >"$WORK/verifier.log" 2>&1 &
verifier=$!
PIDS+=("$verifier")
wait_rpc "http://$ver_rpc"

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%FT%TZ)"
echo "L1: anvil --hardfork prague --block-time 1; load: $TXS $WORKLOAD at $CONCURRENCY in flight; L2 blocks of 1 s"
touch "$WORK/loading"
python3 - "$seq_rpc" "$seq_metrics" "$ver_metrics" "$WORK/loading" >"$WORK/samples.txt" <<'PY' &
import json, os, sys, time, urllib.request as u
seq_rpc, seq_m, ver_m, flag = sys.argv[1:]
def metrics(addr):
    out = {}
    for line in u.urlopen(f"http://{addr}/metrics", timeout=2).read().decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition(" ")
            out[k] = float(v)
    return out
def head():
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}'
    r = json.load(u.urlopen(u.Request(f"http://{seq_rpc}", body, {"content-type": "application/json"}), timeout=2))
    return int(r["result"], 16)
while os.path.exists(flag):
    try:
        s, v = metrics(seq_m), metrics(ver_m)
        print(head(), int(s["fulmen_da_safe_block"]), int(v.get("fulmen_verifier_derived_block", 0)),
              v.get("fulmen_verifier_lag_seconds", float("nan")), flush=True)
    except Exception as e:
        print(f"sample failed: {e!r}", file=sys.stderr)
    time.sleep(0.25)
PY
sampler=$!
result=$(target/release/fulmen-load --rpc "http://$seq_rpc" --workload "$WORKLOAD" --txs "$TXS" \
  --concurrency "$CONCURRENCY" --accounts "$ACCOUNTS" --json)
rm "$WORK/loading"
wait "$sampler"
last=$(python3 -c "import json,sys,urllib.request as u; r=json.load(u.urlopen(u.Request(sys.argv[1], b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_blockNumber\"}', {'content-type':'application/json'}))); print(int(r['result'],16))" "http://$seq_rpc")
done_at=$(date +%s.%N)
for _ in $(seq 1 1200); do
  derived=$(curl -s "http://$ver_metrics/metrics" | awk '$1=="fulmen_verifier_derived_block" {print $2}')
  [ "${derived:-0}" -ge "$last" ] && break
  sleep 0.25
done
caught=$(date +%s.%N)
python3 - "$result" "$WORK/samples.txt" "$last" "$done_at" "$caught" "$(awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' /proc/$verifier/stat)" <<'PY'
import json, sys
result, path, last, t0, t1, ver_cpu = sys.argv[1:]
r = json.loads(result)
rows = [list(map(float, l.split())) for l in open(path) if l.strip()]
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")
behind_safe = [max(0, safe - ver) for head, safe, ver, _ in rows]
behind_head = [max(0, head - ver) for head, safe, ver, _ in rows]
lag_s = [lag for _, _, ver, lag in rows if ver > 0]
safe_behind = [max(0, head - safe) for head, safe, _, _ in rows]
print(f"load: {r['tps_preconfirmed']:.0f} preconfirmed/s over {r['duration_s']:.1f} s; {len(rows)} samples")
for name, xs in (("behind the sequencer's safe head", behind_safe), ("behind the sequencer's head", behind_head)):
    print(f"  verifier {name}: p50 {pct(xs, 50):.0f}  p99 {pct(xs, 99):.0f}  max {max(xs):.0f} L2 blocks")
print(f"  (the sequencer's safe head behind its head: p50 {pct(safe_behind, 50):.0f}  p99 {pct(safe_behind, 99):.0f} L2 blocks)")
print(f"  verifier wall-clock lag (now - last derived block's timestamp): p50 {pct(lag_s, 50):.1f} s  p99 {pct(lag_s, 99):.1f} s")
print(f"  after the load: the verifier reached the sequencer's last block {int(last)} in {float(t1) - float(t0):.1f} s; verifier CPU {float(ver_cpu):.1f} s in all")
PY
