#!/usr/bin/env bash
# The test command: starts PostgreSQL if needed, then runs every test of the workspace
# (unit, store suites on SQLite and PostgreSQL, simulator and end-to-end tests), then a short soak
# on each database, then checks the running service against its OpenAPI document with
# schemathesis, then the dashboard in chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
export TEST_PG_URL=${TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
bash scripts/ensure-postgres.sh
# The replicas test runs processes with their clocks set apart.
bash scripts/ensure-faketime.sh
# The crash test runs the real binary: build it first with the same command it uses.
cargo build --quiet --workspace --bins
cargo test --workspace "$@"
# The soak, short: a few minutes of every client, fault and crash at once, on both databases.
bash scripts/soak.sh --minutes 3 --seed 1
bash scripts/soak.sh --minutes 2 --seed 1 --sqlite
bash scripts/schemathesis.sh
bash scripts/browser-test.sh
