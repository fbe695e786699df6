// Drives a fulmen node with viem over its webSocket transport, the way a
// real-time dApp would: watchBlocks (newHeads), watchContractEvent (logs),
// watchPendingTransactions, a raw eth_subscribe to miniBlocks, and every
// request (deploy, sync send, reads) over the same socket. Exits non-zero on
// any mismatch. Run by appliance/tests/ws.rs:
//   node tools/viem-ws-check.mjs ws://127.0.0.1:PORT
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import {
  createPublicClient, createWalletClient, defineChain, encodeFunctionData, webSocket, parseAbi, zeroHash,
} from "viem";
import { mnemonicToAccount } from "viem/accounts";

const url = process.argv[2];
assert.ok(url, "usage: node viem-ws-check.mjs WS_URL");
const chain = defineChain({
  id: 4242, name: "fulmen-dev", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
  rpcUrls: { default: { http: [url.replace("ws://", "http://")], webSocket: [url] } },
});
const alice = mnemonicToAccount("test test test test test test test test test test test junk", { addressIndex: 0 });
const transport = webSocket(url, { keepAlive: { interval: 200 }, reconnect: false });
const pub = createPublicClient({ chain, transport });
const wallet = createWalletClient({ chain, transport, account: alice });
const within = (ms, what, promise) => Promise.race([
  promise,
  new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)),
]);

assert.equal(await pub.getChainId(), 4242);

// Deploy over WebSocket.
const artifacts = JSON.parse(fs.readFileSync(path.join(path.dirname(new URL(import.meta.url).pathname), "../contracts/artifacts.json")));
const deployHash = await wallet.deployContract({ abi: artifacts.Probe.abi, bytecode: artifacts.Probe.bytecode });
const deployed = await pub.waitForTransactionReceipt({ hash: deployHash, pollingInterval: 50 });
const probe = deployed.contractAddress;
const abi = parseAbi(["function bump()", "event Bumped(uint256 indexed value, address indexed by)"]);

// Watchers, all through eth_subscribe on the socket.
const logs = [];
let logsDone;
const logsSeen = new Promise((resolve) => { logsDone = resolve; });
const unwatchEvents = pub.watchContractEvent({
  address: probe, abi, eventName: "Bumped",
  onLogs: (batch) => { logs.push(...batch); if (logs.length >= 3) logsDone(); },
  onError: (e) => { throw e; },
});
const blocks = [];
let blockDone;
const blockSeen = new Promise((resolve) => { blockDone = resolve; });
let target = null;
const unwatchBlocks = pub.watchBlocks({
  onBlock: (block) => { blocks.push(block); if (target !== null && block.number >= target) blockDone(); },
  onError: (e) => { throw e; },
});
const pending = [];
const unwatchPending = pub.watchPendingTransactions({ onTransactions: (hashes) => pending.push(...hashes) });
const minis = [];
const { unsubscribe: unsubscribeMinis } = await pub.transport.subscribe({
  params: ["miniBlocks"],
  onData: (data) => minis.push(data.result ?? data),
  onError: (e) => { throw e; },
});
// Give the subscription requests time to be answered before sending.
await new Promise((r) => setTimeout(r, 200));

// Three bumps: the first two plain, the last one with EIP-7966 sync send.
const hashes = [];
for (let i = 0; i < 2; i++) {
  hashes.push(await wallet.writeContract({ address: probe, abi, functionName: "bump", gas: 200000n }));
}
const request = await wallet.prepareTransactionRequest({
  to: probe, data: encodeFunctionData({ abi, functionName: "bump" }), gas: 200000n,
});
const syncReceipt = await pub.sendRawTransactionSync({ serializedTransaction: await wallet.signTransaction(request) });
assert.equal(syncReceipt.status, "success");
hashes.push(syncReceipt.transactionHash);

await within(10000, "three Bumped logs", logsSeen);
assert.deepEqual(logs.map((l) => l.args.value), [1n, 2n, 3n]);
for (const log of logs) {
  assert.equal(log.args.by, alice.address);
  assert.equal(log.blockHash, zeroHash, "logs arrive at mini-block time, before the seal");
}
assert.deepEqual(logs.map((l) => l.transactionHash), hashes);

target = syncReceipt.blockNumber;
if (blocks.some((b) => b.number >= target)) blockDone();
await within(10000, `block ${target}`, blockSeen);
const sealed = await pub.getBlock({ blockNumber: target });
const seen = blocks.find((b) => b.number === target);
if (seen) assert.equal(seen.hash, sealed.hash);

for (const hash of hashes) assert.ok(pending.includes(hash), `pending ${hash}`);
const miniHashes = minis.flatMap((m) => m.transactions.map((t) => t.hash));
for (const hash of hashes) assert.ok(miniHashes.includes(hash), `mini-block with ${hash}`);
for (const m of minis) {
  for (const key of ["block_number", "index", "mini_block_number", "mini_block_timestamp", "gas_used", "receipts"]) {
    assert.ok(key in m, `miniBlocks field ${key}`);
  }
}

unwatchEvents(); unwatchBlocks(); unwatchPending(); await unsubscribeMinis();
console.log(`viem-ws-check: ok (${logs.length} logs, ${blocks.length} blocks, ${minis.length} mini-blocks)`);
process.exit(0);
