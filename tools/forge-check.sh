#!/usr/bin/env bash
# Drives a node with forge the way a Solidity developer deploys: `forge create`
# (signed locally, and from an unlocked dev account) and `forge script
# --broadcast` with a salted `new Counter{salt: ...}()`, which goes through the
# CREATE2 deployer 0x4e59b44847b379578588920cA78FbF26c0B4956C (signed
# locally, and --unlocked). Checks the code and state with cast. Exits
# non-zero on any mismatch. Run by appliance/tests/clients.rs:
#   tools/forge-check.sh http://127.0.0.1:PORT
# forge compiles with tools/solc-wrapper (the pinned npm solcjs), offline; it
# works on a copy of tools/forge-project in a temp dir, so the repo stays clean.
set -euo pipefail
url="${1:?usage: tools/forge-check.sh RPC_URL}"
tools="$(cd "$(dirname "$0")" && pwd)"

bin() {
  local native="$tools/node_modules/@foundry-rs/$1-linux-amd64/bin/$1"
  if [ -x "$native" ]; then echo "$native"; else echo "$tools/node_modules/.bin/$1"; fi
}
forge="$(bin forge)"
cast="$(bin cast)"
for tool in "$forge" "$cast"; do
  [ -x "$tool" ] || { echo "forge-check: $tool is missing: run scripts/test.sh (npm install in tools/)" >&2; exit 1; }
done
solc="$tools/solc-wrapper"

work="$(mktemp -d "${TMPDIR:-/tmp}/forge-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -r "$tools/forge-project/." "$work/"
cd "$work"
export FOUNDRY_OFFLINE=true
# Test account 0, its key and address (the node has it unlocked).
key=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
sender=0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266
create2_deployer=0x4e59b44847b379578588920cA78FbF26c0B4956C

fail() { echo "forge-check: $*" >&2; exit 1; }
lower() { tr '[:upper:]' '[:lower:]'; }
# `"key": "value"` of a one-line JSON answer.
json_field() { sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" | head -n1; }

"$forge" build --use "$solc" >/dev/null || fail "forge build failed"
[ "$("$cast" chain-id --rpc-url "$url")" = 4242 ] || fail "chain id is not 4242"
[ "$("$cast" code "$create2_deployer" --rpc-url "$url")" != 0x ] || fail "no CREATE2 deployer at $create2_deployer"

# forge create: signed with the key, then from the unlocked account.
check_created() { # json-output from
  local address tx
  address="$(echo "$1" | json_field deployedTo)"
  tx="$(echo "$1" | json_field transactionHash)"
  [ -n "$address" ] && [ -n "$tx" ] || fail "forge create answered: $1"
  "$cast" receipt "$tx" --json --rpc-url "$url" | grep -q '"status":"0x1"' || fail "create $tx failed"
  [ "$("$cast" code "$address" --rpc-url "$url")" != 0x ] || fail "no code at $address"
  [ "$("$cast" call "$address" 'deployer()(address)' --rpc-url "$url" | lower)" = "$(echo "$2" | lower)" ] \
    || fail "Counter at $address was not deployed by $2"
  echo "forge create: $address"
}
out="$("$forge" create --use "$solc" --rpc-url "$url" --private-key "$key" --broadcast --json src/Counter.sol:Counter)" \
  || fail "forge create --private-key failed"
check_created "$out" "$sender"
out="$("$forge" create --use "$solc" --rpc-url "$url" --unlocked --from "$sender" --broadcast --json src/Counter.sol:Counter)" \
  || fail "forge create --unlocked failed"
check_created "$out" "$sender"

# forge script with a salted deployment: the code must land at the CREATE2
# address of (deployer, salt, keccak(init code)), deployed by the deployer.
init_code="$(sed -n 's/.*"bytecode":{"object":"\(0x[0-9a-f]*\)".*/\1/p' out/Counter.sol/Counter.json)"
[ -n "$init_code" ] || fail "no bytecode in out/Counter.sol/Counter.json"
init_code_hash="$("$cast" keccak "$init_code")"
run_script() { # number, then how the script signs
  local number="$1" salt expected
  shift
  salt="0x$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
  expected="$("$cast" compute-address "$create2_deployer" --salt "$salt" --init-code-hash "$init_code_hash" | sed -n 's/.*\(0x[0-9a-fA-F]\{40\}\).*/\1/p')"
  [ -n "$expected" ] || fail "cast compute-address gave no address"
  SALT="$salt" NUMBER="$number" "$forge" script --use "$solc" script/Deploy.s.sol:Deploy \
    --rpc-url "$url" --broadcast "$@" > script.log 2>&1 \
    || { cat script.log >&2; fail "forge script $* failed"; }
  grep -q "ONCHAIN EXECUTION COMPLETE & SUCCESSFUL" script.log || { cat script.log >&2; fail "forge script $*: no success line"; }
  local code
  code="$("$cast" code "$expected" --rpc-url "$url")"
  [ "$code" != 0x ] || fail "no code at the CREATE2 address $expected (salt $salt)"
  [ "$("$cast" call "$expected" 'number()(uint256)' --rpc-url "$url")" = "$number" ] || fail "number() at $expected"
  [ "$("$cast" call "$expected" 'deployer()(address)' --rpc-url "$url" | lower)" = "$(echo "$create2_deployer" | lower)" ] \
    || fail "$expected was not created through the CREATE2 deployer"
  # forge recorded two transactions, the first to the CREATE2 deployer, both
  # with a successful receipt.
  local broadcast=broadcast/Deploy.s.sol/4242/run-latest.json
  grep -qi "\"to\": *\"$create2_deployer\"" "$broadcast" || fail "the deployment did not go to the CREATE2 deployer"
  [ "$(grep -c '"status": *"0x1"' "$broadcast")" = 2 ] || fail "forge script receipts: $(grep '"status"' "$broadcast")"
  echo "forge script (${1#--}): $expected"
}
run_script 7 --private-key "$key"
run_script 11 --unlocked --sender "$sender"

echo "forge-check: ok"
