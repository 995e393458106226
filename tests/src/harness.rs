//! One test case: a generated stack written to temp dirs, mounted with `unionfs` (or not), a
//! plain copy of its merged view, and the model. Every operation runs on all three; after each
//! step the results and the views must agree and the read-only branches must be untouched.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::Path;

use crate::disk::{self, RawEntry};
pub use crate::fixture::Fixture;
use crate::knobs::{self, trace};
use crate::model::Stack;
use crate::model_ops::{applicable, ModelSlots, USER};
use crate::mount::Mount;
use crate::ops::{apply_real, Handles, Op, PathSel};
use crate::strategy::GenStack;
use crate::view::View;
use crate::{lt_squash, repro, squash, sys};

/// The state of one running case. Field order matters: the mount drops before the temp dirs.
pub struct Run {
    /// Open fds: dropped before the mount.
    mnt_handles: Handles,
    host_handles: Handles,
    slots: ModelSlots,
    mount: Option<Mount>,
    model: Stack,
    initial: Stack,
    done: Vec<Op<String>>,
    ro_before: Vec<BTreeMap<String, RawEntry>>,
    fx: Fixture,
    strict_nlink: bool,
    lower: Vec<&'static str>,
    /// Whether the environment knobs apply (property tests) or not (regression tests).
    knobs: bool,
    /// Identity to inode number, as last seen on the current mount.
    inos: Option<BTreeMap<u64, u64>>,
}

impl Run {
    /// Set up a case; mounted only when `with_mount`.
    /// The environment knobs (`knobs.rs`) apply to such a case, never to a regression test.
    pub fn new(gen: &GenStack, with_mount: bool) -> Run {
        let strict = !knobs::lax_nlink();
        Run::open(gen.to_stack(), with_mount, strict, gen.lower_perms(), true)
    }

    /// Set up a case from a model stack. `strict_nlink`: a link count that also counts names
    /// hidden by upper branches is a failure (see [`knobs::nlink_mode`]).
    pub fn start(model: Stack, with_mount: bool, strict_nlink: bool) -> Run {
        let lower = vec!["ro"; model.branches.len() - 1];
        Run::start_with(model, with_mount, strict_nlink, lower)
    }

    /// [`Run::start`] with the lower branches mounted with permissions `lower` (`ro`, `rr`,
    /// `rw`).
    pub fn start_with(
        model: Stack,
        with_mount: bool,
        strict_nlink: bool,
        lower: Vec<&'static str>,
    ) -> Run {
        Run::open(model, with_mount, strict_nlink, lower, false)
    }

    fn open(
        model: Stack,
        with_mount: bool,
        strict_nlink: bool,
        lower: Vec<&'static str>,
        knobs: bool,
    ) -> Run {
        let fx = Fixture::new(&model);
        let ro_before = fx.ro_snapshots();
        let mut run = Run {
            mnt_handles: Handles::default(),
            host_handles: Handles::default(),
            slots: ModelSlots::default(),
            mount: None,
            initial: model.clone(),
            model,
            done: Vec::new(),
            ro_before,
            fx,
            strict_nlink,
            lower,
            knobs,
            inos: None,
        };
        run.check_plain("materialised host copy");
        if with_mount {
            let log = run.fx.file("unionfs.log");
            match Mount::with_lower(&run.fx.branches, &run.fx.mnt, &log, &run.lower) {
                Ok(m) => run.mount = Some(m),
                Err(e) => run.fail(format!("mount failed: {e}")),
            }
            run.check_mount("fresh mount");
        }
        run
    }

    fn fail(&self, msg: impl Display) -> ! {
        let daemon = self
            .mount
            .as_ref()
            .map(Mount::post_mortem)
            .unwrap_or_default();
        panic!(
            "{msg}\n--- operations run ({}):\n{:#?}\n--- reproduction (needs `unionfs` in PATH, attr tools):\n{}--- end of reproduction\n{daemon}",
            self.done.len(),
            self.done,
            repro::script(&self.initial, &self.done, &self.lower)
        )
    }

    fn compare(&self, actual: &Path, who: &str, when: &str) {
        match View::snapshot(actual) {
            Err(e) => self.fail(format!("{who}: reading the tree failed {when}: {e}")),
            Ok(v) => self.compare_views(self.model.view(), v, who, when),
        }
    }

    fn compare_views(&self, expected: View, mut v: View, who: &str, when: &str) {
        if !self.strict_nlink {
            self.forgive_branch_nlink(&expected, &mut v);
        }
        let squashed = who.contains("property 5");
        if self.knobs && !self.strict_nlink && knobs::nlink_mode() == "off" {
            // Link counts not checked; in a squash, link groups neither (property 5 loses
            // hardlinks that live as pseudo-links: see
            // `regression_squash_keeps_hardlinks_made_through_the_mount`).
            for (p, a) in v.entries.iter_mut() {
                let e = expected.get(p);
                a.nlink = e.and_then(|e| e.nlink);
                if squashed {
                    a.group = e.and_then(|e| e.group.clone());
                }
            }
        }
        if self.knobs && squashed && knobs::squash_mode() == "nolinks" {
            // Objects that ever had several names are not checked (pseudo-links).
            let linked = self.ever_linked();
            let oids = self.model.oids();
            for (p, e) in &expected.entries {
                if e.nlink.is_some_and(|n| n > 1) || oids.get(p).is_some_and(|o| linked.contains(o))
                {
                    v.entries.insert(p.clone(), e.clone());
                }
            }
        }
        let d = expected.diff(&v);
        if !d.is_empty() {
            self.fail(format!(
                "{who}: view differs from the model {when}:\n  {}",
                d.join("\n  ")
            ))
        }
    }

    /// Identities of objects with several names in a branch, at the start or now.
    fn ever_linked(&self) -> std::collections::BTreeSet<u64> {
        let mut out = std::collections::BTreeSet::new();
        for stack in [&self.initial, &self.model] {
            for b in &stack.branches {
                let mut count: BTreeMap<u64, usize> = BTreeMap::new();
                for n in b.nodes.values() {
                    if let crate::model::Node::Leaf(i) = n {
                        *count.entry(*i).or_default() += 1;
                    }
                }
                out.extend(
                    count
                        .into_iter()
                        .filter(|(_, c)| *c > 1)
                        .map(|(i, _)| b.leaf(i).oid),
                );
            }
        }
        out
    }

    /// A link count equal to the inode's count in its branch (names hidden by upper branches
    /// included) is taken as the visible count: see `regression_nlink_counts_hidden_names`.
    fn forgive_branch_nlink(&self, expected: &View, actual: &mut View) {
        for (p, a) in actual.entries.iter_mut() {
            if let Some(e) = expected.get(p) {
                if a.nlink.is_some() && a.nlink == self.model.branch_nlink(p) && e.group == a.group
                {
                    a.nlink = e.nlink;
                }
            }
        }
    }

    fn check_plain(&self, when: &str) {
        self.compare(&self.fx.host, "MODEL BUG (plain host copy)", when);
    }

    /// Inode numbers stay the same for one object while mounted, through copy-up and rename.
    fn check_inode_numbers(&mut self, when: &str) {
        let Some(m) = &self.mount else { return };
        let inos = match disk::inode_numbers(m.path()) {
            Ok(i) => i,
            Err(e) => self.fail(format!("UNIONFS: reading inode numbers failed {when}: {e}")),
        };
        let mut now = BTreeMap::new();
        for (p, oid) in self.model.oids() {
            let Some(ino) = inos.get(&p) else { continue };
            if let Some(before) = self.inos.as_ref().and_then(|m| m.get(&oid)) {
                if before != ino {
                    self.fail(format!(
                        "UNIONFS (inode numbers): {p:?} changed inode number from {before} to {ino} {when}"
                    ));
                }
            }
            now.insert(oid, *ino);
        }
        self.inos = Some(now);
    }

    fn check_mount(&mut self, when: &str) {
        self.check_inode_numbers(when);
        if let Some(m) = &self.mount {
            self.compare(m.path(), "UNIONFS (merged view, property 1)", when);
            let now = self.fx.ro_snapshots();
            for (i, (b, a)) in self.ro_before.iter().zip(&now).enumerate() {
                if self.lower[i] == "rw" {
                    continue; // a writable lower branch is changed in place
                }
                if b != a {
                    let r =
                        std::panic::catch_unwind(|| disk::assert_raw_unchanged(b, a, "ro branch"));
                    let msg = r
                        .err()
                        .and_then(|e| e.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    self.fail(format!(
                        "UNIONFS (property 3): read-only branch B{} written {when}: {msg}",
                        i + 1
                    ));
                }
            }
        }
    }

    /// Resolve and run one generated operation everywhere, and check.
    pub fn step(&mut self, spec: &Op<PathSel>) {
        let view = self.model.view();
        let (mut op, user) = match spec.clone().map(&mut |p| p.resolve(&view)) {
            Op::AsUser(inner) => (*inner, true),
            op => (op, false),
        };
        let user = user && op != Op::Remount;
        if !applicable(&view, &op) {
            trace(format_args!("skip {op:?}"));
            return;
        }
        if self.knobs && !knobs::wanted(&op, user) {
            return;
        }
        let is_fd_op = matches!(
            op,
            Op::Open { .. } | Op::ReadBack { .. } | Op::WriteBack { .. }
        );
        let wants_write = matches!(op, Op::WriteBack { .. });
        if let Op::ReadBack { slot } | Op::WriteBack { slot, .. } = &mut op {
            // Prefer a slot whose fd suits the operation, so fewer ops are wasted.
            let suits = |s: usize| {
                self.slots[s]
                    .as_ref()
                    .is_some_and(|h| h.write || !wants_write)
            };
            if !suits(*slot) && suits(1 - *slot) || !self.host_handles.is_open(*slot) {
                *slot = 1 - *slot;
            }
            if !self.host_handles.is_open(*slot) {
                trace(format_args!("skip {op:?}"));
                return;
            }
        }
        let recorded = if user {
            Op::AsUser(Box::new(op.clone()))
        } else {
            op.clone()
        };
        self.done.push(recorded.clone());
        let when = format!("after step {} {recorded:?}", self.done.len());
        if is_fd_op {
            self.handle_step(&op, user, &when);
            return;
        }
        let before = user.then(|| self.model.clone());
        let creds = if user { USER } else { (0, 0) };
        let expected = self.model.apply_as(&op, creds);
        let host = run_as(user, || apply_real(&self.fx.host, &op));
        if let (Some(before), Err(libc::EACCES | libc::EPERM)) = (before, host) {
            // Permissions are the plain filesystem's to decide: the model follows.
            self.model = before;
        } else if host != expected {
            self.fail(format!(
                "MODEL BUG: {recorded:?}: model says {expected:?}, the host fs {host:?}"
            ));
        }
        trace(format_args!("{recorded:?} -> {host:?}"));
        self.check_plain(&when);
        if op == Op::Remount {
            self.close_handles();
            self.inos = None;
            if let Some(Err(e)) = self.mount.as_mut().map(Mount::remount_elsewhere) {
                self.fail(format!("UNIONFS (property 4): remount failed: {e}"));
            }
        } else if let Some(m) = &self.mount {
            let got = run_as(user, || apply_real(m.path(), &op));
            if got != host {
                self.fail(format!(
                    "UNIONFS (property 2): {recorded:?} returned {got:?} on the mount, {host:?} on a plain dir"
                ));
            }
        }
        self.check_mount(&when);
    }

    fn close_handles(&mut self) {
        self.mnt_handles.close_all();
        self.host_handles.close_all();
        self.slots = ModelSlots::default();
    }

    /// An fd operation: the model predicts the errno, the mount must return what the plain
    /// directory returns, bytes read included (except through a read-only fd of a lower file,
    /// which reads the lower file).
    fn handle_step(&mut self, op: &Op<String>, user: bool, when: &str) {
        let before = user.then(|| (self.model.clone(), self.slots.clone()));
        let expected = self.model.apply_handle(&mut self.slots, op);
        let host =
            run_as(user, || self.host_handles.apply(&self.fx.host, op)).expect("a handle op");
        trace(format_args!(
            "{op:?} (user {user}) -> {:?}",
            host.as_ref().map(|_| ())
        ));
        if let (Some((model, slots)), Err(libc::EACCES | libc::EPERM)) = (before, &host) {
            (self.model, self.slots) = (model, slots);
        } else if host.as_ref().map(|_| ()).map_err(|e| *e) != expected {
            self.fail(format!(
                "MODEL BUG: {op:?}: model says {expected:?}, the host fs {host:?}"
            ));
        }
        self.check_plain(when);
        if let Some(m) = &self.mount {
            let got = run_as(user, || self.mnt_handles.apply(m.path(), op)).expect("a handle op");
            // A read-only fd follows its file's copy-up (unionfs/SEMANTICS.md, "Copy-up"):
            // it reads what a plain directory's fd would.
            let want = host.clone();
            if got != want {
                self.fail(format!(
                    "UNIONFS (property 2): {op:?} (as user: {user}) returned {} on the mount; \
                     expected {} ({}); the plain dir gave {}",
                    show_bytes(&got),
                    show_bytes(&want),
                    "as the plain dir",
                    show_bytes(&host)
                ));
            }
        }
        self.check_mount(when);
    }

    /// End of the case: remount (property 4), then squash (property 5) the real branches and
    /// the model's own branches and compare with the model.
    pub fn finish(mut self) {
        if self.mount.is_some() {
            self.close_handles();
            self.inos = None;
            if let Some(Err(e)) = self.mount.as_mut().map(Mount::remount_elsewhere) {
                self.fail(format!("UNIONFS (property 4): remount failed: {e}"));
            }
            self.check_mount("after the final remount (property 4)");
            if let Err(e) = self.mount.as_mut().map_or(Ok(()), Mount::unmount) {
                self.fail(format!("unmount failed: {e}"));
            }
            if self.knobs && knobs::squash_mode() == "off" {
                return;
            }
            let out = self.fx.scratch("squash");
            if let Err(e) = squash::squash(&self.fx.branches, &out) {
                self.fail(format!("squash of the real branches failed: {e}"));
            }
            self.compare(
                &out,
                "UNIONFS (property 5: squashed branches)",
                "after unmount",
            );
            let lt = self.fx.scratch("layer-tool");
            match lt_squash::squash(&self.fx.branches, &lt)
                .and_then(|d| View::snapshot(&d).map_err(|e| e.to_string()))
            {
                Err(e) => self.fail(format!(
                    "layer-tool squash of the real branches failed: {e}"
                )),
                Ok(v) => self.compare_views(
                    lt_squash::tar_visible(&self.model.view()),
                    lt_squash::tar_visible(&lt_squash::as_union(v)),
                    "UNIONFS or LAYER-TOOL (property 5: layer-tool squash)",
                    "after unmount",
                ),
            }
        }
        let modelled = self.fx.scratch("model");
        let mut dirs = Vec::new();
        for (i, b) in self.model.branches.iter().enumerate() {
            let d = modelled.join(format!("B{i}"));
            std::fs::create_dir(&d).expect("mkdir");
            disk::write_branch(b, &d).expect("write model branch");
            dirs.push(d);
        }
        let out = self.fx.scratch("model-squash");
        squash::squash(&dirs, &out).expect("squash model branches");
        self.compare(
            &out,
            "MODEL BUG (squash of the model's branches)",
            "at the end",
        );
    }
}

/// Run concrete operations on a stack, checking after each: the form of regression tests.
pub fn run_ops(stack: Stack, ops: &[Op<String>], strict_nlink: bool) {
    let mut run = Run::start(stack, true, strict_nlink);
    for op in ops {
        run.step(&op.clone().map(&mut PathSel::Fresh));
    }
    run.finish();
}

/// Run a whole case.
pub fn run_case(gen: &GenStack, ops: &[Op<PathSel>], with_mount: bool) {
    let mut run = Run::new(gen, with_mount);
    for op in ops {
        run.step(op);
    }
    run.finish();
}

/// Run `f` as the unprivileged test user when `user`.
fn run_as<T>(user: bool, f: impl FnOnce() -> T) -> T {
    if user {
        sys::as_user(USER, f)
    } else {
        f()
    }
}

fn show_bytes(r: &Result<Vec<u8>, i32>) -> String {
    match r {
        Err(e) => format!("Err({e})"),
        Ok(b) if b.len() > 48 => format!(
            "{} bytes, non-zero at {:?}",
            b.len(),
            b.iter()
                .enumerate()
                .filter(|(_, x)| **x != 0)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        ),
        Ok(b) => format!("{:?}", String::from_utf8_lossy(b)),
    }
}
