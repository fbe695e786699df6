//! viem (the JS client dApps use) against the real binary over HTTP.

mod common;

use std::process::Command;

use common::*;

#[test]
fn viem_sends_waits_reads_and_parses_preconfirmed_receipts() {
    let node = start_fulmen(&["--dev"]);
    let script = repo_root().join("tools/viem-check.mjs");
    assert!(
        repo_root().join("tools/node_modules/viem").exists(),
        "viem is missing: run scripts/test.sh (npm install in tools/)"
    );
    let output = Command::new("node")
        .arg(&script)
        .arg(node.url())
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "viem check failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("viem-check: ok"));
}
