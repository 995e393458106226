//! Who am I, and what may I do: the one place in runner that asks whether it runs as root, and
//! what a run without root must do differently.
//!
//! `runner run`, `rm` and `commit` started by a user (euid != 0) run again inside a user
//! namespace of the user's own ([`enter`]: layer-tool's [`layer_tool::userns`], which both tools
//! share; the caller is root there and its /etc/subuid range the other ids, through
//! `newuidmap`/`newgidmap`), with `UNIONFS_STORE` set to the user's store so that the inner
//! runner, root in its namespace, does not pick root's. Inside ([`inside`]) the runner is the
//! ordinary one: it mounts the union itself (FUSE may be mounted in a mount namespace its user
//! namespace owns) and clones the container into new pid, uts, ipc, (net) namespaces owned by
//! it. What it cannot do, it asks here: a cgroup only in a subtree delegated to the user
//! ([`crate::cgroup::delegated`], which names the limits not applied), devices bound from the
//! host instead of made, devpts without the tty group when gid 5 is not mapped
//! ([`adapt_mounts`]), `setgroups` denied under a single mapping. Its runtime state goes to the
//! user's runtime directory, which [`enter`] chooses ([`crate::runtime_dir`]).
//!
//! Nothing here gains privilege: the maps are the kernel's and the setuid helpers' to check,
//! and every capability the inner runner has is confined to namespaces the user owns.

use anyhow::{bail, Result};

/// True when running as root (of whatever user namespace).
pub fn is_root() -> bool {
    layer_tool::userns::is_root()
}

/// True in the inner runner of a rootless run: root of a user namespace the user owns (never
/// root of the initial one, whatever the environment says).
pub fn inside() -> bool {
    layer_tool::userns::inside()
}

/// `--rootless` of the OCI interface (runc's): `true`, `false` or `auto` (the default).
static OCI_ROOTLESS: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();

/// Records the OCI interface's `--rootless VALUE`.
pub fn set_oci_rootless(value: &str) -> Result<()> {
    let v = match value {
        "true" => Some(true),
        "false" => Some(false),
        "auto" => None,
        other => bail!("--rootless {other:?}: use true, false or auto"),
    };
    let _ = OCI_ROOTLESS.set(v);
    Ok(())
}

/// Whether the OCI interface runs rootless, as runc decides it: `--rootless true|false`, else
/// (auto) when this is root of a user namespace other than the initial one (rootless podman
/// runs its runtime so). Then device nodes are bound from the host and a cgroup that cannot be
/// written is done without (with a warning naming the unapplied limits).
pub fn oci_rootless() -> bool {
    match OCI_ROOTLESS.get().copied().flatten() {
        Some(v) => v,
        None => is_root() && !layer_tool::userns::initial_root(),
    }
}

/// The OCI interface's default state directory when rootless: `$XDG_RUNTIME_DIR/runner`, as
/// runc uses `$XDG_RUNTIME_DIR/runc` (rootless podman passes no `--root`). `None` as root.
pub fn oci_state_root() -> Option<std::path::PathBuf> {
    if !oci_rootless() {
        return None;
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|d| d.is_absolute())
        .map(|d| d.join("runner"))
}

/// A user: run this command again in a user namespace of the user's own and return its exit
/// code; as root, `None` (go on as usual).
pub fn enter() -> Result<Option<i32>> {
    if is_root() {
        return Ok(None);
    }
    let store = layer_tool::rootless::store_root(&layer_tool::rootless::Env::current())?;
    if !std::path::Path::new("/dev/fuse").exists() {
        bail!("no /dev/fuse: load the fuse module (modprobe fuse); the container's root is a FUSE mount");
    }
    // Chosen here, where owners are the host's (inside, the user's files are root's).
    let runtime = crate::runtime_dir::choose(&crate::runtime_dir::Env::current())?;
    layer_tool::userns::enter(&[
        ("UNIONFS_STORE", store.into_os_string()),
        (crate::runtime_dir::ENV, runtime.into_os_string()),
    ])
}

/// True when this user namespace forbids `setgroups` (`/proc/self/setgroups` is `deny`).
pub fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

/// Whether `id` is mapped in this process's user namespace, from `/proc/self/{uid,gid}_map`'s
/// text.
pub fn id_mapped(map: &str, id: u32) -> bool {
    map.lines().any(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        matches!(f[..], [inside, _, count] if (inside..inside + count).contains(&u64::from(id)))
    })
}

/// What a rootless run's mounts cannot have: devpts' `gid=5` (the tty group) when gid 5 is not
/// mapped (a user without subordinate ids); the kernel refuses it (EINVAL). The ptys are then
/// the container root's group, as rootless podman does.
pub fn adapt_mounts(ops: &mut [crate::rootfs::Op]) {
    let gid_map = std::fs::read_to_string("/proc/self/gid_map").unwrap_or_default();
    if id_mapped(&gid_map, 5) {
        return;
    }
    for op in ops {
        if let crate::rootfs::Op::Mount {
            fstype: Some(t),
            data: Some(d),
            ..
        } = op
        {
            if t == "devpts" {
                *d = d
                    .split(',')
                    .filter(|o| *o != "gid=5")
                    .collect::<Vec<_>>()
                    .join(",");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ids() {
        let single = "         0       1002          1\n";
        assert!(id_mapped(single, 0));
        assert!(!id_mapped(single, 5));
        let range = "0 1002 1\n1 165536 65536\n";
        assert!(id_mapped(range, 5));
        assert!(id_mapped(range, 65536));
        assert!(!id_mapped(range, 65537));
    }
}
