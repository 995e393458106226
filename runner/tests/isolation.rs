//! What a process inside a container can see and change of the host, checked from both sides:
//! each test runs hostile commands in a real container and, where it matters, looks at the host
//! afterwards. `containers.rs` already covers pid 1 and `ps`, the default hostname, `lo` only,
//! CapEff, `/proc/sys/vm/drop_caches`, `/proc/keys` and the absence of a few host mounts; this
//! file covers the rest of docker's default confinement. Needs root and FUSE (see common).
//!
//! Writes to kernel files are `: > FILE` (open for writing, write nothing), so a test that
//! finds a hole reports it without changing the host.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use common::{can_run, image, leftovers, Env};

macro_rules! require {
    () => {
        if !can_run(module_path!()) {
            return;
        }
    };
}

/// docker's default capability set (moby `oci/caps/defaults.go`): CHOWN, DAC_OVERRIDE, FSETID,
/// FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL,
/// AUDIT_WRITE.
const DOCKER_CAPS: &str = "00000000a80425fb";

/// A container started with `--name NAME … sh -c SCRIPT` whose script printed `ready` and then
/// waits on stdin. Dropping it kills and removes the container, so a failing assertion leaves
/// nothing behind.
struct Running<'a> {
    env: &'a Env,
    name: String,
    child: Option<Child>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl<'a> Running<'a> {
    fn start(env: &'a Env, name: &str, opts: &[&str], script: &str) -> Running<'a> {
        let image = image().to_str().unwrap();
        let mut args = vec!["run", "--name", name];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[image, "sh", "-c", script]);
        let mut child = env
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning runner");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut r = Running {
            env,
            name: name.to_string(),
            child: Some(child),
            stdout: Some(stdout),
        };
        let first = r.line();
        assert_eq!(first, "ready", "the container did not start");
        r
    }

    /// The next line the container prints.
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout
            .as_mut()
            .unwrap()
            .read_line(&mut l)
            .expect("reading the container's output");
        l.trim_end().to_string()
    }

    /// The container's state.json.
    fn state(&self) -> serde_json::Value {
        let id = self
            .env
            .container_ids()
            .pop()
            .expect("a container directory");
        let path = self.env.containers_dir().join(id).join("state.json");
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// Let the script go on (EOF on its stdin), read the rest of its output, wait for its end.
    fn finish(mut self) -> (i32, String) {
        let mut child = self.child.take().unwrap();
        drop(child.stdin.take());
        let mut rest = String::new();
        std::io::Read::read_to_string(self.stdout.as_mut().unwrap(), &mut rest).unwrap();
        let code = child.wait().unwrap().code().unwrap_or(-1);
        (code, rest)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A killed runner's container dies with it (parent-death signal); `rm` then takes
            // down what it left. Reaped first: `rm` waits for a runner it still sees.
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.env.runner(&["ps"]).stdout.contains(&self.name) {
            let _ = self.env.runner(&["rm", "--force", &self.name]);
        }
    }
}

/// Lines of `out` that start with `key`, without it.
fn values<'o>(out: &'o str, key: &str) -> Vec<&'o str> {
    out.lines().filter_map(|l| l.strip_prefix(key)).collect()
}

/// The one value of `key=` in `out`.
#[track_caller]
fn value<'o>(out: &'o str, key: &str) -> &'o str {
    let v = values(out, &format!("{key}="));
    assert_eq!(v.len(), 1, "{key}= once in: {out}");
    v[0]
}

/// A host process the container must not see or signal; killed on drop.
struct HostProcess(Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn host_processes_can_be_neither_seen_nor_signalled() {
    require!();
    let marker = format!("isolation-marker-{}", std::process::id());
    // `sleep` with a recognisable argv[0]: exec -a.
    let host = HostProcess(
        Command::new("bash")
            .args(["-c", &format!("exec -a {marker} sleep 60")])
            .spawn()
            .unwrap(),
    );
    let pid = host.0.id();
    // A pattern that does not match the script's own command line.
    let pattern = format!("isolation-marke[r]-{}", std::process::id());
    let env = Env::new();
    let script = format!(
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done | grep -c '{pattern}'; \
         kill -0 {pid} 2>/dev/null; echo kill0=$?; kill -9 {pid} 2>/dev/null; echo kill9=$?; \
         test -e /proc/{pid}; echo proc=$?; cat /proc/1/sched 2>/dev/null | head -1"
    );
    let out = env.sh(&["--rm"], &script);
    let o = out.ok();
    assert_eq!(
        o.lines().next(),
        Some("0"),
        "the host process is listed: {o}"
    );
    assert_eq!(value(o, "kill0"), "1", "{o}");
    assert_eq!(value(o, "kill9"), "1", "{o}");
    assert_eq!(value(o, "proc"), "1", "{o}");
    // Still alive on the host.
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains(&marker));
}

/// A tmpfs mounted for the length of a test; unmounted on drop.
struct HostMount(tempfile::TempDir);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn host_mounts_are_invisible_and_the_mount_table_is_the_containers_own() {
    require!();
    let dir = tempfile::Builder::new()
        .prefix("isolation-host-mount")
        .tempdir()
        .unwrap();
    nix::mount::mount(
        Some("isolation-secret"),
        dir.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let host_mount = HostMount(dir);
    fs::write(host_mount.0.path().join("secret"), "host only").unwrap();
    let host_path = host_mount.0.path().to_str().unwrap().to_string();
    let env = Env::new();
    let out = env.sh(
        &["--rm"],
        &format!(
            "cat /proc/self/mountinfo; echo ---; cat /proc/mounts; echo ---; \
             ls {host_path} 2>/dev/null; echo ls=$?; cat /proc/1/mountinfo | wc -l"
        ),
    );
    let o = out.ok();
    let mut parts = o.split("---\n");
    let mountinfo = parts.next().unwrap();
    let mounts = parts.next().unwrap();
    assert!(
        !o.contains("isolation-secret") && !o.contains(&host_path[..]),
        "the host's tmpfs shows in the container: {o}"
    );
    assert_eq!(value(o, "ls"), "1", "{o}");
    // Every mount the container has is one the runner made for it: the union root, /proc (and
    // its masks), /dev, /sys (and its masks). Nothing of the host's table is left.
    let points: BTreeSet<String> = mountinfo
        .lines()
        .map(|l| l.split_whitespace().nth(4).unwrap().to_string())
        .collect();
    for p in &points {
        let ours = p == "/"
            || ["/proc", "/dev", "/sys"]
                .iter()
                .any(|top| p == top || p.starts_with(&format!("{top}/")));
        assert!(
            ours,
            "mount point {p} is not the container's own: {mountinfo}"
        );
    }
    let root: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == Some("/"))
        .collect();
    assert_eq!(root.len(), 1, "{mountinfo}");
    assert!(root[0].contains(" - fuse.unionfs "), "{mountinfo}");
    // The host's own mount points (its cgroup hierarchies, /work, /tmp…) are all absent.
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for l in host.lines() {
        let p = l.split_whitespace().nth(4).unwrap();
        if p == "/" || ["/proc", "/dev", "/sys"].contains(&p) || p.starts_with("/dev/") {
            continue;
        }
        if p.starts_with("/sys/") || p.starts_with("/proc/") {
            // The container's own masks may sit at the same places (/proc/keys).
            continue;
        }
        assert!(!points.contains(p), "host mount {p} visible: {mountinfo}");
    }
    assert_eq!(mounts.lines().count(), points.len(), "{mounts}");
}

#[test]
fn hostname_changes_inside_never_reach_the_host() {
    require!();
    let before = nix::unistd::gethostname().unwrap();
    let env = Env::new();
    // The container's root cannot set it (no CAP_SYS_ADMIN, as in docker); the sysctl is
    // read-only; and where a new user namespace lets a process set the hostname of a UTS
    // namespace of its own, that one is not the host's either.
    let script = "hostname evil-1 2>/dev/null; echo set=$?; \
                  (: > /proc/sys/kernel/hostname) 2>/dev/null; echo sysctl=$?; \
                  (: > /proc/sys/kernel/domainname) 2>/dev/null; echo domain=$?; \
                  unshare -Uru sh -c 'hostname evil-2 && hostname' 2>/dev/null; echo userns=$?; \
                  hostname";
    let out = env.sh(&["--rm", "--hostname", "inside"], script);
    let o = out.ok();
    assert_eq!(value(o, "set"), "1", "sethostname is refused: {o}");
    assert_eq!(value(o, "sysctl"), "1", "{o}");
    assert_eq!(value(o, "domain"), "1", "{o}");
    assert_eq!(o.lines().last(), Some("inside"), "{o}");
    assert_eq!(nix::unistd::gethostname().unwrap(), before);
    // The same with --userns, where the container's root owns its namespaces.
    let out = env.sh(&["--rm", "--userns", "--hostname", "inside"], script);
    let o = out.ok();
    assert_eq!(value(o, "set"), "1", "{o}");
    assert_eq!(value(o, "sysctl"), "1", "{o}");
    assert_eq!(o.lines().last(), Some("inside"), "{o}");
    assert_eq!(nix::unistd::gethostname().unwrap(), before);
}

#[test]
fn host_interfaces_are_invisible_and_the_network_cannot_be_changed() {
    require!();
    let host_ifaces: Vec<String> = fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    let env = Env::new();
    let script = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; echo ---; \
                  ip link add isolation0 type dummy 2>/dev/null; echo add=$?; \
                  ip addr add 10.254.254.254/32 dev lo 2>/dev/null; echo addr=$?; \
                  ip link set lo down 2>/dev/null; echo down=$?; \
                  (: > /proc/sys/net/ipv4/ip_forward) 2>/dev/null; echo forward=$?; \
                  ip -o addr show lo | grep -c 10.254.254.254; true";
    let out = env.sh(&["--rm"], script);
    let o = out.ok();
    let listed: Vec<&str> = o.split("---").next().unwrap().lines().collect();
    assert_eq!(listed, ["lo"], "/proc/net/dev lists only lo: {o}");
    for name in &host_ifaces {
        assert!(!o.contains(name.as_str()), "host interface {name}: {o}");
    }
    // No CAP_NET_ADMIN (docker's default): links, addresses and sysctls stay as they are.
    for k in ["add", "addr", "down", "forward"] {
        assert_ne!(value(o, k), "0", "{k} succeeded: {o}");
    }
    assert_eq!(o.lines().last(), Some("0"), "{o}");
    assert!(!Path::new("/sys/class/net/isolation0").exists());
}

#[test]
fn cgroup_limits_cannot_be_changed_and_the_cgroup_cannot_be_left() {
    require!();
    let env = Env::new();
    // Every way a root process of the container could reach a cgroup file: the /sys/fs/cgroup it
    // has, a cgroupfs of its own (v1 and v2), and the same from a new user namespace.
    let script = "echo ready; \
        ls -A /sys/fs/cgroup | wc -l; \
        for f in memory/memory.limit_in_bytes pids/pids.max pids/cgroup.procs cgroup.procs memory.max; do \
          (echo 1 > /sys/fs/cgroup/$f) 2>/dev/null && echo WROTE $f; done; \
        mkdir -p /tmp/cg; \
        mount -t cgroup -o pids none /tmp/cg 2>/dev/null; echo v1=$?; \
        mount -t cgroup2 none /tmp/cg 2>/dev/null; echo v2=$?; \
        unshare -Urm sh -c 'mount -t cgroup2 none /tmp/cg || mount -t cgroup -o pids none /tmp/cg' 2>/dev/null; echo userns=$?; \
        echo done; read x; cat /proc/self/cgroup";
    let mut c = Running::start(
        &env,
        "cg",
        &["--memory", "48m", "--pids-limit", "33"],
        script,
    );
    let mut lines = Vec::new();
    loop {
        let l = c.line();
        if l == "done" || l.is_empty() {
            break;
        }
        lines.push(l);
    }
    let o = lines.join("\n");
    assert_eq!(
        lines[0], "0",
        "the container's /sys/fs/cgroup is empty: {o}"
    );
    assert!(!o.contains("WROTE"), "{o}");
    for k in ["v1", "v2", "userns"] {
        assert_ne!(value(&o, k), "0", "{k} succeeded: {o}");
    }
    // From the host: the limits are as set, and the container's process is still in every group.
    let state = c.state();
    let pid = state["pid"].as_i64().unwrap().to_string();
    let dirs: Vec<std::path::PathBuf> = state["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().into())
        .collect();
    assert!(!dirs.is_empty());
    let mut checked = 0;
    for d in &dirs {
        let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid),
            "{pid} left {}: {procs}",
            d.display()
        );
        for (file, want) in [
            ("memory.limit_in_bytes", (48u64 << 20).to_string()),
            ("memory.max", (48u64 << 20).to_string()),
            ("pids.max", "33".to_string()),
        ] {
            if let Ok(v) = fs::read_to_string(d.join(file)) {
                assert_eq!(v.trim(), want, "{}/{file}", d.display());
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 2,
        "the memory and pids limits were found in {dirs:?}"
    );
    let id = state["id"].as_str().unwrap().to_string();
    let (code, rest) = c.finish();
    assert_eq!(code, 0, "{rest}");
    // Its own view names the groups the runner made.
    assert!(rest.contains(&format!("runner-{id}")), "{rest}");
    // (`finish` removed the container.)
    assert!(env.container_ids().is_empty());
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

/// docker's masked paths (moby `oci/defaults.go`), each checked where this kernel has it:
/// an empty file (bind of /dev/null) or an empty read-only directory.
const MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// docker's read-only paths, with a file below each to try to open for writing.
const READ_ONLY: [(&str, &str); 5] = [
    ("/proc/bus", "/x"),
    ("/proc/fs", "/x"),
    ("/proc/irq", "/default_smp_affinity"),
    ("/proc/sys", "/kernel/core_pattern"),
    ("/proc/sysrq-trigger", ""),
];

#[test]
fn proc_and_sys_paths_are_masked_or_read_only_as_docker_does() {
    require!();
    let env = Env::new();
    let mut script = String::new();
    for p in MASKED {
        script.push_str(&format!(
            "if [ -d {p} ]; then echo \"{p} dir $(ls -A {p} | wc -l)\"; \
             elif [ -e {p} ]; then echo \"{p} file $(head -c 65536 {p} 2>/dev/null | wc -c)\"; \
             else echo \"{p} absent\"; fi; \
             (: > {p}/x) 2>/dev/null && echo \"{p} CREATED\"; \
             [ -f {p} ] && (: > {p}) 2>/dev/null && [ ! -c {p} ] && echo \"{p} WRITABLE\"; "
        ));
    }
    for (p, below) in READ_ONLY {
        let target = format!("{p}{below}");
        script.push_str(&format!(
            "if [ -e {target} ]; then (: > {target}) 2>/tmp/err; echo \"{target} write=$? $(cat /tmp/err)\"; \
             else echo \"{target} absent\"; fi; "
        ));
    }
    let out = env.sh(&["--rm"], &script);
    let o = out.ok();
    let mut present = 0;
    for p in MASKED {
        let line = o
            .lines()
            .find(|l| l.starts_with(&format!("{p} ")))
            .unwrap_or_else(|| panic!("no line for {p}: {o}"));
        let host_has = Path::new(p).exists();
        if line.ends_with(" absent") {
            assert!(
                !host_has,
                "{p} exists on the host but not in the container: {o}"
            );
            continue;
        }
        present += 1;
        // An empty file, or an empty directory, whatever the host's has.
        assert!(
            line.ends_with(" dir 0") || line.ends_with(" file 0"),
            "{p} is not masked: {line}"
        );
    }
    assert!(!o.contains("CREATED") && !o.contains("WRITABLE"), "{o}");
    for (p, below) in READ_ONLY {
        let target = format!("{p}{below}");
        let line = o
            .lines()
            .find(|l| l.starts_with(&format!("{target} ")))
            .unwrap_or_else(|| panic!("no line for {target}: {o}"));
        if line.ends_with(" absent") {
            assert!(!Path::new(&target).exists(), "{target}: {o}");
            continue;
        }
        present += 1;
        assert!(
            line.contains("write=1") && line.contains("Read-only file system"),
            "{target} is writable: {line}"
        );
    }
    // This kernel has at least /proc/keys, /proc/timer_list and /proc/sys: the test checked
    // something real.
    assert!(present >= 3, "{o}");
}

#[test]
fn capability_sets_are_dockers_default_and_cannot_be_raised() {
    require!();
    let env = Env::new();
    let script = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; \
                  grep -E '^Cap(Prm|Eff|Bnd)' /proc/1/status | sed 's/^/pid1-/'";
    let out = env.sh(&["--rm"], script);
    let o = out.ok();
    for (k, want) in [
        ("CapInh:\t", "0000000000000000"),
        ("CapPrm:\t", DOCKER_CAPS),
        ("CapEff:\t", DOCKER_CAPS),
        ("CapBnd:\t", DOCKER_CAPS),
        ("CapAmb:\t", "0000000000000000"),
        ("pid1-CapBnd:\t", DOCKER_CAPS),
    ] {
        assert_eq!(values(o, k), [want], "{k} {o}");
    }
    // Another user: nothing effective or permitted, the same bounding set (as docker), and the
    // setuid root binary of the image cannot give anything back (no_new_privs).
    let out = env.sh(
        &["--rm", "-u", "1000:1000"],
        "chmod 4755 /bin/busybox 2>/dev/null; grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status; id -u",
    );
    let o = out.ok();
    assert_eq!(values(o, "CapPrm:\t"), ["0000000000000000"], "{o}");
    assert_eq!(values(o, "CapEff:\t"), ["0000000000000000"], "{o}");
    assert_eq!(values(o, "CapBnd:\t"), [DOCKER_CAPS], "{o}");
    assert_eq!(o.lines().last(), Some("1000"), "{o}");
}

#[test]
fn mounting_and_unmounting_inside_fail() {
    require!();
    let env = Env::new();
    // Each attempt, and whether a masked path is still masked afterwards.
    let script = "mkdir -p /mnt/t; \
        mount -t tmpfs none /mnt/t 2>/dev/null; echo tmpfs=$?; \
        mount --bind /etc /mnt/t 2>/dev/null; echo bind=$?; \
        mount -o remount,rw /sys 2>/dev/null; echo remount=$?; \
        mount -t proc proc /mnt/t 2>/dev/null; echo proc=$?; \
        umount /proc/keys 2>/dev/null; echo umount=$?; \
        umount -l /proc/sys 2>/dev/null; echo lazy=$?; \
        umount -l / 2>/dev/null; echo root=$?; \
        mkdir -p /old; pivot_root / /old 2>/dev/null; echo pivot=$?; \
        echo keys=$(wc -c < /proc/keys); \
        (: > /proc/sys/kernel/core_pattern) 2>/dev/null; echo sysctl=$?; \
        grep -c ' /mnt/t ' /proc/self/mountinfo; true";
    let out = env.sh(&["--rm"], script);
    let o = out.ok();
    for k in [
        "tmpfs", "bind", "remount", "proc", "umount", "lazy", "root", "pivot", "sysctl",
    ] {
        assert_ne!(value(o, k), "0", "{k} succeeded: {o}");
    }
    assert_eq!(value(o, "keys"), "0", "{o}");
    assert_eq!(o.lines().last(), Some("0"), "{o}");
}

#[test]
fn unshare_and_chroot_escapes_fail() {
    require!();
    let env = Env::new();
    let store = env.store.path().to_str().unwrap().to_string();
    // New namespaces need CAP_SYS_ADMIN, which docker does not grant. chroot is allowed
    // (CAP_SYS_CHROOT is docker's), but every way up from a chroot ends at the container's root:
    // after pivot_root the old root is unmounted, so the mount namespace has nothing above it.
    // `/proc/1/root` (the classic way out of a chroot) is the container's root too. The host's
    // store path is reachable from none of them.
    let script = format!(
        "for f in m n p i u; do unshare -$f true 2>/dev/null; echo ns$f=$?; done; \
         mkdir -p /jail; cp /bin/busybox /jail/busybox; echo jailed > /jail/mark; \
         chroot /jail /busybox sh -c 'cd /../../../..; /busybox cat mark' ; echo chroot=$?; \
         cd /../../..; ls etc/top-file; \
         ls /proc/1/root/etc/top-file; readlink /proc/1/root; readlink /proc/self/root; \
         ls {store} /proc/1/root{store} /proc/self/root{store} 2>/dev/null; echo host=$?"
    );
    let out = env.sh(&["--rm"], &script);
    let o = out.ok();
    for f in ["m", "n", "p", "i", "u"] {
        assert_ne!(value(o, &format!("ns{f}")), "0", "unshare -{f}: {o}");
    }
    assert_eq!(value(o, "chroot"), "0", "chroot itself is allowed: {o}");
    assert!(
        o.contains("jailed\n"),
        "`cd ..` stops at the chroot's root: {o}"
    );
    assert!(
        o.contains("etc/top-file\n/proc/1/root/etc/top-file\n/\n/\n"),
        "{o}"
    );
    assert_eq!(value(o, "host"), "1", "{o}");
}

/// docker's default seccomp profile refuses `unshare(CLONE_NEWUSER)` (and `clone` with namespace
/// flags) to a container without CAP_SYS_ADMIN: a new user namespace gives the process every
/// capability over namespaces it then creates, which is kernel attack surface (tmpfs, overlay and
/// other user-mountable filesystems, netfilter, …) that docker keeps closed.
#[test]
fn new_user_namespaces_are_refused_as_dockers_seccomp_profile_does() {
    require!();
    let env = Env::new();
    let out = env.sh(
        &["--rm"],
        "unshare -U true 2>/dev/null; echo userns=$?; unshare -Urm sh -c 'mount -t tmpfs none /tmp' 2>/dev/null; echo mount=$?",
    );
    let o = out.ok();
    assert_ne!(value(o, "userns"), "0", "{o}");
    assert_ne!(value(o, "mount"), "0", "{o}");
}

/// Even where a new user namespace is allowed (above), it gives nothing of the host: /proc and
/// cgroupfs cannot be mounted (the masks make /proc "too revealing"), the host's sysctls stay
/// read-only and the root is still the container's.
#[test]
fn a_new_user_namespace_inside_gains_nothing_of_the_host() {
    require!();
    let env = Env::new();
    let script = "unshare -Urmpf sh -c 'mkdir -p /tmp/p; mount -t proc proc /tmp/p 2>/dev/null; echo proc=$?; \
          mount -t sysfs sysfs /tmp/p 2>/dev/null; echo sysfs=$?; \
          mount -t cgroup2 none /tmp/p 2>/dev/null; echo cgroup=$?; \
          (: > /proc/sys/kernel/core_pattern) 2>/dev/null; echo sysctl=$?; \
          umount /proc/keys 2>/dev/null; echo unmask=$?; \
          ls /etc/top-file' 2>/dev/null; echo rc=$?";
    let out = env.sh(&["--rm"], script);
    let o = out.ok();
    if value(o, "rc") != "0" && !o.contains("proc=") {
        // unshare -U itself was refused (a seccomp filter): nothing more to check.
        return;
    }
    for k in ["proc", "sysfs", "cgroup", "sysctl", "unmask"] {
        assert_ne!(value(o, k), "0", "{k} succeeded in a user namespace: {o}");
    }
    assert!(o.contains("/etc/top-file"), "{o}");
}

/// docker's device cgroup lets a container make device nodes (CAP_MKNOD) but open only its
/// own few (null, zero, full, random, urandom, tty, console, ptmx, pts): never a host disk.
#[test]
fn host_block_devices_cannot_be_opened_even_with_mknod() {
    require!();
    // A loop device with a known secret stands for the host's disk.
    let img = tempfile::NamedTempFile::new().unwrap();
    let mut data = b"HOST-DISK-SECRET".to_vec();
    data.resize(1 << 20, 0);
    fs::write(img.path(), &data).unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(img.path())
        .output()
        .expect("losetup (util-linux)");
    assert!(out.status.success(), "{out:?}");
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(dev.clone());
    use std::os::unix::fs::MetadataExt;
    let rdev = fs::metadata(&dev).unwrap().rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let env = Env::new();
    let out = env.sh(
        &["--rm"],
        &format!("mknod /tmp/disk b {major} {minor}; head -c 16 /tmp/disk 2>/dev/null; true"),
    );
    let o = out.ok();
    assert!(
        !o.contains("HOST-DISK-SECRET"),
        "a host block device was read: {o}"
    );
}
