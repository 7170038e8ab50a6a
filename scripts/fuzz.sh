#!/usr/bin/env bash
# Long runs of the property tests of the delivery parser and the job-input validator (structured
# generation with their own oracles, then mutations). CI runs them on fixed seeds and a fixed
# number of cases; this runs each target for FUZZ_SECONDS (default 60) from a random seed, printed
# so that FUZZ_SEED=<seed> replays a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export FUZZ_SECONDS=${FUZZ_SECONDS:-60}
cargo test --release -p apollo-client --test fuzz_delivery -- --nocapture
cargo test --release -p enrichd --test fuzz_validate -- --nocapture
