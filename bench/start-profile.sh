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
#   bench/start-profile.sh runtimes RUNS RUNNER...
#       each RUNNER's `run --rm demo true` against runc and crun starting /bin/true on the demo
#       image's layers, RUNS rounds, interleaved. As bench/run.sh's container group: runc and
#       crun get a fuse-overlayfs root mounted and unmounted inside the timed part (runner's
#       `run` mounts and unmounts its unionfs root itself). crun 1.8 refuses this host's hybrid
#       cgroup layout (a cgroup2 mount at /sys/fs/cgroup/unified holding hugetlb), so it runs
#       in a private mount namespace without that mount.
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
runtimes)
    runs=${1:?RUNS}
    shift
    store=${UNIONFS_STORE:-/var/lib/unionfs}
    b=$(mktemp -d /tmp/start-runtimes.XXXXXX)
    lowers=$(python3 -c 'import json,os,sys
p=sys.argv[1]; d=os.path.dirname(p)
print(":".join(os.path.normpath(os.path.join(d, l["path"])) for l in reversed(json.load(open(p))["layers"])))' \
        "$store/images/demo/image.json")
    mkdir -p "$b/rootfs"
    (cd "$b" && crun spec >/dev/null)
    python3 - "$b/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
c["root"]["readonly"] = False
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
    # One timed OCI start ($RT), printing microseconds; the scratch layers are made untimed.
    oci_start() {
        rm -rf "$b/upper" "$b/work"
        mkdir -p "$b/upper" "$b/work"
        local s
        s=$(date +%s%N)
        fuse-overlayfs -o "lowerdir=$lowers,upperdir=$b/upper,workdir=$b/work" "$b/rootfs" 2>/dev/null
        $RT run --bundle "$b" "start-$$" >&2
        umount "$b/rootfs"
        echo $((($(date +%s%N) - s) / 1000))
    }
    export -f oci_start
    export b lowers
    out=$b/times
    names=()
    for i in $(seq "$#"); do names+=("runner$i"); done
    names+=(runc crun)
    for _ in $(seq "$runs"); do
        i=0
        for runner in "$@"; do
            i=$((i + 1))
            s=$(date +%s%N)
            "$runner" run --rm demo true
            echo "runner$i $((($(date +%s%N) - s) / 1000))" >>"$out"
        done
        echo "runc $(RT=runc oci_start)" >>"$out"
        echo "crun $(unshare -m --propagation private bash -c \
            'umount /sys/fs/cgroup/unified 2>/dev/null; RT=crun oci_start')" >>"$out"
    done
    i=0
    for runner in "$@"; do
        i=$((i + 1))
        echo "runner$i = $runner"
    done
    python3 - "$out" "${names[@]}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
base = None
print(f"{'':10} {'median ms':>9} {'min':>6} {'max':>6} {'ratio':>6}  runs")
for n in sys.argv[2:]:
    t = [int(v) / 1000 for k, v in rows if k == n]
    m = statistics.median(t)
    base = base or m
    print(f"{n:10} {m:9.1f} {min(t):6.1f} {max(t):6.1f} {m / base:6.2f}  {len(t)}")
PY
    rm -rf "$b"
    ;;
*)
    echo "start-profile.sh: unknown mode $mode" >&2
    exit 2
    ;;
esac
