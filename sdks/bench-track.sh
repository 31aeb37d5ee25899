#!/usr/bin/env bash
# track() p50/p99 in one run: the Rust SDK (its `track_latency` example),
# then the same workload through the Kotlin binding on the JVM and through
# the Python binding, all on release builds; then the ratios to Rust. Also
# prints the stripped size of the release library. Takes minutes (release
# builds); not part of CI.
#
#   bash sdks/bench-track.sh [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-100000}"
cargo build --locked --release -p tally-ffi
cargo build --locked --release -p tally-sdk --example track_latency
PROFILE=release bash sdks/kotlin/run-tests.sh --compile-only
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp sdks/python/tally.py target/release/libtally_ffi.so "$work/"
strip -o "$work/libtally_ffi.stripped.so" target/release/libtally_ffi.so

rust=$(target/release/examples/track_latency "$events" "$work/rust")
kotlin=$(java -Djna.library.path="$PWD/target/release" \
  -cp target/sdk-kotlin-tests/tally-kotlin-tests.jar:/usr/share/java/jna.jar \
  tally.TrackLatencyKt "$events")
python=$(python3 sdks/python/bench_track.py "$work" "$events")
echo "$rust"
echo "$kotlin"
echo "$python"
python3 - "$rust" "$kotlin" "$python" "$(stat -c %s "$work/libtally_ffi.stripped.so")" <<'PY'
import json, sys
rust, kotlin, python = (json.loads(a) for a in sys.argv[1:4])
for name, r in (("kotlin-jvm", kotlin), ("python", python)):
    print(f"{name}: p50 {r['track_p50_us']:.2f} us ({r['track_p50_us'] / rust['track_p50_us']:.0f}x rust), "
          f"p99 {r['track_p99_us']:.2f} us ({r['track_p99_us'] / rust['track_p99_us']:.0f}x rust), "
          f"refused {r['refused']} of {r['events']}")
print(f"rust: p50 {rust['track_p50_us']:.2f} us, p99 {rust['track_p99_us']:.2f} us, "
      f"refused {rust['refused']} of {rust['events']}")
print(f"libtally_ffi.so stripped (release, x86_64 Linux): {int(sys.argv[4]) / 1e6:.2f} MB")
PY
