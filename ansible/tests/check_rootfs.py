#!/usr/bin/env python3
"""Assertions on a root filesystem the fulmen role provisioned (over chroot).

Usage: check_rootfs.py ROOTFS SHA256 VERSION BATCHER_KEY LOG...
"""
import hashlib
import json
import os
import stat
import subprocess
import sys
import tomllib

root, sha256, version, key, *logs = sys.argv[1:]
failures = []


def check(ok, what):
    print(("ok:   " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)


def path(p):
    return os.path.join(root, p.lstrip("/"))


def table(name):
    rows = {}
    with open(path(f"/etc/{name}")) as f:
        for line in f:
            fields = line.rstrip("\n").split(":")
            rows[fields[0]] = fields
    return rows


users, groups = table("passwd"), table("group")
uid = {int(v[2]): k for k, v in users.items()}
gid = {int(v[2]): k for k, v in groups.items()}


def owned(p, user, group, mode):
    st = os.lstat(path(p))
    got = (uid.get(st.st_uid), gid.get(st.st_gid), oct(stat.S_IMODE(st.st_mode)))
    check(got == (user, group, oct(mode)), f"{p} is {user}:{group} {oct(mode)} (got {got})")


def text(p):
    with open(path(p)) as f:
        return f.read()


def chroot(*argv):
    return subprocess.run(["chroot", root, *argv], capture_output=True, text=True)


# The user: a system account without a shell.
fulmen = users.get("fulmen")
check(fulmen is not None and int(fulmen[2]) < 1000, "system user fulmen")
check(fulmen is not None and fulmen[6] == "/usr/sbin/nologin", "fulmen has no login shell")
check("fulmen" in groups, "group fulmen")

# Directories and files, owners and modes.
owned("/var/lib/fulmen", "fulmen", "fulmen", 0o750)
owned("/var/log/fulmen", "root", "fulmen", 0o750)
owned("/etc/fulmen", "root", "fulmen", 0o750)
owned("/etc/fulmen/node.toml", "root", "fulmen", 0o640)
owned("/etc/fulmen/batcher.key", "fulmen", "fulmen", 0o600)
check(text("/etc/fulmen/batcher.key").strip() == key, "batcher.key holds the vault's key")
release = f"/opt/fulmen/releases/{version}-{sha256[:12]}/fulmen"
owned(release, "root", "root", 0o755)
with open(path(release), "rb") as f:
    check(hashlib.sha256(f.read()).hexdigest() == sha256, "the installed binary has the checksum")
check(os.readlink(path("/usr/local/bin/fulmen")) == release, "/usr/local/bin/fulmen links the release")

# node.toml: the variables, rendered as TOML the node accepts.
config = tomllib.loads(text("/etc/fulmen/node.toml"))
check(config["rpc_addr"] == "127.0.0.1:18545", "rpc_addr")
check(config["metrics_addr"] == "127.0.0.1:19001", "metrics_addr on the management address")
check(config["datadir"] == "/var/lib/fulmen", "datadir")
check(config["cores"] == {"net": [0, 1], "seq": 1, "exec": [0], "storage": [1], "strict": False},
      f"[cores] {config['cores']}")
check(config["da"] == {"batcher_key": "/etc/fulmen/batcher.key"}, f"[da] {config['da']}")
check(config["storage"]["checkpoint_blocks"] == 60 and config["rpc"]["batch_max"] == 500,
      "fulmen_config merged")
out = chroot(release, "tune", "--check", "/etc/fulmen/node.toml")
check(out.returncode == 0, f"fulmen tune --check in the rootfs: {out.stdout.strip()} {out.stderr.strip()}")

# The unit.
unit = text("/etc/systemd/system/fulmen.service")
for line in [
    f"ExecStart={release} run --config /etc/fulmen/node.toml --dev",
    "User=fulmen", "Group=fulmen", "CPUAffinity=0 1", "LimitMEMLOCK=infinity",
    "LimitNOFILE=1048576", "Restart=on-failure", "KillSignal=SIGTERM", "TimeoutStopSec=60",
    "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/fulmen\n",
    "RequiresMountsFor=/var/lib/fulmen",
    "PrivateTmp=yes", "ProtectHome=yes", "CapabilityBoundingSet=\n", 'Environment="RUST_LOG=info"',
]:
    check(line in unit, f"unit has {line.strip()}")
check(os.path.islink(path("/etc/systemd/system/multi-user.target.wants/fulmen.service")),
      "fulmen.service enabled")
check(os.path.islink(path("/etc/systemd/system/multi-user.target.wants/fulmen-irq-affinity.service")),
      "fulmen-irq-affinity.service enabled")
for unit_file in ["fulmen.service", "fulmen-irq-affinity.service"]:
    out = chroot("systemd-analyze", "verify", f"/etc/systemd/system/{unit_file}")
    check(out.returncode == 0, f"systemd-analyze verify {unit_file}: {out.stderr.strip() or 'clean'}")

# Host tuning.
sysctl = text("/etc/sysctl.d/90-fulmen.conf")
for line in ["net.core.somaxconn = 65535", "net.core.rmem_max = 67108864", "vm.swappiness = 1",
             "vm.max_map_count = 1048576", "fs.nr_open = 2097152"]:
    check(line in sysctl, f"sysctl {line}")
check("nr_hugepages" not in sysctl, "vm.nr_hugepages left alone (fulmen_huge_pages_2m = 0)")
tmpfiles = text("/etc/tmpfiles.d/fulmen.conf")
check("w /sys/kernel/mm/transparent_hugepage/enabled - - - - madvise" in tmpfiles, "THP mode")
check("scaling_governor - - - - performance" in tmpfiles, "governor")
# 2 CPUs: seq and net would be every CPU, so only seq's is isolated.
grub = text("/etc/default/grub.d/90-fulmen.cfg")
check('GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT isolcpus=1 nohz_full=1 rcu_nocbs=1"'
      in grub, "kernel command line in the GRUB drop-in")
irq = text("/etc/systemd/system/fulmen-irq-affinity.service")
check("ExecStart=/usr/local/lib/fulmen-irq-affinity 0" in irq and "Before=fulmen.service" in irq,
      "IRQs steered to CPU 0, before the node starts")
owned("/usr/local/lib/fulmen-irq-affinity", "root", "root", 0o755)

# Monitoring.
scrape = text("/etc/prometheus/scrape.d/fulmen.yml")
check('targets: ["127.0.0.1:19001"]' in scrape and "job_name: fulmen-rootfs" in scrape, "Prometheus scrape config")
with open(path("/var/lib/grafana/dashboards/fulmen/fulmen.json")) as f:
    check(len(json.load(f)["panels"]) >= 10, "Grafana dashboard")
check("path: /var/lib/grafana/dashboards/fulmen" in text("/etc/grafana/provisioning/dashboards/fulmen.yml"),
      "Grafana provider")

# The key is never printed.
for log in logs:
    with open(log) as f:
        check(key[2:] not in f.read(), f"{os.path.basename(log)} does not show the batcher key")

if failures:
    sys.exit(f"{len(failures)} check(s) failed")
print("ok: the provisioned rootfs holds what the role promises")
