#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds, runs every test.
#
#   scripts/test.sh            # as root: unit, fixture, property and netns tests
#
# Tests that need root and network namespaces run when this runs as root (CI
# does); otherwise they skip with a message, unless CI=true, where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x scripts/setup.sh ]; then
    scripts/setup.sh
fi

export CARGO_TERM_COLOR=never
# Debug builds with optimisation for the tests that push traffic.
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast -- --test-threads="${SVCGATE_TEST_THREADS:-2}"
