//! Building blocks of the load generator: a lean HTTP/1.1 JSON-RPC client,
//! fast transaction signing, workloads and latency statistics.
//!
//! The generator shares the machine with the node under test, so it spends
//! as little CPU per request as it can: bodies are encoded before the clock
//! starts, and the client is a minimal keep-alive HTTP/1.1 writer/reader.

pub mod client;
pub mod proc_cpu;
pub mod runner;
pub mod sign;
pub mod state_reads;
pub mod stats;
pub mod workload;
