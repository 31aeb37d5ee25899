#!/usr/bin/env bash
# Fails when the committed Kotlin, Swift or Python bindings differ from what
# `tally-bindgen` generates from the current library: regenerates into a
# temporary directory and compares file by file, both ways.
set -euo pipefail
cd "$(dirname "$0")/.."
# Seconds after `cargo test --workspace` (which leaves the library in
# target/debug/deps): the generator reads the library this builds.
cargo build --locked --quiet -p tally-ffi
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
target/debug/tally-bindgen --lib target/debug/libtally_ffi.so --out "$fresh" >/dev/null
status=0
while IFS= read -r file; do
  if ! diff -u "sdks/$file" "$fresh/$file"; then
    status=1
  fi
done < <(cd "$fresh" && find . -type f | sort)
# A generated file that is no longer generated must go too.
for file in sdks/kotlin/src/main/kotlin/tally/*.kt sdks/python/tally.py \
    sdks/swift/Package.swift sdks/swift/Sources/Tally/*.swift sdks/swift/Sources/TallyFFI/include/*; do
  if [ ! -f "$fresh/${file#sdks/}" ]; then
    echo "$file is no longer generated" >&2
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  echo "the committed bindings are stale: run cargo run -p tally-ffi --bin tally-bindgen" >&2
fi
exit "$status"
