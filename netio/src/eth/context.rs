//! What the eth methods need on one net core (the helpers they share to
//! answer are in `reply`). Nothing here knows about WebSocket connections or
//! subscriptions: the WebSocket context wraps this one.

use std::sync::Arc;

use arc_swap::ArcSwap;
use fulmen_chain::msg::{MerkleRequest, SeqRequest};
use fulmen_chain::spec::ChainSpec;
use fulmen_chain::view::ChainView;
use glommio::channels::shared_channel::ConnectedSender;

use crate::limits::RpcLimits;
use crate::sim::SimPool;

/// What one net core needs to answer RPC calls.
pub struct RpcContext {
    /// Published chain view.
    pub view: Arc<ArcSwap<ChainView>>,
    /// This core's inbox into the sequencer.
    pub seq: ConnectedSender<SeqRequest>,
    /// This core's channel to the state-root worker (proofs).
    pub merkle: ConnectedSender<MerkleRequest>,
    /// Chain parameters.
    pub spec: Arc<ChainSpec>,
    /// RPC limits.
    pub limits: RpcLimits,
    /// `web3_clientVersion`.
    pub client_version: String,
    /// The simulation workers (shared by all net cores).
    pub sim: Arc<SimPool>,
    /// `[da] unposted_bytes_max` while a DA batcher runs: new transactions
    /// are refused while this much L2 data waits for L1.
    pub da_unposted_bytes_max: Option<u64>,
    /// A verifier: it rebuilds the chain from L1 and takes no
    /// transactions.
    pub verifier: bool,
    /// A verifier's sequencer, which sends are forwarded to.
    pub forward: Option<Arc<super::forward::Forwarder>>,
    /// The filters of `eth_newFilter` and the like (shared by all net
    /// cores).
    pub filters: Arc<super::filters::Filters>,
    /// The unlocked test-mnemonic accounts of a `--dev` node (shared by all
    /// net cores); `None` otherwise.
    pub dev: Option<Arc<super::accounts::DevAccounts>>,
    /// This core's tip tables for `eth_feeHistory` reward percentiles.
    pub fee_tips: std::cell::RefCell<super::fees::TipCache>,
}
