#!/usr/bin/env bash
# Runs the property tests of the delivery parser and the job-input validator for a bounded time.
# FUZZ_SECONDS (default 60) per target; FUZZ_SEED replays a seed a failure printed.
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_SECONDS=${FUZZ_SECONDS:-60}
cargo test --release -p apollo-client --test fuzz_delivery -- --nocapture
cargo test --release -p enrichd --test fuzz_validate -- --nocapture
