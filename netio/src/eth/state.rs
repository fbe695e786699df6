//! State and block reads: balances, nonces, code and storage at a block,
//! blocks, transactions and receipts, and the block-tag resolution the other
//! method modules share.

use std::sync::Arc;

use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256, U64, U256};
use fulmen_chain::HotState;
use fulmen_chain::block::{
    BlockContext, ExecutedTx, RECENT_STATES_MAX, SealedBlock, UnsealedBlock,
};
use fulmen_chain::view::ChainView;
use serde_json::Value;

use super::reply::{check_not_pruned, header_not_found, ok};
use crate::convert;
use crate::rpc::{ByteBudget, Params, RpcError};

/// The account methods (`eth_getBalance`, `eth_getTransactionCount`,
/// `eth_getCode`, `eth_getStorageAt`) and the transaction methods (by
/// hash, receipt, by block and index); `None` for any other method.
pub(crate) fn account_or_tx_method(
    (view, unsealed): (&ChainView, bool),
    method: &str,
    params: &Params,
) -> Option<Result<Value, RpcError>> {
    let answer = match method {
        "eth_getBalance" => balance(view, params),
        "eth_getTransactionCount" => nonce(view, params),
        "eth_getCode" => code(view, params),
        "eth_getStorageAt" => storage(view, params),
        "eth_getTransactionByHash" => params.required(0, "hash").and_then(|hash: B256| {
            ok(view
                .tx(&hash)
                .map(|(tx, block_hash)| convert::transaction(&tx, block_hash)))
        }),
        "eth_getTransactionReceipt" => params.required(0, "hash").and_then(|hash: B256| {
            ok(view
                .tx(&hash)
                .map(|(tx, block_hash)| convert::receipt(&tx, block_hash)))
        }),
        "eth_getTransactionByBlockNumberAndIndex" => {
            params
                .required(0, "block")
                .and_then(|tag: BlockNumberOrTag| {
                    tx_at(any_block_by_tag(view, tag, unsealed)?, params)
                })
        }
        "eth_getTransactionByBlockHashAndIndex" => params
            .required(0, "hash")
            .and_then(|hash: B256| tx_at(view.block_by_hash(&hash).map(AnyBlock::Sealed), params)),
        _ => return None,
    };
    Some(answer)
}

fn balance(view: &ChainView, params: &Params) -> Result<Value, RpcError> {
    let address: Address = params.required(0, "address")?;
    let state = state_at(view, params.optional(1, "block")?)?.0;
    ok(state.account(&address).map_or(U256::ZERO, |a| a.balance))
}

fn nonce(view: &ChainView, params: &Params) -> Result<Value, RpcError> {
    let address: Address = params.required(0, "address")?;
    let state = state_at(view, params.optional(1, "block")?)?.0;
    ok(U64::from(state.account(&address).map_or(0, |a| a.nonce)))
}

fn code(view: &ChainView, params: &Params) -> Result<Value, RpcError> {
    let address: Address = params.required(0, "address")?;
    let state = state_at(view, params.optional(1, "block")?)?.0;
    let code = state
        .account(&address)
        .and_then(|a| state.code(&a.code_hash))
        .map(|c| c.original_bytes())
        .unwrap_or_default();
    ok(code)
}

fn storage(view: &ChainView, params: &Params) -> Result<Value, RpcError> {
    let address: Address = params.required(0, "address")?;
    let slot: U256 = params.required(1, "slot")?;
    let state = state_at(view, params.optional(2, "block")?)?.0;
    ok(B256::from(state.storage(&address, &slot)))
}

/// The block methods (blocks, their transaction counts, receipts and
/// uncles); `None` for any other method. `bytes_max` bounds an answer.
pub(crate) fn block_method(
    (view, unsealed): (&ChainView, bool),
    bytes_max: usize,
    method: &str,
    params: &Params,
) -> Option<Result<Value, RpcError>> {
    let by_tag = || {
        params
            .required(0, "block")
            .and_then(|tag| any_block_by_tag(view, tag, unsealed))
    };
    let by_hash = || {
        params.required(0, "hash").and_then(|hash: B256| {
            if hash.is_zero() && unsealed {
                // A preconfirmed receipt's `blockHash`: the block in
                // progress (what ethers' `receipt.getBlock()` asks for).
                return any_block_by_tag(view, BlockNumberOrTag::Pending, unsealed);
            }
            Ok(view.block_by_hash(&hash).map(AnyBlock::Sealed))
        })
    };
    let full = || params.optional(1, "full").map(|full| full.unwrap_or(false));
    let answer = match method {
        "eth_getBlockByNumber" => by_tag().and_then(|b| block_json(view, bytes_max, b, full()?)),
        "eth_getBlockByHash" => by_hash().and_then(|b| block_json(view, bytes_max, b, full()?)),
        "eth_getBlockTransactionCountByNumber" => {
            by_tag().and_then(|b| ok(b.map(|b| U64::from(b.txs().len()))))
        }
        "eth_getBlockTransactionCountByHash" => {
            by_hash().and_then(|b| ok(b.map(|b| U64::from(b.txs().len()))))
        }
        "eth_getBlockReceipts" => params
            .required(0, "block")
            .and_then(|id| match id {
                BlockId::Number(tag) => any_block_by_tag(view, tag, unsealed),
                BlockId::Hash(_) => block_by_id(view, id).map(|b| b.map(AnyBlock::Sealed)),
            })
            .and_then(|block| match block {
                Some(block) => block_receipts(bytes_max, &block),
                None => ok(Value::Null),
            }),
        "eth_getUncleCountByBlockNumber" => by_tag().and_then(|b| ok(b.map(|_| U64::ZERO))),
        "eth_getUncleCountByBlockHash" => by_hash().and_then(|b| ok(b.map(|_| U64::ZERO))),
        _ => return None,
    };
    Some(answer)
}

/// A block the block methods answer for: sealed, or not sealed yet (the
/// open block, `pending`, or one closed and waiting for its seal).
pub(crate) enum AnyBlock {
    /// A sealed block.
    Sealed(Arc<SealedBlock>),
    /// A block not sealed yet.
    Unsealed(Arc<UnsealedBlock>),
}

impl AnyBlock {
    /// Its transactions.
    fn txs(&self) -> Vec<&Arc<ExecutedTx>> {
        match self {
            Self::Sealed(block) => block.txs.iter().collect(),
            Self::Unsealed(block) => block.txs.iter().collect(),
        }
    }

    /// Its hash, once sealed.
    fn hash(&self) -> Option<B256> {
        match self {
            Self::Sealed(block) => Some(block.hash),
            Self::Unsealed(_) => None,
        }
    }
}

/// The block for a number or tag, sealed or not: `pending` is the open
/// block, and a number past the last sealed block names a block not sealed
/// yet (a preconfirmed receipt's `blockNumber`); other tags as
/// [`block_by_tag`]. Without `unsealed` (a verifier, whose blocks are not
/// preconfirmations but derivations not checked yet) only sealed blocks.
pub(crate) fn any_block_by_tag(
    view: &ChainView,
    tag: BlockNumberOrTag,
    unsealed: bool,
) -> Result<Option<AnyBlock>, RpcError> {
    if !unsealed {
        return Ok(block_by_tag(view, tag)?.map(AnyBlock::Sealed));
    }
    match tag {
        BlockNumberOrTag::Pending => Ok(Some(AnyBlock::Unsealed(view.open().clone()))),
        BlockNumberOrTag::Number(n) if n > view.head().header.number => Ok(view
            .unsealed()
            .find(|b| b.ctx.number == n)
            .cloned()
            .map(AnyBlock::Unsealed)),
        _ => Ok(block_by_tag(view, tag)?.map(AnyBlock::Sealed)),
    }
}

/// A block's receipts, stopping as soon as they pass the response budget.
fn block_receipts(bytes_max: usize, block: &AnyBlock) -> Result<Value, RpcError> {
    let mut budget = ByteBudget::new(bytes_max);
    let txs = block.txs();
    let mut out = Vec::with_capacity(txs.len());
    for tx in txs {
        let receipt = convert::receipt(tx, block.hash());
        budget.add(&receipt)?;
        out.push(receipt);
    }
    ok(out)
}

/// A block, with full transactions when `full`; a block whose transactions
/// pass the response budget is refused before its JSON is built.
fn block_json(
    view: &ChainView,
    bytes_max: usize,
    block: Option<AnyBlock>,
    full: bool,
) -> Result<Value, RpcError> {
    let Some(block) = block else {
        return ok(Value::Null);
    };
    if full {
        let mut budget = ByteBudget::new(bytes_max);
        for tx in block.txs() {
            budget.add(&convert::transaction(tx, block.hash()))?;
        }
    }
    match block {
        AnyBlock::Sealed(block) => ok(convert::block(&block, full)),
        AnyBlock::Unsealed(block) => {
            let number = block.ctx.number;
            let parent = view
                .block_hash(number.saturating_sub(1))
                .unwrap_or_default();
            Ok(convert::unsealed_block(&block, parent, full))
        }
    }
}

/// The transaction of `block` at the index in parameter 1.
fn tx_at(block: Option<AnyBlock>, params: &Params) -> Result<Value, RpcError> {
    let index: U64 = params.required(1, "index")?;
    ok(block.and_then(|b| tx_in_block(&b, index)))
}

fn tx_in_block(block: &AnyBlock, index: U64) -> Option<alloy_rpc_types_eth::Transaction> {
    let txs = block.txs();
    let tx = txs.get(usize::try_from(index.to::<u64>()).ok()?)?;
    Some(convert::transaction(tx, block.hash()))
}

/// A sealed block for a number or tag (`latest` and `pending` are the last
/// sealed block; `safe` and `finalized` what L1 vouches for, the last sealed
/// block while nothing is posted; `earliest` is the oldest block kept,
/// genesis on an archive node). A pruned block is an error.
pub(crate) fn block_by_tag(
    view: &ChainView,
    tag: BlockNumberOrTag,
) -> Result<Option<Arc<SealedBlock>>, RpcError> {
    let number = match tag {
        BlockNumberOrTag::Number(n) => n,
        BlockNumberOrTag::Earliest => view.oldest_block(),
        BlockNumberOrTag::Safe => view.safe(),
        BlockNumberOrTag::Finalized => view.finalized(),
        BlockNumberOrTag::Latest | BlockNumberOrTag::Pending => {
            return Ok(Some(view.head().clone()));
        }
    };
    check_not_pruned(view, number)?;
    Ok(view.block(number))
}

/// A sealed block for an EIP-1898 block id; an unknown hash is an error only
/// when `requireCanonical` is set.
pub(crate) fn block_by_id(
    view: &ChainView,
    id: BlockId,
) -> Result<Option<Arc<SealedBlock>>, RpcError> {
    match id {
        BlockId::Number(tag) => block_by_tag(view, tag),
        BlockId::Hash(hash) => match view.block_by_hash(&hash.block_hash) {
            Some(block) => Ok(Some(block)),
            None if hash.require_canonical == Some(true) => Err(header_not_found()),
            None => Ok(None),
        },
    }
}

/// State and block context for a block id. `latest`/`pending` (or none) are
/// the preconfirmed state with the open block's context, and so is the open
/// block by number.
pub(crate) fn state_at(
    view: &ChainView,
    id: Option<BlockId>,
) -> Result<(HotState, BlockContext), RpcError> {
    // The number alone first: an old block is not read from disk only to
    // find that its state is gone.
    let head = view.head().header.number;
    let number = match id {
        None
        | Some(BlockId::Number(BlockNumberOrTag::Latest))
        | Some(BlockId::Number(BlockNumberOrTag::Pending)) => {
            return Ok((view.state().clone(), view.open().ctx));
        }
        Some(BlockId::Number(BlockNumberOrTag::Number(n))) if n <= head => n,
        // The open block by number (a preconfirmed receipt's
        // `blockNumber`): the preconfirmed state, as `pending`.
        Some(BlockId::Number(BlockNumberOrTag::Number(n))) if n == view.open().ctx.number => {
            return Ok((view.state().clone(), view.open().ctx));
        }
        Some(BlockId::Number(BlockNumberOrTag::Number(n))) if n < view.open().ctx.number => {
            return Err(RpcError::server(format!(
                "block {n} is closed and its state root is being computed: its state is readable once it is \
                 sealed (milliseconds), or now as `pending`"
            )));
        }
        Some(BlockId::Number(BlockNumberOrTag::Number(_))) => return Err(header_not_found()),
        Some(BlockId::Number(BlockNumberOrTag::Earliest)) => view.oldest_block(),
        Some(BlockId::Number(BlockNumberOrTag::Safe)) => view.safe(),
        Some(BlockId::Number(BlockNumberOrTag::Finalized)) => view.finalized(),
        Some(BlockId::Hash(hash)) => view
            .number_of(&hash.block_hash)
            .ok_or_else(header_not_found)?,
    };
    check_not_pruned(view, number)?;
    let state = view.state_at(number).ok_or_else(|| {
        RpcError::server(format!(
            "historical state not available: block {number} is older than the {RECENT_STATES_MAX} most recent blocks this node keeps"
        ))
    })?;
    let (header, _) = view.header(number).ok_or_else(header_not_found)?;
    Ok((state.clone(), block_context(&header)))
}

/// The execution context a sealed block ran in, from its header.
pub(crate) fn block_context(header: &alloy_consensus::Header) -> BlockContext {
    BlockContext::of_header(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::testkit::{self, params};
    use alloy_eips::RpcBlockHash;
    use serde_json::json;

    #[test]
    fn tags_resolve_to_sealed_blocks() {
        let view = testkit::chain(3);
        let number = |tag| block_by_tag(&view, tag).unwrap().map(|b| b.header.number);
        assert_eq!(number(BlockNumberOrTag::Earliest), Some(0));
        assert_eq!(number(BlockNumberOrTag::Number(2)), Some(2));
        assert_eq!(number(BlockNumberOrTag::Number(9)), None);
        for tag in [
            BlockNumberOrTag::Latest,
            BlockNumberOrTag::Pending,
            BlockNumberOrTag::Safe,
            BlockNumberOrTag::Finalized,
        ] {
            assert_eq!(number(tag), Some(3), "{tag:?}");
        }
    }

    #[test]
    fn safe_and_finalized_follow_what_l1_vouches_for() {
        let mut view = testkit::chain(3);
        view.set_da_heads(fulmen_chain::view::DaHeads {
            safe: 2,
            finalized: 1,
        });
        let number =
            |view: &ChainView, tag| block_by_tag(view, tag).unwrap().map(|b| b.header.number);
        assert_eq!(number(&view, BlockNumberOrTag::Safe), Some(2));
        assert_eq!(number(&view, BlockNumberOrTag::Finalized), Some(1));
        assert_eq!(number(&view, BlockNumberOrTag::Latest), Some(3));
        let (_, ctx) = state_at(&view, Some(BlockId::Number(BlockNumberOrTag::Safe))).unwrap();
        assert_eq!(ctx.number, 2);
        // An L1 reorg moves safe back.
        view.set_da_heads(fulmen_chain::view::DaHeads {
            safe: 1,
            finalized: 1,
        });
        assert_eq!(number(&view, BlockNumberOrTag::Safe), Some(1));
    }

    #[test]
    fn an_unknown_hash_is_an_error_only_when_canonical_is_required() {
        let view = testkit::chain(1);
        let hash = |canonical| {
            BlockId::Hash(RpcBlockHash {
                block_hash: B256::repeat_byte(7),
                require_canonical: canonical,
            })
        };
        assert!(block_by_id(&view, hash(None)).expect("no error").is_none());
        assert!(
            block_by_id(&view, hash(Some(false)))
                .expect("no error")
                .is_none()
        );
        let error = block_by_id(&view, hash(Some(true))).unwrap_err();
        assert_eq!(error.code, -32000);
        assert_eq!(error.message, "header not found");
        let known = view.block(1).expect("block 1").hash;
        let found = block_by_id(&view, BlockId::from(known)).expect("no error");
        assert_eq!(found.map(|b| b.header.number), Some(1));
    }

    #[test]
    fn latest_state_is_the_preconfirmed_one_and_old_state_is_refused_by_name() {
        let view = testkit::chain(2);
        let (state, ctx) = state_at(&view, None).expect("latest");
        assert_eq!(ctx.number, view.open().ctx.number);
        assert_eq!(
            state.account(&testkit::ALICE).map(|a| a.balance),
            Some(U256::from(testkit::LATEST_BALANCE))
        );
        let (state, ctx) = state_at(&view, Some(BlockId::number(1))).expect("block 1");
        assert_eq!(ctx.number, 1);
        assert_eq!(ctx.base_fee, testkit::base_fee(1));
        assert_eq!(
            state.account(&testkit::ALICE).map(|a| a.balance),
            Some(U256::from(1))
        );
        let error = state_at(&view, Some(BlockId::number(9))).unwrap_err();
        assert_eq!(error.message, "header not found");
        let view = testkit::chain(RECENT_STATES_MAX as u64 + 2);
        let error = state_at(&view, Some(BlockId::number(0))).unwrap_err();
        assert!(
            error
                .message
                .starts_with("historical state not available: block 0"),
            "{}",
            error.message
        );
    }

    #[test]
    fn account_methods_read_the_state_at_the_asked_block() {
        let view = testkit::chain(2);
        let alice = json!(testkit::ALICE);
        let call = |method, p| {
            account_or_tx_method((&view, true), method, &params(p)).expect("an account method")
        };
        assert_eq!(
            call("eth_getBalance", json!([alice, "0x1"])).unwrap(),
            json!("0x1")
        );
        assert_eq!(
            call("eth_getTransactionCount", json!([alice])).unwrap(),
            json!("0x0")
        );
        assert_eq!(call("eth_getCode", json!([alice])).unwrap(), json!("0x"));
        assert_eq!(
            call("eth_getStorageAt", json!([alice, "0x0", "latest"])).unwrap(),
            json!(B256::ZERO)
        );
        let error = call("eth_getStorageAt", json!([alice])).unwrap_err();
        assert_eq!(error.code, -32602);
        assert!(account_or_tx_method((&view, true), "eth_getLogs", &params(json!([]))).is_none());
    }

    /// The open block answers by number and as `pending`, as geth's
    /// pending block: its transactions so far, null hash and roots; its
    /// state is the preconfirmed one.
    #[test]
    fn the_open_block_is_addressable_by_number_and_as_pending() {
        let view = testkit::chain(2);
        let open = view.open().ctx.number;
        let hash = view.open().txs[0].tx.hash;
        let call = |method, p| {
            block_method((&view, true), 1 << 20, method, &params(p)).expect("a block method")
        };
        for tag in [json!("pending"), json!(format!("{open:#x}"))] {
            let block = call("eth_getBlockByNumber", json!([tag, true])).unwrap();
            assert_eq!(block["number"], json!(format!("{open:#x}")), "{tag}");
            for null in [
                "hash",
                "nonce",
                "stateRoot",
                "transactionsRoot",
                "receiptsRoot",
            ] {
                assert_eq!(block[null], Value::Null, "{null}");
            }
            assert_eq!(block["parentHash"], json!(view.head().hash));
            assert_eq!(
                block["timestamp"],
                json!(format!("{:#x}", view.open().ctx.timestamp))
            );
            assert_eq!(
                block["baseFeePerGas"],
                json!(format!("{:#x}", view.open().ctx.base_fee))
            );
            assert_eq!(block["transactions"][0]["hash"], json!(hash));
            let count = call("eth_getBlockTransactionCountByNumber", json!([tag])).unwrap();
            assert_eq!(count, json!("0x1"));
            let receipts = call("eth_getBlockReceipts", json!([tag])).unwrap();
            assert_eq!(receipts[0]["transactionHash"], json!(hash));
            let tx = account_or_tx_method(
                (&view, true),
                "eth_getTransactionByBlockNumberAndIndex",
                &params(json!([tag, "0x0"])),
            )
            .expect("a tx method")
            .unwrap();
            assert_eq!(tx["hash"], json!(hash));
        }
        let (_, ctx) = state_at(&view, Some(BlockId::number(open))).expect("open by number");
        assert_eq!(ctx.number, open);
        let beyond = call("eth_getBlockByNumber", json!([format!("{:#x}", open + 1)])).unwrap();
        assert_eq!(beyond, Value::Null);
    }

    #[test]
    fn block_methods_answer_null_for_unknown_blocks_and_refuse_oversized_ones() {
        let view = testkit::chain(2);
        let call = |bytes_max, method, p| {
            block_method((&view, true), bytes_max, method, &params(p)).expect("a block method")
        };
        let block = call(1 << 20, "eth_getBlockByNumber", json!(["0x1", true])).unwrap();
        assert_eq!(block["number"], json!("0x1"));
        assert_eq!(block["transactions"].as_array().map(Vec::len), Some(1));
        let unknown = call(1 << 20, "eth_getBlockByNumber", json!(["0x9"])).unwrap();
        assert_eq!(unknown, Value::Null);
        let count = call(
            1 << 20,
            "eth_getBlockTransactionCountByNumber",
            json!(["0x2"]),
        );
        assert_eq!(count.unwrap(), json!("0x1"));
        let uncles = call(1 << 20, "eth_getUncleCountByBlockNumber", json!(["latest"]));
        assert_eq!(uncles.unwrap(), json!("0x0"));
        let receipts = call(1 << 20, "eth_getBlockReceipts", json!(["0x1"])).unwrap();
        assert_eq!(receipts.as_array().map(Vec::len), Some(1));
        let error = call(16, "eth_getBlockReceipts", json!(["0x1"])).unwrap_err();
        assert_eq!(error.code, -32020);
        let error = call(16, "eth_getBlockByNumber", json!(["0x1", true])).unwrap_err();
        assert_eq!(error.code, -32020);
        assert!(call(16, "eth_getBlockByNumber", json!(["0x1", false])).is_ok());
        let error = call(1 << 20, "eth_getBlockByNumber", json!(["0x1", "yes"])).unwrap_err();
        assert_eq!(error.code, -32602);
    }

    #[test]
    fn transactions_are_found_by_hash_and_by_position() {
        let view = testkit::chain(2);
        let hash = view.block(2).expect("block 2").txs[0].tx.hash;
        let call = |method, p| {
            account_or_tx_method((&view, true), method, &params(p)).expect("a tx method")
        };
        let tx = call("eth_getTransactionByHash", json!([hash])).unwrap();
        assert_eq!(tx["blockNumber"], json!("0x2"));
        let receipt = call("eth_getTransactionReceipt", json!([hash])).unwrap();
        assert_eq!(receipt["status"], json!("0x1"));
        let at = call(
            "eth_getTransactionByBlockNumberAndIndex",
            json!(["0x2", "0x0"]),
        );
        assert_eq!(at.unwrap()["hash"], json!(hash));
        let missing = call(
            "eth_getTransactionByBlockNumberAndIndex",
            json!(["0x2", "0x1"]),
        );
        assert_eq!(missing.unwrap(), Value::Null);
        let unknown = call("eth_getTransactionByHash", json!([B256::repeat_byte(1)]));
        assert_eq!(unknown.unwrap(), Value::Null);
    }
}
