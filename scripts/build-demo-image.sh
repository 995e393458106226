#!/usr/bin/env bash
# Build the image `demo` in the local store: busybox, /etc and mount points in a base layer
# (image `demo-base`), and a second layer (fixtures/demo/top) that changes, adds and deletes
# a few files, so the image is a real union.
#
# Needs root (files owned by root, apt-get) and the Rust toolchain. Environment:
#   UNIONFS_STORE     the store (default /var/lib/unionfs)
#   LAYER_TOOL        a layer-tool binary to use; otherwise this script always runs
#                     `cargo build --release -p layer-tool` (quick when up to date) and uses
#                     target/release/layer-tool (or $CARGO_TARGET_DIR/release/layer-tool)
#   DEMO_IMAGE_NAME   the image name (default demo; the base layer is "$DEMO_IMAGE_NAME-base")
#   SOURCE_DATE_EPOCH mtimes are clamped to it (default 1700000000), so rebuilding on the
#                     same machine gives the same layer digests
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fixtures=$repo/fixtures/demo
name=${DEMO_IMAGE_NAME:-demo}
export UNIONFS_STORE=${UNIONFS_STORE:-/var/lib/unionfs}
epoch=${SOURCE_DATE_EPOCH:-1700000000}

if [ "$(id -u)" -ne 0 ]; then
    echo "build-demo-image: run as root (the image's files must be owned by root)" >&2
    exit 1
fi

# busybox-static: one static binary that runs inside any rootfs.
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
    echo "build-demo-image: installing busybox-static" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y busybox-static >/dev/null || {
        apt-get update >/dev/null
        apt-get install -y busybox-static >/dev/null
    }
fi
busybox=/bin/busybox
[ -x "$busybox" ] || busybox=/usr/bin/busybox
[ -x "$busybox" ] || { echo "build-demo-image: no busybox binary after install" >&2; exit 1; }

if [ -n "${LAYER_TOOL:-}" ]; then
    tool=$LAYER_TOOL
else
    (cd "$repo" && cargo build --release --quiet -p layer-tool)
    tool=${CARGO_TARGET_DIR:-$repo/target}/release/layer-tool
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/demo-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The base layer.
root=$work/base
mkdir -p "$root"
for d in bin sbin usr/bin usr/sbin etc tmp root proc sys dev var/tmp home; do
    mkdir -p "$root/$d"
done
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"
cp "$busybox" "$root/bin/busybox"
# Applet links, relative so they also resolve when a layer is looked at from the host.
"$root/bin/busybox" --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    [ -e "$root/$applet" ] || [ -L "$root/$applet" ] && continue
    dir=$(dirname "$applet")
    mkdir -p "$root/$dir"
    if [ "$dir" = . ]; then up=.; else up=$(printf '%s' "$dir" | sed -e 's|[^/][^/]*|..|g'); fi
    ln -s "$up/bin/busybox" "$root/$applet"
done
cp -a "$fixtures/base/." "$root/"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/motd"
chown -R 0:0 "$root"

# The second layer.
top=$work/top
mkdir -p "$top"
cp -a "$fixtures/top/." "$top/"
chown -R 0:0 "$top"

"$tool" build "$root" --name "$name-base" --mtime "$epoch" \
    --env PATH=/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/sh --workdir / >/dev/null
"$tool" build "$top" --name "$name" --base "$name-base" --mtime "$epoch"
