//! The OCI `linux.seccomp` section compiled into a seccomp BPF filter, and its installation.
//!
//! [`compile`] turns an `oci_spec::runtime::LinuxSeccomp` into a classic-BPF program for this
//! machine's architecture; [`install`] attaches it to the calling process with `seccomp(2)`. The
//! argument comparisons are compiled by `seccompiler` (Firecracker's pure-Rust BPF compiler); the
//! program around them is assembled here, because `seccompiler::SeccompFilter` knows one match
//! action per filter and the OCI section gives every rule its own.
//!
//! # Semantics (those of runc and crun with libseccomp 2.5, unless noted)
//!
//! * Actions: `SCMP_ACT_ALLOW`, `SCMP_ACT_ERRNO` (`errnoRet`, default EPERM; `defaultErrnoRet`
//!   for the default action), `SCMP_ACT_KILL` (= `KILL_THREAD`), `SCMP_ACT_KILL_THREAD`,
//!   `SCMP_ACT_KILL_PROCESS`, `SCMP_ACT_TRAP`, `SCMP_ACT_TRACE` (`errnoRet` is the value the
//!   tracer sees, default EPERM as in runc), `SCMP_ACT_LOG`. An `errnoRet` on any other action,
//!   or one above 0xffff (the 16 bits of `SECCOMP_RET_DATA`), is refused, as the runtime spec asks.
//! * `SCMP_ACT_NOTIFY`, `listenerPath` and `listenerMetadata` are refused: there is no seccomp
//!   agent. So is the `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` flag, which only concerns an agent.
//!   The flags `SECCOMP_FILTER_FLAG_LOG`, `SPEC_ALLOW` and `TSYNC` are passed to `seccomp(2)`.
//! * A rule whose action equals the default action is dropped (libseccomp refuses such rules and
//!   runc skips them; podman's profile has some). Per syscall, as libseccomp's rule database does:
//!   the first rule without `args` decides the syscall whatever its arguments, and every other
//!   rule for that syscall is ignored; otherwise the rules with `args` are tried in the order of
//!   the section (several rules are ORed, the first that matches gives its action) and the
//!   default action applies when none matches. Within a rule the `args` conditions are ANDed.
//!   (libseccomp orders overlapping argument rules of different actions in its own tree; here the
//!   first in the section wins.)
//! * `args`: `SCMP_CMP_NE/LT/LE/EQ/GE/GT` compare the whole 64-bit register with `value`;
//!   `SCMP_CMP_MASKED_EQ` is `(arg & value) == valueTwo`. A masked rule whose `valueTwo` has bits
//!   outside the mask can never match and is dropped (seccompiler would mask `valueTwo` too).
//! * Names: a name that this architecture does not have (`_llseek` on x86_64) is skipped, like
//!   libseccomp does; a name no architecture knows is skipped too and logged at debug level. The
//!   name → number tables are the `syscalls` crate's, generated from the kernel's own tables.
//! * Architectures: the filter is for the native architecture only (x86_64, aarch64 or riscv64),
//!   whatever `architectures` lists. It starts with an architecture check: a syscall made through
//!   another ABI of this machine (i386 `int 0x80` on x86_64, AArch32 on aarch64) carries another
//!   `AUDIT_ARCH_*` value and kills the process with SIGSYS (`SECCOMP_RET_KILL_PROCESS`), which is
//!   what `seccompiler` emits for an architecture mismatch. x32 syscalls carry the x86_64 audit
//!   value with bit 30 (`__X32_SYSCALL_BIT`) set in the number; `seccompiler` does not look at
//!   that bit, so the filter here checks it and kills the process too. No rule can be bypassed
//!   through another ABI; the price is that 32-bit programs die on their first syscall under a
//!   seccomp profile (runc filters their syscalls with the same rules when the profile lists x86
//!   and x32).
//! * What runc adds on top and this does not: the `-ENOSYS` stub for syscalls newer than the
//!   profile (runc's `patchbpf`); libseccomp's binary-tree dispatch (the filter here compares the
//!   syscall number linearly, a few hundred comparisons at most for podman's profile).
#![forbid(unsafe_code)]

use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompRule, TargetArch,
};

use crate::sys;

/// A compiled filter for this machine's architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    program: BpfProgram,
    /// `SECCOMP_FILTER_FLAG_*` bits for `seccomp(2)`.
    flags: libc::c_ulong,
}

impl Filter {
    /// The BPF instructions.
    pub fn program(&self) -> &[sock_filter] {
        &self.program
    }

    /// The `SECCOMP_FILTER_FLAG_*` bits `install` passes to `seccomp(2)`.
    pub fn flags(&self) -> libc::c_ulong {
        self.flags
    }
}

/// Compile the OCI seccomp section. Errors name the field and value that cannot be honoured.
pub fn compile(spec: &LinuxSeccomp) -> Result<Filter> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| anyhow!("linux.seccomp: no seccomp filter for this machine: {e}"))?;
    compile_for(spec, arch)
}

/// Install in the calling process (thread-sync with TSYNC where supported is not needed: the
/// container's process is single-threaded). Needs no_new_privs set or CAP_SYS_ADMIN.
///
/// Allocates nothing unless it fails, so it can run in a forked child.
pub fn install(filter: &Filter) -> Result<()> {
    sys::seccomp_set_mode_filter(&filter.program, filter.flags).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EACCES) {
            " (set no_new_privs first, or hold CAP_SYS_ADMIN)"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!(
            "seccomp(SECCOMP_SET_MODE_FILTER, flags {:#x}) with {} instructions{hint}",
            filter.flags,
            filter.program.len()
        ))
    })
}

/// The kernel's limit on the length of a classic-BPF program (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;

/// What the filter needs to know about the architecture it is for.
struct ArchInfo {
    /// `AUDIT_ARCH_*`, the `arch` field of `struct seccomp_data`.
    audit: u32,
    /// Its name in the OCI `architectures` list.
    oci: Arch,
    /// The other ABIs of the same machine, whose syscalls the architecture check kills.
    compat: &'static [Arch],
    /// x86_64 only: syscall numbers with `__X32_SYSCALL_BIT` are x32's.
    x32_bit: bool,
}

fn arch_info(arch: TargetArch) -> ArchInfo {
    // AUDIT_ARCH_* = EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE (linux/audit.h).
    match arch {
        TargetArch::x86_64 => ArchInfo {
            audit: 0xc000_003e,
            oci: Arch::ScmpArchX86_64,
            compat: &[Arch::ScmpArchX86, Arch::ScmpArchX32],
            x32_bit: true,
        },
        TargetArch::aarch64 => ArchInfo {
            audit: 0xc000_00b7,
            oci: Arch::ScmpArchAarch64,
            compat: &[Arch::ScmpArchArm],
            x32_bit: false,
        },
        TargetArch::riscv64 => ArchInfo {
            audit: 0xc000_00f3,
            oci: Arch::ScmpArchRiscv64,
            compat: &[],
            x32_bit: false,
        },
    }
}

/// `__X32_SYSCALL_BIT`.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The syscall's number on `arch`, if `arch` has it.
fn syscall_number(arch: TargetArch, name: &str) -> Option<u32> {
    let id = match arch {
        TargetArch::x86_64 => syscalls::x86_64::Sysno::from_str(name).ok()?.id(),
        TargetArch::aarch64 => syscalls::aarch64::Sysno::from_str(name).ok()?.id(),
        TargetArch::riscv64 => syscalls::riscv64::Sysno::from_str(name).ok()?.id(),
    };
    u32::try_from(id).ok()
}

/// Whether any architecture Linux supports has a syscall of this name.
fn known_anywhere(name: &str) -> bool {
    use syscalls::*;
    aarch64::Sysno::from_str(name).is_ok()
        || arm::Sysno::from_str(name).is_ok()
        || loongarch64::Sysno::from_str(name).is_ok()
        || mips::Sysno::from_str(name).is_ok()
        || mips64::Sysno::from_str(name).is_ok()
        || powerpc::Sysno::from_str(name).is_ok()
        || powerpc64::Sysno::from_str(name).is_ok()
        || riscv32::Sysno::from_str(name).is_ok()
        || riscv64::Sysno::from_str(name).is_ok()
        || s390x::Sysno::from_str(name).is_ok()
        || sparc::Sysno::from_str(name).is_ok()
        || sparc64::Sysno::from_str(name).is_ok()
        || x86::Sysno::from_str(name).is_ok()
        || x86_64::Sysno::from_str(name).is_ok()
}

/// The rules that apply to one syscall number, in the order they take effect.
#[derive(Default)]
struct SyscallRules {
    /// The first rule without conditions, with the index of its entry in `syscalls`.
    unconditional: Option<(SeccompAction, usize)>,
    /// Rules with conditions, in the order of the section.
    conditional: Vec<(SeccompRule, SeccompAction)>,
}

fn compile_for(spec: &LinuxSeccomp, arch: TargetArch) -> Result<Filter> {
    let info = arch_info(arch);

    if let Some(path) = spec.listener_path() {
        bail!(
            "linux.seccomp.listenerPath: {}: no seccomp agent is supported (SCMP_ACT_NOTIFY)",
            path.display()
        );
    }
    if let Some(meta) = spec.listener_metadata() {
        bail!("linux.seccomp.listenerMetadata: {meta:?}: no seccomp agent is supported");
    }
    let flags = filter_flags(spec.flags().as_deref().unwrap_or_default())?;
    for a in spec.architectures().as_deref().unwrap_or_default() {
        if *a == info.oci || *a == Arch::ScmpArchNative {
            continue;
        }
        if info.compat.contains(a) {
            tracing::debug!(arch = %a, "seccomp: not filtered by rule; the architecture check kills its syscalls");
        } else {
            tracing::debug!(arch = %a, "seccomp: another machine's architecture, not used here");
        }
    }

    let default = action(
        spec.default_action(),
        spec.default_errno_ret(),
        "linux.seccomp.defaultAction",
        "linux.seccomp.defaultErrnoRet",
    )?;

    let mut table: std::collections::BTreeMap<u32, SyscallRules> = Default::default();
    for (i, rule) in spec
        .syscalls()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        add_rule(&mut table, rule, i, &default, arch)?;
    }

    let mut program = prologue(&info);
    for (nr, rules) in table {
        if let Some((act, _)) = rules.unconditional {
            // Not this syscall: skip the return.
            program.push(jump(BPF_JEQ, nr, 0, 1));
            program.push(ret(act));
        } else if !rules.conditional.is_empty() {
            // seccompiler's chain layout (its `SeccompFilter::append_syscall_chain`), with an
            // action per rule: each compiled rule starts with two jumps, "enter" and "skip to the
            // next rule's skip", and its failing conditions jump to the next rule's "enter"; so a
            // syscall number mismatch lands on the first "skip" and hops over the whole chain,
            // past the final return of the default action.
            program.push(jump(BPF_JEQ, nr, 0, 1));
            for (rule, act) in rules.conditional {
                program.extend(BpfProgram::from(rule));
                program.push(ret(act));
            }
            program.push(ret(default.clone()));
        }
    }
    program.push(ret(default));
    if program.len() > BPF_MAXINSNS {
        bail!(
            "linux.seccomp: the filter needs {} BPF instructions, more than the kernel's {BPF_MAXINSNS}",
            program.len()
        );
    }
    Ok(Filter { program, flags })
}

fn add_rule(
    table: &mut std::collections::BTreeMap<u32, SyscallRules>,
    rule: &LinuxSyscall,
    i: usize,
    default: &SeccompAction,
    arch: TargetArch,
) -> Result<()> {
    let field = format!("linux.seccomp.syscalls[{i}]");
    let act = action(
        rule.action(),
        rule.errno_ret(),
        &format!("{field}.action"),
        &format!("{field}.errnoRet"),
    )?;
    let mut conditions = Vec::new();
    let mut never = false;
    for (j, arg) in rule
        .args()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match condition(arg, &format!("{field}.args[{j}]"))? {
            Some(c) => conditions.push(c),
            None => never = true,
        }
    }
    if never {
        tracing::debug!(rule = i, names = ?rule.names(), "seccomp: rule can never match (SCMP_CMP_MASKED_EQ valueTwo outside the mask), dropped");
        return Ok(());
    }
    if act == *default {
        tracing::debug!(rule = i, names = ?rule.names(), "seccomp: rule has the default action, dropped");
        return Ok(());
    }
    for name in rule.names() {
        let Some(nr) = syscall_number(arch, name) else {
            if known_anywhere(name) {
                tracing::trace!(
                    rule = i,
                    name,
                    "seccomp: no such syscall on this architecture"
                );
            } else {
                tracing::debug!(rule = i, name, "seccomp: unknown syscall name, ignored");
            }
            continue;
        };
        let entry = table.entry(nr).or_default();
        if let Some((decided, by)) = &entry.unconditional {
            if *decided != act {
                tracing::debug!(
                    rule = i,
                    name,
                    by,
                    "seccomp: syscall already decided by an earlier rule without args, ignored"
                );
            }
            continue;
        }
        if conditions.is_empty() {
            entry.unconditional = Some((act.clone(), i));
            entry.conditional.clear();
        } else {
            let compiled =
                SeccompRule::new(conditions.clone()).with_context(|| format!("{field}: {name}"))?;
            entry.conditional.push((compiled, act.clone()));
        }
    }
    Ok(())
}

fn filter_flags(flags: &[LinuxSeccompFilterFlag]) -> Result<libc::c_ulong> {
    let mut bits = 0;
    for flag in flags {
        bits |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // Harmless: the container's process is single-threaded when it installs the filter.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => bail!(
                "linux.seccomp.flags: {flag}: only applies to a seccomp agent's notifications, \
                 and no agent is supported"
            ),
        };
    }
    Ok(bits)
}

/// The seccompiler action for an OCI action and its `errnoRet`. `field` and `errno_field` name
/// the two in errors.
fn action(
    act: LinuxSeccompAction,
    errno_ret: Option<u32>,
    field: &str,
    errno_field: &str,
) -> Result<SeccompAction> {
    use LinuxSeccompAction as A;
    if act == A::ScmpActNotify {
        bail!("{field}: {act} needs a seccomp agent (listenerPath), and no agent is supported");
    }
    // ERRNO and TRACE carry a value, EPERM unless given (runc's default for both).
    let data = match (act, errno_ret) {
        (A::ScmpActErrno | A::ScmpActTrace, v) => v.unwrap_or(libc::EPERM as u32),
        (_, Some(v)) => bail!("{errno_field}: {v} given, but {act} returns no errno"),
        (_, None) => 0,
    };
    if data > 0xffff {
        bail!("{errno_field}: {data} does not fit the 16 bits of SECCOMP_RET_DATA");
    }
    Ok(match act {
        A::ScmpActAllow => SeccompAction::Allow,
        A::ScmpActErrno => SeccompAction::Errno(data),
        A::ScmpActTrace => SeccompAction::Trace(data),
        // libseccomp's SCMP_ACT_KILL is SCMP_ACT_KILL_THREAD.
        A::ScmpActKill | A::ScmpActKillThread => SeccompAction::KillThread,
        A::ScmpActKillProcess => SeccompAction::KillProcess,
        A::ScmpActTrap => SeccompAction::Trap,
        A::ScmpActLog => SeccompAction::Log,
        A::ScmpActNotify => unreachable!("refused above"),
    })
}

/// One `args` entry as a 64-bit comparison; `None` when it can never be true.
fn condition(arg: &LinuxSeccompArg, field: &str) -> Result<Option<SeccompCondition>> {
    let index = u8::try_from(arg.index())
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| {
            anyhow!(
                "{field}.index: {} is not a syscall argument (0 to 5)",
                arg.index()
            )
        })?;
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            // libseccomp: (arg & datum_a) == datum_b, with datum_a = value, datum_b = valueTwo.
            let (mask, datum) = (arg.value(), arg.value_two().unwrap_or(0));
            if datum & !mask != 0 {
                return Ok(None);
            }
            (SeccompCmpOp::MaskedEq(mask), datum)
        }
    };
    // Qword: the three architectures supported are 64-bit, whose syscall arguments are whole
    // registers, and libseccomp compares all 64 bits there too.
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .map(Some)
        .with_context(|| format!("{field}: {arg:?}"))
}

// Classic BPF opcodes (linux/bpf_common.h) for the instructions assembled here.
/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_JGE: u16 = 0x30;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

fn jump(op: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: BPF_JMP | op,
        jt,
        jf,
        k,
    }
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn ret(act: SeccompAction) -> sock_filter {
    stmt(BPF_RET_K, u32::from(act))
}

/// The architecture check, then the syscall number in the accumulator for the rules.
fn prologue(info: &ArchInfo) -> BpfProgram {
    let kill = || ret(SeccompAction::KillProcess);
    let mut p = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JEQ, info.audit, 1, 0),
        kill(),
        stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    if info.x32_bit {
        p.push(jump(BPF_JGE, X32_SYSCALL_BIT, 0, 1));
        p.push(kill());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const X86_64: u32 = 0xc000_003e;
    const I386: u32 = 0x4000_0003;
    const AARCH64: u32 = 0xc000_00b7;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_KILL_PROCESS: u32 = 0x8000_0000;

    fn spec(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).expect("a valid LinuxSeccomp")
    }

    /// A classic-BPF interpreter for the instructions a seccomp filter uses, run on a
    /// `struct seccomp_data`. Returns the filter's verdict.
    fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let ins = &program[pc];
            pc += 1;
            let k = ins.k;
            match ins.code {
                0x20 => {
                    let o = k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                0x54 => acc &= k,
                0x05 => pc += k as usize,
                0x15 => pc += usize::from(if acc == k { ins.jt } else { ins.jf }),
                0x25 => pc += usize::from(if acc > k { ins.jt } else { ins.jf }),
                0x35 => pc += usize::from(if acc >= k { ins.jt } else { ins.jf }),
                0x06 => return k,
                code => panic!("unexpected BPF opcode {code:#x} at {}", pc - 1),
            }
        }
    }

    fn nr(name: &str) -> u32 {
        syscall_number(TargetArch::x86_64, name).unwrap()
    }

    /// Run a filter compiled for x86_64 on a native syscall.
    fn verdict(f: &Filter, name: &str, args: [u64; 6]) -> u32 {
        run(f.program(), X86_64, nr(name), args)
    }

    fn x86(s: &LinuxSeccomp) -> Filter {
        compile_for(s, TargetArch::x86_64).unwrap()
    }

    fn err(s: serde_json::Value) -> String {
        format!(
            "{:#}",
            compile_for(&spec(s), TargetArch::x86_64).unwrap_err()
        )
    }

    #[test]
    fn every_action_gives_its_return_value() {
        let cases = [
            (json!({"action": "SCMP_ACT_KILL"}), 0),
            (json!({"action": "SCMP_ACT_KILL_THREAD"}), 0),
            (json!({"action": "SCMP_ACT_KILL_PROCESS"}), RET_KILL_PROCESS),
            (json!({"action": "SCMP_ACT_TRAP"}), 0x0003_0000),
            (json!({"action": "SCMP_ACT_ERRNO"}), RET_ERRNO | 1),
            (
                json!({"action": "SCMP_ACT_ERRNO", "errnoRet": 13}),
                RET_ERRNO | 13,
            ),
            (json!({"action": "SCMP_ACT_TRACE"}), 0x7ff0_0001),
            (
                json!({"action": "SCMP_ACT_TRACE", "errnoRet": 7}),
                0x7ff0_0007,
            ),
            (json!({"action": "SCMP_ACT_LOG"}), 0x7ffc_0000),
        ];
        for (mut rule, expected) in cases {
            rule["names"] = json!(["getppid"]);
            let f = x86(&spec(
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}),
            ));
            assert_eq!(verdict(&f, "getppid", [0; 6]), expected, "{rule}");
            assert_eq!(verdict(&f, "getpid", [0; 6]), RET_ALLOW, "{rule}");
        }
        // An allow list: ALLOW as a rule action, ERRNO with defaultErrnoRet as the default.
        let f = x86(&spec(json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]
        })));
        assert_eq!(verdict(&f, "getpid", [0; 6]), RET_ALLOW);
        assert_eq!(verdict(&f, "getppid", [0; 6]), RET_ERRNO | 38);
        assert_eq!(run(f.program(), X86_64, 1000, [0; 6]), RET_ERRNO | 38);
        // The default ERRNO without defaultErrnoRet is EPERM.
        let f = x86(&spec(json!({"defaultAction": "SCMP_ACT_ERRNO"})));
        assert_eq!(verdict(&f, "getpid", [0; 6]), RET_ERRNO | 1);
    }

    /// A filter with one rule `op` on `socket`'s second argument, and the verdicts for `values`.
    fn op_matches(op: &str, value: u64, value_two: Option<u64>, values: &[u64]) -> Vec<bool> {
        let mut arg = json!({"index": 1, "value": value, "op": op});
        if let Some(v2) = value_two {
            arg["valueTwo"] = json!(v2);
        }
        let f = x86(&spec(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "args": [arg]}]
        })));
        values
            .iter()
            .map(|v| match verdict(&f, "socket", [0, *v, 0, 0, 0, 0]) {
                RET_ALLOW => false,
                r if r == RET_ERRNO | 1 => true,
                r => panic!("verdict {r:#x}"),
            })
            .collect()
    }

    #[test]
    fn every_comparison_uses_all_64_bits() {
        let big = 0x1_0000_0005u64;
        let vals = [4, 5, 6, big - 1, big, big + 1, 0x2_0000_0000, u64::MAX];
        let expect = |f: &dyn Fn(u64) -> bool| vals.iter().map(|v| f(*v)).collect::<Vec<_>>();
        assert_eq!(
            op_matches("SCMP_CMP_EQ", big, None, &vals),
            expect(&|v| v == big)
        );
        assert_eq!(
            op_matches("SCMP_CMP_NE", big, None, &vals),
            expect(&|v| v != big)
        );
        assert_eq!(
            op_matches("SCMP_CMP_LT", big, None, &vals),
            expect(&|v| v < big)
        );
        assert_eq!(
            op_matches("SCMP_CMP_LE", big, None, &vals),
            expect(&|v| v <= big)
        );
        assert_eq!(
            op_matches("SCMP_CMP_GE", big, None, &vals),
            expect(&|v| v >= big)
        );
        assert_eq!(
            op_matches("SCMP_CMP_GT", big, None, &vals),
            expect(&|v| v > big)
        );
        assert_eq!(
            op_matches("SCMP_CMP_EQ", 5, None, &vals),
            expect(&|v| v == 5)
        );
        // MASKED_EQ: (arg & value) == valueTwo.
        let mask = 0xff_0000_ff00u64;
        let vals = [0x12ab, 0x13ab, 0x12_0000_12ff, 0x12_0000_1200, 0x1200];
        let expect = |f: &dyn Fn(u64) -> bool| vals.iter().map(|v| f(*v)).collect::<Vec<_>>();
        assert_eq!(
            op_matches("SCMP_CMP_MASKED_EQ", mask, Some(0x12_0000_1200), &vals),
            expect(&|v| v & 0xff_0000_ff00 == 0x12_0000_1200)
        );
        // valueTwo with bits outside the mask never matches: the rule is dropped.
        assert_eq!(
            op_matches(
                "SCMP_CMP_MASKED_EQ",
                0xff00,
                Some(0x12ab),
                &[0x12ab, 0x1200]
            ),
            [false, false]
        );
    }

    #[test]
    fn args_are_anded_and_rules_ored() {
        let f = x86(&spec(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22, "args": [
                    {"index": 0, "value": 16, "op": "SCMP_CMP_EQ"},
                    {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "args": [
                    {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}
            ]
        })));
        let v = |a0, a2| verdict(&f, "socket", [a0, 1, a2, 0, 0, 0]);
        assert_eq!(v(16, 9), RET_ERRNO | 22);
        assert_eq!(v(16, 0), RET_ALLOW);
        assert_eq!(v(1, 9), RET_ALLOW);
        assert_eq!(v(2, 9), RET_ERRNO | 13);
        assert_eq!(v(2, 0), RET_ERRNO | 13);
    }

    #[test]
    fn a_rule_without_args_decides_its_syscall_like_libseccomp() {
        // The conditional rule comes first; the unconditional one still wins.
        let f = x86(&spec(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["socket"], "action": "SCMP_ACT_LOG", "args": [
                    {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
                {"names": ["socket", "bind"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["socket"], "action": "SCMP_ACT_TRAP"},
                {"names": ["bind"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5,
                 "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}
            ]
        })));
        assert_eq!(verdict(&f, "socket", [2, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(verdict(&f, "socket", [1, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(verdict(&f, "bind", [2, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(verdict(&f, "connect", [2, 0, 0, 0, 0, 0]), RET_ERRNO | 1);
    }

    #[test]
    fn rules_with_the_default_action_are_dropped() {
        let f = x86(&spec(json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "syscalls": [
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ]
        })));
        assert_eq!(verdict(&f, "socket", [1, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(verdict(&f, "socket", [2, 0, 0, 0, 0, 0]), RET_ERRNO | 38);
        // Another errno is another action: kept.
        assert_eq!(verdict(&f, "getpid", [0; 6]), RET_ERRNO | 1);
        // Only the architecture check and the default remain of an all-default section.
        let only_default = x86(&spec(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getpid", "mkdir"], "action": "SCMP_ACT_ALLOW"}]
        })));
        assert_eq!(
            only_default.program().len(),
            prologue(&arch_info(TargetArch::x86_64)).len() + 1
        );
    }

    #[test]
    fn other_abis_are_killed() {
        let f = x86(&spec(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
        })));
        assert_eq!(verdict(&f, "mkdir", [0; 6]), RET_ERRNO | 1);
        // i386's int 0x80 (and any other arch value).
        assert_eq!(run(f.program(), I386, 39, [0; 6]), RET_KILL_PROCESS);
        // x32: x86_64's audit arch, number | __X32_SYSCALL_BIT; would be a way round `mkdir`.
        assert_eq!(
            run(f.program(), X86_64, X32_SYSCALL_BIT | nr("mkdir"), [0; 6]),
            RET_KILL_PROCESS
        );
        assert_eq!(
            run(f.program(), X86_64, X32_SYSCALL_BIT | 512, [0; 6]),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn names_are_resolved_per_architecture() {
        assert_eq!(syscall_number(TargetArch::x86_64, "mkdir"), Some(83));
        assert_eq!(syscall_number(TargetArch::x86_64, "mkdirat"), Some(258));
        assert_eq!(syscall_number(TargetArch::aarch64, "mkdirat"), Some(34));
        assert_eq!(syscall_number(TargetArch::aarch64, "mkdir"), None);
        assert_eq!(syscall_number(TargetArch::x86_64, "_llseek"), None);
        assert!(known_anywhere("_llseek"));
        assert!(!known_anywhere("no_such_syscall"));
        let s = spec(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["_llseek", "no_such_syscall", "mkdir", "mkdirat"],
                          "action": "SCMP_ACT_ERRNO", "errnoRet": 18}]
        }));
        let f = x86(&s);
        assert_eq!(verdict(&f, "mkdir", [0; 6]), RET_ERRNO | 18);
        assert_eq!(verdict(&f, "mkdirat", [0; 6]), RET_ERRNO | 18);
        let arm = compile_for(&s, TargetArch::aarch64).unwrap();
        assert_eq!(run(arm.program(), AARCH64, 34, [0; 6]), RET_ERRNO | 18);
        assert_eq!(run(arm.program(), AARCH64, 83, [0; 6]), RET_ALLOW);
        assert_eq!(run(arm.program(), X86_64, 34, [0; 6]), RET_KILL_PROCESS);
        // The native compile is for this machine.
        let native = compile(&s).unwrap();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(native, f);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(native, arm);
    }

    #[test]
    fn flags_are_passed_or_refused() {
        let f = x86(&spec(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                      "SECCOMP_FILTER_FLAG_TSYNC"]
        })));
        assert_eq!(f.flags(), 0b111);
        let e = err(json!({"defaultAction": "SCMP_ACT_ALLOW",
                           "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}));
        assert!(
            e.contains("linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"),
            "{e}"
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_field() {
        let cases = [
            (
                json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
                "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                    {"names": ["openat"], "action": "SCMP_ACT_NOTIFY"}]}),
                "linux.seccomp.syscalls[1].action: SCMP_ACT_NOTIFY",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}),
                "linux.seccomp.listenerPath: /run/agent.sock",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "x"}),
                "linux.seccomp.listenerMetadata",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}),
                "linux.seccomp.defaultErrnoRet: 1 given, but SCMP_ACT_ALLOW returns no errno",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    {"names": ["mkdir"], "action": "SCMP_ACT_KILL_PROCESS", "errnoRet": 2}]}),
                "linux.seccomp.syscalls[0].errnoRet: 2 given, but SCMP_ACT_KILL_PROCESS",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 65536}]}),
                "linux.seccomp.syscalls[0].errnoRet: 65536 does not fit",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                     "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}),
                "linux.seccomp.syscalls[0].args[0].index: 6 is not a syscall argument",
            ),
        ];
        for (s, expected) in cases {
            let e = err(s.clone());
            assert!(e.contains(expected), "{s}: {e}");
        }
    }

    #[test]
    fn a_filter_longer_than_the_kernel_takes_is_refused() {
        let rules: Vec<_> = (0..1100)
            .map(|i| {
                json!({"names": ["ioctl"], "action": "SCMP_ACT_ERRNO",
                       "args": [{"index": 1, "value": i, "op": "SCMP_CMP_EQ"}]})
            })
            .collect();
        let e = err(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}));
        assert!(e.contains("more than the kernel's 4096"), "{e}");
    }

    // ---- podman's default profile ----

    const PODMAN_PROFILE: &str = "/usr/share/containers/seccomp.json";

    /// Podman's default profile (containers-common's format) turned into an OCI section the way
    /// podman does it for a container: the entry of `archMap` for this machine, and the rules
    /// whose `includes`/`excludes` (caps, arches, minKernel) fit `caps` on this machine. `None`
    /// when the file is absent outside CI.
    fn podman_profile(caps: &[&str]) -> Option<LinuxSeccomp> {
        let text = match std::fs::read_to_string(PODMAN_PROFILE) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{PODMAN_PROFILE} is missing (Debian package golang-github-containers-common, \
                     a dependency of podman, installed by scripts/install-deps.sh)"
                );
                eprintln!("skipping: {PODMAN_PROFILE} is missing");
                return None;
            }
            Err(e) => panic!("{PODMAN_PROFILE}: {e}"),
        };
        let raw: serde_json::Value = serde_json::from_str(&text).expect(PODMAN_PROFILE);
        let (oci_arch, go_arch) = match std::env::consts::ARCH {
            "x86_64" => ("SCMP_ARCH_X86_64", "amd64"),
            "aarch64" => ("SCMP_ARCH_AARCH64", "arm64"),
            other => (other, other),
        };
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let kernel = nix::sys::utsname::uname().expect("uname");
        let kernel = kernel.release().to_string_lossy().into_owned();
        let version = |s: &str| -> Vec<u32> {
            s.split(|c: char| !c.is_ascii_digit())
                .take(2)
                .map(|n| n.parse().unwrap_or(0))
                .collect()
        };
        let mut architectures = vec![json!(oci_arch)];
        for m in raw["archMap"].as_array().into_iter().flatten() {
            if m["architecture"] == oci_arch {
                architectures.extend(
                    strings(&m["subArchitectures"])
                        .into_iter()
                        .map(|a| json!(a)),
                );
            }
        }
        let mut syscalls = Vec::new();
        for s in raw["syscalls"].as_array().expect("syscalls") {
            let (inc, exc) = (&s["includes"], &s["excludes"]);
            let inc_arches = strings(&inc["arches"]);
            if !inc_arches.is_empty() && !inc_arches.iter().any(|a| a == go_arch) {
                continue;
            }
            if strings(&exc["arches"]).iter().any(|a| a == go_arch) {
                continue;
            }
            if !strings(&inc["caps"])
                .iter()
                .all(|c| caps.contains(&c.as_str()))
            {
                continue;
            }
            if strings(&exc["caps"])
                .iter()
                .any(|c| caps.contains(&c.as_str()))
            {
                continue;
            }
            if let Some(min) = inc["minKernel"].as_str() {
                if version(&kernel) < version(min) {
                    continue;
                }
            }
            let mut rule = json!({"names": s["names"], "action": s["action"]});
            if !s["args"].is_null() {
                rule["args"] = s["args"].clone();
            }
            if !s["errnoRet"].is_null() {
                rule["errnoRet"] = s["errnoRet"].clone();
            }
            syscalls.push(rule);
        }
        let mut section = json!({
            "defaultAction": raw["defaultAction"],
            "architectures": architectures,
            "syscalls": syscalls,
        });
        if !raw["defaultErrnoRet"].is_null() {
            section["defaultErrnoRet"] = raw["defaultErrnoRet"].clone();
        }
        Some(spec(section))
    }

    /// The runner's capabilities (docker's default set).
    fn runner_caps() -> Vec<&'static str> {
        crate::caps::DEFAULT_CAPS.iter().map(|(n, _)| *n).collect()
    }

    /// Podman's own default capabilities (containers.conf), without CAP_AUDIT_WRITE.
    const PODMAN_CAPS: [&str; 11] = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SETFCAP",
        "CAP_SETGID",
        "CAP_SETPCAP",
        "CAP_SETUID",
        "CAP_SYS_CHROOT",
    ];

    #[test]
    fn podmans_default_profile_compiles_and_means_what_it_says() {
        let Some(profile) = podman_profile(&runner_caps()) else {
            return;
        };
        let f = compile(&profile).expect("podman's profile compiles");
        assert!(f.program().len() < BPF_MAXINSNS);
        #[cfg(target_arch = "x86_64")]
        {
            let v = |name: &str, args| verdict(&f, name, args);
            for name in [
                "getpid", "openat", "write", "mkdir", "clone", "execve", "socket",
            ] {
                assert_eq!(v(name, [0; 6]), RET_ALLOW, "{name}");
            }
            // Listed as EPERM, or EPERM for want of a capability.
            for name in [
                "kexec_load",
                "vmsplice",
                "acct",
                "sethostname",
                "init_module",
            ] {
                assert_eq!(v(name, [0; 6]), RET_ERRNO | 1, "{name}");
            }
            // Not listed at all: the default, ENOSYS.
            assert_eq!(v("add_key", [0; 6]), RET_ERRNO | 38);
            assert_eq!(run(f.program(), X86_64, 1000, [0; 6]), RET_ERRNO | 38);
            // personality: only the listed personas.
            assert_eq!(v("personality", [8, 0, 0, 0, 0, 0]), RET_ALLOW);
            assert_eq!(v("personality", [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
            assert_eq!(v("personality", [1, 0, 0, 0, 0, 0]), RET_ERRNO | 38);
        }
        // Podman's own capability set leaves out CAP_AUDIT_WRITE: socket gets argument rules.
        let Some(profile) = podman_profile(&PODMAN_CAPS) else {
            return;
        };
        let f = compile(&profile).expect("podman's profile compiles");
        #[cfg(target_arch = "x86_64")]
        {
            let socket = |a0, a2| verdict(&f, "socket", [a0, 3, a2, 0, 0, 0]);
            assert_eq!(socket(16, 9), RET_ERRNO | 22, "netlink audit");
            assert_eq!(socket(16, 0), RET_ALLOW, "netlink route");
            assert_eq!(socket(2, 0), RET_ALLOW, "inet");
            assert_eq!(verdict(&f, "sethostname", [0; 6]), RET_ERRNO | 1);
        }
    }

    // ---- real filters in a forked child ----

    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;

    /// Fork; in the child set no_new_privs, install `filter` and run `body`, whose result is the
    /// exit code. The test harness is multi-threaded, so everything the child does after the fork
    /// (here and in `body`) is plain system calls, without allocation.
    fn in_child(filter: &Filter, body: impl FnOnce() -> i32) -> WaitStatus {
        let pid: Pid = sys::fork_for_test(|| {
            // No core dump from the SIGSYS tests.
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            if sys::set_no_new_privs().is_err() {
                return 120;
            }
            if install(filter).is_err() {
                return 121;
            }
            body()
        })
        .expect("fork");
        waitpid(pid, None).expect("waitpid")
    }

    fn exit_code(status: WaitStatus) -> i32 {
        match status {
            WaitStatus::Exited(_, code) => code,
            other => panic!("child did not exit normally: {other:?}"),
        }
    }

    /// The errno of a nix result as an exit code (0 for success).
    fn code<T>(r: nix::Result<T>) -> i32 {
        match r {
            Ok(_) => 0,
            Err(e) => e as i32,
        }
    }

    #[test]
    fn errno_rule_fails_mkdir_with_the_chosen_errno() {
        let f = compile(&spec(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": libc::ETXTBSY}]
        })))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let status = in_child(&f, || {
            code(nix::unistd::mkdir(
                &path,
                nix::sys::stat::Mode::from_bits_truncate(0o755),
            ))
        });
        assert_eq!(exit_code(status), libc::ETXTBSY);
        assert!(!path.exists());
    }

    #[test]
    fn an_allow_list_lets_its_syscalls_work_and_nothing_else() {
        let f = compile(&spec(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [{"names": ["mkdir", "mkdirat", "exit", "exit_group"],
                          "action": "SCMP_ACT_ALLOW"}]
        })))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dir_fd = std::fs::File::open(dir.path()).unwrap();
        let path = dir.path().join("d");
        let status = in_child(&f, || {
            if nix::unistd::mkdir(&path, nix::sys::stat::Mode::from_bits_truncate(0o755)).is_err() {
                return 1;
            }
            let rm = nix::unistd::unlinkat(&dir_fd, &path, nix::unistd::UnlinkatFlags::RemoveDir);
            if rm != Err(nix::errno::Errno::EPERM) {
                return 2;
            }
            0
        });
        assert_eq!(
            exit_code(status),
            0,
            "1: mkdir failed, 2: unlinkat not EPERM"
        );
        assert!(path.is_dir());
    }

    #[test]
    fn an_arg_condition_denies_only_its_value() {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        let f = compile(&spec(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES,
                          "args": [{"index": 0, "value": libc::AF_INET, "op": "SCMP_CMP_EQ"}]}]
        })))
        .unwrap();
        let status = in_child(&f, || {
            let unix = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            );
            if unix.is_err() {
                return 1;
            }
            let inet = socket(
                AddressFamily::Inet,
                SockType::Datagram,
                SockFlag::empty(),
                None,
            );
            if inet.err() != Some(nix::errno::Errno::EACCES) {
                return 2;
            }
            let unix_dgram = socket(
                AddressFamily::Unix,
                SockType::Datagram,
                SockFlag::empty(),
                None,
            );
            if unix_dgram.is_err() {
                return 3;
            }
            0
        });
        assert_eq!(
            exit_code(status),
            0,
            "1/3: AF_UNIX socket refused, 2: AF_INET socket not EACCES"
        );
    }

    #[test]
    fn kill_actions_end_the_process_with_sigsys() {
        for act in ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_TRAP"] {
            let f = compile(&spec(json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["getppid"], "action": act}]
            })))
            .unwrap();
            let status = in_child(&f, || {
                nix::unistd::getppid();
                0
            });
            match status {
                WaitStatus::Signaled(_, Signal::SIGSYS, _) => {}
                other => panic!("{act}: {other:?}"),
            }
        }
    }

    #[test]
    fn podmans_profile_lets_a_process_run_and_blocks_what_it_blocks() {
        let Some(profile) = podman_profile(&runner_caps()) else {
            return;
        };
        let f = compile(&profile).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let status = in_child(&f, || {
            use nix::fcntl::OFlag;
            if nix::unistd::getpid().as_raw() <= 0 {
                return 1;
            }
            let Ok(fd) = nix::fcntl::open(
                &path,
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            ) else {
                return 2;
            };
            if nix::unistd::write(&fd, b"ok") != Ok(2) {
                return 3;
            }
            let Ok((_r, w)) = nix::unistd::pipe() else {
                return 4;
            };
            let iov = [std::io::IoSlice::new(b"x")];
            let spliced = nix::fcntl::vmsplice(&w, &iov, nix::fcntl::SpliceFFlags::empty());
            if spliced != Err(nix::errno::Errno::EPERM) {
                return 5;
            }
            0
        });
        assert_eq!(
            exit_code(status),
            0,
            "1: getpid, 2: open, 3: write, 4: pipe failed; 5: vmsplice not EPERM"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"ok");

        // With podman's capabilities (no CAP_AUDIT_WRITE), an argument rule of the profile.
        let Some(profile) = podman_profile(&PODMAN_CAPS) else {
            return;
        };
        let f = compile(&profile).unwrap();
        let status = in_child(&f, || {
            use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
            let audit = socket(
                AddressFamily::Netlink,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::NetlinkAudit,
            );
            if audit.err() != Some(nix::errno::Errno::EINVAL) {
                return 1;
            }
            let route = socket(
                AddressFamily::Netlink,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::NetlinkRoute,
            );
            if route.is_err() {
                return 2;
            }
            0
        });
        assert_eq!(
            exit_code(status),
            0,
            "1: NETLINK_AUDIT socket not EINVAL, 2: NETLINK_ROUTE socket refused"
        );
    }
}
