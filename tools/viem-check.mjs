// Drives a fulmen node with viem over HTTP, the way a dApp would, and exits
// non-zero on any mismatch. Run by appliance/tests/viem.rs:
//   node tools/viem-check.mjs http://127.0.0.1:PORT
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import {
  createPublicClient, createWalletClient, defineChain, http, parseEther, parseAbi, zeroHash,
} from "viem";
import { mnemonicToAccount } from "viem/accounts";

const url = process.argv[2];
assert.ok(url, "usage: node viem-check.mjs RPC_URL");
const chain = defineChain({
  id: 4242, name: "fulmen-dev", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
  rpcUrls: { default: { http: [url] } },
  // The canonical address, preinstalled in the dev genesis.
  contracts: { multicall3: { address: "0xcA11bde05977b3631167028862bE2a173976CA11" } },
});
const mnemonic = "test test test test test test test test test test test junk";
const alice = mnemonicToAccount(mnemonic, { addressIndex: 0 });
const bob = mnemonicToAccount(mnemonic, { addressIndex: 1 });
const pub = createPublicClient({ chain, transport: http(url) });
const wallet = createWalletClient({ chain, transport: http(url), account: alice });

assert.equal(await pub.getChainId(), 4242);
const before = await pub.getBalance({ address: bob.address });

// A plain send, then viem's receipt waiter: the preconfirmed receipt has the
// zero block hash until the seal; viem must parse it.
const hash = await wallet.sendTransaction({ to: bob.address, value: parseEther("1") });
const receipt = await pub.getTransactionReceipt({ hash });
assert.equal(receipt.status, "success");
assert.equal(receipt.blockHash, zeroHash, "preconfirmed receipt carries the zero hash");
assert.equal(await pub.getBalance({ address: bob.address }), before + parseEther("1"));
const waited = await pub.waitForTransactionReceipt({ hash, pollingInterval: 50 });
assert.equal(waited.status, "success");

// EIP-7966 sync send through viem.
const request = await wallet.prepareTransactionRequest({ to: bob.address, value: 5n });
const serialized = await wallet.signTransaction(request);
const syncReceipt = await pub.sendRawTransactionSync({ serializedTransaction: serialized });
assert.equal(syncReceipt.status, "success");

// Deploy and read a contract.
const artifacts = JSON.parse(fs.readFileSync(path.join(path.dirname(new URL(import.meta.url).pathname), "../contracts/artifacts.json")));
const deployHash = await wallet.deployContract({ abi: artifacts.Probe.abi, bytecode: artifacts.Probe.bytecode });
const deployed = await pub.waitForTransactionReceipt({ hash: deployHash, pollingInterval: 50 });
const probe = deployed.contractAddress;
const abi = parseAbi(["function bump()", "function counter() view returns (uint256)", "event Bumped(uint256 indexed value, address indexed by)"]);
const { request: bumpRequest } = await pub.simulateContract({ address: probe, abi, functionName: "bump", account: alice });
const bumpHash = await wallet.writeContract(bumpRequest);
const bumpReceipt = await pub.waitForTransactionReceipt({ hash: bumpHash, pollingInterval: 50 });
assert.equal(await pub.readContract({ address: probe, abi, functionName: "counter" }), 1n);

// The block a preconfirmed receipt names is addressable at once: as a
// block (geth's pending shape, null hash, until it is sealed), for logs,
// and for state reads.
const named = await pub.getBlock({ blockNumber: bumpReceipt.blockNumber });
assert.equal(named.number, bumpReceipt.blockNumber);
assert.ok(named.transactions.includes(bumpHash), "the named block holds the tx");
if (named.hash !== null) assert.notEqual(named.hash, zeroHash);
const fromReceipt = await pub.getContractEvents({
  address: probe, abi, eventName: "Bumped", fromBlock: bumpReceipt.blockNumber,
});
assert.equal(fromReceipt.length, 1, "logs from the receipt's block");
assert.equal(
  await pub.readContract({ address: probe, abi, functionName: "counter", blockNumber: bumpReceipt.blockNumber }),
  1n,
  "state at the receipt's block",
);
// viem's multicall with the chain's (preinstalled) Multicall3.
const [counted, bobBalance] = await pub.multicall({
  contracts: [
    { address: probe, abi, functionName: "counter" },
    {
      address: "0xcA11bde05977b3631167028862bE2a173976CA11",
      abi: parseAbi(["function getEthBalance(address) view returns (uint256)"]),
      functionName: "getEthBalance",
      args: [bob.address],
    },
  ],
  allowFailure: false,
});
assert.equal(counted, 1n);
assert.equal(bobBalance, await pub.getBalance({ address: bob.address }));
// viem's simulateCalls (eth_simulateV1): a transfer and a bump in one
// simulated block, with the ether moves traced, and nothing sent.
const carol = mnemonicToAccount(mnemonic, { addressIndex: 2 });
const carolBefore = await pub.getBalance({ address: carol.address });
const simulated = await pub.simulateCalls({
  account: alice.address,
  calls: [
    { to: carol.address, value: parseEther("2") },
    { to: probe, abi, functionName: "bump" },
    { to: probe, abi, functionName: "counter" },
  ],
  traceTransfers: true,
});
assert.equal(simulated.results.length, 3);
assert.ok(simulated.results.every((r) => r.status === "success"), JSON.stringify(simulated.results, (_, v) => typeof v === "bigint" ? v.toString() : v));
assert.equal(simulated.results[2].result, 2n, "the second call sees the first's state");
assert.equal(simulated.results[1].logs.length, 1, "the bump's event");
const transferLog = simulated.results[0].logs[0];
assert.equal(transferLog.address.toLowerCase(), "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "traceTransfers logs the ether move");
assert.equal(await pub.getBalance({ address: carol.address }), carolBefore, "a simulation sends nothing");
// A revert is a failed call with its reason, not a failed request.
const reverted = await pub.simulateCalls({
  account: alice.address,
  calls: [{ to: carol.address, value: 1n }, { to: probe, data: "0xdeadbeef" }],
});
assert.equal(reverted.results[0].status, "success");
assert.equal(reverted.results[1].status, "failure");

const pending = await pub.getBlock({ blockTag: "pending" });
assert.ok(pending.number > (await pub.getBlockNumber()) - 1n, "pending is past the last sealed block");
assert.equal(pending.hash, null);
const logs = await pub.getContractEvents({ address: probe, abi, eventName: "Bumped", fromBlock: 0n });
assert.equal(logs.length, 1);
assert.equal(logs[0].args.value, 1n);

// After the seal, the receipt carries the sealed block's hash.
const start = Date.now();
let sealed;
for (;;) {
  sealed = await pub.getTransactionReceipt({ hash });
  if (sealed.blockHash !== zeroHash) break;
  assert.ok(Date.now() - start < 5000, "block never sealed");
  await new Promise((r) => setTimeout(r, 100));
}
const block = await pub.getBlock({ blockHash: sealed.blockHash });
assert.equal(block.number, sealed.blockNumber);
assert.ok(block.transactions.includes(hash));
const fees = await pub.estimateFeesPerGas();
assert.ok(fees.maxFeePerGas > 0n);
console.log("viem-check: ok");
