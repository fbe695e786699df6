//! Core maps: proposing one for a machine, and checking one against it.

use std::collections::BTreeMap;

use crate::machine::{Machine, MemLock, format_list};

/// Which CPUs run which roles (the `[cores]` table of the node's config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreMap {
    /// Net cores (RPC, signature recovery).
    pub net: Vec<usize>,
    /// The sequencer.
    pub seq: usize,
    /// Executor helpers (the state-root worker today).
    pub exec: Vec<usize>,
    /// Storage (log writer, checkpoints).
    pub storage: Vec<usize>,
    /// The DA batcher.
    pub da: Option<usize>,
}

impl CoreMap {
    /// The distinct CPUs the map uses.
    pub fn cpus(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self
            .net
            .iter()
            .chain(&self.exec)
            .chain(&self.storage)
            .chain(self.da.iter())
            .chain([&self.seq])
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Roles on each CPU.
    fn roles(&self) -> BTreeMap<usize, Vec<&'static str>> {
        let mut roles: BTreeMap<usize, Vec<&'static str>> = BTreeMap::new();
        roles.entry(self.seq).or_default().push("seq");
        for (name, cpus) in [
            ("net", &self.net),
            ("exec", &self.exec),
            ("storage", &self.storage),
        ] {
            for cpu in cpus {
                roles.entry(*cpu).or_default().push(name);
            }
        }
        if let Some(da) = self.da {
            roles.entry(da).or_default().push("da");
        }
        roles
    }

    /// The map as the node's TOML `[cores]` table.
    pub fn to_toml(&self) -> String {
        let list = |v: &[usize]| {
            format!(
                "[{}]",
                v.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut out = format!(
            "[cores]\nnet = {}\nseq = {}\nexec = {}\nstorage = {}\n",
            list(&self.net),
            self.seq,
            list(&self.exec),
            list(&self.storage)
        );
        if let Some(da) = self.da {
            out.push_str(&format!("da = {da}\n"));
        }
        out
    }
}

/// The outcome of checking a map: errors make it invalid; warnings do not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// Why the map cannot run as asked.
    pub errors: Vec<String>,
    /// What works but costs latency.
    pub warnings: Vec<String>,
}

/// io_uring buffer memory each executor registers: pinned, so charged to
/// the locked-memory limit. (The node passes this to glommio; the check
/// below covers these buffers only, not io_uring rings, which kernels
/// before 5.12 also charge.)
pub const IO_MEMORY_PER_EXECUTOR: u64 = 256 * 1024;

/// Checks `map` against `machine`. With `strict`, the seq CPU and its SMT
/// siblings must run nothing else, and DA must not share seq's physical core.
pub fn check(machine: &Machine, map: &CoreMap, strict: bool) -> Check {
    let mut out = Check {
        errors: missing_cpus(machine, map),
        warnings: Vec::new(),
    };
    let seq_siblings = seq_siblings(machine, map);
    let seq_problems = seq_problems(map, &seq_siblings);
    if strict {
        out.errors
            .extend(seq_problems.into_iter().map(|p| format!("strict: {p}")));
        if let Some(da) = map.da
            && (da == map.seq || seq_siblings.contains(&da))
        {
            out.errors.push(format!(
                "strict: da on CPU {da} shares the seq CPU's physical core"
            ));
        }
    } else {
        out.warnings.extend(seq_problems);
    }
    out.warnings.extend(placement_warnings(machine, map));
    out.errors.extend(memlock_error(machine, map));
    out
}

/// CPUs the map names that are not online, and roles given no CPU.
fn missing_cpus(machine: &Machine, map: &CoreMap) -> Vec<String> {
    let online: Vec<usize> = machine.cpus.iter().map(|c| c.id).collect();
    let mut errors: Vec<String> = map
        .cpus()
        .into_iter()
        .filter(|cpu| machine.cpu(*cpu).is_none())
        .map(|cpu| format!("CPU {cpu} is not online (online: {})", format_list(&online)))
        .collect();
    if map.net.is_empty() {
        errors.push("net needs at least one CPU".into());
    }
    if map.storage.is_empty() {
        errors.push("storage needs at least one CPU (the log writer)".into());
    }
    errors
}

/// The SMT siblings of the seq CPU, itself left out.
fn seq_siblings(machine: &Machine, map: &CoreMap) -> Vec<usize> {
    machine
        .cpu(map.seq)
        .map(|c| {
            c.siblings
                .iter()
                .copied()
                .filter(|s| *s != map.seq)
                .collect()
        })
        .unwrap_or_default()
}

/// Roles sharing the seq CPU or its physical core.
fn seq_problems(map: &CoreMap, seq_siblings: &[usize]) -> Vec<String> {
    let roles = map.roles();
    let mut problems = Vec::new();
    let others: Vec<&str> = roles
        .get(&map.seq)
        .into_iter()
        .flatten()
        .copied()
        .filter(|r| *r != "seq")
        .collect();
    if !others.is_empty() {
        problems.push(format!(
            "seq shares CPU {} with {}",
            map.seq,
            others.join(", ")
        ));
    }
    for sibling in seq_siblings {
        if let Some(r) = roles.get(sibling) {
            problems.push(format!(
                "CPU {sibling} ({}) is an SMT sibling of the seq CPU {}: they share one physical core",
                r.join(", "),
                map.seq
            ));
        }
    }
    problems
}

/// Placements that work but cost latency: seq outside isolcpus, net off
/// the NIC's NUMA node.
fn placement_warnings(machine: &Machine, map: &CoreMap) -> Vec<String> {
    let mut warnings = Vec::new();
    if !machine.isolated.is_empty() && !machine.isolated.contains(&map.seq) {
        warnings.push(format!(
            "the seq CPU {} is not in isolcpus ({})",
            map.seq,
            format_list(&machine.isolated)
        ));
    }
    if let Some(nic) = machine.nic_node() {
        let far: Vec<usize> = map
            .net
            .iter()
            .copied()
            .filter(|c| machine.cpu(*c).is_some_and(|cpu| cpu.node != nic))
            .collect();
        if !far.is_empty() {
            warnings.push(format!(
                "net CPUs {} are not on the NIC's NUMA node {nic}",
                format_list(&far)
            ));
        }
    }
    warnings
}

/// An error when the locked-memory limit cannot hold every executor's
/// io_uring buffers.
fn memlock_error(machine: &Machine, map: &CoreMap) -> Option<String> {
    let executors = map.cpus().len() as u64;
    let needed = executors * IO_MEMORY_PER_EXECUTOR;
    let Some(MemLock::Bytes(limit)) = machine.memlock else {
        return None;
    };
    (limit < needed).then(|| {
        format!(
            "the locked-memory limit is {} KiB, the {executors} executors need {} KiB: raise it \
             (`ulimit -l {}` in the shell, LimitMEMLOCK= in the systemd unit, or memlock in \
             /etc/security/limits.conf)",
            limit / 1024,
            needed / 1024,
            needed.div_ceil(1024)
        )
    })
}

/// Proposes a core map for `machine`, with the reasons for each choice.
///
/// - 1 CPU: everything on it. 2 CPUs: net and the state-root worker on the
///   first, seq and storage on the second (a VM gives no SMT or NUMA choice).
/// - More: everything on the NIC's NUMA node (node of CPU 0 when unknown).
///   seq gets a whole physical core, isolated (`isolcpus`) if one is, else
///   the highest-numbered core (CPU 0 keeps the kernel's housekeeping);
///   its SMT siblings stay idle. storage and exec each get a physical core
///   next to it, DA one on another NUMA node when there is one (never seq's
///   core), and net the remaining threads of the node, up to four, leaving
///   the first physical core to the kernel when the node has enough.
pub fn propose(machine: &Machine) -> (CoreMap, Vec<String>) {
    let online: Vec<usize> = machine.cpus.iter().map(|c| c.id).collect();
    if online.len() <= 2 {
        return propose_small(&online);
    }
    let mut why = Vec::new();
    let home = machine
        .nic_node()
        .or_else(|| machine.cpus.first().map(|c| c.node))
        .unwrap_or(0);
    match machine.nic_node() {
        Some(node) => why.push(format!(
            "the NIC is on NUMA node {node}: seq, storage, exec and net go there"
        )),
        None => why.push(format!(
            "NIC node unknown: seq, storage, exec and net go on node {home}"
        )),
    }
    let cores = machine.physical_cores();
    let node_of = |core: &Vec<usize>| machine.cpu(core[0]).map_or(0, |c| c.node);
    let mut home_cores: Vec<Vec<usize>> = cores
        .iter()
        .filter(|c| node_of(c) == home)
        .cloned()
        .collect();
    if home_cores.len() < 3 {
        home_cores = cores.clone();
    }
    let seq = take_seq_core(machine, &mut home_cores, &mut why);
    let storage = take_core(&mut home_cores, &mut why, "storage").unwrap_or(seq);
    let exec = take_core(&mut home_cores, &mut why, "exec (state-root worker)");
    // DA: another node when there is one, else a core of this one.
    let other_node_core = cores
        .iter()
        .rev()
        .find(|c| node_of(c) != home && !c.contains(&seq));
    let da = match other_node_core {
        Some(core) => {
            why.push(format!(
                "da on CPU {}: another NUMA node, away from seq",
                core[0]
            ));
            Some(core[0])
        }
        None => take_core(&mut home_cores, &mut why, "da"),
    };
    let net = take_net(&home_cores, seq, &mut why);
    (
        CoreMap {
            net,
            seq,
            exec: exec.into_iter().collect(),
            storage: vec![storage],
            da,
        },
        why,
    )
}

/// The map of a machine with at most two CPUs, where there is no SMT or
/// NUMA choice to make.
fn propose_small(online: &[usize]) -> (CoreMap, Vec<String>) {
    assert!(online.len() <= 2);
    if let [first, second] = *online {
        let why = format!(
            "two CPUs: a net acceptor on each (sender recovery is most of a transaction's CPU, \
             and group commit leaves the seq CPU mostly idle), the state-root worker on CPU \
             {first}, seq and storage on CPU {second} (the log writer's work is the seq's own \
             critical path)"
        );
        let map = CoreMap {
            net: vec![first, second],
            seq: second,
            exec: vec![first],
            storage: vec![second],
            da: None,
        };
        return (map, vec![why]);
    }
    let cpu = online.first().copied().unwrap_or(0);
    let map = CoreMap {
        net: vec![cpu],
        seq: cpu,
        exec: vec![],
        storage: vec![cpu],
        da: None,
    };
    (map, vec!["one CPU: every role shares it".into()])
}

/// Takes seq's physical core out of `home_cores`: an isolated one if any,
/// else the last one. Returns the seq CPU; its SMT siblings stay idle.
fn take_seq_core(
    machine: &Machine,
    home_cores: &mut Vec<Vec<usize>>,
    why: &mut Vec<String>,
) -> usize {
    assert!(!home_cores.is_empty());
    let seq_index = home_cores
        .iter()
        .rposition(|core| core.iter().all(|c| machine.isolated.contains(c)))
        .unwrap_or(home_cores.len() - 1);
    let seq_core = home_cores.remove(seq_index);
    let seq = seq_core[0];
    why.push(if machine.isolated.contains(&seq) {
        format!("seq on CPU {seq}: an isolated physical core")
    } else {
        format!("seq on CPU {seq}: a whole physical core (no isolcpus on this node)")
    });
    if seq_core.len() > 1 {
        why.push(format!(
            "CPU(s) {} (seq's SMT sibling) left idle",
            format_list(&seq_core[1..])
        ));
    }
    seq
}

/// Takes the physical core nearest to seq's for `role`: from the end,
/// keeping the first core last. None when only one core is left.
fn take_core(home_cores: &mut Vec<Vec<usize>>, why: &mut Vec<String>, role: &str) -> Option<usize> {
    if home_cores.len() <= 1 {
        return None;
    }
    let core = home_cores.remove(home_cores.len() - 1);
    why.push(format!("{role} on CPU {}", core[0]));
    Some(core[0])
}

/// net: the remaining threads of `home_cores`, up to four, skipping the
/// first core (the kernel's) when others remain; the first core, or seq's
/// CPU, when nothing else is left.
fn take_net(home_cores: &[Vec<usize>], seq: usize, why: &mut Vec<String>) -> Vec<usize> {
    let first = home_cores.first().cloned();
    let mut net: Vec<usize> = home_cores
        .iter()
        .skip(usize::from(home_cores.len() > 1))
        .flat_map(|c| c.iter().copied())
        .take(4)
        .collect();
    if net.is_empty() {
        net = first.clone().unwrap_or_else(|| vec![seq]);
        net.truncate(4);
    }
    net.sort_unstable();
    why.push(format!("net on CPUs {}", format_list(&net)));
    if let Some(first) = first.filter(|f| !net.contains(&f[0])) {
        why.push(format!(
            "CPU(s) {} left to the kernel (housekeeping, IRQs)",
            format_list(&first)
        ));
    }
    net
}
