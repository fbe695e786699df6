//! The binary's errors: each names what failed, where, and what to do.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use fulmen_chain::spec::GenesisError;

use crate::config::ConfigError;
use crate::datadir::DatadirError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    /// The config file or a flag is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The genesis file cannot be used.
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    /// Both chains were asked for.
    #[error("--dev and --genesis are exclusive: --dev uses the embedded dev genesis")]
    DevAndGenesis,
    /// No chain was asked for.
    #[error(
        "no chain: pass --dev for the embedded dev chain, or --genesis FILE (or `genesis` in the config)"
    )]
    NoChain,
    /// `fulmen tune --check` found errors.
    #[error("the core map of {path} is not valid on this machine:\n  {}", errors.join("\n  "))]
    CoreMapInvalid {
        /// The config checked.
        path: PathBuf,
        /// What is wrong.
        errors: Vec<String>,
    },
    /// The `[cores]` map does not fit the live machine.
    #[error("the [cores] map does not fit this machine (see `fulmen tune`): {}", .0.join("; "))]
    CoresDoNotFit(Vec<String>),
    /// `memory.huge_pages` without transparent huge pages.
    #[error(
        "memory.huge_pages: transparent huge pages are {mode} on this machine \
         (/sys/kernel/mm/transparent_hugepage/enabled); enable them with \
         `echo madvise > /sys/kernel/mm/transparent_hugepage/enabled` or set memory.huge_pages = false"
    )]
    HugePagesUnavailable {
        /// What the kernel reports.
        mode: String,
    },
    /// The restart with huge pages failed.
    #[error("memory.huge_pages: cannot restart with huge pages: {0}")]
    HugePagesRestart(io::Error),
    /// mlockall failed.
    #[error(
        "memory.mlockall: mlockall failed ({source}); the locked-memory limit is {limit}, \
         below what the node needs: raise it (`ulimit -l unlimited`, LimitMEMLOCK=infinity \
         in the systemd unit, or memlock in /etc/security/limits.conf) or set memory.mlockall = false"
    )]
    Mlockall {
        /// The OS error.
        source: io::Error,
        /// The limit in force.
        limit: String,
    },
    /// The datadir cannot be used.
    #[error(transparent)]
    Datadir(#[from] DatadirError),
    /// `fulmen db check` found checkpoints that boot would use but that
    /// are wrong.
    #[error("damaged checkpoint(s) in {dir}:\n  {}", notes.join("\n  "))]
    CheckpointsDamaged {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What is wrong with each.
        notes: Vec<String>,
    },
    /// Port 0 could not be resolved to a free port.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The node's roles did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    /// The restart that unwinds a verifier's chain failed.
    #[error("cannot restart the node to unwind its chain: {0}")]
    Restart(io::Error),
    /// The metrics endpoint could not start.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// `fulmen top` cannot read the metrics.
    #[error("{url}: {reason}")]
    Top {
        /// The metrics URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Why the node's roles did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The address is taken.
    #[error("{key} {addr} is in use by another process: stop it or choose another port ({source})")]
    AddrInUse {
        /// The config key (`rpc_addr`, `ws_addr`).
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The address cannot be listened on.
    #[error("cannot listen on {key} {addr}: {source}")]
    Listen {
        /// The config key.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The listening socket cannot be shared with a net core.
    #[error("cannot duplicate the listening socket: {0}")]
    DuplicateListener(io::Error),
    /// An executor did not start.
    #[error("cannot start the executor on CPU {cpu}: {reason}")]
    Executor {
        /// The CPU.
        cpu: usize,
        /// glommio's reason.
        reason: String,
    },
    /// The simulation workers did not start.
    #[error("cannot start the simulation workers: {0}")]
    SimulationWorkers(io::Error),
    /// The log did not open.
    #[error("cannot open the log in {dir}: {source}")]
    LogOpen {
        /// The log directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The history writer's thread did not start.
    #[error("cannot start the history writer: {0}")]
    History(io::Error),
    /// The DA thread did not start (a bad record in the log, no thread).
    #[error("DA: {0}")]
    Da(String),
    /// A role did not report ready in time.
    #[error("a net core or the log did not become ready within {timeout_s} s")]
    NotReady {
        /// How long the node waited.
        timeout_s: u64,
    },
}

/// Why a shutdown drain did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DrainError {
    /// The seq core is gone (its channel is closed or full).
    #[error("cannot reach the seq core: {0}")]
    Unreachable(String),
    /// The log did not drain in time.
    #[error("the log did not drain within {timeout_s} s")]
    Timeout {
        /// How long the node waited.
        timeout_s: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_thing_and_what_to_do() {
        let addr: SocketAddr = "127.0.0.1:8545".parse().unwrap();
        let taken = StartError::AddrInUse {
            key: "rpc_addr",
            addr,
            source: io::ErrorKind::AddrInUse.into(),
        };
        assert!(
            taken
                .to_string()
                .starts_with("rpc_addr 127.0.0.1:8545 is in use by another process: stop it")
        );
        let cores = AppError::CoresDoNotFit(vec!["CPU 7 is offline".into(), "seq = 9".into()]);
        assert_eq!(
            cores.to_string(),
            "the [cores] map does not fit this machine (see `fulmen tune`): CPU 7 is offline; seq = 9"
        );
        let invalid = AppError::CoreMapInvalid {
            path: "node.toml".into(),
            errors: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            invalid.to_string(),
            "the core map of node.toml is not valid on this machine:\n  a\n  b"
        );
        let drain = DrainError::Timeout { timeout_s: 5 };
        assert_eq!(drain.to_string(), "the log did not drain within 5 s");
    }
}
