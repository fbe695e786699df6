//! `tune` on three machines: this 2-core VM (a captured tree), a 16-thread
//! SMT desktop and a 2-socket 128-thread server with its NIC on socket 1
//! (trees written here, file by file as the kernel lays them out).

use std::path::{Path, PathBuf};

use fulmen_tuning::{CoreMap, Machine, MemLock, check, propose};

/// A /sys + /proc tree under a temporary directory, removed on drop.
struct Tree(PathBuf);

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Tree {
    fn write(&self, path: &str, text: &str) {
        let path = self.0.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// `packages` sockets, each a NUMA node of `cores` physical cores with
    /// `threads` threads; Linux numbering: first threads of every core,
    /// then the second threads (CPU c and c + cores*packages are siblings).
    fn machine(name: &str, packages: usize, cores: usize, threads: usize, cmdline: &str) -> Self {
        let tree =
            Tree(std::env::temp_dir().join(format!("fulmen-tune-{name}-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&tree.0);
        let physical = packages * cores;
        let total = physical * threads;
        tree.write(
            "sys/devices/system/cpu/online",
            &format!("0-{}\n", total - 1),
        );
        for cpu in 0..total {
            let core = cpu % physical;
            let package = core / cores;
            let siblings: Vec<String> = (0..threads)
                .map(|t| (core + t * physical).to_string())
                .collect();
            let base = format!("sys/devices/system/cpu/cpu{cpu}");
            tree.write(
                &format!("{base}/topology/core_id"),
                &format!("{}\n", core % cores),
            );
            tree.write(
                &format!("{base}/topology/physical_package_id"),
                &format!("{package}\n"),
            );
            tree.write(
                &format!("{base}/topology/thread_siblings_list"),
                &format!("{}\n", siblings.join(",")),
            );
            tree.write(&format!("{base}/cpufreq/scaling_governor"), "performance\n");
            for (index, level, kind, size, shared) in [
                (0, 1, "Data", "48K", siblings.join(",")),
                (1, 1, "Instruction", "32K", siblings.join(",")),
                (2, 2, "Unified", "2048K", siblings.join(",")),
                (
                    3,
                    3,
                    "Unified",
                    "32768K",
                    format!("{}-{}", package * cores, package * cores + cores - 1),
                ),
            ] {
                let dir = format!("{base}/cache/index{index}");
                tree.write(&format!("{dir}/level"), &format!("{level}\n"));
                tree.write(&format!("{dir}/type"), &format!("{kind}\n"));
                tree.write(&format!("{dir}/size"), &format!("{size}\n"));
                tree.write(&format!("{dir}/shared_cpu_list"), &format!("{shared}\n"));
            }
        }
        for package in 0..packages {
            let cpus: Vec<String> = (0..threads)
                .map(|t| {
                    let first = package * cores + t * physical;
                    format!("{}-{}", first, first + cores - 1)
                })
                .collect();
            tree.write(
                &format!("sys/devices/system/node/node{package}/cpulist"),
                &format!("{}\n", cpus.join(",")),
            );
        }
        tree.write("proc/cmdline", &format!("{cmdline}\n"));
        tree.write(
            "sys/kernel/mm/transparent_hugepage/enabled",
            "always [madvise] never\n",
        );
        tree.write(
            "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            "0\n",
        );
        tree.write(
            "proc/self/limits",
            "Max locked memory         unlimited            unlimited            bytes\n",
        );
        tree
    }

    fn nic(self, name: &str, node: i64) -> Self {
        self.write(
            &format!("sys/class/net/{name}/device/numa_node"),
            &format!("{node}\n"),
        );
        self
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn the_2_core_vm_gets_the_default_map_and_its_memlock_limit_is_read() {
    let machine = Machine::read(&fixture("ci-2core"));
    assert_eq!(machine.cpus.len(), 2);
    assert_eq!(machine.physical_cores(), vec![vec![0], vec![1]]);
    assert_eq!(machine.memlock, Some(MemLock::Bytes(8 * 1024 * 1024)));
    assert_eq!(machine.thp.as_deref(), Some("madvise"));
    let (map, why) = propose(&machine);
    assert_eq!(
        map,
        CoreMap {
            net: vec![0, 1],
            seq: 1,
            exec: vec![0],
            storage: vec![1],
            da: None
        }
    );
    assert!(!why.is_empty());
    let ok = check(&machine, &map, false);
    assert!(ok.errors.is_empty(), "{ok:?}");
    // seq shares CPU 1 with net and storage: allowed, but strict refuses it.
    assert!(
        ok.warnings
            .iter()
            .any(|w| w.contains("seq shares CPU 1 with net, storage"))
    );
    let strict = check(&machine, &map, true);
    assert!(
        strict
            .errors
            .iter()
            .any(|e| e.contains("strict: seq shares CPU 1")),
        "{strict:?}"
    );
    // A CPU that is not there.
    let bad = CoreMap {
        net: vec![0, 2],
        ..map.clone()
    };
    assert!(
        check(&machine, &bad, false)
            .errors
            .iter()
            .any(|e| e.contains("CPU 2 is not online (online: 0-1)"))
    );
    // Too little locked memory for eight executors... this VM has two CPUs,
    // so shrink the limit instead.
    let mut tight = machine.clone();
    tight.memlock = Some(MemLock::Bytes(256 * 1024));
    let errors = check(&tight, &map, false).errors;
    assert!(
        errors.iter().any(|e| e
            .contains("locked-memory limit is 256 KiB, the 2 executors need 512 KiB")
            && e.contains("ulimit -l")),
        "{errors:?}"
    );
}

#[test]
fn a_16_thread_smt_desktop_keeps_seq_alone_on_its_physical_core() {
    let tree = Tree::machine("desktop16", 1, 8, 2, "quiet splash");
    let machine = Machine::read(&tree.0);
    assert_eq!(machine.cpus.len(), 16);
    assert_eq!(machine.physical_cores().len(), 8);
    assert_eq!(machine.cpu(3).unwrap().siblings, vec![3, 11]);
    assert!(machine.report().contains("SMT siblings: 0,8  1,9"));
    let (map, why) = propose(&machine);
    assert_eq!(map.seq, 7);
    assert_eq!(map.storage, vec![6]);
    assert_eq!(map.exec, vec![5]);
    assert_eq!(map.da, Some(4));
    assert_eq!(map.net, vec![1, 2, 9, 10], "both threads of two cores");
    assert!(
        why.iter()
            .any(|w| w.contains("CPU(s) 15 (seq's SMT sibling) left idle")),
        "{why:?}"
    );
    let strict = check(&machine, &map, true);
    assert_eq!(strict.errors, Vec::<String>::new());
    // Putting net on seq's sibling is caught.
    let bad = CoreMap {
        net: vec![1, 15],
        ..map.clone()
    };
    let errors = check(&machine, &bad, true).errors;
    assert!(
        errors
            .iter()
            .any(|e| e.contains("CPU 15 (net) is an SMT sibling of the seq CPU 7")),
        "{errors:?}"
    );
    // DA on seq's core too.
    let bad = CoreMap {
        da: Some(15),
        ..map
    };
    assert!(
        check(&machine, &bad, true)
            .errors
            .iter()
            .any(|e| e.contains("da on CPU 15"))
    );
}

#[test]
fn a_2_socket_server_puts_the_hot_path_on_the_nic_socket_and_da_on_the_other() {
    let tree = Tree::machine(
        "server128",
        2,
        32,
        2,
        "isolcpus=managed_irq,60-63,124-127 nohz_full=60-63,124-127",
    )
    .nic("eth0", 1)
    .nic("eth1", 1);
    let machine = Machine::read(&tree.0);
    assert_eq!(machine.cpus.len(), 128);
    assert_eq!(machine.nodes.len(), 2);
    assert_eq!(machine.nic_node(), Some(1));
    assert_eq!(machine.cpu(40).unwrap().node, 1);
    assert_eq!(machine.cpu(70).unwrap().node, 0);
    assert_eq!(machine.cpu(100).unwrap().node, 1);
    assert_eq!(machine.isolated, vec![60, 61, 62, 63, 124, 125, 126, 127]);
    let (map, why) = propose(&machine);
    // seq on an isolated core of socket 1; its sibling idle.
    assert_eq!(map.seq, 63);
    assert!(machine.isolated.contains(&map.seq));
    for cpu in map.net.iter().chain(&map.storage).chain(&map.exec) {
        assert_eq!(
            machine.cpu(*cpu).unwrap().node,
            1,
            "CPU {cpu} off the NIC's socket"
        );
        assert_ne!(*cpu, 127, "seq's sibling is used");
    }
    assert_eq!(machine.cpu(map.da.unwrap()).unwrap().node, 0, "{why:?}");
    assert_eq!(map.net.len(), 4);
    let strict = check(&machine, &map, true);
    assert_eq!(strict.errors, Vec::<String>::new());
    assert_eq!(strict.warnings, Vec::<String>::new());
    // Net cores on the far socket and seq off isolcpus are reported.
    let far = CoreMap {
        net: vec![0, 1],
        seq: 40,
        ..map
    };
    let warnings = check(&machine, &far, true).warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("not on the NIC's NUMA node 1")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("seq CPU 40 is not in isolcpus")),
        "{warnings:?}"
    );
    let text = map_toml(&machine);
    assert!(text.starts_with("[cores]\nnet = ["), "{text}");
}

fn map_toml(machine: &Machine) -> String {
    propose(machine).0.to_toml()
}
