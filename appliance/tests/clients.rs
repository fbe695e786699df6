//! Real clients against the real binary, each run against anvil too (the
//! reference node, so that a failure on fulmen alone points at the node, not
//! at the script): ethers v6 (HTTP and WebSocket providers), web3.py (filters,
//! unlocked sends) and forge (`forge create`, `forge script` with a CREATE2
//! deployment). The scripts are in tools/; scripts/test.sh installs the pinned
//! clients (tools/package.json, tools/requirements.txt).

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Longest one check may run (they take seconds; this only stops a hang).
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// `path` under the repository root, which must exist: scripts/test.sh
/// installs it.
fn installed(path: &str, what: &str) -> PathBuf {
    let full = repo_root().join(path);
    assert!(
        full.exists(),
        "{what} is missing ({}): run scripts/test.sh, which installs the pinned clients \
         (npm install in tools/, and tools/.venv from tools/requirements.txt)",
        full.display()
    );
    full
}

/// Runs `command` (in its own process group, killed whole on a hang) and
/// asserts that it succeeds and prints `ok`; `what` names the check and
/// the node in the failure message.
fn run_check(what: &str, mut command: Command, ok: &str) {
    let child = command
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"));
    let group = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output: Output = match rx.recv_timeout(CHECK_TIMEOUT) {
        Ok(output) => output.expect("wait for the check"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
            panic!("{what}: no answer within {CHECK_TIMEOUT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(ok),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ethers_check(node: &str, proc: &Proc) {
    installed("tools/node_modules/ethers", "ethers");
    let mut command = Command::new("node");
    command
        .arg(repo_root().join("tools/ethers-check.mjs"))
        .arg(proc.url())
        .arg(format!("ws://{}", proc.addr));
    run_check(
        &format!("ethers check on {node}"),
        command,
        "ethers-check: ok",
    );
}

fn web3py_check(node: &str, proc: &Proc) {
    let python = installed("tools/.venv/bin/python", "web3.py (tools/.venv)");
    let mut command = Command::new(python);
    command
        .arg(repo_root().join("tools/web3py-check.py"))
        .arg(proc.url());
    run_check(
        &format!("web3.py check on {node}"),
        command,
        "web3py-check: ok",
    );
}

fn forge_check(node: &str, proc: &Proc) {
    installed("tools/node_modules/@foundry-rs/forge", "forge");
    installed("tools/node_modules/solc", "solc (solcjs, forge's compiler)");
    let mut command = Command::new(repo_root().join("tools/forge-check.sh"));
    command.arg(proc.url());
    run_check(
        &format!("forge check on {node}"),
        command,
        "forge-check: ok",
    );
}

/// anvil with the dev chain's id (the scripts check it).
fn anvil() -> Proc {
    start_anvil(&["--chain-id", &DEV_CHAIN_ID.to_string()])
}

#[test]
fn ethers_deploys_waits_and_watches_events_over_http_and_websocket() {
    ethers_check("anvil", &anvil());
    ethers_check("fulmen", &start_fulmen(&["--dev"]));
}

#[test]
fn web3py_filters_and_unlocked_sends() {
    web3py_check("anvil", &anvil());
    web3py_check("fulmen", &start_fulmen(&["--dev"]));
}

#[test]
fn forge_creates_and_scripts_a_create2_deployment() {
    forge_check("anvil", &anvil());
    forge_check("fulmen", &start_fulmen(&["--dev"]));
}
