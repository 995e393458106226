#!/usr/bin/env python3
"""Step durations of `runner run --rm IMAGE true` from `strace -f -ttt` logs (one per run):
the median of each step over the runs, in milliseconds. Each step ends at a syscall that marks
it (an exec, a clone, the first cgroup.procs write...); a step whose marks are missing in a
run (another version of runner) is left out of that run."""
import re
import statistics
import sys

LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")


def marks(path):
    """(name, time) of the marking syscalls of the runner's main process, in order."""
    lines = []
    for raw in open(path):
        m = LINE.match(raw)
        if m:
            lines.append((int(m.group(1)), float(m.group(2)), m.group(3)))
    main = lines[0][0]
    t = {}
    def first(name, pred, after=0.0):
        for pid, ts, text in lines:
            if ts >= after and pred(pid, text):
                t.setdefault(name, ts)
                return ts
        return None
    t0 = first("start", lambda p, s: p == main and s.startswith("execve("))
    first("sealed exec", lambda p, s: p == main and s.startswith("execve(") and "/proc/self/fd/" in s)
    first("sealed exec", lambda p, s: p == main and s.startswith("execve(") and "/proc/self/fd/" in s)
    first("unionfs --version", lambda p, s: "execve(" in s and '"--version"' in s)
    first("unionfs mount", lambda p, s: "execve(" in s and '"mount"' in s)
    first("cgroup mkdir", lambda p, s: p == main and s.startswith('mkdir("/sys/fs/cgroup'))
    first("clone", lambda p, s: p == main and "clone3(" in s and "CLONE_NEWNS" in s)
    first("cgroup attach", lambda p, s: p == main and "cgroup.procs" in s and "O_WRONLY" in s)
    first("child mounts", lambda p, s: p != main and s.startswith("mount(") and "MS_PRIVATE" in s)
    first("exec true", lambda p, s: p != main and s.startswith('execve("/bin/true"'))
    first("true exits", lambda p, s: p != main and s.startswith("exit_group(") , after=t.get("exec true", 0))
    first("cgroup rmdir", lambda p, s: p == main and s.startswith('rmdir("/sys/fs/cgroup'))
    first("unionfs umount", lambda p, s: ("execve(" in s and '"umount"' in s) or (p == main and s.startswith("umount2(")), after=t.get("true exits", 0))
    first("end", lambda p, s: p == main and s.startswith("exit_group("), after=t.get("true exits", 0))
    # The last attach write ends the attach step.
    attach_end = None
    for pid, ts, text in lines:
        if pid == main and "cgroup.procs" in text and "O_WRONLY" in text:
            attach_end = ts
    if attach_end is not None:
        t["cgroup attach done"] = attach_end
    return t


STEPS = [
    ("exeseal: start to sealed re-exec", "start", "sealed exec"),
    ("image lookup, unionfs check start", "sealed exec", "unionfs --version"),
    ("unionfs --version to mount exec", "unionfs --version", "unionfs mount"),
    ("union mount to cgroup mkdir", "unionfs mount", "cgroup mkdir"),
    ("cgroup create to clone", "cgroup mkdir", "clone"),
    ("sealed exec to clone (preparations)", "sealed exec", "clone"),
    ("clone (namespaces) to first attach", "clone", "cgroup attach"),
    ("cgroup attach (all hierarchies)", "cgroup attach", "cgroup attach done"),
    ("attach done to child's first mount", "cgroup attach done", "child mounts"),
    ("child set-up to exec", "child mounts", "exec true"),
    ("clone to exec (attach + set-up)", "clone", "exec true"),
    ("true runs", "exec true", "true exits"),
    ("exit to cgroup rmdir", "true exits", "cgroup rmdir"),
    ("rmdir to unmount", "cgroup rmdir", "unionfs umount"),
    ("unmount, daemon exit, dir removal", "unionfs umount", "end"),
    ("total (traced)", "start", "end"),
]


def main():
    runs = [marks(p) for p in sys.argv[1:]]
    print(f"{'step':40} {'median ms':>9}  {'min':>6} {'max':>6}  (runs)")
    for name, a, b in STEPS:
        d = [1000 * (r[b] - r[a]) for r in runs if a in r and b in r]
        if not d:
            continue
        print(f"{name:40} {statistics.median(d):9.1f}  {min(d):6.1f} {max(d):6.1f}  ({len(d)})")


if __name__ == "__main__":
    main()
