//! `eth_getProof`: the state-root worker builds the Merkle proof (it owns
//! the trie); the account fields come from the chain view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256, U256};
use alloy_rpc_types_eth::{EIP1186AccountProofResponse, EIP1186StorageProof};
use fulmen_chain::msg::{AccountProof, MerkleRequest};
use fulmen_chain::view::ChainView;
use futures::channel::oneshot;
use serde_json::Value;

use super::context::RpcContext;
use super::reply::{header_not_found, ok};
use super::state::block_by_id;
use crate::rpc::{Params, RpcError};

/// Most storage keys one `eth_getProof` may ask for.
pub(crate) const PROOF_KEYS_MAX: usize = 1024;

/// Times a proof at the head is asked again because a seal moved the
/// state trie on between reading the head and the worker's answer.
const HEAD_ATTEMPTS: u32 = 8;

/// How long to wait for the view to publish the block the state trie has
/// sealed: the seq core publishes it once the roots are back, within a
/// mini-block.
const PUBLISH_WAIT: Duration = Duration::from_millis(500);

/// `eth_getProof` at a sealed block (the latest one when none is named).
/// A proof at the head follows the head: a seal that lands while it is
/// asked for is waited out and the proof taken at the new head, so
/// `latest` never fails for being a moment old.
pub(crate) async fn get_proof(
    ctx: &RpcContext,
    view: &ChainView,
    params: &Params,
) -> Result<Value, RpcError> {
    let (address, slots, asked) = parse(view, params)?;
    let mut newer: Option<Arc<ChainView>> = None;
    let mut attempts = 0;
    loop {
        let view = newer.as_deref().unwrap_or(view);
        let number = asked.unwrap_or_else(|| view.head().header.number);
        match ask(ctx, number, address, slots.clone()).await? {
            Ok(proof) => return response(view, number, address, proof),
            Err(at) if asked.is_none() && at > number && attempts < HEAD_ATTEMPTS => {
                attempts += 1;
                newer = Some(published(ctx, at).await);
            }
            Err(at) => {
                return Err(RpcError::server(format!(
                    "proofs are served for the latest sealed block only (the state trie is at block {at}, asked for {number})"
                )));
            }
        }
    }
}

/// The worker's proof at `number`, or the block its trie is at.
async fn ask(
    ctx: &RpcContext,
    number: u64,
    address: Address,
    slots: Vec<B256>,
) -> Result<Result<AccountProof, u64>, RpcError> {
    let (reply, answer) = oneshot::channel();
    let request = MerkleRequest::Proof {
        block: number,
        address,
        slots,
        reply,
    };
    if ctx.merkle.try_send(request).is_err() {
        return Err(RpcError::server("proof queue is full, retry shortly"));
    }
    answer
        .await
        .map_err(|_| RpcError::internal("the state-root worker stopped"))
}

/// The published view once its head reaches `number` (or the newest one
/// after [`PUBLISH_WAIT`], if a halt stops publishing).
async fn published(ctx: &RpcContext, number: u64) -> Arc<ChainView> {
    let deadline = Instant::now() + PUBLISH_WAIT;
    loop {
        let view = ctx.view.load_full();
        if view.head().header.number >= number || Instant::now() >= deadline {
            return view;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// The account, its storage keys and the number of the block asked for
/// (`None`: the head, `latest` or `pending`).
fn parse(view: &ChainView, params: &Params) -> Result<(Address, Vec<B256>, Option<u64>), RpcError> {
    params.at_most(3)?;
    let address: Address = params.required(0, "address")?;
    let slots: Vec<B256> = params.required(1, "storageKeys")?;
    if slots.len() > PROOF_KEYS_MAX {
        return Err(RpcError::invalid_params(format!(
            "invalid argument 1 (storageKeys): more than {PROOF_KEYS_MAX} keys"
        )));
    }
    let id: Option<BlockId> = params.optional(2, "block")?;
    let number = match id {
        None | Some(BlockId::Number(BlockNumberOrTag::Latest | BlockNumberOrTag::Pending)) => None,
        Some(id) => Some(
            block_by_id(view, id)?
                .ok_or_else(header_not_found)?
                .header
                .number,
        ),
    };
    Ok((address, slots, number))
}

/// The EIP-1186 answer: the worker's proof with the account at `number`.
fn response(
    view: &ChainView,
    number: u64,
    address: Address,
    proof: AccountProof,
) -> Result<Value, RpcError> {
    let state = view.state_at(number).ok_or_else(header_not_found)?;
    let account = state.account(&address).copied();
    ok(EIP1186AccountProofResponse {
        address,
        balance: account.map_or(U256::ZERO, |a| a.balance),
        code_hash: account.map_or(revm::primitives::KECCAK_EMPTY, |a| a.code_hash),
        nonce: account.map_or(0, |a| a.nonce),
        storage_hash: proof.storage_root,
        account_proof: proof.account_proof,
        storage_proof: proof
            .storage_proofs
            .into_iter()
            .map(|(key, value, proof)| EIP1186StorageProof {
                key: key.into(),
                value,
                proof,
            })
            .collect(),
    })
}

/// `debug_executionWitness(block)`: what a stateless verifier or a prover
/// needs to re-execute a sealed block, in reth's shape: the trie nodes of
/// the state before it on the path of every account and slot the block
/// read or wrote, the codes it ran, the keys' preimages, and the RLP
/// headers from the oldest block BLOCKHASH read (or the parent) to the
/// parent. Kept by the state-root worker for the last `rpc.witness_blocks`
/// blocks it sealed.
pub(crate) async fn execution_witness(
    ctx: &RpcContext,
    view: &ChainView,
    params: &Params,
) -> Result<Value, RpcError> {
    params.at_most(1)?;
    let tag: alloy_eips::BlockNumberOrTag = params.required(0, "block")?;
    let block = super::state::block_by_tag(view, tag)?.ok_or_else(header_not_found)?;
    let number = block.header.number;
    let not_kept = || {
        RpcError::server(format!(
            "the execution witness of block {number} is not kept: this node keeps those of the \
             last {} blocks it sealed since it started (rpc.witness_blocks)",
            ctx.limits.witness_blocks
        ))
    };
    if ctx.limits.witness_blocks == 0 || number == 0 {
        return Err(not_kept());
    }
    let (reply, answer) = oneshot::channel();
    let request = MerkleRequest::Witness {
        block: number,
        reply,
    };
    if ctx.merkle.try_send(request).is_err() {
        return Err(RpcError::server("proof queue is full, retry shortly"));
    }
    let witness = match answer.await {
        Ok(Some(witness)) => witness,
        Ok(None) => return Err(not_kept()),
        Err(_) => return Err(RpcError::internal("the state-root worker stopped")),
    };
    let first = witness
        .oldest_hash_read
        .unwrap_or(number - 1)
        .min(number - 1);
    let mut headers = Vec::with_capacity((number - first) as usize);
    for n in first..number {
        let (header, _) = view.header(n).ok_or_else(|| {
            RpcError::server(format!("header {n}, which the witness needs, is not kept"))
        })?;
        headers.push(alloy_primitives::Bytes::from(alloy_rlp::encode(&header)));
    }
    ok(serde_json::json!({
        "state": witness.state,
        "codes": witness.codes,
        "keys": witness.keys,
        "headers": headers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::testkit::{self, params};
    use serde_json::json;

    #[test]
    fn the_block_defaults_to_following_the_head_and_key_lists_are_bounded() {
        let view = testkit::chain(3);
        let who = json!(testkit::ALICE);
        let (address, slots, number) = parse(&view, &params(json!([who, []]))).unwrap();
        assert_eq!(address, testkit::ALICE);
        assert!(slots.is_empty());
        assert_eq!(
            number, None,
            "the head, whichever it is when the worker answers"
        );
        let (_, _, number) = parse(&view, &params(json!([who, [], "pending"]))).unwrap();
        assert_eq!(number, None);
        let (_, _, number) = parse(&view, &params(json!([who, [], "0x3"]))).unwrap();
        assert_eq!(number, Some(3), "a number is that block, even the head's");
        let (_, _, number) = parse(&view, &params(json!([who, [], "0x1"]))).unwrap();
        assert_eq!(number, Some(1));
        let error = parse(&view, &params(json!([who, [], "0x9"]))).unwrap_err();
        assert_eq!(error.message, "header not found");
        let keys = vec![B256::ZERO; PROOF_KEYS_MAX + 1];
        let error = parse(&view, &params(json!([who, keys]))).unwrap_err();
        assert_eq!(error.code, -32602);
        assert_eq!(
            error.message,
            "invalid argument 1 (storageKeys): more than 1024 keys"
        );
        let error = parse(&view, &params(json!([who, [], "latest", 1]))).unwrap_err();
        assert_eq!(error.code, -32602);
    }

    #[test]
    fn the_answer_carries_the_account_at_that_block() {
        let view = testkit::chain(2);
        let proof = AccountProof {
            account_proof: vec![vec![1u8].into()],
            storage_root: B256::repeat_byte(2),
            storage_proofs: vec![(B256::ZERO, U256::from(3), Vec::new())],
        };
        let answer = response(&view, 1, testkit::ALICE, proof.clone()).unwrap();
        assert_eq!(answer["balance"], json!("0x1"));
        assert_eq!(answer["storageHash"], json!(B256::repeat_byte(2)));
        assert_eq!(answer["storageProof"][0]["value"], json!("0x3"));
        let nobody = response(&view, 1, testkit::BOB, proof.clone()).unwrap();
        assert_eq!(nobody["balance"], json!("0x0"));
        assert_eq!(nobody["codeHash"], json!(revm::primitives::KECCAK_EMPTY));
        assert!(response(&view, 9, testkit::ALICE, proof).is_err());
    }
}
