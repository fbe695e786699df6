// Compiles contracts/TestContracts.sol with the pinned solcjs and writes
// contracts/artifacts.json ({Name: {abi, bytecode}}). Run after editing the
// Solidity: `node tools/compile-contracts.mjs`. The artifacts are committed so
// that tests need no compiler.
import fs from "node:fs";
import path from "node:path";
import solc from "solc";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
const source = fs.readFileSync(path.join(root, "contracts/TestContracts.sol"), "utf8");
const input = {
  language: "Solidity",
  sources: { "TestContracts.sol": { content: source } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join("\n"));
  process.exit(1);
}
const artifacts = {};
for (const [name, c] of Object.entries(output.contracts["TestContracts.sol"])) {
  artifacts[name] = { abi: c.abi, bytecode: "0x" + c.evm.bytecode.object };
}
fs.writeFileSync(path.join(root, "contracts/artifacts.json"), JSON.stringify(artifacts, null, 1) + "\n");
console.log("wrote contracts/artifacts.json:", Object.keys(artifacts).join(", "));
