//! Device rules on cgroup v2: an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`, attached to
//! the container's group, answers every open and mknod of a device node (cgroup v2 has no
//! `devices.allow`/`devices.deny` files; runc, crun and youki do the same).
//!
//! The kernel calls the program with `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
//! u32 minor; }`: the low 16 bits of `access_type` are the node type (`BPF_DEVCG_DEV_BLOCK` 1,
//! `BPF_DEVCG_DEV_CHAR` 2), the high 16 bits the access asked for (`BPF_DEVCG_ACC_MKNOD` 1,
//! `_READ` 2, `_WRITE` 4; an open for reading and writing asks for both at once). The program
//! returns 1 to allow, 0 to refuse (the caller gets EPERM).
//!
//! Semantics: the rules are read in order and, for each access bit asked for, the last rule
//! that matches the node (type, major, minor; `a` and a missing number match anything) and
//! names that bit decides; a bit no rule names is refused. An access is allowed when each of its
//! bits is. So `deny a rwm` first and allow rules after it (what engines send) is an allow list,
//! and a later `deny c 1:3 w` takes writing away from an earlier `allow c 1:3 rw`. This is the
//! order runc's device emulator gives its rules; we evaluate it directly instead of normalising.
//!
//! The program walks the rules from the last to the first, keeping the bits not yet decided in
//! r3: an allow rule that matches clears its bits (allow when none is left), a deny rule that
//! matches refuses when one of its bits is still undecided. A hand-made assembler suffices: the
//! program needs ten kinds of instruction, and a BPF toolchain (clang) is not available in CI.
#![forbid(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::cgroup::DeviceRule;
use crate::sys::{self, BpfInsn};

/// `BPF_DEVCG_DEV_*`: the node type in the low half of `access_type`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
/// `BPF_DEVCG_ACC_*`: the access in the high half.
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const ACC_ALL: i32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// The registers the program uses: r0 the verdict, r1 the context (then a scratch register),
/// r2 the node type, r3 the access bits still undecided, r4 the major, r5 the minor.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

/// The instructions the device program is made of. Jump offsets count instructions from the
/// one after the jump, as the kernel does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insn {
    /// `dst = *(u32 *)(r1 + off)`: a field of the context.
    LoadCtx { dst: u8, off: i16 },
    /// `dst = (u32)dst & imm`.
    And32 { dst: u8, imm: i32 },
    /// `dst = (u32)dst >> imm`.
    Rsh32 { dst: u8, imm: i32 },
    /// `dst = (u32)imm`.
    MovImm { dst: u8, imm: i32 },
    /// `dst = (u32)src`.
    MovReg { dst: u8, src: u8 },
    /// `if dst != imm goto +off`.
    JneImm { dst: u8, imm: i32, off: i16 },
    /// `if dst == imm goto +off`.
    JeqImm { dst: u8, imm: i32, off: i16 },
    /// Return r0.
    Exit,
}

impl Insn {
    /// The kernel's encoding (`BPF_LDX|BPF_MEM|BPF_W`, `BPF_ALU|BPF_AND|BPF_K`, ...).
    pub fn encode(self) -> BpfInsn {
        let (code, dst, src, off, imm) = match self {
            Insn::LoadCtx { dst, off } => (0x61, dst, R1, off, 0),
            Insn::And32 { dst, imm } => (0x54, dst, 0, 0, imm),
            Insn::Rsh32 { dst, imm } => (0x74, dst, 0, 0, imm),
            Insn::MovImm { dst, imm } => (0xb4, dst, 0, 0, imm),
            Insn::MovReg { dst, src } => (0xbc, dst, src, 0, 0),
            Insn::JneImm { dst, imm, off } => (0x55, dst, 0, off, imm),
            Insn::JeqImm { dst, imm, off } => (0x15, dst, 0, off, imm),
            Insn::Exit => (0x95, 0, 0, 0, 0),
        };
        BpfInsn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        }
    }
}

/// A rule as the program tests it.
struct Check {
    allow: bool,
    /// `None` for `a`.
    kind: Option<i32>,
    major: Option<i32>,
    minor: Option<i32>,
    access: i32,
}

fn check(rule: &DeviceRule) -> Result<Check> {
    let what = || rule.v1_line();
    let kind = match rule.kind {
        'a' => None,
        'c' => Some(DEV_CHAR),
        'b' => Some(DEV_BLOCK),
        other => bail!("device rule {}: unknown type {other:?}", what()),
    };
    // -1 is how runc spells a wildcard; the kernel's numbers are 12 (major) and 20 bits wide.
    let number = |n: Option<i64>, name: &str| -> Result<Option<i32>> {
        match n {
            None | Some(-1) => Ok(None),
            Some(n) => match i32::try_from(n) {
                Ok(n) if n >= 0 => Ok(Some(n)),
                _ => bail!("device rule {}: {name} {n} is out of range", what()),
            },
        }
    };
    let mut access = 0;
    for c in rule.access.chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            other => bail!("device rule {}: unknown access {other:?}", what()),
        };
    }
    if access == 0 {
        bail!("device rule {}: no access given", what());
    }
    Ok(Check {
        allow: rule.allow,
        kind,
        major: number(rule.major, "major")?,
        minor: number(rule.minor, "minor")?,
        access,
    })
}

/// The program for `rules` (in the order given: the last matching rule wins, per access bit).
pub fn program(rules: &[DeviceRule]) -> Result<Vec<Insn>> {
    let checks = rules.iter().map(check).collect::<Result<Vec<_>>>()?;
    let mut out = vec![
        Insn::LoadCtx { dst: R2, off: 0 },
        Insn::And32 {
            dst: R2,
            imm: 0xffff,
        },
        Insn::LoadCtx { dst: R3, off: 0 },
        Insn::Rsh32 { dst: R3, imm: 16 },
        Insn::LoadCtx { dst: R4, off: 4 },
        Insn::LoadCtx { dst: R5, off: 8 },
    ];
    for c in checks.iter().rev() {
        let (block, decides_all) = block(c);
        out.extend(block);
        // Whatever follows a block that always returns could never run, and the verifier
        // refuses a program with unreachable instructions.
        if decides_all {
            return Ok(out);
        }
    }
    // No rule decided every bit asked for: refuse.
    out.extend([Insn::MovImm { dst: R0, imm: 0 }, Insn::Exit]);
    Ok(out)
}

/// The instructions of one rule, and whether it returns whatever the context (no test at all).
/// Each test jumps past the block when the rule does not apply.
fn block(c: &Check) -> (Vec<Insn>, bool) {
    // Jumps are written with a placeholder and pointed at the block's end at the last step.
    const NEXT: i16 = i16::MIN;
    let mut b = Vec::new();
    if let Some(kind) = c.kind {
        b.push(Insn::JneImm {
            dst: R2,
            imm: kind,
            off: NEXT,
        });
    }
    if let Some(major) = c.major {
        b.push(Insn::JneImm {
            dst: R4,
            imm: major,
            off: NEXT,
        });
    }
    if let Some(minor) = c.minor {
        b.push(Insn::JneImm {
            dst: R5,
            imm: minor,
            off: NEXT,
        });
    }
    let unconditional = b.is_empty() && c.access == ACC_ALL;
    if c.allow {
        if c.access != ACC_ALL {
            // Its bits are decided (allowed); go on while others are not.
            b.push(Insn::And32 {
                dst: R3,
                imm: !c.access & ACC_ALL,
            });
            b.push(Insn::JneImm {
                dst: R3,
                imm: 0,
                off: NEXT,
            });
        }
        b.extend([Insn::MovImm { dst: R0, imm: 1 }, Insn::Exit]);
    } else {
        if c.access != ACC_ALL {
            // Refuse only when one of its bits is still undecided.
            b.push(Insn::MovReg { dst: R1, src: R3 });
            b.push(Insn::And32 {
                dst: R1,
                imm: c.access,
            });
            b.push(Insn::JeqImm {
                dst: R1,
                imm: 0,
                off: NEXT,
            });
        }
        b.extend([Insn::MovImm { dst: R0, imm: 0 }, Insn::Exit]);
    }
    let len = b.len();
    for (i, insn) in b.iter_mut().enumerate() {
        if let Insn::JneImm { off, .. } | Insn::JeqImm { off, .. } = insn {
            if *off == NEXT {
                *off = (len - i - 1) as i16;
            }
        }
    }
    (b, unconditional)
}

/// The program's license, as the kernel's `MODULE_LICENSE` strings go (it calls no helper, so
/// this decides nothing).
const LICENSE: &CStr = c"Dual MIT/GPL";

/// Load the program for `rules` and attach it to the cgroup directory `dir` (with
/// `BPF_F_ALLOW_MULTI`: programs of the ancestors still apply). It stays attached until the
/// group is removed; nothing needs to be kept open for it.
pub fn attach(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let insns: Vec<BpfInsn> = program(rules)?.into_iter().map(Insn::encode).collect();
    let prog = load(&insns)?;
    let cg = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening the cgroup {}", dir.display()))?;
    sys::bpf_prog_attach(
        cg.as_fd(),
        prog.as_fd(),
        sys::BPF_CGROUP_DEVICE,
        sys::BPF_F_ALLOW_MULTI,
    )
    .with_context(|| {
        format!(
            "bpf(BPF_PROG_ATTACH) of the device program to the cgroup {}",
            dir.display()
        )
    })
}

/// `bpf(BPF_PROG_LOAD)`; when the kernel refuses, load again with the verifier's log and put
/// it in the error.
fn load(insns: &[BpfInsn]) -> Result<std::os::fd::OwnedFd> {
    let first = match sys::bpf_prog_load(
        sys::BPF_PROG_TYPE_CGROUP_DEVICE,
        insns,
        LICENSE,
        "runner_devices",
        None,
    ) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; 1 << 16];
    let _ = sys::bpf_prog_load(
        sys::BPF_PROG_TYPE_CGROUP_DEVICE,
        insns,
        LICENSE,
        "runner_devices",
        Some(&mut log),
    );
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let log = String::from_utf8_lossy(&log[..end]);
    Err(first).with_context(|| {
        format!(
            "bpf(BPF_PROG_LOAD) of the cgroup device program ({} instructions){}",
            insns.len(),
            if log.trim().is_empty() {
                String::new()
            } else {
                format!("; the verifier said: {}", log.trim())
            }
        )
    })
}

/// Whether this kernel loads cgroup device programs for us (a program that allows everything is
/// loaded once and dropped). Without CONFIG_CGROUP_BPF, or without CAP_BPF/CAP_SYS_ADMIN, it
/// does not.
pub fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let allow_all = [Insn::MovImm { dst: R0, imm: 1 }, Insn::Exit].map(Insn::encode);
        match load(&allow_all) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!("no cgroup device programs here: {e:#}");
                false
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        kind: char,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            kind,
            major,
            minor,
            access: access.to_string(),
        }
    }

    /// Run `prog` as the kernel would on one context: an interpreter of the instructions the
    /// builder emits, checking the rules the verifier enforces (jumps in range, no fall-off).
    fn run(prog: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> bool {
        let ctx = [((access as u32) << 16) | kind as u32, major, minor];
        let mut regs = [0u64; 11];
        let mut pc = 0usize;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 10_000, "a loop in {prog:?}");
            let insn = *prog
                .get(pc)
                .unwrap_or_else(|| panic!("pc {pc} ran off {prog:?}"));
            pc += 1;
            let jump = |pc: usize, off: i16| {
                let to = pc as isize + off as isize;
                assert!(
                    to >= 0 && (to as usize) < prog.len(),
                    "jump out of the program"
                );
                to as usize
            };
            match insn {
                Insn::LoadCtx { dst, off } => regs[dst as usize] = u64::from(ctx[off as usize / 4]),
                Insn::And32 { dst, imm } => {
                    regs[dst as usize] = u64::from(regs[dst as usize] as u32 & imm as u32)
                }
                Insn::Rsh32 { dst, imm } => {
                    regs[dst as usize] = u64::from((regs[dst as usize] as u32) >> imm)
                }
                Insn::MovImm { dst, imm } => regs[dst as usize] = u64::from(imm as u32),
                Insn::MovReg { dst, src } => {
                    regs[dst as usize] = u64::from(regs[src as usize] as u32)
                }
                // The kernel compares all 64 bits with the sign-extended immediate.
                Insn::JneImm { dst, imm, off } => {
                    if regs[dst as usize] != imm as i64 as u64 {
                        pc = jump(pc, off);
                    }
                }
                Insn::JeqImm { dst, imm, off } => {
                    if regs[dst as usize] == imm as i64 as u64 {
                        pc = jump(pc, off);
                    }
                }
                Insn::Exit => return regs[0] != 0,
            }
        }
    }

    /// The semantics, written plainly: per access bit, the last matching rule naming it decides.
    fn model(rules: &[DeviceRule], kind: char, access: &str, major: i64, minor: i64) -> bool {
        access.chars().all(|bit| {
            rules
                .iter()
                .rev()
                .find(|r| {
                    (r.kind == 'a' || r.kind == kind)
                        && r.major.is_none_or(|m| m == major)
                        && r.minor.is_none_or(|m| m == minor)
                        && r.access.contains(bit)
                })
                .is_some_and(|r| r.allow)
        })
    }

    fn agree(rules: &[DeviceRule]) {
        let prog = program(rules).unwrap();
        for kind in ['c', 'b'] {
            for access in ["r", "w", "m", "rw", "rm", "wm", "rwm"] {
                for major in [1, 5, 7, 136] {
                    for minor in [0, 2, 3, 5] {
                        let bits = access.chars().fold(0, |a, c| {
                            a | match c {
                                'r' => ACC_READ,
                                'w' => ACC_WRITE,
                                _ => ACC_MKNOD,
                            }
                        });
                        let t = if kind == 'c' { DEV_CHAR } else { DEV_BLOCK };
                        assert_eq!(
                            run(&prog, t, bits, major as u32, minor as u32),
                            model(rules, kind, access, major, minor),
                            "{kind} {major}:{minor} {access} under {rules:#?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_allow_list_after_deny_all_is_an_exact_program() {
        let rules = [
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'b', None, None, "m"),
        ];
        let prog = program(&rules).unwrap();
        let tail = &prog[6..];
        assert_eq!(
            tail,
            [
                // b *:* m: mknod decided; go on while r or w is undecided.
                Insn::JneImm {
                    dst: R2,
                    imm: DEV_BLOCK,
                    off: 4
                },
                Insn::And32 {
                    dst: R3,
                    imm: ACC_READ | ACC_WRITE
                },
                Insn::JneImm {
                    dst: R3,
                    imm: 0,
                    off: 2
                },
                Insn::MovImm { dst: R0, imm: 1 },
                Insn::Exit,
                // c 1:3 rwm.
                Insn::JneImm {
                    dst: R2,
                    imm: DEV_CHAR,
                    off: 4
                },
                Insn::JneImm {
                    dst: R4,
                    imm: 1,
                    off: 3
                },
                Insn::JneImm {
                    dst: R5,
                    imm: 3,
                    off: 2
                },
                Insn::MovImm { dst: R0, imm: 1 },
                Insn::Exit,
                // a *:* rwm deny: always returns, so no default follows.
                Insn::MovImm { dst: R0, imm: 0 },
                Insn::Exit,
            ]
        );
        agree(&rules);
    }

    #[test]
    fn the_encoding_is_the_kernels() {
        assert_eq!(
            Insn::LoadCtx { dst: R4, off: 4 }.encode(),
            BpfInsn {
                code: 0x61,
                regs: 0x14,
                off: 4,
                imm: 0
            }
        );
        assert_eq!(
            Insn::MovReg { dst: R1, src: R3 }.encode(),
            BpfInsn {
                code: 0xbc,
                regs: 0x31,
                off: 0,
                imm: 0
            }
        );
        assert_eq!(
            Insn::JneImm {
                dst: R5,
                imm: 3,
                off: 2
            }
            .encode(),
            BpfInsn {
                code: 0x55,
                regs: 0x05,
                off: 2,
                imm: 3
            }
        );
        assert_eq!(Insn::Exit.encode().code, 0x95);
        assert_eq!(std::mem::size_of::<BpfInsn>(), 8);
    }

    #[test]
    fn the_last_matching_rule_wins_per_access_bit() {
        // docker's policy.
        agree(&crate::cgroup::docker_device_rules());
        // A later deny takes part of an earlier allow back, a later allow gives it again.
        agree(&[
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), None, "rw"),
            rule(false, 'c', Some(1), Some(3), "w"),
            rule(true, 'c', None, Some(5), "w"),
        ]);
        // Deny rules over an allow-all.
        agree(&[
            rule(true, 'a', None, None, "rwm"),
            rule(false, 'b', None, None, "rw"),
            rule(false, 'c', Some(5), Some(2), "rwm"),
            rule(false, 'a', Some(136), None, "m"),
        ]);
        // No rules: nothing allowed. Only mknod allowed.
        agree(&[]);
        agree(&[rule(true, 'a', None, None, "m")]);
        // An allow-all last makes the earlier rules unreachable: they are left out.
        let rules = [
            rule(false, 'c', Some(1), Some(3), "rwm"),
            rule(true, 'a', None, None, "rwm"),
        ];
        assert_eq!(program(&rules).unwrap().len(), 6 + 2);
        agree(&rules);
    }

    #[test]
    fn opening_for_reading_and_writing_needs_both_bits() {
        let rules = [
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "r"),
        ];
        let prog = program(&rules).unwrap();
        assert!(run(&prog, DEV_CHAR, ACC_READ, 1, 3));
        assert!(!run(&prog, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3));
        assert!(!run(&prog, DEV_BLOCK, ACC_READ, 1, 3));
    }

    #[test]
    fn bad_rules_are_refused_by_name() {
        let err = |r: DeviceRule| program(&[r]).unwrap_err().to_string();
        assert!(err(rule(true, 'x', None, None, "r")).contains("unknown type 'x'"));
        assert!(err(rule(true, 'c', Some(1 << 40), None, "r"))
            .contains("major 1099511627776 is out of range"));
        assert!(err(rule(true, 'c', None, Some(-7), "r")).contains("minor -7 is out of range"));
        assert!(err(rule(true, 'c', None, None, "rx")).contains("unknown access 'x'"));
        assert!(err(rule(true, 'c', None, None, "")).contains("no access given"));
        // runc's -1 is a wildcard.
        assert_eq!(
            program(&[rule(true, 'c', Some(-1), Some(-1), "rwm")]).unwrap(),
            program(&[rule(true, 'c', None, None, "rwm")]).unwrap()
        );
    }

    #[test]
    fn this_kernel_verifies_the_programs() {
        // Load (not attach) needs CAP_SYS_ADMIN or CAP_BPF; without it there is nothing to try.
        if !supported() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "this kernel or user loads no cgroup device programs, and CI=true"
            );
            eprintln!("SKIPPED: this kernel or user loads no cgroup device programs");
            return;
        }
        for rules in [
            crate::cgroup::docker_device_rules(),
            vec![],
            vec![rule(true, 'a', None, None, "rwm")],
            vec![
                rule(true, 'a', None, None, "rwm"),
                rule(false, 'b', Some(7), None, "rw"),
                rule(false, 'c', None, Some(9), "m"),
            ],
        ] {
            let insns: Vec<BpfInsn> = program(&rules)
                .unwrap()
                .into_iter()
                .map(Insn::encode)
                .collect();
            load(&insns).unwrap_or_else(|e| panic!("{rules:?}: {e:#}"));
        }
    }
}
