#!/usr/bin/env bash
# Runs the Python binding's tests (pytest) against the built library and a
# real `tally serve`. Builds what is missing with cargo; pytest lives in a
# virtualenv under target/, never in the system's Python.
#
#   bash sdks/python/run-tests.sh [PYTEST ARGS...]
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
[ -x "target/$profile/tally" ] || cargo build --locked "${flag[@]}" -p tally-cli
venv=target/sdk-python-venv
if ! "$venv/bin/python" -c 'import pytest' 2>/dev/null; then
  # Debian splits venv (and ensurepip) out of python3.
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir pytest
fi
export TALLY_BIN="$PWD/target/$profile/tally"
export TALLY_FFI_LIB="$PWD/target/$profile/libtally_ffi.so"
exec "$venv/bin/python" -m pytest -p no:cacheprovider sdks/python/tests "$@"
