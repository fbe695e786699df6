#!/usr/bin/env python3
"""Read latency of history: receipts and full blocks of recent blocks (kept
in RAM) against old ones (read from the history store), in the same run.

    benches/history_reads.py http://127.0.0.1:8545 [samples]

Run it against a node that has sealed more than `storage.memory_blocks`
blocks with transactions (e.g. after `fulmen-load --txs 100000`). Each
request is timed alone on one keep-alive connection; the figures are
client-side (loopback, Python), so compare the two columns, not the
absolute values.
"""
import http.client
import json
import random
import statistics
import sys
import time
from urllib.parse import urlparse


def main():
    url = urlparse(sys.argv[1])
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    conn = http.client.HTTPConnection(url.hostname, url.port)

    def rpc(method, params):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        began = time.perf_counter()
        conn.request("POST", "/", body, {"content-type": "application/json"})
        answer = json.loads(conn.getresponse().read())
        return answer["result"], (time.perf_counter() - began) * 1e6

    head = int(rpc("eth_blockNumber", [])[0], 16)
    blocks = {}
    for n in range(1, head + 1):
        block, _ = rpc("eth_getBlockByNumber", [hex(n), False])
        if block and block["transactions"]:
            blocks[n] = block["transactions"]
    with_txs = sorted(blocks)
    if len(with_txs) < 40:
        sys.exit(f"only {len(with_txs)} blocks with transactions: load the node first")
    recent = [n for n in with_txs if n > head - 8]
    old = [n for n in with_txs if n < head - 64]
    if not recent or not old:
        sys.exit("need blocks with transactions both in the last 8 and before the last 64")
    rows = []
    for name, pool in (("recent (RAM)", recent), ("old (disk)", old)):
        receipt, block = [], []
        for _ in range(samples):
            n = random.choice(pool)
            _, us = rpc("eth_getTransactionReceipt", [random.choice(blocks[n])])
            receipt.append(us)
            _, us = rpc("eth_getBlockByNumber", [hex(n), True])
            block.append(us)
        txs = statistics.mean(len(blocks[n]) for n in pool)
        rows.append((name, len(pool), txs, receipt, block))
    print(f"head {head}; {samples} samples per cell; latency in µs (p50 / p99)")
    print(f"{'blocks':<14} {'count':>6} {'txs/block':>10} {'receipt':>18} {'full block':>22}")
    for name, count, txs, receipt, block in rows:
        q = lambda v: f"{statistics.median(v):8.0f} / {sorted(v)[int(len(v) * 0.99)]:7.0f}"
        print(f"{name:<14} {count:>6} {txs:>10.0f} {q(receipt):>18} {q(block):>22}")


if __name__ == "__main__":
    main()
