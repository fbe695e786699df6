//! fulmen tuning: what the machine is (read from /sys and /proc, or from a
//! captured copy of them), which core map suits it, and whether a given
//! core map is valid on it.
//!
//! Nothing here needs privileges or writes anything: it reads files under a
//! root (`/` for the live machine) and tolerates missing ones, as VMs and
//! containers hide many.

mod machine;
mod plan;

pub use machine::{Cache, Cpu, Machine, MemLock, Nic, Node, parse_cpu_list};
pub use plan::{Check, CoreMap, IO_MEMORY_PER_EXECUTOR, check, propose};
