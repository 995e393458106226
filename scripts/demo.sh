#!/usr/bin/env bash
# The README's first command: run a container on a unionfs root and show what the kernel and the
# union give it.
#
# On a fresh Debian machine with Rust, as root:
#   1. installs fuse3 and busybox-static (apt-get) when missing,
#   2. builds unionfs, runner and layer-tool (release; DEMO_PROFILE=debug for a debug build),
#   3. builds the `demo` image (scripts/build-demo-image.sh),
#   4. runs a container from `demo` and checks, printing each result:
#      - `ps` sees pid 1 and only the container's processes,
#      - the hostname is the container's,
#      - the root is the merged layers (a file of each image layer, one hidden by a whiteout),
#      - a file deleted in the container is a `.wh.` file in the writable layer and still
#        present in the image layer.
# Exits non-zero when a check fails. Environment: UNIONFS_STORE (default /var/lib/unionfs).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export UNIONFS_STORE=${UNIONFS_STORE:-/var/lib/unionfs}
profile=${DEMO_PROFILE:-release}

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
failures=0
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then
        printf '  \033[32mPASS\033[0m %s\n' "$what"
    else
        printf '  \033[31mFAIL\033[0m %s\n' "$what"
        failures=$((failures + 1))
    fi
}

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: run as root (containers need namespaces, cgroups and mounts)" >&2
    exit 1
fi

bold "1. Packages: fuse3 (FUSE), busybox-static (the demo image's userland)"
missing=()
for pkg in fuse3 busybox-static; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "${missing[@]}" >/dev/null || { apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; }
    echo "  installed: ${missing[*]}"
else
    echo "  already installed"
fi
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
[ -e /dev/fuse ] || { echo "demo: no /dev/fuse on this machine" >&2; exit 1; }

bold "2. Build ($profile)"
cargo_flags=()
[ "$profile" = release ] && cargo_flags+=(--release)
(cd "$repo" && cargo build "${cargo_flags[@]}" -p unionfs -p runner -p layer-tool)
bin=${CARGO_TARGET_DIR:-$repo/target}/$profile
runner=$bin/runner
export UNIONFS_BIN=$bin/unionfs
[ "$profile" = release ] && export LAYER_TOOL=$bin/layer-tool

bold "3. The demo image"
(cd "$repo" && bash scripts/build-demo-image.sh)

bold "4. A container from demo"
name=demo-$$
# Whatever happens, leave nothing behind (the runner itself unmounts and removes the cgroup).
trap '"$runner" rm --force "$name" >/dev/null 2>&1 || true' EXIT
host_procs=$(ls -d /proc/[0-9]* | wc -l)
out=$("$runner" run --name "$name" --hostname demo-box demo sh -c '
    echo "--- ps in the container:"; ps -o pid,user,comm
    echo "--- hostname: $(hostname)"
    echo "--- /etc/demo (merged from both image layers):"; ls /etc/demo
    echo "--- hello.txt (bottom layer): $(cat /etc/demo/hello.txt)"
    echo "--- layer2.txt (top layer): $(cat /etc/demo/layer2.txt)"
    echo "--- goodbye.txt (bottom layer, whited out by the top one): $(cat /etc/demo/goodbye.txt 2>&1)"
    echo "--- rm /etc/demo/hello.txt"; rm /etc/demo/hello.txt; ls /etc/demo
')
printf '%s\n' "$out"

container_dir=$(readlink -f "$UNIONFS_STORE/containers/names/$name")
upper=$container_dir/upper
image_dir=$UNIONFS_STORE/images/demo
base_layer=""
while read -r path; do
    case $path in /*) dir=$path ;; *) dir=$image_dir/$path ;; esac
    [ -f "$dir/etc/demo/hello.txt" ] && base_layer=$(readlink -f "$dir")
done < <(sed -n 's/.*"path": *"\([^"]*\)".*/\1/p' "$image_dir/image.json")

bold "On the host, after the container exited"
echo "  the writable layer $upper/etc/demo:"
ls -la "$upper/etc/demo" | sed 's/^/    /'
echo "  the image layer ${base_layer:-?}/etc/demo:"
[ -n "$base_layer" ] && ls -la "$base_layer/etc/demo" | sed 's/^/    /'

bold "Checks"
ps_pids=$(printf '%s\n' "$out" | sed -n '/^--- ps in the container:/,/^--- hostname/p' | awk '$1 ~ /^[0-9]+$/ {print $1}')
check "ps in the container sees pid 1" grep -qx 1 <<<"$ps_pids"
check "ps sees only the container's processes ($(wc -l <<<"$ps_pids") there, $host_procs on the host)" \
    test "$(wc -l <<<"$ps_pids")" -le 3
check "the hostname is the container's (demo-box; the host is $(hostname))" grep -qx -- "--- hostname: demo-box" <<<"$out"
check "the root merges the bottom layer (hello.txt)" grep -q "^--- hello.txt (bottom layer): ." <<<"$out"
check "the root merges the top layer (layer2.txt)" grep -q "^--- layer2.txt (top layer): ." <<<"$out"
check "the top layer's whiteout hides goodbye.txt" grep -q "goodbye.txt.*No such file" <<<"$out"
check "the deleted file is a .wh. file in the writable layer" test -e "$upper/etc/demo/.wh.hello.txt"
check "and is still present in the image layer" test -f "$base_layer/etc/demo/hello.txt"
check "nothing is mounted any more" bash -c "! grep -q '$container_dir' /proc/self/mountinfo"

"$runner" rm "$name" >/dev/null
trap - EXIT
if [ "$failures" -ne 0 ]; then
    printf '\n%d check(s) failed\n' "$failures"
    exit 1
fi
printf '\nAll checks passed.\n'
