"""Drives a node with web3.py over HTTP the way a Python dApp or bot would:
filters (block, pending, contract events) polled with eth_getFilterChanges,
eth_getFilterLogs, eth_uninstallFilter, and eth_sendTransaction from an
unlocked dev account. Exits non-zero on any mismatch. Run by
appliance/tests/clients.rs against fulmen and anvil (in tools/.venv, which
scripts/test.sh makes from tools/requirements.txt):
    tools/.venv/bin/python tools/web3py-check.py http://127.0.0.1:PORT
"""

import json
import pathlib
import sys
import time

from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

URL = sys.argv[1] if len(sys.argv) > 1 else sys.exit("usage: web3py-check.py RPC_URL")
ARTIFACTS = pathlib.Path(__file__).resolve().parent.parent / "contracts/artifacts.json"
# Account 4 of the test mnemonic: the other client checks use other accounts.
SENDER = Web3.to_checksum_address("0x15d34aaf54267db7d7c367839aaf71a00a2c6a65")
TO = Web3.to_checksum_address("0x000000000000000000000000000000000000bEEF")
N = 8


def until(what, check, seconds=30):
    """Polls `check` until it returns something truthy; fails naming `what`."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            sys.exit(f"web3py-check: timed out waiting for {what}")
        time.sleep(0.1)


w3 = Web3(Web3.HTTPProvider(URL, request_kwargs={"timeout": 30}))
assert w3.is_connected(), f"no node at {URL}"
assert w3.eth.chain_id == 4242, w3.eth.chain_id
assert SENDER in w3.eth.accounts, f"{SENDER} is not unlocked: {w3.eth.accounts}"

block_filter = w3.eth.filter("latest")
pending_filter = w3.eth.filter("pending")

# A plain transfer from the unlocked account (eth_sendTransaction): web3.py
# fills gas and fees, the node signs.
before = w3.eth.get_balance(TO)
tx_hash = w3.eth.send_transaction({"from": SENDER, "to": TO, "value": 12345})
receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.1)
assert receipt.status == 1, receipt
assert w3.eth.get_balance(TO) == before + 12345
tx = w3.eth.get_transaction(tx_hash)
assert tx["from"] == SENDER and tx["value"] == 12345, tx
pending = until("the transfer in the pending filter", lambda: w3.eth.get_filter_changes(pending_filter.filter_id))
assert tx_hash in pending, f"{tx_hash.hex()} not in {[h.hex() for h in pending]}"

# Deploy Probe the same way.
artifact = json.loads(ARTIFACTS.read_text())["Probe"]
factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
deploy_hash = factory.constructor().transact({"from": SENDER})
deployed = w3.eth.wait_for_transaction_receipt(deploy_hash, timeout=30, poll_latency=0.1)
assert deployed.status == 1 and deployed.contractAddress, deployed
probe = w3.eth.contract(address=deployed.contractAddress, abi=artifact["abi"])
assert probe.functions.counter().call() == 0

# An event filter from the deployment's block, then N bumps.
events = probe.events.Bumped.create_filter(from_block=deployed.blockNumber)
hashes = [probe.functions.bump().transact({"from": SENDER}) for _ in range(N)]
receipts = [w3.eth.wait_for_transaction_receipt(h, timeout=30, poll_latency=0.1) for h in hashes]
assert all(r.status == 1 for r in receipts), receipts
assert probe.functions.counter().call() == N

# eth_getFilterChanges: every event once, in order, across as many polls as
# it takes; nothing more after the bumps' blocks are sealed.
changes = []
until(f"{N} Bumped events from get_filter_changes",
      lambda: changes.extend(w3.eth.get_filter_changes(events.filter_id)) or len(changes) >= N)
last_block = max(r.blockNumber for r in receipts)
until("the seal of the bumps' block", lambda: w3.eth.block_number >= last_block)
time.sleep(0.5)
changes.extend(w3.eth.get_filter_changes(events.filter_id))
values = [probe.events.Bumped().process_log(log).args.value for log in changes]
assert values == list(range(1, N + 1)), f"get_filter_changes: {values}"
assert [log.transactionHash for log in changes] == hashes, "the bumps' logs, in order"

# eth_getFilterLogs: the filter's whole range again, as eth_getLogs.
all_logs = w3.eth.get_filter_logs(events.filter_id)
assert [probe.events.Bumped().process_log(log).args.value for log in all_logs] == list(range(1, N + 1))
assert all_logs == w3.eth.get_logs({"address": probe.address, "fromBlock": deployed.blockNumber})
assert probe.events.Bumped.get_logs(from_block=receipts[0].blockNumber)[0].args.value == 1

# The block filter reported each sealed block holding our transactions.
sealed = {w3.eth.get_transaction_receipt(h).blockHash for h in [tx_hash, deploy_hash, *hashes]}
assert all(int.from_bytes(h) != 0 for h in sealed), "sealed receipts carry block hashes"
new_blocks = until("new blocks in the block filter",
                   lambda: w3.eth.get_filter_changes(block_filter.filter_id))
new_blocks = set(new_blocks)
until("every sealed block in the block filter",
      lambda: new_blocks.update(w3.eth.get_filter_changes(block_filter.filter_id)) or sealed <= new_blocks)
for h in sealed:
    assert w3.eth.get_block(h).hash == h

# A revert's reason.
try:
    probe.functions.fail().call()
    sys.exit("web3py-check: fail() did not revert")
except ContractLogicError as e:
    assert e.message == "execution reverted: probe says no", e.message

# Uninstalling: True, then the id is unknown.
for f in (events, block_filter, pending_filter):
    assert w3.eth.uninstall_filter(f.filter_id) is True
try:
    w3.eth.get_filter_changes(events.filter_id)
    sys.exit("web3py-check: an uninstalled filter still answers")
except Web3RPCError as e:
    assert "filter not found" in str(e), e
assert w3.eth.uninstall_filter(events.filter_id) is False

print("web3py-check: ok")
