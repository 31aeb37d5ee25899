#!/usr/bin/env bash
# Runs the Kotlin binding's tests on the JVM, through JNA, against the
# built library and a real `tally serve`, with the Kotlin that `tally plan
# codegen` generates for the fixture plan compiled in (its reviewed copy,
# which crates/tally-plan's tests keep current); one test calls kotlinc
# again on wrong calls of it. Installs what is missing: the
# Kotlin compiler from the npm package `kotlin-compiler` (under target/,
# nothing outside the clone) and JNA from Debian's `libjna-java`.
#
#   bash sdks/kotlin/run-tests.sh [TEST NAME FRAGMENT | --compile-only]
#
# PROFILE=release uses release builds (default: debug). The library is
# always (re)built, seconds after `cargo test --workspace`, which builds it
# but leaves it in target/debug/deps; the `tally` binary that run built is
# used as it is (built only when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
profile="${PROFILE:-debug}"
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build --locked --quiet "${flag[@]}" -p tally-ffi

# The npm package bundles the JVM compiler (kotlinc-jvm); pinned so CI
# compiles with what the tests were written against.
kotlin_version=2.4.20
tools=target/sdk-kotlin-tools
kotlinc="$tools/node_modules/kotlin-compiler/bin/kotlinc-jvm"
if [ ! -x "$kotlinc" ]; then
  mkdir -p "$tools"
  npm install --prefix "$tools" --cache "$tools/npm-cache" --no-audit --no-fund --silent \
    "kotlin-compiler@$kotlin_version"
fi
jna=/usr/share/java/jna.jar
if [ ! -f "$jna" ]; then
  apt-get update -qq && apt-get install -y -qq libjna-java >/dev/null
fi

out=target/sdk-kotlin-tests
mkdir -p "$out"
jar="$out/tally-kotlin-tests.jar"
sources=(sdks/kotlin/src/main/kotlin/tally/tally.kt sdks/kotlin/src/test/kotlin/tally/*.kt
  crates/tally-plan/tests/fixtures/codegen/Tracking.kt)
# Recompile only when a source changed.
if [ ! -f "$jar" ] || [ -n "$(find "${sources[@]}" -newer "$jar")" ]; then
  "$kotlinc" -nowarn -classpath "$jna" -include-runtime -d "$jar" "${sources[@]}"
fi
[ "${1:-}" = --compile-only ] && exit 0
[ -x "target/$profile/tally" ] || cargo build --locked "${flag[@]}" -p tally-cli
export TALLY_BIN="$PWD/target/$profile/tally"
export KOTLINC="$PWD/$kotlinc"
exec java -Djna.library.path="$PWD/target/$profile" -cp "$jar:$jna" tally.TrackerTestKt "$@"
