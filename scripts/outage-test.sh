#!/usr/bin/env bash
# The database outage test at full length: PostgreSQL stopped for OUTAGE_SECS (default 30) mid-job.
set -euo pipefail
cd "$(dirname "$0")/.."
export OUTAGE_SECS=${OUTAGE_SECS:-30}
bash scripts/ensure-postgres.sh
cargo build --quiet --workspace --bins
exec cargo test -p e2e-tests --test outage -- --nocapture
