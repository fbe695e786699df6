//! Criterion micro-benchmarks of the per-transaction pieces.
//!
//! ```text
//! cargo bench -p fulmen-benches --bench micro                  # all
//! cargo bench -p fulmen-benches --bench micro -- state_root    # one group
//! FULMEN_BENCH_10M=1 cargo bench ... -- state_root             # adds the 10M-account state
//! ```

use std::hint::black_box;

use alloy_consensus::TxEip1559;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy_sol_types::{SolCall, sol};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fulmen_benches::sign::Key;
use fulmen_chain::block::BlockContext;
use fulmen_chain::spec::SPEC;
use fulmen_chain::tx::{TxRules, decode_and_check};
use fulmen_exec::evm::{StateDb, block_env, build_evm, cfg_env, state_diff, tx_env};
use fulmen_exec::merkle::StateTrie;
use fulmen_storage::{AccountState, HotState, StateDiff};
use revm::{
    Context, ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext,
    bytecode::Bytecode,
    context::TxEnv,
    database::{CacheDB, EmptyDB},
    state::AccountInfo,
};

// As in the node (`appliance/src/main.rs`): allocation-heavy figures
// (the state trie's) depend on it.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

sol! {
    function transfer(address to, uint256 value) external returns (bool);
}

const CHAIN_ID: u64 = 4242;
/// The chain the EVM benchmarks run on (Prague rules, as on mainnet before
/// Osaka; the opcodes measured cost the same under both).
const CHAIN: fulmen_chain::spec::EvmChain = fulmen_chain::spec::EvmChain {
    chain_id: CHAIN_ID,
    osaka_time: None,
};
const RULES: TxRules = TxRules {
    chain_id: CHAIN_ID,
    block_gas_limit: 1_000_000_000,
    tx_gas_limit_max: 1 << 24,
    spec: SPEC,
    allow_unprotected: false,
};

fn signed_transfer(key: &Key, nonce: u64, to: TxKind, input: Vec<u8>, gas: u64) -> Vec<u8> {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1,
        to,
        // Value only for plain transfers: the token is not payable.
        value: if input.is_empty() {
            U256::from(1)
        } else {
            U256::ZERO
        },
        input: input.into(),
        access_list: Default::default(),
    };
    key.sign_1559(tx).0
}

fn block() -> BlockContext {
    BlockContext {
        number: 1,
        timestamp: 1,
        base_fee: 1_000_000_000,
        gas_limit: 1_000_000_000,
        coinbase: Address::repeat_byte(0xc0),
        prevrandao: B256::ZERO,
    }
}

fn token_code() -> Bytes {
    let artifacts: serde_json::Value =
        serde_json::from_str(include_str!("../../contracts/artifacts.json")).expect("artifacts");
    artifacts["Token"]["bytecode"]
        .as_str()
        .expect("bytecode")
        .parse()
        .expect("hex")
}

/// Runs the Token constructor to get the runtime code (the artifact is initcode).
fn token_runtime() -> Bytes {
    let mut evm = Context::mainnet()
        .with_db(CacheDB::new(EmptyDB::default()))
        .build_mainnet();
    let mut init = token_code().to_vec();
    init.extend_from_slice(&U256::from(1u64).to_be_bytes::<32>());
    let tx = TxEnv {
        kind: TxKind::Create,
        data: init.into(),
        gas_limit: 5_000_000,
        ..Default::default()
    };
    let result = evm.transact(tx).expect("deploy");
    let address = result.result.created_address().expect("created");
    let code = result.state[&address].info.code.clone().expect("code");
    code.original_bytes()
}

/// balanceOf[who] in the Token's layout (mapping at slot 1).
fn balance_slot(who: Address) -> U256 {
    let mut preimage = [0u8; 64];
    preimage[12..32].copy_from_slice(who.as_slice());
    preimage[63] = 1;
    U256::from_be_bytes(keccak256(preimage).0)
}

fn decode_and_recover(c: &mut Criterion) {
    let key = Key::derived(7, 0);
    let raw = signed_transfer(
        &key,
        0,
        TxKind::Call(Address::repeat_byte(1)),
        Vec::new(),
        21_000,
    );
    c.bench_function("tx/decode_and_recover_libsecp256k1", |b| {
        b.iter(|| decode_and_check(black_box(&raw), &RULES).expect("valid"))
    });
}

/// The same transaction executed by revm over fulmen's state layer (transact,
/// diff, apply to the persistent maps) and over revm's own CacheDB
/// (transact_commit). The difference is the state layer's overhead.
fn execution(c: &mut Criterion) {
    let sender = Key::derived(7, 1);
    let to = Address::repeat_byte(0x42);
    let setup = ExecSetup {
        sender: sender.address,
        token: Address::repeat_byte(0x70),
        runtime: Bytecode::new_raw(token_runtime()),
        funded: U256::from(10u64).pow(U256::from(30)),
    };
    let mut cases = Vec::new();
    let transfer_input = transferCall {
        to,
        value: U256::from(1),
    }
    .abi_encode();
    cases.push(("transfer", TxKind::Call(to), Vec::new(), 21_000u64));
    cases.push((
        "erc20_transfer",
        TxKind::Call(setup.token),
        transfer_input,
        80_000u64,
    ));

    for (name, kind, input, gas) in cases {
        let raw = signed_transfer(&sender, 0, kind, input, gas);
        let tx = decode_and_check(&raw, &RULES).expect("valid");
        let env = tx_env(&tx);

        let mut evm = build_evm(
            StateDb::new(setup.hot_state(), Default::default()),
            CHAIN,
            &block(),
        );
        evm.ctx.cfg.disable_nonce_check = true;
        c.bench_function(&format!("exec/{name}/fulmen_state"), |b| {
            b.iter(|| {
                let result = evm.transact(env.clone()).expect("executes");
                assert!(result.result.is_success());
                let diff: StateDiff =
                    state_diff(result.state, &evm.ctx.journaled_state.database.state);
                evm.ctx.journaled_state.database.state.apply(&diff);
            })
        });

        let mut cfg = cfg_env(CHAIN, 0);
        cfg.disable_nonce_check = true;
        let mut evm = Context::mainnet()
            .with_db(setup.cache_db())
            .with_cfg(cfg)
            .with_block(block_env(&block()))
            .build_mainnet();
        c.bench_function(&format!("exec/{name}/revm_cachedb"), |b| {
            b.iter(|| {
                let result = evm.transact_commit(env.clone()).expect("executes");
                assert!(result.is_success());
            })
        });
    }
}

/// The state both execution benchmarks start from: a funded sender holding
/// tokens of the Token contract at `token`.
struct ExecSetup {
    sender: Address,
    token: Address,
    runtime: Bytecode,
    funded: U256,
}

impl ExecSetup {
    /// fulmen's state, with 10,000 other accounts.
    fn hot_state(&self) -> HotState {
        let mut state = HotState::new();
        state.set_account(self.sender, AccountState::funded(self.funded));
        let code_hash = state.insert_code(self.runtime.clone());
        state.set_account(
            self.token,
            AccountState {
                nonce: 1,
                balance: U256::ZERO,
                code_hash,
            },
        );
        state.set_storage(self.token, balance_slot(self.sender), self.funded);
        for i in 0..10_000u64 {
            let mut bytes = [0u8; 20];
            bytes[..8].copy_from_slice(&i.to_be_bytes());
            state.set_account(Address::from(bytes), AccountState::funded(U256::from(i)));
        }
        state
    }

    /// revm's CacheDB.
    fn cache_db(&self) -> CacheDB<EmptyDB> {
        let mut db = CacheDB::new(EmptyDB::default());
        db.insert_account_info(
            self.sender,
            AccountInfo {
                balance: self.funded,
                ..Default::default()
            },
        );
        db.insert_account_info(
            self.token,
            AccountInfo::new(
                U256::ZERO,
                1,
                self.runtime.hash_slow(),
                self.runtime.clone(),
            ),
        );
        db.insert_account_storage(self.token, balance_slot(self.sender), self.funded)
            .expect("in-memory");
        db
    }
}

fn account(i: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[12..].copy_from_slice(&i.to_be_bytes());
    Address::from(bytes)
}

/// Incremental state root: `changed` accounts (balance updates) over a state
/// of `size` accounts, on one thread and on two.
fn state_root(c: &mut Criterion) {
    let mut sizes = vec![1_000_000u64];
    if std::env::var("FULMEN_BENCH_10M").is_ok() {
        sizes.push(10_000_000);
    }
    let mut group = c.benchmark_group("state_root");
    group.sample_size(10);
    for size in sizes {
        let mut state = HotState::new();
        for i in 0..size {
            state.set_account(account(i), AccountState::funded(U256::from(i + 1)));
        }
        let mut trie = StateTrie::from_state(&state);
        drop(state);
        trie.root();
        let mut round = 0u64;
        // One thread (the state-root worker alone, in budgeted steps in the
        // node), and the top-level subtries split over two (`cores.exec`
        // with two CPUs of their own).
        let cases = [
            (1_000u64, 1),
            (10_000, 1),
            (10_000, 2),
            (100_000, 1),
            (100_000, 2),
        ];
        for (changed, threads) in cases {
            let name = match threads {
                1 => format!("{changed}_changed_of_{size}"),
                n => format!("{changed}_changed_of_{size}_on_{n}_threads"),
            };
            group.bench_function(name, |b| {
                b.iter_batched(
                    || {
                        round += 1;
                        // Spread the changed accounts over the whole state.
                        let stride = size / changed;
                        let accounts = (0..changed)
                            .map(|k| {
                                (
                                    account(k * stride + round % stride),
                                    Some(AccountState::funded(U256::from(round))),
                                )
                            })
                            .collect();
                        StateDiff {
                            accounts,
                            storage: Vec::new(),
                            codes: Vec::new(),
                        }
                    },
                    |diff| {
                        if threads == 1 {
                            trie.apply([&diff]);
                            black_box(trie.root())
                        } else {
                            // As the state-root worker does with several
                            // exec CPUs of their own.
                            trie.stage(&diff);
                            trie.commit_staged_parallel(threads, &|_| {});
                            black_box(trie.root_parallel(threads, &|_| {}))
                        }
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

fn json_rpc(c: &mut Criterion) {
    let key = Key::derived(7, 2);
    let raw = signed_transfer(
        &key,
        0,
        TxKind::Call(Address::repeat_byte(1)),
        Vec::new(),
        21_000,
    );
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0x{}"]}}"#,
        fulmen_benches::workload::hex(&raw)
    );
    c.bench_function("rpc/parse_request_and_encode_hash_response", |b| {
        b.iter(|| {
            let parsed =
                fulmen_netio::rpc::parse_body(black_box(body.as_bytes()), 100).expect("valid");
            let fulmen_netio::rpc::Body::Single(Ok(call)) = parsed else {
                panic!("single call")
            };
            let raw: Bytes = call.params.required(0, "data").expect("hex");
            let response =
                fulmen_netio::rpc::response(call.id, Ok(serde_json::json!(keccak256(&raw))));
            black_box(serde_json::to_vec(&response).expect("encodes"))
        })
    });
}

/// A contract that copies its 160 bytes of calldata to memory and calls
/// P256VERIFY with them until its gas runs out: CALLDATACOPY(0, 0, 160);
/// loop: STATICCALL(GAS, 0x100, 0, 160, 160, 32); POP; JUMP loop.
const P256_LOOP_CODE: [u8; 25] =
    alloy_primitives::hex!("60a060006000375b602060a060a060006101005afa50600756");
const P256_LOOP: Address = Address::repeat_byte(0x77);
/// The chain with Osaka rules (P256VERIFY).
const OSAKA_CHAIN: fulmen_chain::spec::EvmChain = fulmen_chain::spec::EvmChain {
    chain_id: CHAIN_ID,
    osaka_time: Some(0),
};

/// The longest one transaction at the per-transaction gas cap (2^24) can
/// hold the seq core: the precompiles with the most time per gas, called
/// directly by a transaction that spends the whole cap on them.
fn worst_case_tx(c: &mut Criterion) {
    let sender = Key::derived(7, 2);
    let cap = 1u64 << 24;
    // blake2f (0x09): 1 gas per round. Rounds = what the cap leaves after
    // the intrinsic cost of 213 bytes of calldata (mostly non-zero: 16 each).
    let mut blake = vec![0u8; 213];
    blake[4..]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i as u8) | 1);
    blake[212] = 1;
    let rounds = (cap - 21_000 - 213 * 16) as u32;
    blake[..4].copy_from_slice(&rounds.to_be_bytes());
    // modexp (0x05): a 32-byte base and modulus with a 32-byte exponent of
    // all ones, repeated: 200 gas minimum per call is the cheapest per op.
    let mut modexp = Vec::new();
    for len in [32u8, 32, 32] {
        let mut word = [0u8; 32];
        word[31] = len;
        modexp.extend_from_slice(&word);
    }
    modexp.extend_from_slice(&[0xff; 96]);
    // P256VERIFY (0x100, Osaka): 6,900 gas per call, so a contract that
    // calls it in a loop until its gas runs out makes ~2,400 verifications
    // of one valid signature (made by OpenSSL, tools/p256-vectors.mjs).
    let p256_vector = alloy_primitives::hex!(
        "29b2b0b89747e0ad2c2dd119a260a8d15247324cfbe060f85404daa569cd8a2f"
        "ac6cbeb5e4c12426ebfe844a71e425476acea107cfca578e082a8861c08738e2"
        "a289d9ae829ab97f4228bfe3f412c8d120e867db89c7e793238221740a734b6b"
        "cafe074ee73639003ed676d8832a1a5d885072f55734d330b720f615cd41f812"
        "ceecb832eb390c84f204a82b30354d52e65e6ac52ad93a0dd999627511f40a0d"
    )
    .to_vec();
    let cases = [
        ("blake2f_rounds", Address::with_last_byte(9), blake),
        ("modexp_one_call", Address::with_last_byte(5), modexp),
        ("p256verify_loop", P256_LOOP, p256_vector),
    ];
    let mut group = c.benchmark_group("worst_case_tx_at_2^24_gas");
    group.sample_size(10);
    for (name, to, input) in cases {
        let raw = signed_transfer(&sender, 0, TxKind::Call(to), input, cap);
        let tx = decode_and_check(&raw, &RULES).expect("valid");
        let env = tx_env(&tx);
        let mut state = HotState::new();
        state.set_account(
            sender.address,
            AccountState::funded(U256::from(10u64).pow(U256::from(30))),
        );
        let code_hash = state.insert_code(Bytecode::new_raw(P256_LOOP_CODE.into()));
        state.set_account(
            P256_LOOP,
            AccountState {
                nonce: 1,
                balance: U256::ZERO,
                code_hash,
            },
        );
        let chain = if to == P256_LOOP { OSAKA_CHAIN } else { CHAIN };
        let mut evm = build_evm(StateDb::new(state, Default::default()), chain, &block());
        evm.ctx.cfg.disable_nonce_check = true;
        group.bench_function(name, |b| {
            b.iter(|| {
                let result = evm.transact(env.clone()).expect("executes");
                black_box(result.result.tx_gas_used())
            })
        });
    }
    group.finish();
}

/// The hot state tables at 1M accounts and 1M slots, as the seq core uses
/// them: a snapshot published before every write (so each write copies the
/// nodes on its path, as after a mini-block's publish; the last 16
/// snapshots stay alive, as readers' views do), then a transfer's three
/// account writes and an ERC-20's two slot writes; and point reads.
fn hot_state(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    fn addr(i: u64) -> Address {
        Address::from_word(keccak256(i.to_be_bytes()))
    }
    let token = addr(u64::MAX);
    let mut state = HotState::new();
    for i in 0..N {
        state.set_account(addr(i), AccountState::funded(U256::from(i + 1)));
        state.set_storage(token, U256::from(i), U256::from(i + 1));
    }
    let mut group = c.benchmark_group("hot_state_1M_accounts_1M_slots");
    let mut i = 0u64;
    let mut snapshots = std::collections::VecDeque::new();
    group.bench_function("snapshot_then_transfer_and_erc20_writes", |b| {
        b.iter(|| {
            snapshots.push_back(state.clone());
            if snapshots.len() > 16 {
                snapshots.pop_front();
            }
            i = i.wrapping_add(0x9e37_79b9);
            let (from, to, fee) = (addr(i % N), addr((i / 7) % N), addr(0));
            let account = |n: u64| Some(AccountState::funded(U256::from(n)));
            state.apply(&StateDiff {
                accounts: vec![
                    (from, account(i)),
                    (to, account(i + 1)),
                    (fee, account(i + 2)),
                ],
                storage: vec![
                    (token, U256::from(i % N), U256::from(i)),
                    (token, U256::from((i / 7) % N), U256::from(i + 1)),
                ],
                codes: vec![],
            });
        })
    });
    drop(snapshots);
    group.bench_function("read_account_and_slot", |b| {
        b.iter(|| {
            i = i.wrapping_add(0x9e37_79b9);
            black_box(state.account(&addr(i % N)));
            black_box(state.storage(&token, &U256::from(i % N)));
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    hot_state,
    decode_and_recover,
    execution,
    state_root,
    json_rpc,
    worst_case_tx
);
criterion_main!(benches);
