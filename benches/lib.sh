# Shared by the benchmark scripts (sourced, not run).

# A free loopback TCP port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# CPU time of process $1 and of each of its threads, as JSON
# {"total": seconds, "threads": {name: seconds}} (utime + stime from
# /proc; threads of one name are summed).
cpu_times() {
  python3 - "$1" <<'PY'
import json, os, sys
pid = sys.argv[1]
tick = os.sysconf("SC_CLK_TCK")
def times(path):
    with open(path) as f:
        raw = f.read()
    name = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return name, (int(fields[11]) + int(fields[12])) / tick
_, total = times(f"/proc/{pid}/stat")
threads = {}
for tid in os.listdir(f"/proc/{pid}/task"):
    try:
        name, t = times(f"/proc/{pid}/task/{tid}/stat")
    except OSError:
        continue
    threads[name] = threads.get(name, 0) + t
print(json.dumps({"total": total, "threads": threads}))
PY
}

# CPU-µs per transaction between two cpu_times snapshots ($1, $2) for $3
# transactions: the whole process, then each thread that used any.
cpu_per_tx() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
a, b, txs = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
per = lambda s: s * 1e6 / max(txs, 1)
parts = {n: b["threads"][n] - a["threads"].get(n, 0) for n in b["threads"]}
parts = {n: per(s) for n, s in sorted(parts.items(), key=lambda kv: -kv[1]) if s > 0}
print(json.dumps({"cpu_us_per_tx": per(b["total"] - a["total"]), "threads": parts}))
PY
}

# Waits (up to 20 s) until a JSON-RPC endpoint answers eth_chainId.
wait_rpc() {
  for _ in $(seq 1 200); do
    if python3 -c "import sys,urllib.request as u; u.urlopen(u.Request(sys.argv[1], b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_chainId\"}', {'content-type': 'application/json'}), timeout=1)" "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "no RPC at $1" >&2; return 1
}
