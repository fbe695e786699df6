//! Limits of the RPC surface: the `[rpc]` table of the node config, read by
//! the HTTP server, the eth methods and the simulation workers.

/// Limits of the RPC surface: the `[rpc]` table of the node config.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcLimits {
    /// Largest request body.
    pub body_bytes_max: usize,
    /// HTTP connection handling (the server module): a request head must
    /// arrive within this after its first byte (or after the connection opens).
    pub header_read_timeout_ms: u64,
    /// A request body must arrive within this after its head.
    pub body_read_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this.
    pub idle_timeout_ms: u64,
    /// Most open HTTP connections per net core; when full, the connection
    /// longest without a finished request (and not running one) is closed.
    pub connections_per_core_max: usize,
    /// Most open connections (HTTP and WebSocket) from one IP address, node-wide.
    pub connections_per_ip_max: usize,
    /// Allowed `Host` names (geth's `--http.vhosts`); `*` allows any. IP
    /// literals and a missing Host are always allowed.
    pub vhosts: Vec<String>,
    /// Allowed browser `Origin`s (geth's `--http.corsdomain`); `*` allows
    /// any. Requests with another Origin get 403.
    pub cors_origins: Vec<String>,
    /// Most calls in one batch.
    pub batch_max: usize,
    /// Widest `eth_getLogs` block range.
    pub logs_block_range_max: u64,
    /// Most logs one `eth_getLogs` returns.
    pub logs_max: usize,
    /// `eth_sendRawTransactionSync` timeout when the client gives none.
    pub sync_timeout_ms_default: u64,
    /// Upper bound on the client's timeout.
    pub sync_timeout_ms_max: u64,
    /// Gas cap of `eth_call` / `eth_estimateGas`.
    pub call_gas_max: u64,
    /// Most blocks in one `eth_feeHistory`.
    pub fee_history_blocks_max: u64,
    /// Largest answer to one call (JSON bytes); a larger one gets -32020.
    pub response_bytes_max: usize,
    /// Largest answer to one batch, all its responses together.
    pub batch_response_bytes_max: usize,
    /// HTTP answers held for clients that have not read them yet, all
    /// connections of all net cores together; past it, a new answer is
    /// refused with -32005 (HTTP 503) until clients read.
    pub responses_in_flight_bytes_max: usize,
    /// Wall-clock limit of one request's simulations (`eth_call`,
    /// `eth_estimateGas`, `eth_createAccessList`), counted from its arrival,
    /// queueing included.
    pub call_timeout_ms: u64,
    /// Gas all EVM runs of one simulation request may use together
    /// (`eth_estimateGas` runs the EVM up to ~30 times).
    pub simulation_gas_budget: u64,
    /// Wall-clock limit of all simulations in one batch.
    pub batch_call_timeout_ms: u64,
    /// Gas all simulations in one batch may use together.
    pub batch_simulation_gas_budget: u64,
    /// Simulation worker threads (shared by all net cores).
    pub simulation_workers: usize,
    /// Simulations waiting for a worker; more are refused at once.
    pub simulation_queue_max: usize,
    /// Nice value of the simulation workers (0..=19): the kernel preempts
    /// them in favour of the net and seq threads.
    pub simulation_worker_nice: i32,
    /// Take legacy transactions without EIP-155 replay protection (geth's
    /// `--rpc.allow-unprotected-txs`).
    pub allow_unprotected_txs: bool,
    /// Execution witnesses (`debug_executionWitness`) kept for this many of
    /// the last sealed blocks (0: none; each costs the state-root worker
    /// the proofs of every key its block touched).
    pub witness_blocks: usize,
}

impl Default for RpcLimits {
    fn default() -> Self {
        Self {
            body_bytes_max: 5 * 1024 * 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            connections_per_core_max: 4096,
            connections_per_ip_max: 2048,
            vhosts: vec!["localhost".to_string()],
            cors_origins: Vec::new(),
            batch_max: 1000,
            logs_block_range_max: 10_000,
            logs_max: 20_000,
            sync_timeout_ms_default: 2_000,
            sync_timeout_ms_max: 10_000,
            call_gas_max: 50_000_000,
            fee_history_blocks_max: 1024,
            // 32 MiB: 20,000 typical logs (~14 MB), the receipts of ~33,000
            // transfers (~1 KB each, measured) or a full block of 47,600
            // transfers with full transactions (~690 B each) fit; one block
            // of large logs does not.
            response_bytes_max: 32 * 1024 * 1024,
            // A batch answer is one response: splitting a big answer into a
            // batch does not get around the budget.
            batch_response_bytes_max: 32 * 1024 * 1024,
            // Eight answers of the largest size.
            responses_in_flight_bytes_max: 256 * 1024 * 1024,
            call_timeout_ms: 5_000,
            simulation_gas_budget: 1_000_000_000,
            batch_call_timeout_ms: 10_000,
            batch_simulation_gas_budget: 2_000_000_000,
            simulation_workers: 2,
            simulation_queue_max: 64,
            simulation_worker_nice: 19,
            allow_unprotected_txs: false,
            witness_blocks: 0,
        }
    }
}
