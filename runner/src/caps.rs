//! Capabilities: the container keeps docker's default set and nothing more.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};

use crate::sys;

/// Docker's default capabilities (moby `oci/caps/defaults.go`), by number.
pub const DEFAULT_CAPS: [(&str, u32); 14] = [
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_RAW", 13),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_MKNOD", 27),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_SETFCAP", 31),
];

/// The default set as a bit mask.
pub fn default_mask() -> u64 {
    DEFAULT_CAPS.iter().fold(0, |m, (_, n)| m | (1u64 << n))
}

/// The capabilities (up to `last_cap`) to drop from the bounding set.
pub fn to_drop(keep: u64, last_cap: u32) -> Vec<u32> {
    (0..=last_cap.min(63))
        .filter(|c| keep & (1u64 << c) == 0)
        .collect()
}

/// Step 1, while still root with every capability: shrink the bounding set to `keep` and clear
/// the ambient set. Needs CAP_SETPCAP, so it runs before the uid changes.
pub fn drop_bounding(keep: u64) -> Result<()> {
    for cap in to_drop(keep, sys::last_cap()) {
        match sys::capbset_drop(cap) {
            Ok(()) => {}
            // A cap number this kernel does not know is not in the set anyway.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e).with_context(|| format!("prctl(PR_CAPBSET_DROP, {cap})")),
        }
    }
    sys::clear_ambient_caps().context("prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
}

/// Every capability the kernel headers name, by number (capability(7)).
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability named as OCI bundles name them (`CAP_SYS_ADMIN`).
pub fn number(name: &str) -> Option<u32> {
    ALL_CAPS.iter().position(|c| *c == name).map(|n| n as u32)
}

/// The five capability sets of a process, as bit masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl CapSets {
    /// docker's: the default set (`keep`) bounds every user; uid 0 has it effective and permitted
    /// (inheritable empty, as docker since CVE-2022-24769); other users start with none.
    pub fn docker_default(uid: u32, keep: u64) -> CapSets {
        let own = if uid == 0 { keep } else { 0 };
        CapSets {
            bounding: keep,
            effective: own,
            permitted: own,
            inheritable: 0,
            ambient: 0,
        }
    }
}

/// `CAP_SYS_ADMIN` as a bit: what installing a seccomp filter without no_new_privs needs.
pub const CAP_SYS_ADMIN_BIT: u64 = 1 << 21;

/// The capabilities this kernel knows (a bundle may name newer ones).
pub fn known_mask() -> u64 {
    match sys::last_cap() {
        n if n >= 63 => u64::MAX,
        n => (1u64 << (n + 1)) - 1,
    }
}

/// The capabilities this runtime can grant: those the kernel knows and that are in its own
/// bounding set (a runtime inside a container or a sandbox may lack some); all known ones when
/// `/proc/self/status` cannot be read.
pub fn grantable_mask() -> u64 {
    let own = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    known_mask() & own
}

impl CapSets {
    /// The ambient capabilities the kernel lets a process raise: those that are also
    /// permitted and inheritable (capabilities(7), PR_CAP_AMBIENT_RAISE).
    pub fn raisable_ambient(&self) -> u64 {
        self.ambient & self.permitted & self.inheritable
    }
}

/// Step 2, after setuid (with keep-caps for other uids): set effective, permitted and
/// inheritable exactly, plus `held` in effective and permitted (taken away later by
/// [`drop_held`]), then raise the ambient ones. As the runtime-spec asks, what cannot be granted
/// is skipped, not fatal: capabilities this kernel does not know, and ambient ones that are not
/// both permitted and inheritable (the bundle check warns about those), as runc does.
pub fn set_process_caps(sets: &CapSets, held: u64) -> Result<()> {
    let known = known_mask();
    sys::capset(
        (sets.effective | held) & known,
        (sets.permitted | held) & known,
        sets.inheritable & known,
    )
    .context("capset")?;
    for cap in 0..64u32 {
        if sets.raisable_ambient() & known & (1u64 << cap) == 0 {
            continue;
        }
        if let Err(e) = sys::raise_ambient_cap(cap) {
            let name = ALL_CAPS.get(cap as usize).unwrap_or(&"?");
            if e.raw_os_error() == Some(libc::EPERM) {
                // SECBIT_NO_CAP_AMBIENT_RAISE, for one: not ours to overrule.
                tracing::warn!("ambient capability {name} not granted: {e}");
                continue;
            }
            return Err(e).with_context(|| format!("prctl(PR_CAP_AMBIENT_RAISE, {name})"));
        }
    }
    Ok(())
}

/// Step 3: give up what [`set_process_caps`] held beyond `sets` (only a drop: it needs no
/// privilege and cannot be refused). The ambient set keeps what is still permitted.
pub fn drop_held(sets: &CapSets) -> Result<()> {
    let known = known_mask();
    sys::capset(
        sets.effective & known,
        sets.permitted & known,
        sets.inheritable & known,
    )
    .context("capset (dropping the capabilities held for the seccomp filter)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambient_needs_permitted_and_inheritable() {
        let sets = CapSets {
            bounding: 0b111,
            effective: 0b011,
            permitted: 0b011,
            inheritable: 0b001,
            ambient: 0b111,
        };
        assert_eq!(sets.raisable_ambient(), 0b001);
    }

    #[test]
    fn default_mask_and_drop_list() {
        let m = default_mask();
        assert_eq!(m.count_ones(), 14);
        assert!(m & (1 << 21) == 0, "CAP_SYS_ADMIN is not kept");
        let drop = to_drop(m, 40);
        assert!(drop.contains(&21) && drop.contains(&12) && drop.contains(&40));
        assert!(!drop.contains(&0) && !drop.contains(&31));
        assert_eq!(drop.len(), 41 - 14);
    }
}
