#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for SECONDS (default 60) and fails on the first crash.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#
# FUZZ_SANITIZER (default: address) is passed to `cargo fuzz -s`; `none` builds in about half the
# time (the targets are safe Rust; AddressSanitizer only watches the unsafe code of dependencies),
# which is what scripts/test.sh uses.
#
# Targets: tar_import (layer-tool's layer unpacker, after compression detection) and branch_spec
# (unionfs's branch-spec and -o option parsers). cargo-fuzz is installed into target/tools like
# pjdfstest (scripts/install-deps.sh); it wants nightly for -Zsanitizer, which
# RUSTC_BOOTSTRAP=1 gives the stable toolchain. The corpus grows in target/fuzz/corpus/TARGET
# (kept between runs), seeded from fuzz/seeds/TARGET; a crashing input is written to
# target/fuzz/artifacts/TARGET/ and its path printed. Reproduce one with
#   RUSTC_BOOTSTRAP=1 target/tools/bin/cargo-fuzz run --fuzz-dir fuzz TARGET PATH
# then keep it as a regression unit test next to the code it broke.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(tar_import branch_spec)
fi
tools="$root/target/tools"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$tools" --quiet
fi
export RUSTC_BOOTSTRAP=1
# The fuzz build has flags of its own (sanitizer, coverage): keep it out of the main target dir
# so neither invalidates the other.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}/fuzz-build"
out="$root/target/fuzz"
sanitizer="${FUZZ_SANITIZER:-address}"
"$tools/bin/cargo-fuzz" build --fuzz-dir fuzz -s "$sanitizer"
for t in "${targets[@]}"; do
  mkdir -p "$out/corpus/$t" "$out/artifacts/$t"
  echo "fuzz: $t for ${seconds}s"
  if ! "$tools/bin/cargo-fuzz" run --fuzz-dir fuzz -s "$sanitizer" "$t" "$out/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$seconds" -artifact_prefix="$out/artifacts/$t/" \
      -print_final_stats=1 -close_fd_mask=3 2>"$out/$t.log"; then
    tail -n 40 "$out/$t.log" >&2
    echo "fuzz: $t crashed; the input is in $out/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$out/$t.log" | sed "s/^/fuzz: $t /"
done
