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

/// Step 2, after setuid: for uid 0 keep exactly `keep` as effective and permitted (inheritable
/// empty, as docker since CVE-2022-24769). For other uids setuid already emptied both sets.
pub fn set_process_caps(uid: u32, keep: u64) -> Result<()> {
    if uid != 0 {
        return Ok(());
    }
    sys::capset(keep, keep, 0).context("capset")
}

#[cfg(test)]
mod tests {
    use super::*;

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
