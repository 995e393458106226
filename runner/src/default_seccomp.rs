//! The seccomp filter of `runner run`: what docker's default profile refuses a container with
//! docker's default capabilities, written as a deny list (everything else is allowed):
//! new namespaces (`unshare`, `setns`, `clone` with a `CLONE_NEW*` flag; `clone3`, whose flags
//! a filter cannot read, answers ENOSYS so that libc falls back to `clone`, as under docker),
//! mounting, keyrings, BPF and perf, kernel modules and kexec, clock and swap changes,
//! `open_by_handle_at`, `userfaultfd`, io_uring, and the obsolete calls docker leaves out.
//! Compiled by [`crate::oci::seccomp`] like a bundle's `linux.seccomp`.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use serde_json::json;

use crate::oci::seccomp::{self, Filter};

/// Calls refused with EPERM.
pub const DENIED: [&str; 53] = [
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "open_by_handle_at",
    "userfaultfd",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "lookup_dcookie",
    "iopl",
    "ioperm",
    "uselib",
    "nfsservctl",
    "vm86",
    "vm86old",
    "ustat",
    "sysfs",
    "_sysctl",
    "syslog",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "fanotify_init",
];

/// The `CLONE_NEW*` flags `clone` may not carry.
const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The profile, in the OCI form.
pub fn profile() -> oci_spec::runtime::LinuxSeccomp {
    let mut syscalls = vec![
        json!({"names": DENIED.as_slice(), "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}),
    ];
    for flag in NAMESPACE_FLAGS {
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        }));
    }
    serde_json::from_value(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": syscalls,
    }))
    .expect("the default seccomp profile is valid OCI")
}

/// The compiled filter.
pub fn filter() -> Result<Filter> {
    seccomp::compile(&profile()).context("compiling the default seccomp profile")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_compiles() {
        filter().unwrap();
        let p = profile();
        assert_eq!(
            p.syscalls().as_ref().unwrap().len(),
            2 + NAMESPACE_FLAGS.len()
        );
    }
}
