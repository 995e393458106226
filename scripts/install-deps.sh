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
  skopeo           # docker archives from OCI layouts for layer-tool/tests/corpus.rs; registry tests
  docker-registry  # distribution 2.8, the real registry layer-tool/tests/registry.rs starts
  apache2-utils    # htpasswd (bcrypt) for the registry's basic auth in tests
  openssl          # a CA and a server certificate for the TLS registry in tests
  e2fsprogs        # mkfs.ext4: a loop-backed ext4 upper branch that fails with EIO (faults.rs)
  mount            # mount -o loop, losetup (faults.rs, runner/tests/isolation.rs)
  g++              # libfuzzer-sys builds libFuzzer from C++ (scripts/fuzz.sh)
  gcc              # cc -static: the attacker programs of runner/tests/security.rs
  libc6-dev        # libc.a for those static programs
  containerd       # a real client: ctr and the runc shim drive runner (runner/tests/containerd.rs, cri.rs, snapshotter/tests)
  bpftool          # an independent look at runner's cgroup v2 device programs (cgroup_v2_devices.rs)
  uidmap           # newuidmap/newgidmap: subordinate id maps of rootless runs (runner/tests/rootless.rs)
  slirp4netns      # runner --net slirp4netns: the user-mode network of rootless runs (runner/tests/rootless.rs)
  runc             # `runc spec` bundles and runc itself (runner/tests/runc_spec.rs); podman's runtime in unionfs' podman tests (crun refuses hybrid cgroups)
  protobuf-compiler # protoc: containerd-snapshots and k8s-cri generate their gRPC code at build time
  containernetworking-plugins # CNI plugins (host-device) for the CRI pod test (runner/tests/cri.rs)
  rootlesskit      # rootless containerd (user, mount, net namespaces) for snapshotter/tests/rootless.rs
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
