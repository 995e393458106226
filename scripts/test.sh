#!/usr/bin/env bash
# The README's test command: installs what the tests need, builds, and runs every test of the
# workspace on real FUSE mounts and real containers, plus the format and lint checks.
# Run as root on a Debian machine with the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
if [ -f scripts/build-demo-image.sh ]; then
  bash scripts/build-demo-image.sh
fi
cargo test --workspace -- --test-threads=2
# The vendored fuser's own tests of this project's patch (vendor/README.md).
cargo test --manifest-path vendor/fuser/Cargo.toml --target-dir target/vendor-fuser --lib percpu
# The fuzz targets (fuzz/, cargo-fuzz), briefly and without a sanitizer (a cold build takes
# about 2 minutes): a crash fails the run and leaves its input in target/fuzz/artifacts/.
# `bash scripts/fuzz.sh 600` fuzzes for longer, with AddressSanitizer.
FUZZ_SANITIZER=none bash scripts/fuzz.sh 20
