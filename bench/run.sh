#!/usr/bin/env bash
# Side-by-side benchmark of unionfs against native ext4, kernel overlayfs and fuse-overlayfs.
#
#   bash bench/run.sh [--quick] [--runs N] [--only GROUPS] [--fs LIST] [--keep] [--no-build]
#
#   --quick       small sizes, one run each: a smoke test (a minute or two). It never looks at
#                 times; it fails only when a workload fails.
#   --runs N      runs per workload and file system (default 5; 1 with --quick)
#   --only G,G    run only these workload groups (see GROUPS below), e.g. --only tree,delete;
#                 realwork (bench/realwork.sh: git, dpkg, ... in a Debian root under runner,
#                 runc on overlayfs and fuse-overlayfs, chroot) and container start
#   --fs F,F      only these file systems (native,overlayfs,fuse-overlayfs,unionfs; and
#                 unionfs-base: $UNIONFS_BASE_BIN, a second unionfs build interleaved with the
#                 first for a before/after comparison in one run)
#   --keep        keep the scratch directory (and reuse its lower layer next time)
#   --no-build    do not run cargo; use $UNIONFS_BIN (default target/release/unionfs)
#   --rev REV     benchmark unionfs as committed at REV (git archive into
#                 /var/tmp/unionfs-bench-build/REV, built there): a before/after baseline that
#                 uncommitted edits in the working tree cannot disturb
#
# Environment: BENCH_DIR (scratch, default /var/tmp/unionfs-bench: must be on the ext4 disk),
# UNIONFS_BIN, RUNNER_BIN (binaries to use instead of target/release/...), UNIONFS_BASE_BIN.
#
# Request counts: after each timed part on a unionfs mount, `unionfs stats --reset` is read
# into results/STAMP.counts.csv (group, fs, run, metric, request, count, errors, ms), so every
# row can be explained by the requests it made.
#
# Needs root (mount, drop_caches). Installs fio, fuse-overlayfs, crun and runc with apt-get
# when they are missing.
#
# How it measures: every measurement is one fresh mount (a new, empty upper and work dir), the
# workload's untimed preparation, the timed part, then sync and unmount. The file systems take
# turns inside each run (the order rotates), so slow drift of a noisy machine hits all of them
# alike. Times come from bash's $EPOCHREALTIME around one command (no fork for the clock), or,
# for loops of thousands of syscalls, from inside bench/fsops.py; fio reports IOPS itself.
# hyperfine is not used: its per-command model fits poorly with a fresh mount per run, drop_caches
# between a cold and a warm pass on the same mount, and IOPS from fio; one loop here treats
# every workload alike and writes every raw figure to one CSV. Results: bench/results/.
set -euo pipefail
export LC_ALL=C

bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench/.." && pwd)

# ---------------------------------------------------------------- options
quick=0 runs= only= fs_list=native,overlayfs,fuse-overlayfs,unionfs keep=0 build=1 rev=
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --runs) runs=$2; shift ;;
        --only) only=$2; shift ;;
        --fs) fs_list=$2; shift ;;
        --keep) keep=1 ;;
        --no-build) build=0 ;;
        --rev) rev=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

runs_given=$runs # the realwork group's default is 3 runs, not 5 (each run is minutes)
# Workload sizes. The full sizes are the ones issue 7 names.
if [ $quick = 1 ]; then
    : "${runs:=1}"
    big_mb=64 tree_dirs=50 tree_per_dir=20 n_create=1000 n_delete=500 fio_runtime=1
    layer_dirs=30
else
    : "${runs:=5}"
    big_mb=1024 tree_dirs=1000 tree_per_dir=50 n_create=20000 n_delete=10000 fio_runtime=5
    layer_dirs=300
fi
GROUPS_ALL=(seqread seqwrite randread copyup copyup_fsync tree layers createunlink untar delete container realwork)
IFS=, read -r -a groups <<<"${only:-$(IFS=,; echo "${GROUPS_ALL[*]}")}"
IFS=, read -r -a filesystems <<<"$fs_list"

S=${BENCH_DIR:-/var/tmp/unionfs-bench}
UNIONFS=${UNIONFS_BIN:-$repo/target/release/unionfs}
RUNNER=${RUNNER_BIN:-$repo/target/release/runner}
stamp=$(date -u +%Y%m%dT%H%M%SZ)$([ $quick = 1 ] && echo -quick || true)
results=$bench/results
mkdir -p "$results"
raw=$results/$stamp.raw.csv
counts=$results/$stamp.counts.csv
log=$results/$stamp.log
: >"$log"

say() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$log" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (mount, drop_caches)"

# ---------------------------------------------------------------- tools
need_pkgs=()
command -v fio >/dev/null || need_pkgs+=(fio)
command -v fuse-overlayfs >/dev/null || need_pkgs+=(fuse-overlayfs)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v crun >/dev/null || need_pkgs+=(crun)
command -v runc >/dev/null || need_pkgs+=(runc)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    say "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${need_pkgs[@]}" >>"$log" 2>&1 ||
        { apt-get update -q >>"$log" 2>&1 && apt-get install -y -q "${need_pkgs[@]}" >>"$log" 2>&1; }
fi
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true

unionfs_rev="working tree"
if [ -n "$rev" ]; then
    # Build unionfs of one commit, apart from the working tree (git archive only reads the repo).
    sha=$(git -C "$repo" rev-parse --verify "$rev^{commit}") || die "unknown revision $rev"
    src=/var/tmp/unionfs-bench-build/${sha:0:12}
    say "cargo build --release -p unionfs at ${sha:0:12} in $src"
    if [ ! -f "$src/Cargo.toml" ]; then
        mkdir -p "$src"
        git -C "$repo" archive "$sha" | tar -x -C "$src"
    fi
    (cd "$src" && cargo build --release -q -p unionfs) >>"$log" 2>&1 ||
        die "cargo build --release -p unionfs failed at $rev (see $log)"
    UNIONFS=$src/target/release/unionfs
    unionfs_rev="commit ${sha:0:12}"
elif [ $build = 1 ]; then
    say "cargo build --release -p unionfs"
    (cd "$repo" && cargo build --release -q -p unionfs) >>"$log" 2>&1 ||
        die "cargo build --release -p unionfs failed (see $log)"
    unionfs_rev="working tree at $(git -C "$repo" rev-parse --short HEAD)"
    [ -z "$(git -C "$repo" status --porcelain -- unionfs)" ] ||
        unionfs_rev+=" + uncommitted changes in unionfs/"
else
    unionfs_rev="prebuilt binary"
fi
[ -x "$UNIONFS" ] || die "no unionfs binary at $UNIONFS"
UNIONFS_BASE=${UNIONFS_BASE_BIN:-}
case ",$fs_list," in
    *,unionfs-base,*) [ -x "$UNIONFS_BASE" ] || die "--fs unionfs-base needs UNIONFS_BASE_BIN" ;;
esac

# ---------------------------------------------------------------- scratch and layers
mnt=$S/mnt upper=$S/upper work=$S/work lower=$S/lower nat=$S/nat

cleanup() {
    set +e
    for m in "$mnt" "$S/ctr/rootfs"; do
        mountpoint -q "$m" 2>/dev/null && umount "$m" 2>/dev/null
        mountpoint -q "$m" 2>/dev/null && umount -l "$m"
    done
    if [ $keep = 0 ]; then rm -rf "$S"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# The lower layer, built once per invocation (or reused with --keep when its sizes match):
#   big.bin   BIG_MB MiB of random data
#   tree/     TREE_DIRS directories of TREE_PER_DIR small files (0-4 KiB)
#   del/      N_DELETE small files, for the delete workload
# and, beside it, tree.tar: a tarball of tree/ for the extraction workload.
# The 1 GiB file and the tarball only when a selected group reads them (disk space).
has_group() { [[ " ${groups[*]} " == *" $1 "* ]]; }
need_big=0 need_tar=0
for g in seqread randread copyup copyup_fsync; do has_group $g && need_big=1; done
has_group untar && need_tar=1
# The realwork and container groups bring their own roots: no lower layer for them alone.
need_lower=0
for g in "${groups[@]}"; do case $g in realwork|container) ;; *) need_lower=1 ;; esac; done
layer_id="big=$big_mb:$need_big tar=$need_tar tree=${tree_dirs}x$tree_per_dir del=$n_delete"
mkdir -p "$S"
if [ $need_lower = 1 ] && [ "$(cat "$S/.layer-id" 2>/dev/null)" != "$layer_id" ]; then
    say "building the lower layer in $lower ($layer_id)"
    rm -rf "$lower" "$S/tree.tar" "$S/.layer-id"
    mkdir -p "$lower"
    if [ $need_big = 1 ]; then
        head -c "$((big_mb * 1024 * 1024))" /dev/urandom >"$lower/big.bin"
    fi
    python3 "$bench/fsops.py" mktree "$lower/tree" "$tree_dirs" "$tree_per_dir"
    python3 "$bench/fsops.py" mkfiles "$lower/del" "$n_delete"
    if [ $need_tar = 1 ]; then tar -cf "$S/tree.tar" -C "$lower" tree; fi
    sync
    echo "$layer_id" >"$S/.layer-id"
fi

# The layers group's lower: three layers (top first l3:l2:l1) that share out a tree of
# LAYER_DIRS directories of 50 files, every file a hardlink of one in $S/store, outside the
# union (as `cp -al` layer stores, ostree checkouts and deduplicating pulls leave them). Each
# layer holds a third of the directories, and every directory also appears, with one file, in
# the layer above, so directories merge. Native reads the store itself.
layers=$S/layers store=$S/store
layers_id="dirs=$layer_dirs"
if has_group layers &&
    [ "$(cat "$S/.layers-id" 2>/dev/null)" != "$layers_id" ]; then
    say "building the layered, hardlinked lower in $layers ($layers_id)"
    rm -rf "$layers" "$store" "$S/.layers-id"
    python3 "$bench/fsops.py" mktree "$store/tree" "$layer_dirs" 50
    for i in $(seq 0 $((layer_dirs - 1))); do
        d=$(printf 'd%04d' "$i") k=$((i % 3 + 1))
        mkdir -p "$layers/l$k/tree" "$layers/l$((k % 3 + 1))/tree/$d"
        cp -al "$store/tree/$d" "$layers/l$k/tree/"
        first=$(cd "$store/tree/$d" && set -- * && echo "$1")
        [ -e "$layers/l$((k % 3 + 1))/tree/$d/$first" ] ||
            ln "$store/tree/$d/$first" "$layers/l$((k % 3 + 1))/tree/$d/$first"
    done
    sync
    echo "$layers_id" >"$S/.layers-id"
fi

# ---------------------------------------------------------------- file systems
# fs_up FS: a fresh mount of FS. Sets R (where the lower layer shows) and W (where new names go).
# Native ext4 has no union: it reads the lower directory itself and writes into a fresh empty
# directory; workloads that change lower files (copy-up, delete) work on a copy made untimed.
fs_up() {
    if mountpoint -q "$mnt"; then umount "$mnt"; fi
    rm -rf "$upper" "$work" "$nat"
    mkdir -p "$upper" "$work" "$mnt"
    # The layers group mounts its three layers; native reads the store they link to.
    local lowers=$lower native_r=$lower
    if [ "${GROUP:-}" = layers ]; then
        lowers=$layers/l3:$layers/l2:$layers/l1 native_r=$store
    fi
    case $1 in
        native)
            mkdir -p "$nat"; R=$native_r W=$nat; return ;;
        overlayfs)
            mount -t overlay overlay -o "lowerdir=$lowers,upperdir=$upper,workdir=$work" "$mnt" ;;
        fuse-overlayfs)
            fuse-overlayfs -o "lowerdir=$lowers,upperdir=$upper,workdir=$work" "$mnt" ;;
        unionfs|unionfs-base)
            # The same invocation as fuse-overlayfs (the lowerdir is then `rr`: it does not
            # change while mounted, the promise overlayfs also asks for); returns once served.
            "$(unionfs_bin "$1")" -o "lowerdir=$lowers,upperdir=$upper,workdir=$work" "$mnt"
            "$(unionfs_bin "$1")" stats --reset "$mnt" >/dev/null 2>&1 || true ;;
        *) echo "unknown file system $1" >&2; return 1 ;;
    esac
    mountpoint -q "$mnt" || { echo "$1: $mnt is not a mount point after mounting" >&2; return 1; }
    R=$mnt W=$mnt
}

unionfs_bin() { if [ "$1" = unionfs-base ]; then echo "$UNIONFS_BASE"; else echo "$UNIONFS"; fi; }

# mark METRIC: after a timed part, the requests it made (unionfs mounts only; untimed).
mark() {
    case $FS in unionfs|unionfs-base) ;; *) return 0 ;; esac
    "$(unionfs_bin "$FS")" stats --reset "$mnt" 2>/dev/null |
        awk -v p="$GROUP,$FS,$RUN,$1" '$1 ~ /^[A-Z_]+$/ { printf "%s,%s,%s,%s,%s\n", p, $1, $2, $3, $4 }' \
            >>"$counts" || true
}

fs_down() {
    sync
    [ "$1" = native ] && return 0
    case $1 in
        unionfs|unionfs-base) "$(unionfs_bin "$1")" umount "$mnt" ;;
        *) umount "$mnt" ;;
    esac
    local i
    for i in $(seq 100); do mountpoint -q "$mnt" || return 0; sleep 0.05; done
    echo "$1: still mounted after unmount" >&2
    return 1
}

# ---------------------------------------------------------------- timing
# tstart; CMD; tstop  -> prints the seconds CMD took. $EPOCHREALTIME is read by the shell itself.
tstart() { T0=$EPOCHREALTIME; }
tstop() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.6f\n", b - a }'; }

# ---------------------------------------------------------------- workloads
# Each wl_GROUP FS runs on a fresh mount (R, W set) and prints "METRIC VALUE" lines on stdout.
# Anything else goes to stderr (the log). A failing command fails the measurement (set -e).

wl_seqread() { # 1 GiB lower file, dd with 1 MiB blocks: first from cold caches, then again warm
    drop_caches
    tstart; dd if="$R/big.bin" of=/dev/null bs=1M status=none; echo "seqread_cold $(tstop)"
    tstart; dd if="$R/big.bin" of=/dev/null bs=1M status=none; echo "seqread_warm $(tstop)"
}

wl_seqwrite() { # a new 1 GiB file, 1 MiB blocks, fsync before dd returns
    tstart
    dd if=/dev/zero of="$W/new.bin" bs=1M count="$big_mb" conv=fsync status=none
    echo "seqwrite_fsync $(tstop)"
}

fio_randread() { # fio_randread JOBS: 4 KiB random buffered reads of the 1 GiB lower file, IOPS
    local out=$S/fio.json
    fio --name=randread --filename="$R/big.bin" --readonly --rw=randread --bs=4k \
        --ioengine=psync --numjobs="$1" --group_reporting --time_based \
        --runtime="$fio_runtime" --invalidate=0 --output-format=json --output="$out" >&2
    python3 "$bench/fsops.py" fio-iops "$out"
}

wl_randread() { # cold: caches dropped before each job; warm: the file read whole first
    drop_caches; echo "randread_1job_cold $(fio_randread 1)"
    drop_caches; echo "randread_2jobs_cold $(fio_randread 2)"
    cat "$R/big.bin" >/dev/null
    echo "randread_1job_warm $(fio_randread 1)"
    echo "randread_2jobs_warm $(fio_randread 2)"
}

# copy-up: the first append to a lower file. Natively there is nothing to copy, so the native
# figure is the baseline issue 7 names: `cp` of the same file on the same disk, then the append.
append_byte() { # append_byte FILE [fsync]
    dd if=/dev/zero of="$1" bs=1 count=1 oflag=append conv=notrunc${2:+,fsync} status=none
}
copyup() { # copyup [fsync]: cold caches, time to the first appended byte
    drop_caches
    tstart
    if [ "$FS" = native ]; then
        cp "$R/big.bin" "$W/big.bin"
        append_byte "$W/big.bin" "$@"
    else
        append_byte "$R/big.bin" "$@"
    fi
    tstop
}
wl_copyup() { echo "copyup_append $(copyup)"; }
wl_copyup_fsync() { echo "copyup_append_fsync $(copyup fsync)"; }

wl_tree() { # find and ls -lR over the lower tree: from cold caches, then right again (warm)
    drop_caches
    tstart; find "$R/tree" >/dev/null; echo "${1:-}find_cold $(tstop)"; mark "${1:-}find_cold"
    tstart; find "$R/tree" >/dev/null; echo "${1:-}find_warm $(tstop)"; mark "${1:-}find_warm"
    drop_caches
    tstart; ls -lR "$R/tree" >/dev/null; echo "${1:-}lsR_cold $(tstop)"; mark "${1:-}lsR_cold"
    tstart; ls -lR "$R/tree" >/dev/null; echo "${1:-}lsR_warm $(tstop)"; mark "${1:-}lsR_warm"
}

wl_layers() { # the same on three layers whose files are hardlinked outside the union
    wl_tree layers_
}

wl_createunlink() { # N empty files created in a new directory, then unlinked (fsops.py loops)
    mkdir "$W/c"
    mark prep
    echo "create $(python3 "$bench/fsops.py" create "$W/c" "$n_create")"; mark create
    echo "unlink $(python3 "$bench/fsops.py" unlink "$W/c" "$n_create")"; mark unlink
}

wl_untar() { # tar -xf of a tarball of the lower tree into a new directory
    mkdir "$W/x"
    mark prep
    tstart; tar -xf "$S/tree.tar" -C "$W/x"; echo "tar_extract $(tstop)"; mark tar_extract
}

wl_delete() { # unlink every file of the lower directory del/, then ls -la the (empty) directory
    local d=$R/del
    if [ "$FS" = native ]; then cp -a "$lower/del" "$W/del"; d=$W/del; sync; fi
    ls -la "$d" >/dev/null # look the names up first, as rm would
    mark prep
    echo "delete_lower $(python3 "$bench/fsops.py" unlink "$d" "$n_delete")"; mark delete_lower
    tstart; ls -la "$d" >/dev/null; echo "ls_after_delete $(tstop)"; mark ls_after_delete
    [ -z "$(ls -A "$d")" ] || { echo "$d is not empty after deleting" >&2; return 1; }
}

# ---------------------------------------------------------------- one measurement
failures=()
echo "group,fs,run,metric,value" >"$raw"
echo "group,fs,run,metric,request,count,errors,ms" >"$counts"

# measure GROUP FS RUN: runs wl_GROUP on a fresh mount of FS in a subshell with its own set -e
# (a function called from `if` or `||` would run with errexit ignored), and appends its figures
# to the raw CSV, or "error" when it failed.
measure() {
    local g=$1 fs=$2 run=$3 rc out=$S/measure.out
    set +e
    (
        set -e
        FS=$fs GROUP=$g RUN=$run
        fs_up "$fs"
        "wl_$g"
        fs_down "$fs"
    ) >"$out" 2>>"$log"
    rc=$?
    set -e
    if [ $rc -eq 0 ] && [ -s "$out" ]; then
        while read -r metric value; do
            echo "$g,$fs,$run,$metric,$value" >>"$raw"
        done <"$out"
        say "$g $fs run $run: $(tr '\n' ' ' <"$out")"
    else
        echo "$g,$fs,$run,error,error" >>"$raw"
        failures+=("$g on $fs (run $run)")
        say "$g $fs run $run: FAILED (rc $rc, see $log)"
        if mountpoint -q "$mnt"; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
    fi
}

# ---------------------------------------------------------------- containers
# oci_run RUNTIME ARGS...: an OCI runtime in a private mount namespace without the cgroup2
# mount at /sys/fs/cgroup/unified. crun 1.8.1 refuses this machine's hybrid layout ("cgroups in
# hybrid mode not supported, drop all controllers from cgroupv2": that mount offers hugetlb);
# without it crun sees a cgroup v1 host, as runner and runc use the v1 controllers. crun and
# runc both run this way, so both pay the same unshare (a fork and an exec, about a millisecond).
oci_run() {
    unshare -m --propagation private sh -c \
        'if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi; exec "$@"' \
        sh "$@"
}

# `runner run demo true` against crun and runc starting `true` on the same rootfs (the demo
# image's layers) with fuse-overlayfs as the root. Each timed start includes mounting and
# unmounting the root, as runner does both. Skipped (a "not available" row) when runner cannot run.
container_note=
container_bench() {
    # A store of the bench's own, kept between runs (the user's store is never touched); the
    # demo image is built into it once.
    local store=${UNIONFS_STORE:-/var/tmp/unionfs-bench-cache/store} image layers lowers="" l r rt
    export UNIONFS_STORE=$store
    if [ $build = 1 ]; then
        (cd "$repo" && cargo build --release -q -p runner) >>"$log" 2>&1 ||
            { container_note="cargo build --release -p runner failed"; return 0; }
    fi
    [ -x "$RUNNER" ] || { container_note="no runner binary at $RUNNER"; return 0; }
    export UNIONFS_BIN=$UNIONFS # runner spawns this unionfs for the container's root
    image=$store/images/demo/image.json
    if [ ! -f "$image" ]; then
        LAYER_TOOL=${LAYER_TOOL_BIN:-} bash "$repo/scripts/build-demo-image.sh" >>"$log" 2>&1 ||
            { container_note="scripts/build-demo-image.sh failed"; return 0; }
    fi
    if ! "$RUNNER" run --rm demo true >>"$log" 2>&1; then
        container_note="\`runner run demo true\` fails (see the log)"
        return 0
    fi
    # The image's layers, bottom first in image.json; overlay lowerdir lists the top first.
    layers=$(python3 -c 'import json,os,sys
p=sys.argv[1]; d=os.path.dirname(p)
print("\n".join(os.path.normpath(os.path.join(d, l["path"])) for l in json.load(open(p))["layers"]))' "$image")
    for l in $layers; do lowers=$l${lowers:+:$lowers}; done
    # An OCI bundle whose process is `true`; the root is mounted by us, per start.
    local b=$S/ctr
    mkdir -p "$b/rootfs"
    (cd "$b" && rm -f config.json && crun spec >/dev/null)
    python3 - "$b/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
c["root"]["readonly"] = False
json.dump(c, open(p, "w"), indent=2)
EOF
    # One untimed start per runtime first: a runtime that cannot start a container on this
    # machine (crun 1.8 refuses some hybrid cgroup v1/v2 layouts) is left out with its reason.
    local rts=(runner) why
    for rt in crun runc; do
        rm -rf "$b/upper" "$b/work"; mkdir -p "$b/upper" "$b/work"
        fuse-overlayfs -o "lowerdir=$lowers,upperdir=$b/upper,workdir=$b/work" "$b/rootfs" 2>>"$log"
        if why=$(oci_run $rt run --bundle "$b" "bench-$$" 2>&1); then
            rts+=("$rt")
        else
            why=$(printf '%s' "$why" | grep -v lazytime | head -n1)
            container_note+="${container_note:+; }$rt cannot start a container here: $why"
            say "container: $rt left out: $why"
            $rt delete -f "bench-$$" >/dev/null 2>&1 || true
        fi
        umount "$b/rootfs"
    done
    local i n=${#rts[@]}
    for r in $(seq "$runs"); do
        for i in $(seq 0 $((n - 1))); do
            rt=${rts[$(((i + r - 1) % n))]} # the order rotates from run to run
            local t
            set +e
            t=$(
                set -e
                if [ $rt = runner ]; then
                    tstart; "$RUNNER" run --rm demo true >&2; tstop
                else
                    rm -rf "$b/upper" "$b/work"; mkdir -p "$b/upper" "$b/work"
                    tstart
                    fuse-overlayfs -o "lowerdir=$lowers,upperdir=$b/upper,workdir=$b/work" "$b/rootfs"
                    oci_run $rt run --bundle "$b" "bench-$$" >&2
                    umount "$b/rootfs"
                    tstop
                fi
            ) 2>>"$log"
            local rc=$?
            set -e
            if [ $rc -eq 0 ]; then
                echo "container,$rt,$r,container_start,$t" >>"$raw"
                say "container $rt run $r: $t"
            else
                echo "container,$rt,$r,container_start,error" >>"$raw"
                failures+=("container start with $rt (run $r)")
                say "container $rt run $r: FAILED"
                mountpoint -q "$b/rootfs" && umount -l "$b/rootfs"
                $rt delete -f "bench-$$" >/dev/null 2>&1 || true
            fi
        done
    done
}

# ---------------------------------------------------------------- real work
# bench/realwork.sh: its own roots, peers and task protocol, so a script of its own; its
# figures go into this run's raw and counts CSVs (group realwork) and report.py tables them.
realwork_bench() {
    if [ $build = 1 ]; then
        (cd "$repo" && cargo build --release -q -p runner -p layer-tool) >>"$log" 2>&1 ||
            die "cargo build --release -p runner -p layer-tool failed (see $log)"
    fi
    local args=()
    if [ -n "$runs_given" ]; then args+=(--runs "$runs_given"); fi
    if [ $quick = 1 ]; then args+=(--quick); fi
    # REALWORK_PEERS=runner,runner-base,... adds a second unionfs build (UNIONFS_BASE_BIN).
    if [ -n "${REALWORK_PEERS:-}" ]; then args+=(--peers "$REALWORK_PEERS"); fi
    BENCH_DIR=$S BENCH_RAW=$raw BENCH_COUNTS=$counts BENCH_LOG=$log UNIONFS_BIN=$UNIONFS \
        RUNNER_BIN=$RUNNER bash "$bench/realwork.sh" "${args[@]}" ||
        failures+=("realwork (see $log)")
}

# ---------------------------------------------------------------- main loop
say "scratch $S, runs $runs, groups ${groups[*]}, file systems ${filesystems[*]}"
for g in "${groups[@]}"; do
    if [ "$g" = container ]; then container_bench; continue; fi
    if [ "$g" = realwork ]; then realwork_bench; continue; fi
    declare -F "wl_$g" >/dev/null || die "unknown workload group $g"
    # fio runs are time-based averages already: three of them are enough in a full run.
    group_runs=$runs
    if [ "$g" = randread ] && [ $quick = 0 ] && [ "$runs" -gt 3 ]; then group_runs=3; fi
    for r in $(seq "$group_runs"); do
        n=${#filesystems[@]}
        for i in $(seq 0 $((n - 1))); do
            measure "$g" "${filesystems[$(((i + r - 1) % n))]}" "$r"
        done
    done
done

# ---------------------------------------------------------------- report
# Machine and run facts next to the figures. Strings travel in the environment, not in code.
export BENCH_STAMP=$stamp BENCH_QUICK=$quick BENCH_RUNS=$runs BENCH_DIR_USED=$S \
    BENCH_REPO=$repo BENCH_UNIONFS=$UNIONFS BENCH_UNIONFS_REV=$unionfs_rev BENCH_CONTAINER_NOTE=$container_note \
    BENCH_SIZES="$big_mb $tree_dirs $tree_per_dir $n_create $n_delete $fio_runtime" \
    BENCH_FAILURES="$(printf '%s\n' ${failures[@]+"${failures[@]}"})"
python3 - "$results/$stamp.meta.json" <<'EOF'
import json, os, platform, subprocess, sys
e = os.environ
def sh(c):
    return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
sizes = [int(x) for x in e["BENCH_SIZES"].split()]
json.dump({
    "stamp": e["BENCH_STAMP"], "quick": e["BENCH_QUICK"] == "1", "runs": int(e["BENCH_RUNS"]),
    "sizes": dict(zip(["big_mib", "tree_dirs", "tree_files_per_dir", "create_unlink_files",
                       "delete_lower_files", "fio_runtime_s"], sizes)),
    "kernel": platform.release(), "cpus": os.cpu_count(),
    "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
    "mem": sh("free -h | awk '/Mem:/ {print $2}'"),
    "disk": sh(f"findmnt -no SOURCE,FSTYPE -T '{e['BENCH_DIR_USED']}'"),
    "unionfs_rev": e["BENCH_UNIONFS_REV"],
    "repo_head": sh(f"cd '{e['BENCH_REPO']}' && git rev-parse --short HEAD"),
    "unionfs_bin": e["BENCH_UNIONFS"],
    "versions": {"fuse-overlayfs": sh("fuse-overlayfs --version 2>&1 | grep fuse-overlayfs"),
                 "fio": sh("fio --version"), "crun": sh("crun --version | head -1"),
                 "runc": sh("runc --version | head -1")},
    "container_note": e["BENCH_CONTAINER_NOTE"],
    "failures": [f for f in e["BENCH_FAILURES"].split("\n") if f],
}, open(sys.argv[1], "w"), indent=2)
EOF
python3 "$bench/report.py" "$raw" "$results/$stamp.meta.json" "$results/$stamp"
say "results: $results/$stamp.{json,csv,md,raw.csv,counts.csv,log}"

if [ ${#failures[@]} -gt 0 ]; then
    say "FAILED workloads: ${failures[*]}"
    exit 1
fi
