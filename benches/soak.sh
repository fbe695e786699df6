#!/usr/bin/env bash
# Soak: native transfers in rounds, with a SIGTERM restart between rounds, on
# one datadir. Per round it prints the node's RSS (at the end of the round
# and again after the restart), the datadir's size, the log's bytes per
# transaction, the boot time, the throughput and the node's CPU-µs per
# transaction; it writes the figures as JSON and draws them (SVG) next to the
# curve measured before history moved to disk (issue 16).
#
#   benches/soak.sh                               # 10 rounds of 200,000 (2M)
#   ROUNDS=4 TXS=50000 benches/soak.sh            # shorter
#   FULMEN_ARGS="--storage-memory-blocks 16" benches/soak.sh
#   OUT=/tmp/soak benches/soak.sh                 # keep soak.json / soak.svg there
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-10}
TXS=${TXS:-200000}
CONCURRENCY=${CONCURRENCY:-64}
ACCOUNTS=${ACCOUNTS:-1024}
cargo build --release --quiet -p fulmen -p fulmen-benches
LOAD=target/release/fulmen-load
WORK=$(mktemp -d)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
DATA="$WORK/data"
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; sleep 0.5; rm -rf "$WORK"' EXIT

# shellcheck source=benches/lib.sh
source benches/lib.sh
PORT=$(free_port)
URL="http://127.0.0.1:$PORT"

# Starts the node; BOOT is the seconds from exec to the first RPC answer.
start() {
  local began; began=$(date +%s.%N)
  # shellcheck disable=SC2086 # FULMEN_ARGS is a list of flags
  target/release/fulmen run --dev --rpc-addr "127.0.0.1:$PORT" --datadir "$DATA" ${FULMEN_ARGS:-} >>"$WORK/fulmen.log" 2>&1 &
  PID=$!
  python3 - "$URL" <<'PY'
import sys, time, urllib.request as u
req = u.Request(sys.argv[1], b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}', {"content-type": "application/json"})
for _ in range(60000):
    try:
        u.urlopen(req, timeout=1); sys.exit(0)
    except Exception:
        time.sleep(0.005)
sys.exit("no RPC")
PY
  BOOT=$(python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.3f}')" "$began")
}
stop() { kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$PID/status"; }
cpu_s() { python3 -c "import os,sys; f=open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))" "$PID"; }
du_mib() { du -sb "$1" 2>/dev/null | awk '{printf "%.1f", $1/1048576}'; }
# Bytes of log in the datadir at the last boot (its "replayed the log" line:
# what it read and the older segments it did not need).
# Transactions the last boot replayed (the log since its checkpoint).
boot_txs() { grep 'replayed the log' "$WORK/fulmen.log" | tail -1 | sed -E 's/.* txs=([0-9]+).*/\1/'; }
log_mb() { grep 'replayed the log' "$WORK/fulmen.log" | tail -1 | sed -E 's/.* log_mb="?([0-9.]+).*/\1/'; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%FT%TZ)"
echo "soak: $ROUNDS rounds of $TXS transfers at $CONCURRENCY in flight, a restart after each; fulmen args: ${FULMEN_ARGS:-none}"
start
printf '%-6s %10s %9s %9s %9s %9s %9s %8s %9s %8s %9s\n' round txs rss_MiB rss_boot datadir history log_B/tx boot_s boot_txs tx/s cpu_us/tx
echo "[" >"$OUT/soak.json"
total=0
log_before=0
for round in $(seq 1 "$ROUNDS"); do
  cpu0=$(cpu_s)
  result=$($LOAD --rpc "$URL" --txs "$TXS" --concurrency "$CONCURRENCY" --accounts "$ACCOUNTS" --seed "$round" --json)
  cpu1=$(cpu_s)
  sleep 3  # the last blocks reach the history store
  rss=$(rss_mib)
  stop
  start
  rss_boot=$(rss_mib)
  total=$((total + TXS + ACCOUNTS))
  log_now=$(log_mb)
  line=$(python3 - "$round" "$total" "$rss" "$rss_boot" "$(du_mib "$DATA")" "$(du_mib "$DATA/history")" "$log_now" "$log_before" "$BOOT" "$result" "$cpu0" "$cpu1" "$TXS" "$ACCOUNTS" "$(boot_txs)" <<'PY'
import json, sys
a = sys.argv
r = json.loads(a[10])
txs_round = int(a[13]) + int(a[14])
row = dict(round=int(a[1]), txs=int(a[2]), rss_mib=float(a[3]), rss_boot_mib=float(a[4]),
           datadir_mib=float(a[5]), history_mib=float(a[6]),
           log_bytes_per_tx=(float(a[7]) - float(a[8])) * 1e6 / txs_round,
           boot_s=float(a[9]), boot_txs=int(a[15]), tps=r["tps_preconfirmed"],
           cpu_us_per_tx=(float(a[12]) - float(a[11])) * 1e6 / txs_round)
print(json.dumps(row))
PY
)
  log_before=$log_now
  python3 -c "
import json,sys; r=json.loads(sys.argv[1])
print(f\"{r['round']:<6} {r['txs']:>10} {r['rss_mib']:>9.1f} {r['rss_boot_mib']:>9.1f} {r['datadir_mib']:>9.1f} {r['history_mib']:>9.1f} {r['log_bytes_per_tx']:>9.0f} {r['boot_s']:>8.2f} {r['boot_txs']:>9} {r['tps']:>8.0f} {r['cpu_us_per_tx']:>9.1f}\")" "$line"
  [ "$round" -gt 1 ] && echo "," >>"$OUT/soak.json"
  echo "$line" >>"$OUT/soak.json"
done
echo "]" >>"$OUT/soak.json"
stop
python3 benches/soak_plot.py "$OUT/soak.json" "$OUT/soak.svg"
echo "figures: $OUT/soak.json; plot: $OUT/soak.svg"
