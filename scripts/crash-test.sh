#!/usr/bin/env bash
# The full crash test: 2,000 people with phone and waterfall, the real binary SIGKILLed 20 times.
# DB=postgres runs it on a fresh PostgreSQL database instead of SQLite; REPLICAS=N (PostgreSQL)
# runs N replicas behind a small load balancer, killed in turn.
set -euo pipefail
cd "$(dirname "$0")/.."
export CRASH_PEOPLE=${CRASH_PEOPLE:-2000} CRASH_KILLS=${CRASH_KILLS:-20} CRASH_REPLICAS=${REPLICAS:-1}
DB=${DB:-sqlite}
[ "$CRASH_REPLICAS" -gt 1 ] && DB=postgres
[ "$DB" = postgres ] && bash scripts/ensure-postgres.sh
cargo build --quiet --workspace --bins
exec cargo test -p e2e-tests --test crash -- --nocapture "::$DB"
