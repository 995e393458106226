#!/usr/bin/env bash
# Container start-up time of runner, two ways (root; UNIONFS_STORE as for runner):
#
#   bench/start-profile.sh steps RUNNER [RUNS] [IMAGE]
#       where the time of `runner run --rm IMAGE true` goes, step by step, from
#       `strace -f -ttt` timestamps of the syscalls that mark each step (start-profile.py).
#       strace slows every traced syscall: compare steps with each other, not totals.
#   bench/start-profile.sh compare RUNS NAME=COMMAND...
#       each COMMAND (a shell command line) RUNS times, interleaved (one of each per round, so
#       that a change of load hits all alike); prints the median, min and max wall time in ms
#       of each and its ratio to the first one's median.
#
# Each runner is run with its own unionfs (UNIONFS_BIN beside it) unless UNIONFS_BIN is set.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mode=${1:?usage: start-profile.sh steps RUNNER [RUNS] [IMAGE] | compare RUNS NAME=CMD...}
shift
case $mode in
steps)
    runner=${1:?RUNNER}
    runs=${2:-10}
    image=${3:-demo}
    out=$(mktemp -d /tmp/start-profile.XXXXXX)
    for i in $(seq "$runs"); do
        # A filtered trace (seccomp-bpf): tracing every syscall of the FUSE daemon can
        # deadlock strace on a page of the union it is itself stopping.
        strace -f -ttt -qq --seccomp-bpf -o "$out/run$i.txt" \
            -e trace=execve,execveat,clone,clone3,mount,umount2,pivot_root,mkdir,rmdir,wait4,exit_group,openat,poll,fsmount \
            "$runner" run --rm "$image" true
    done
    python3 "$here/start-profile.py" "$out"/run*.txt
    rm -rf "$out"
    ;;
compare)
    runs=${1:?RUNS}
    shift
    out=$(mktemp /tmp/start-compare.XXXXXX)
    for r in $(seq "$runs"); do
        for nc in "$@"; do
            name=${nc%%=*}
            cmd=${nc#*=}
            s=$(date +%s%N)
            bash -c "$cmd" >/dev/null
            e=$(date +%s%N)
            echo "$name $(( (e - s) / 1000 ))" >>"$out"
        done
    done
    python3 - "$out" "$@" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
names = [a.split("=", 1)[0] for a in sys.argv[2:]]
base = None
print(f"{'':12} {'median ms':>9} {'min':>6} {'max':>6} {'ratio':>6}  runs")
for n in names:
    t = [int(v) / 1000 for k, v in rows if k == n]
    m = statistics.median(t)
    base = base or m
    print(f"{n:12} {m:9.1f} {min(t):6.1f} {max(t):6.1f} {m / base:6.2f}  {len(t)}")
PY
    rm -f "$out"
    ;;
*)
    echo "start-profile.sh: unknown mode $mode" >&2
    exit 2
    ;;
esac
