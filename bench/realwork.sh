#!/usr/bin/env bash
# The real-work group (issue 15): everyday tasks in a Debian bookworm root, run by
#   runner               `runner run --rm IMAGE`: the unionfs root runner mounts itself
#   runc-overlayfs       `runc run` of a bundle whose rootfs is a kernel overlayfs mount
#   runc-fuse-overlayfs  the same with a fuse-overlayfs mount (the "never slower than" peer)
#   chroot               `chroot` into a plain `cp -a` copy of the tree (no union at all)
#   runner-base          (only when asked for with --peers) runner with $UNIONFS_BASE_BIN as
#                        its unionfs: a before/after comparison of two unionfs builds in one run
# every one over the same tree (the image's layer in a scratch store), interleaved, the order
# rotating from run to run. Called by `bash bench/run.sh --only realwork` (which also writes the
# report); can run alone for a look at the figures.
#
#   bash bench/realwork.sh [--quick] [--runs N] [--tasks T,T] [--peers P,P] [--prepare-only]
#
# Tasks: git dpkg rmdoc compileall files make (see bench/realwork-task.sh, which runs inside).
#
# What is timed: only the task, inside the container: the task script prepares its input
# (untimed), says "ready" on a fifo and waits for "go"; the driver then resets runner's
# request counters, says go, and the script reads the clock (`date +%s.%N`) before and after
# the task and hands both back. So container start, mounts and copies are never counted. Before
# the container exits it waits once more, while the driver reads the counters of runner's
# union (`unionfs stats MNT`, found in /proc/self/mountinfo under the scratch store).
#
# Environment: BENCH_DIR (scratch), REALWORK_CACHE (the Debian root and the scratch store that
# holds its image, kept between runs: default /var/tmp/unionfs-bench-cache/realwork),
# RUNNER_BIN, UNIONFS_BIN, LAYER_TOOL_BIN (default target/release/...), BENCH_RAW and
# BENCH_COUNTS (CSV files to append to; run.sh sets them; alone: $REALWORK_CACHE/last.*.csv),
# BENCH_LOG.
#
# Where writes go: every measurement gets a fresh ext4 (with a journal, as mkfs.ext4 makes it
# on a default Debian install) on a sparse loop image under the scratch directory, mounted
# where the peer writes: runner's containers directory (its writable layers), the runc peers'
# upper and work directories, chroot's copy. Why: this machine's own disk is ext4 without a
# journal, where ext4 skips every inode freed in the last 60-360 s on each allocation
# (`recently_deleted`); after one peer deleted 5,000 files, the next peer's creates in the same
# block group cost up to 0.5 ms each, so whoever ran next paid for whoever ran before.
# REALWORK_WRITE_FS=host keeps the old way (everything on the scratch directory's disk).
#
# Needs root. Installs mmdebstrap with apt-get when missing. Never touches the user's store:
# runner and layer-tool see only UNIONFS_STORE=$REALWORK_CACHE/store.
set -euo pipefail
export LC_ALL=C

bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench/.." && pwd)

# ---------------------------------------------------------------- options
quick=0 runs= tasks=git,dpkg,rmdoc,compileall,files,make
peers=runner,runc-overlayfs,runc-fuse-overlayfs,chroot prepare_only=0
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --runs) runs=$2; shift ;;
        --tasks) tasks=$2; shift ;;
        --peers) peers=$2; shift ;;
        --prepare-only) prepare_only=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "realwork.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ $quick = 1 ]; then : "${runs:=1}"; else : "${runs:=3}"; fi
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "realwork.sh: --runs needs a positive number" >&2; exit 2; }
IFS=, read -r -a task_list <<<"$tasks"
IFS=, read -r -a peer_list <<<"$peers"

S=${BENCH_DIR:-/var/tmp/unionfs-bench}/realwork
cache=${REALWORK_CACHE:-/var/tmp/unionfs-bench-cache/realwork}
RUNNER=${RUNNER_BIN:-$repo/target/release/runner}
UNIONFS=${UNIONFS_BIN:-$repo/target/release/unionfs}
LAYER_TOOL=${LAYER_TOOL_BIN:-$repo/target/release/layer-tool}
# Alone, the figures of the last run are kept beside the cache (run.sh passes its own files).
raw=${BENCH_RAW:-$cache/last.raw.csv}
counts=${BENCH_COUNTS:-$cache/last.counts.csv}
log=${BENCH_LOG:-/dev/stderr}
image=rw-bookworm
export UNIONFS_STORE=$cache/store # runner and layer-tool: the scratch store only

say() { printf '[realwork %s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$log" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (mounts, chroot, runc)"
for t in "${task_list[@]}"; do
    case $t in git|dpkg|rmdoc|compileall|files|make) ;; *) die "unknown task $t" ;; esac
done
for p in "${peer_list[@]}"; do
    case $p in
        runner|runner-base|runc-overlayfs|runc-fuse-overlayfs|chroot) ;;
        *) die "unknown peer $p" ;;
    esac
done

# ---------------------------------------------------------------- the Debian root (cached)
# What the root is made of. Its hash names the cached root: change the recipe, get a new root.
ROOT_PKGS=git,python3,make,gcc,libc6-dev
# Five small packages that are not in the root and need nothing outside it and each other.
DEBS="jq libjq1 libonig5 tree pv"
root_id=$(printf 'bookworm apt %s debs %s v1' "$ROOT_PKGS" "$DEBS" | sha256sum | cut -c1-16)

ensure_mmdebstrap() {
    command -v mmdebstrap >/dev/null && return 0
    say "installing mmdebstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >>"$log" 2>&1 ||
        { apt-get update -q >>"$log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >>"$log" 2>&1; } ||
        die "cannot install mmdebstrap"
}

# make_root DIR: mmdebstrap a bookworm root into DIR, with /debs holding the five .debs and an
# empty /bench, where every peer mounts the control directory.
make_root() {
    local dir=$1
    ensure_mmdebstrap
    say "mmdebstrap bookworm ($ROOT_PKGS) into $dir (a few minutes, once)"
    mmdebstrap --variant=apt --include="$ROOT_PKGS" \
        --customize-hook='mkdir -p "$1/bench" "$1/debs"' \
        bookworm "$dir" >>"$log" 2>&1 || die "mmdebstrap failed (see $log)"
    # The host is bookworm too: its apt downloads the same versions the root would.
    # shellcheck disable=SC2086 # DEBS is a list
    (cd "$dir/debs" && apt-get download -q $DEBS) >>"$log" 2>&1 ||
        { apt-get update -q >>"$log" 2>&1 && (cd "$dir/debs" && apt-get download -q $DEBS) >>"$log" 2>&1; } ||
        die "apt-get download $DEBS failed (see $log)"
    [ "$(find "$dir/debs" -name '*.deb' | wc -l)" -eq 5 ] || die "expected five .debs in $dir/debs"
}

# ensure_image: the root, built once and kept in $cache/root, imported as image $image into the
# scratch store. Both are remade only when the recipe changes.
ensure_image() {
    mkdir -p "$cache"
    if [ "$(cat "$cache/root.id" 2>/dev/null)" != "$root_id" ]; then
        rm -rf "$cache/root" "$cache/root.new" "$cache/root.id" "$cache/store"
        make_root "$cache/root.new"
        mv "$cache/root.new" "$cache/root"
        echo "$root_id" >"$cache/root.id"
    fi
    if [ ! -f "$UNIONFS_STORE/images/$image/image.json" ]; then
        say "layer-tool build $cache/root --name $image (store $UNIONFS_STORE)"
        "$LAYER_TOOL" build "$cache/root" --name "$image" \
            --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --env HOME=/root >>"$log" 2>&1 || die "layer-tool build failed (see $log)"
    fi
}

# image_lower: the image's one layer directory, the tree every peer starts from.
image_lower() {
    python3 - "$UNIONFS_STORE/images/$image/image.json" <<'EOF'
import json, os, sys
p = sys.argv[1]
layers = json.load(open(p))["layers"]
if len(layers) != 1:
    sys.exit(f"{p}: expected one layer, found {len(layers)}")
print(os.path.normpath(os.path.join(os.path.dirname(p), layers[0]["path"])))
EOF
}

ensure_image
lower=$(image_lower) || die "cannot read the image's layer"
say "image $image: lower $lower ($(du -sh "$lower" | cut -f1))"
[ $prepare_only = 1 ] && exit 0

# ---------------------------------------------------------------- sizes
# Issue 15's sizes; --quick shrinks the ones that can shrink. compileall's size is the stdlib
# directory it compiles: all of /usr/lib/python3.11 (544 .py files in bookworm's python3.11,
# the issue's 544 .pyc), or email/ alone.
if [ $quick = 1 ]; then
    declare -A size=([git]=200 [dpkg]=- [rmdoc]=- [compileall]=email [files]=500 [make]=30)
else
    declare -A size=([git]=2000 [dpkg]=- [rmdoc]=- [compileall]=. [files]=5000 [make]=300)
fi

# ---------------------------------------------------------------- scratch
ctl=$S/ctl bundle=$S/bundle W=$S/w copy=$S/w/copy
write_fs=${REALWORK_WRITE_FS:-fresh}
case $write_fs in fresh|host) ;; *) die "REALWORK_WRITE_FS: fresh or host, not $write_fs" ;; esac
# unmount_all DIR: every mount stacked on DIR (lazily when busy: a killed container's last
# process may still hold it).
unmount_all() {
    while mountpoint -q "$1" 2>/dev/null; do umount "$1" 2>/dev/null || umount -l "$1"; done
}
# writes_up DIR...: a fresh, empty file system for this measurement's writes (see the top),
# mounted at $W (where the runc peers' upper and work and chroot's copy go) and bound onto
# each DIR (runner's containers directory) from a directory of its own; writes_down undoes it.
writes_up() {
    mkdir -p "$W" "$@"
    if [ "$write_fs" = fresh ]; then
        truncate -s 8G "$S/w.img"
        mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$S/w.img" ||
            die "mkfs.ext4 $S/w.img failed"
        mount -o loop "$S/w.img" "$W"
    fi
    local d
    for d in "$@"; do
        mkdir -p "$W/${d##*/}"
        mount --bind "$W/${d##*/}" "$d"
    done
}
writes_down() {
    local d
    for d in "$@"; do unmount_all "$d"; done
    unmount_all "$W"
    rm -rf "$W" "$S/w.img"
}
cleanup() {
    set +e
    runc delete -f "rw-$$" >/dev/null 2>&1
    unmount_all "$bundle/rootfs"
    writes_down "$UNIONFS_STORE/containers"
    rm -rf "$S"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$S"
mkdir -p "$S"
if [ -z "${BENCH_RAW:-}" ]; then rm -f "$raw" "$counts"; fi
[ -f "$raw" ] || echo "group,fs,run,metric,value" >"$raw"
[ -f "$counts" ] || echo "group,fs,run,metric,request,count,errors,ms" >"$counts"

for p in "${peer_list[@]}"; do
    case $p in
        runc-*) command -v runc >/dev/null || die "runc is not installed (apt-get install runc)" ;;&
        *fuse-overlayfs) command -v fuse-overlayfs >/dev/null || die "fuse-overlayfs is not installed" ;;
        runner) [ -x "$RUNNER" ] && [ -x "$UNIONFS" ] || die "no runner/unionfs at $RUNNER, $UNIONFS" ;;
        runner-base) [ -x "${UNIONFS_BASE_BIN:-}" ] || die "--peers runner-base needs UNIONFS_BASE_BIN" ;;
    esac
done

# ---------------------------------------------------------------- the runc bundle
# One bundle for both runc peers: runc's default spec, made as close to runner's container as
# the spec allows: docker's default capabilities (runner's; runc's spec has only three, too
# few for dpkg), a writable root, the image's PATH and HOME, and the control directory at
# /bench. Its process runs /bench/start, which each measurement writes.
make_bundle() {
    mkdir -p "$bundle/rootfs"
    (cd "$bundle" && runc spec)
    python3 - "$bundle/config.json" "$ctl" <<'EOF'
import json, sys
path, ctl = sys.argv[1:]
c = json.load(open(path))
caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
p = c["process"]
p.update(args=["sh", "/bench/start"], terminal=False, cwd="/",
         env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"])
p["capabilities"] = {k: caps for k in ["bounding", "effective", "permitted"]}
c["root"]["readonly"] = False
c["mounts"].append({"destination": "/bench", "type": "bind", "source": ctl,
                    "options": ["rbind", "rw"]})
json.dump(c, open(path, "w"), indent=2)
EOF
}

# ---------------------------------------------------------------- the peers
# peer_up_P (untimed: a fresh root), start_P (the container, in the background), peer_down_P.
# Each root starts from the same tree, $lower, with nothing written yet.
# runner makes a fresh writable layer itself, in its store's containers directory.
peer_up_runner() { writes_up "$UNIONFS_STORE/containers"; }
start_runner() {
    UNIONFS_BIN=$UNIONFS "$RUNNER" run --rm -v "$ctl:/bench" "$image" sh /bench/start
}
peer_down_runner() { writes_down "$UNIONFS_STORE/containers"; }
peer_up_runner-base() { peer_up_runner; }
start_runner-base() { UNIONFS=$UNIONFS_BASE_BIN start_runner; }
peer_down_runner-base() { peer_down_runner; }

runc_root() { # runc_root overlayfs|fuse-overlayfs: a fresh upper and work dir over $lower
    unmount_all "$bundle/rootfs"
    writes_up
    mkdir -p "$W/upper" "$W/work"
    local o="lowerdir=$lower,upperdir=$W/upper,workdir=$W/work"
    if [ "$1" = overlayfs ]; then
        mount -t overlay overlay -o "$o" "$bundle/rootfs"
    else
        fuse-overlayfs -o "$o" "$bundle/rootfs"
    fi
}
runc_down() {
    runc delete -f "rw-$$" >/dev/null 2>&1 || true
    unmount_all "$bundle/rootfs"
    writes_down
}
peer_up_runc-overlayfs() { runc_root overlayfs; }
peer_up_runc-fuse-overlayfs() { runc_root fuse-overlayfs; }
start_runc-overlayfs() { runc run --bundle "$bundle" "rw-$$"; }
start_runc-fuse-overlayfs() { runc run --bundle "$bundle" "rw-$$"; }
peer_down_runc-overlayfs() { runc_down; }
peer_down_runc-fuse-overlayfs() { runc_down; }

# chroot into a plain copy; /dev, /proc and /bench are mounted in a private mount namespace of
# its own, so they vanish with it, whatever happens.
peer_up_chroot() { writes_up; cp -a "$lower" "$copy"; }
start_chroot() {
    unshare -m --propagation private sh -c '
        mount --bind /dev "$1/dev" && mount -t proc proc "$1/proc" && mount --bind "$2" "$1/bench" &&
        exec chroot "$1" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root sh /bench/start' sh "$copy" "$ctl"
}
peer_down_chroot() { writes_down; }

# ---------------------------------------------------------------- one measurement
# The control directory: the task script, the start line and four fifos. The driver holds each
# fifo open read-write, so neither side ever blocks in open() and a dead container is noticed.
make_ctl() { # make_ctl TASK
    rm -rf "$ctl"
    mkdir -p "$ctl"
    cp "$bench/realwork-task.sh" "$ctl/"
    echo "exec sh /bench/realwork-task.sh $1 ${size[$1]}" >"$ctl/start"
    mkfifo "$ctl/ready" "$ctl/go" "$ctl/result" "$ctl/end"
}

# wait_line FD PID: the next line on FD, while PID lives (a measurement may take minutes).
# A read that times out may already have taken the first bytes of the line (bash reads a pipe
# a byte at a time and keeps what it read in the variable): they are kept, not lost.
wait_line() {
    local line= part
    until IFS= read -r -t 1 -u "$1" part; do
        line+=$part
        kill -0 "$2" 2>/dev/null || { echo "the container exited before answering" >&2; return 1; }
    done
    echo "$line$part"
}

# union_mount: the mount point of the union runner is serving (under the scratch store).
union_mount() {
    awk -v p="$UNIONFS_STORE/containers/" 'index($5, p) == 1 && $5 ~ /\/rootfs$/ { print $5 }' \
        /proc/self/mountinfo | tail -n1
}

# run_one TASK PEER RUN: prints the task's seconds; appends runner's request counts.
run_one() {
    local task=$1 peer=$2 run=$3 pid mnt= times fr fg fres fe
    make_ctl "$task"
    exec {fr}<>"$ctl/ready" {fg}<>"$ctl/go" {fres}<>"$ctl/result" {fe}<>"$ctl/end"
    trap "peer_down_$peer" EXIT
    "peer_up_$peer"
    "start_$peer" </dev/null >>"$log" 2>&1 &
    pid=$!
    trap "kill $pid 2>/dev/null; wait $pid 2>/dev/null; peer_down_$peer" EXIT
    wait_line "$fr" "$pid" >/dev/null
    if [ "$peer" = runner ] || [ "$peer" = runner-base ]; then
        mnt=$(union_mount)
        [ -n "$mnt" ] || { echo "no union under $UNIONFS_STORE/containers" >&2; return 1; }
        "$UNIONFS" stats --reset "$mnt" >/dev/null # either build's daemon answers it
    fi
    sync # the preparation's dirty pages are not the task's to write
    echo go >&"$fg"
    times=$(wait_line "$fres" "$pid")
    if [ -n "$mnt" ]; then
        "$UNIONFS" stats "$mnt" |
            awk -v p="realwork,$peer,$run,$task" '$1 ~ /^[A-Z_]+$/ { printf "%s,%s,%s,%s,%s\n", p, $1, $2, $3, $4 }' \
                >>"$counts"
    fi
    echo end >&"$fe"
    wait "$pid" || { echo "$peer exited with status $?" >&2; return 1; }
    trap "peer_down_$peer" EXIT
    awk -v t="$times" 'BEGIN { split(t, a, " "); printf "%.3f\n", a[2] - a[1] }'
}

# measure TASK PEER RUN: run_one in a subshell of its own (its EXIT trap tears the root down),
# the figure or "error" into the raw CSV.
failures=0
measure() {
    local t rc
    set +e
    t=$(set -e; run_one "$@" 2>>"$log")
    rc=$?
    set -e
    if [ $rc -eq 0 ] && [ -n "$t" ]; then
        echo "realwork,$2,$3,$1,$t" >>"$raw"
        say "$1 $2 run $3: $t s"
    else
        echo "realwork,$2,$3,$1,error" >>"$raw"
        failures=$((failures + 1))
        say "$1 $2 run $3: FAILED (see $log)"
    fi
}

# ---------------------------------------------------------------- main loop
case " ${peer_list[*]} " in *" runc-"*) make_bundle ;; esac
# Warm the host's caches of the tree once, untimed: otherwise the first peer of the first run
# reads a cold disk and the others do not (chroot's `cp -a` keeps them warm afterwards).
say "reading $lower once (warm caches for every peer)"
tar -cf - -C "$lower" . | cat >/dev/null
say "tasks ${task_list[*]}; peers ${peer_list[*]}; $runs run(s); lower $lower"
for task in "${task_list[@]}"; do
    for r in $(seq "$runs"); do
        n=${#peer_list[@]}
        for i in $(seq 0 $((n - 1))); do
            measure "$task" "${peer_list[$(((i + r - 1) % n))]}" "$r"
        done
    done
done
[ $failures -eq 0 ] || die "$failures measurement(s) failed"
