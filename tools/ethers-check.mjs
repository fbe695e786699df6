// Drives a node with ethers v6 the way a dApp would, over HTTP (JsonRpcProvider,
// which polls) and WebSocket (WebSocketProvider), and exits non-zero on any
// mismatch. Run by appliance/tests/clients.rs against fulmen and anvil:
//   node tools/ethers-check.mjs http://127.0.0.1:PORT [ws://127.0.0.1:PORT]
// The WebSocket URL defaults to the HTTP one with ws:// (fulmen and anvil
// both speak WebSocket on their HTTP port). ETHERS_CHECK_DEBUG=1 prints every
// JSON-RPC request and answer of the HTTP providers.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import {
  ContractFactory, HDNodeWallet, JsonRpcProvider, NonceManager, WebSocketProvider, Contract, ZeroHash,
  isError,
} from "ethers";

const url = process.argv[2];
assert.ok(url, "usage: node ethers-check.mjs RPC_URL [WS_URL]");
const wsUrl = process.argv[3] ?? url.replace(/^http/, "ws");
const debug = process.env.ETHERS_CHECK_DEBUG === "1";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const within = (ms, what, promise) => Promise.race([
  promise,
  new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)),
]);

// ethers swallows errors inside its filter pollers and only logs them
// ("@TODO ..."): any such line fails the check.
const swallowed = [];
const log = console.log.bind(console);
console.log = (...args) => {
  if (typeof args[0] === "string" && args[0].startsWith("@TODO")) swallowed.push(args);
  log(...args);
};

function traced(provider, name) {
  if (debug) {
    provider.on("debug", (e) => {
      if (e.action === "sendRpcPayload") log(`${name} >>`, JSON.stringify(e.payload));
      if (e.action === "receiveRpcResult") log(`${name} <<`, JSON.stringify(e.result));
      if (e.action === "receiveRpcError") log(`${name} !!`, e.error?.message);
    });
  }
  return provider;
}

const http = traced(new JsonRpcProvider(url, undefined, { pollingInterval: 100 }), "http");
const ws = new WebSocketProvider(wsUrl);

const mnemonic = "test test test test test test test test test test test junk";
const account = (i) => HDNodeWallet.fromPhrase(mnemonic, undefined, `m/44'/60'/0'/0/${i}`);
// Accounts 2 and 3: the other client checks use other accounts. Back to
// back sends need ethers' NonceManager: ethers reuses an identical request's
// answer for 250 ms, so a second eth_getTransactionCount would not be asked.
const signer = account(2);
const wallet = new NonceManager(signer.connect(http));
const wsWallet = new NonceManager(account(3).connect(ws));

const network = await http.getNetwork();
assert.equal(network.chainId, 4242n);
assert.equal((await ws.getNetwork()).chainId, 4242n);

// Deploy Probe from the committed artifacts and wait as a dApp does.
const here = path.dirname(new URL(import.meta.url).pathname);
const artifacts = JSON.parse(fs.readFileSync(path.join(here, "../contracts/artifacts.json")));
const { abi, bytecode } = artifacts.Probe;
const factory = new ContractFactory(abi, bytecode, wallet);
const deployed = await (await factory.deploy()).waitForDeployment();
const address = await deployed.getAddress();
const deployReceipt = await deployed.deploymentTransaction().wait();
assert.equal(deployReceipt.status, 1);
assert.equal(deployReceipt.contractAddress, address);
assert.notEqual(await http.getCode(address), "0x", "code at the new address");
const probe = new Contract(address, abi, wallet);

// One bump: tx.wait(), then the receipt's block and its logs.
const tx = await probe.bump();
const receipt = await tx.wait();
assert.equal(receipt.status, 1);
assert.equal(receipt.hash, tx.hash);
assert.equal(receipt.logs.length, 1);
assert.equal(await probe.counter(), 1n);
// ethers looks the block up by the receipt's blockHash (eth_getBlockByHash).
// A preconfirmed receipt's blockHash is the zero hash, which the node
// answers with the block in progress: the receipt's block, unless that block
// sealed since the receipt was read (a known limit of the zero hash: the
// request does not say which block it means). The sealed case is checked
// strictly below, once the receipt names its block's real hash.
const block = await receipt.getBlock();
if (receipt.blockHash === ZeroHash) {
  assert.ok(block.number >= receipt.blockNumber, "receipt.getBlock() is the block in progress");
} else {
  assert.equal(block.number, receipt.blockNumber, "receipt.getBlock() is the receipt's block");
}
if (block.number === receipt.blockNumber) {
  assert.ok(block.transactions.includes(tx.hash), "the receipt's block holds the tx");
}
const byNumber = await http.getBlock(receipt.blockNumber);
assert.ok(byNumber, "getBlock(receipt.blockNumber)");
assert.ok(byNumber.transactions.includes(tx.hash));
const logs = await http.getLogs({ address, fromBlock: receipt.blockNumber });
assert.equal(logs.length, 1, "getLogs from the receipt's block");
assert.equal(logs[0].transactionHash, tx.hash);
const queried = await probe.queryFilter("Bumped", receipt.blockNumber);
assert.equal(queried.length, 1, "queryFilter from the receipt's block");
assert.equal(queried[0].args.value, 1n);
assert.equal(queried[0].args.by, signer.address);

// Reverts: a call, a gas estimate and a mined failure.
const reason = "probe says no";
const expectRevert = async (what, promise) => {
  try {
    await promise;
  } catch (e) {
    assert.ok(isError(e, "CALL_EXCEPTION"), `${what}: CALL_EXCEPTION, got ${e.code}: ${e.message}`);
    return e;
  }
  assert.fail(`${what} did not revert`);
};
for (const [what, call] of [
  ["fail.staticCall", () => probe.fail.staticCall()],
  ["fail.estimateGas", () => probe.fail.estimateGas()],
]) {
  const e = await expectRevert(what, call());
  assert.equal(e.reason, reason, `${what}: the revert reason`);
  assert.equal(e.shortMessage, `execution reverted: "${reason}"`, `${what}: the message`);
}
try {
  await http.send("eth_call", [{ to: address, data: probe.interface.encodeFunctionData("fail") }, "latest"]);
  assert.fail("eth_call of fail() did not revert");
} catch (e) {
  const message = e.error?.message ?? e.info?.error?.message;
  assert.equal(message, `execution reverted: ${reason}`, `eth_call's error message: ${e.message}`);
}
const failed = await probe.fail.send({ gasLimit: 100_000 });
const failedError = await expectRevert("a mined fail()", failed.wait());
assert.equal(failedError.receipt.status, 0, "the failed tx is mined with status 0");

// Events: the same N bumps watched three ways, each must see every event
// exactly once: the HTTP provider's poller (ethers' default: eth_newFilter,
// then eth_getFilterChanges on each new block) and eth_subscribe over
// WebSocket (two listeners on one socket, one filtering on a topic).
// (ethers' other HTTP poller, `polling: true`, is left out: it runs one
// eth_getLogs per new block concurrently from the same start, so it
// delivers duplicates by itself when several blocks arrive in one poll, as
// anvil's automine makes them.)
const N = 12;
const seen = { http: [], ws: [], wsTopic: [] };
const record = (name) => (...args) => {
  const { log: event, args: [value, by] } = args[args.length - 1];
  seen[name].push({ value, by, removed: event.removed, hash: event.transactionHash, index: event.index });
};
const watchers = [probe.connect(http), new Contract(address, abi, ws), new Contract(address, abi, ws)];
await watchers[0].on("Bumped", record("http"));
await watchers[1].on("Bumped", record("ws"));
await watchers[2].on(watchers[2].filters.Bumped(null, signer.address), record("wsTopic"));
// Let the subscriptions settle (filter installed, first block polled,
// eth_subscribe answered) before the first bump.
await sleep(1500);
const start = await probe.counter();
const sent = [];
for (let i = 0; i < N; i++) sent.push(await probe.bump());
const receipts = await Promise.all(sent.map((t) => t.wait()));
assert.ok(receipts.every((r) => r.status === 1));
assert.equal(await probe.counter(), start + BigInt(N));
const expected = Array.from({ length: N }, (_, i) => start + 1n + BigInt(i));
const lastBlock = Math.max(...receipts.map((r) => r.blockNumber));
const summary = () => Object.entries(seen).map(([name, events]) => `${name}: ${events.map((e) => e.value).join(",")}`).join("; ");
await within(30_000, "every event on every watcher", (async () => {
  while (Object.values(seen).some((events) => events.length < N)) await sleep(50);
})()).catch((e) => { throw new Error(`${e.message} (expected ${expected.join(",")}; ${summary()})`); });
// Keep listening past the seal of the last bump's block: a duplicate would
// come then.
await within(30_000, "the seal of the bumps' block", (async () => {
  while ((await http.getBlockNumber()) < lastBlock) await sleep(100);
})());
await sleep(2000);
for (const [name, events] of Object.entries(seen)) {
  const values = events.map((e) => e.value);
  assert.deepEqual([...values].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), expected,
    `${name}: each of the ${N} events exactly once, got ${values.join(",")}`);
  const ids = new Set(events.map((e) => `${e.hash}:${e.index}`));
  assert.equal(ids.size, N, `${name}: distinct logs`);
  const hashes = new Set(receipts.map((r) => r.hash));
  assert.ok(events.every((e) => hashes.has(e.hash)), `${name}: events of the sent txs`);
  assert.ok(events.every((e) => e.by === signer.address && e.removed === false), `${name}: sender, not removed`);
}
for (const w of watchers) await w.removeAllListeners();

// A send and a read over the socket itself.
const wsTx = await new Contract(address, abi, wsWallet).bump();
const wsReceipt = await wsTx.wait();
assert.equal(wsReceipt.status, 1);
assert.equal(await new Contract(address, abi, ws).counter(), start + BigInt(N) + 1n);
const wsLogs = await ws.getLogs({ address, fromBlock: wsReceipt.blockNumber });
assert.ok(wsLogs.some((l) => l.transactionHash === wsTx.hash), "getLogs over WebSocket");

// Once sealed, the receipt names a real block hash ethers can look up.
await within(30_000, "the seal of the first bump", (async () => {
  for (;;) {
    const r = await http.getTransactionReceipt(tx.hash);
    if (r.blockHash !== ZeroHash) return;
    await sleep(100);
  }
})());
const sealed = await (await http.getTransactionReceipt(tx.hash)).getBlock();
assert.equal(sealed.number, receipt.blockNumber);
assert.ok(sealed.transactions.includes(tx.hash));
assert.ok((await http.getFeeData()).maxFeePerGas > 0n);

assert.deepEqual(swallowed, [], "ethers' pollers logged errors");
http.destroy();
await ws.destroy();
log("ethers-check: ok");
process.exit(0);
