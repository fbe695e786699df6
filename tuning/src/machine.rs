//! Reading the machine's topology and settings.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::fs;
use std::path::{Path, PathBuf};

/// One online logical CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// Logical CPU id.
    pub id: usize,
    /// Physical core id within its package.
    pub core_id: usize,
    /// Package (socket).
    pub package: usize,
    /// Logical CPUs of the same physical core, itself included.
    pub siblings: Vec<usize>,
    /// NUMA node.
    pub node: usize,
    /// cpufreq governor, where exposed.
    pub governor: Option<String>,
    /// Caches, L1 first.
    pub caches: Vec<Cache>,
}

/// One cache level as a CPU sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// 1, 2, 3.
    pub level: u8,
    /// Data, Instruction or Unified.
    pub kind: String,
    /// Size in KiB.
    pub size_kb: u64,
    /// CPUs sharing it.
    pub shared_with: Vec<usize>,
}

/// A NUMA node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Node id.
    pub id: usize,
    /// Its online CPUs.
    pub cpus: Vec<usize>,
}

/// A network interface backed by a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// NUMA node of its device, when the platform says.
    pub node: Option<usize>,
}

/// The locked-memory limit of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemLock {
    /// Bytes.
    Bytes(u64),
    /// No limit.
    Unlimited,
}

/// What the machine is.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// Online CPUs by id.
    pub cpus: Vec<Cpu>,
    /// NUMA nodes (one node 0 holding every CPU when the kernel shows none).
    pub nodes: Vec<Node>,
    /// `isolcpus=` from the kernel command line.
    pub isolated: Vec<usize>,
    /// `nohz_full=` from the kernel command line.
    pub nohz_full: Vec<usize>,
    /// Network interfaces with a device (virtual ones are left out).
    pub nics: Vec<Nic>,
    /// Interrupts whose affinity includes each CPU.
    pub irqs_per_cpu: BTreeMap<usize, usize>,
    /// Transparent huge pages mode (`always`, `madvise`, `never`).
    pub thp: Option<String>,
    /// Reserved 2 MiB huge pages.
    pub hugepages_2m: Option<u64>,
    /// Locked-memory limit.
    pub memlock: Option<MemLock>,
}

/// Parses a kernel CPU list such as `0-3,8,10-11` (whitespace tolerated).
pub fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

struct Root(PathBuf);

impl Root {
    fn read(&self, path: &str) -> Option<String> {
        fs::read_to_string(self.0.join(path)).ok()
    }
    fn number<T: std::str::FromStr>(&self, path: &str) -> Option<T> {
        self.read(path)?.trim().parse().ok()
    }
    fn list(&self, path: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.0.join(path))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
    /// A CPU list file, when present and well formed.
    fn cpu_list(&self, path: &str) -> Option<Vec<usize>> {
        self.read(path).and_then(|t| parse_cpu_list(&t))
    }

    /// Online CPUs; CPU 0 alone when the kernel does not say.
    fn online_cpus(&self) -> Vec<usize> {
        self.cpu_list("sys/devices/system/cpu/online")
            .unwrap_or_else(|| vec![0])
    }

    /// NUMA nodes by id, holding their online CPUs; one node 0 holding every
    /// online CPU when the kernel shows no node with one.
    fn nodes(&self, online: &[usize]) -> Vec<Node> {
        let mut nodes: Vec<Node> = self
            .list("sys/devices/system/node")
            .into_iter()
            .filter_map(|name| {
                let id = name.strip_prefix("node")?.parse().ok()?;
                let cpus = self
                    .cpu_list(&format!("sys/devices/system/node/{name}/cpulist"))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| online.contains(c))
                    .collect();
                Some(Node { id, cpus })
            })
            .collect();
        nodes.sort_by_key(|n| n.id);
        if nodes.iter().all(|n| n.cpus.is_empty()) {
            nodes = vec![Node {
                id: 0,
                cpus: online.to_vec(),
            }];
        }
        nodes
    }

    /// Online CPU `id`, placed on its node among `nodes`.
    fn cpu(&self, id: usize, nodes: &[Node]) -> Cpu {
        let base = format!("sys/devices/system/cpu/cpu{id}");
        let topo = |f: &str| format!("{base}/topology/{f}");
        Cpu {
            id,
            core_id: self.number(&topo("core_id")).unwrap_or(id),
            package: self.number(&topo("physical_package_id")).unwrap_or(0),
            siblings: self
                .cpu_list(&topo("thread_siblings_list"))
                .unwrap_or_else(|| vec![id]),
            node: nodes
                .iter()
                .find(|n| n.cpus.contains(&id))
                .map_or(0, |n| n.id),
            governor: self
                .read(&format!("{base}/cpufreq/scaling_governor"))
                .map(|g| g.trim().to_string()),
            caches: self.caches(&base, id),
        }
    }

    /// The caches of CPU `id` (whose directory is `base`), L1 first; those
    /// without a level or size are left out.
    fn caches(&self, base: &str, id: usize) -> Vec<Cache> {
        let mut caches: Vec<Cache> = self
            .list(&format!("{base}/cache"))
            .into_iter()
            .filter(|index| index.starts_with("index"))
            .filter_map(|index| self.cache(&format!("{base}/cache/{index}"), id))
            .collect();
        caches.sort_by_key(|c| (c.level, c.kind.clone()));
        caches
    }

    /// One `cache/indexN` directory of CPU `id`.
    fn cache(&self, dir: &str, id: usize) -> Option<Cache> {
        let level = self.number::<u8>(&format!("{dir}/level"))?;
        let size_kb = self
            .read(&format!("{dir}/size"))
            .and_then(|s| parse_size_kb(&s))?;
        Some(Cache {
            level,
            kind: self
                .read(&format!("{dir}/type"))
                .unwrap_or_default()
                .trim()
                .to_string(),
            size_kb,
            shared_with: self
                .cpu_list(&format!("{dir}/shared_cpu_list"))
                .unwrap_or_else(|| vec![id]),
        })
    }

    /// Network interfaces backed by a device, with their NUMA node.
    fn nics(&self) -> Vec<Nic> {
        self.list("sys/class/net")
            .into_iter()
            .filter(|name| self.0.join(format!("sys/class/net/{name}/device")).exists())
            .map(|name| Nic {
                node: self
                    .number::<i64>(&format!("sys/class/net/{name}/device/numa_node"))
                    .and_then(|n| usize::try_from(n).ok()),
                name,
            })
            .collect()
    }

    /// How many interrupts may land on each online CPU.
    fn irqs_per_cpu(&self, online: &[usize]) -> BTreeMap<usize, usize> {
        let mut irqs_per_cpu = BTreeMap::new();
        let affinities = self
            .list("proc/irq")
            .into_iter()
            .filter_map(|irq| self.cpu_list(&format!("proc/irq/{irq}/smp_affinity_list")));
        for cpu in affinities.flatten().filter(|c| online.contains(c)) {
            *irqs_per_cpu.entry(cpu).or_insert(0) += 1;
        }
        irqs_per_cpu
    }
}

/// The selected mode of `transparent_hugepage/enabled`: the bracketed word
/// of `always [madvise] never`.
fn parse_thp(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')?;
    Some(text[start + 1..start + end].to_string())
}

/// The soft `Max locked memory` limit of a `/proc/<pid>/limits` file.
fn parse_memlock(limits: &str) -> Option<MemLock> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    let soft = line.split_whitespace().nth(3)?;
    Some(match soft {
        "unlimited" => MemLock::Unlimited,
        n => MemLock::Bytes(n.parse().ok()?),
    })
}

/// The value of `key=` on a kernel command line, as a CPU list. Flags such
/// as `isolcpus=domain,managed_irq,2-5` keep only the list.
fn cmdline_cpus(cmdline: &str, key: &str) -> Vec<usize> {
    cmdline
        .split_whitespace()
        .filter_map(|arg| arg.strip_prefix(key)?.strip_prefix('='))
        .flat_map(|value| {
            let list: Vec<&str> = value
                .split(',')
                .filter(|p| p.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .collect();
            parse_cpu_list(&list.join(",")).unwrap_or_default()
        })
        .collect()
}

fn parse_size_kb(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits.parse().ok()?;
    match unit {
        "K" | "" => Some(n),
        "M" => Some(n * 1024),
        "G" => Some(n * 1024 * 1024),
        _ => None,
    }
}

impl Machine {
    /// The live machine.
    pub fn live() -> Self {
        Self::read(Path::new("/"))
    }

    /// The machine whose `/sys` and `/proc` are under `root`.
    pub fn read(root: &Path) -> Self {
        let r = Root(root.to_path_buf());
        let online = r.online_cpus();
        let nodes = r.nodes(&online);
        let cpus = online.iter().map(|&id| r.cpu(id, &nodes)).collect();
        let cmdline = r.read("proc/cmdline").unwrap_or_default();
        Machine {
            cpus,
            nodes,
            isolated: cmdline_cpus(&cmdline, "isolcpus"),
            nohz_full: cmdline_cpus(&cmdline, "nohz_full"),
            nics: r.nics(),
            irqs_per_cpu: r.irqs_per_cpu(&online),
            thp: r
                .read("sys/kernel/mm/transparent_hugepage/enabled")
                .and_then(|t| parse_thp(&t)),
            hugepages_2m: r.number("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
            memlock: r.read("proc/self/limits").and_then(|t| parse_memlock(&t)),
        }
    }

    /// The CPU with id `id`, if online.
    pub fn cpu(&self, id: usize) -> Option<&Cpu> {
        self.cpus.iter().find(|c| c.id == id)
    }

    /// Physical cores: each one's logical CPUs, lowest id first, ordered by
    /// their first CPU.
    pub fn physical_cores(&self) -> Vec<Vec<usize>> {
        let mut cores: Vec<Vec<usize>> = Vec::new();
        for cpu in &self.cpus {
            let mut threads: Vec<usize> = cpu
                .siblings
                .iter()
                .copied()
                .filter(|s| self.cpu(*s).is_some())
                .collect();
            if !threads.contains(&cpu.id) {
                threads.push(cpu.id);
            }
            threads.sort_unstable();
            if !cores.contains(&threads) {
                cores.push(threads);
            }
        }
        cores.sort_by_key(|t| t[0]);
        cores
    }

    /// The NUMA node the NICs hang off, when the platform says.
    pub fn nic_node(&self) -> Option<usize> {
        self.nics.iter().find_map(|n| n.node)
    }

    /// A readable report.
    pub fn report(&self) -> String {
        let mut out = String::new();
        self.report_cpus(&mut out);
        self.report_kernel(&mut out);
        self.report_memory(&mut out);
        out
    }

    /// CPUs, NUMA nodes, SMT siblings and the first CPU's caches.
    fn report_cpus(&self, out: &mut String) {
        let cores = self.physical_cores();
        let packages: BTreeSet<usize> = self.cpus.iter().map(|c| c.package).collect();
        let _ = writeln!(
            out,
            "CPUs: {} online, {} physical cores, {} package(s), {} NUMA node(s)",
            self.cpus.len(),
            cores.len(),
            packages.len(),
            self.nodes.len()
        );
        for node in &self.nodes {
            let _ = writeln!(out, "  node {}: CPUs {}", node.id, format_list(&node.cpus));
        }
        let smt: Vec<String> = cores
            .iter()
            .filter(|c| c.len() > 1)
            .map(|c| format_list(c))
            .collect();
        let _ = writeln!(out, "SMT siblings: {}", join_or(&smt, "  ", "none"));
        if let Some(cpu) = self.cpus.first() {
            let caches: Vec<String> = cpu
                .caches
                .iter()
                .map(|c| {
                    format!(
                        "L{} {} {} KiB shared by {}",
                        c.level,
                        c.kind,
                        c.size_kb,
                        format_list(&c.shared_with)
                    )
                })
                .collect();
            let _ = writeln!(out, "caches (CPU {}): {}", cpu.id, caches.join("; "));
        }
    }

    /// Isolation, NICs, interrupts and frequency governors.
    fn report_kernel(&self, out: &mut String) {
        let _ = writeln!(out, "isolcpus: {}", or_none(&self.isolated));
        let _ = writeln!(out, "nohz_full: {}", or_none(&self.nohz_full));
        let nics: Vec<String> = self
            .nics
            .iter()
            .map(|n| match n.node {
                Some(node) => format!("{} (node {node})", n.name),
                None => format!("{} (node unknown)", n.name),
            })
            .collect();
        let _ = writeln!(out, "NICs: {}", join_or(&nics, ", ", "none with a device"));
        let irqs: Vec<String> = self
            .irqs_per_cpu
            .iter()
            .map(|(c, n)| format!("{c}:{n}"))
            .collect();
        let _ = writeln!(out, "IRQs per CPU: {}", join_or(&irqs, " ", "unknown"));
        let governors: BTreeSet<&str> = self
            .cpus
            .iter()
            .filter_map(|c| c.governor.as_deref())
            .collect();
        let governors: Vec<&str> = governors.into_iter().collect();
        let _ = writeln!(
            out,
            "CPU frequency governor: {}",
            join_or(&governors, ", ", "not exposed")
        );
    }

    /// Huge pages and the locked-memory limit.
    fn report_memory(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "transparent huge pages: {}",
            self.thp.as_deref().unwrap_or("unknown")
        );
        let _ = writeln!(
            out,
            "2 MiB huge pages reserved: {}",
            self.hugepages_2m
                .map_or("unknown".into(), |n| n.to_string())
        );
        let _ = writeln!(
            out,
            "memlock limit: {}",
            match self.memlock {
                Some(MemLock::Unlimited) => "unlimited".to_string(),
                Some(MemLock::Bytes(b)) => format!("{} KiB", b / 1024),
                None => "unknown".into(),
            }
        );
    }
}

/// `parts` joined by `separator`, or `empty` when there are none.
fn join_or<S: AsRef<str>>(parts: &[S], separator: &str, empty: &str) -> String {
    if parts.is_empty() {
        return empty.to_string();
    }
    parts
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<&str>>()
        .join(separator)
}

/// `0-3,8` style.
pub(crate) fn format_list(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

fn or_none(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        "none".into()
    } else {
        format_list(cpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_command_lines_parse() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(
            cmdline_cpus(
                "quiet isolcpus=domain,managed_irq,2-5,7 nohz_full=2-5",
                "isolcpus"
            ),
            vec![2, 3, 4, 5, 7]
        );
        assert_eq!(format_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(parse_size_kb("32K"), Some(32));
        assert_eq!(parse_size_kb("2M"), Some(2048));
    }

    #[test]
    fn huge_page_mode_and_memlock_limit_parse() {
        assert_eq!(
            parse_thp("always [madvise] never\n").as_deref(),
            Some("madvise")
        );
        assert_eq!(parse_thp("always madvise never"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max locked memory         8388608              8388608              bytes\n";
        assert_eq!(parse_memlock(limits), Some(MemLock::Bytes(8 << 20)));
        assert_eq!(
            parse_memlock(
                "Max locked memory         unlimited            unlimited            bytes"
            ),
            Some(MemLock::Unlimited)
        );
        assert_eq!(parse_memlock("Max open files  1024  1024  files"), None);
        assert_eq!(parse_memlock("Max locked memory  lots  lots  bytes"), None);
    }
}
