#!/usr/bin/env bash
# Installs the Debian packages that the build, the demo and the tests need (as root).
# Idempotent: only missing packages are fetched.
set -euo pipefail
packages=(
  fuse3            # /dev/fuse helpers, mount.fuse3 for `mount -t fuse.unionfs`
  attr             # getfattr/setfattr, used by tests to check xattrs
  busybox-static   # the demo image's userland
  umoci            # an independent OCI image tool, to check layer-tool against
  iproute2         # `ip`, to check a container's network namespace
  procps           # ps, used by the demo
  util-linux       # unshare, mount
  podman           # a real client: unionfs as the overlay driver's mount_program
  buildah          # real layers (overlay diffs, opaque markers) for layer-tool/tests/corpus.rs
  skopeo           # docker archives from OCI layouts for layer-tool/tests/corpus.rs
  e2fsprogs        # mkfs.ext4: a loop-backed ext4 upper branch that fails with EIO (faults.rs)
  mount            # mount -o loop, losetup (faults.rs, runner/tests/isolation.rs)
  g++              # libfuzzer-sys builds libFuzzer from C++ (scripts/fuzz.sh)
  protobuf-compiler # protoc: containerd-snapshots and k8s-cri generate their gRPC code at build time
  containerd       # snapshotter/tests and runner/tests/cri.rs start a private containerd 1.6
  containernetworking-plugins # the loopback CNI plugin for the CRI pod test
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The fuse module must be loaded for /dev/fuse to work.
if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
fi

# pjdfstest (the POSIX filesystem conformance suite, Rust port from crates.io), for
# unionfs/tests/conformance.rs. Built once into target/tools.
tools="$(cd "$(dirname "$0")/.." && pwd)/target/tools"
if [ ! -x "$tools/bin/pjdfstest" ]; then
  cargo install pjdfstest --version 0.2.2 --locked --root "$tools" --quiet
fi
# cargo-fuzz, for scripts/fuzz.sh (the fuzz targets in fuzz/).
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$tools" --quiet
fi
