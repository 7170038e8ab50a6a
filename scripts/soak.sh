#!/usr/bin/env bash
# The soak: a day of production compressed into an hour, checked against the simulator's record.
#   scripts/soak.sh --minutes 60 --seed 1 [--sqlite] [--break lost-webhook|double-send|key-shared|dry-run-sent|replayed-callback|suppressed-sent|no-retention] [--out FILE]
# Runs a PostgreSQL cluster of its own (the server binaries must be installed; ensure-postgres.sh
# does it). SOAK_PROFILE=release runs release builds (the long run); the default is the test
# profile that scripts/test.sh has already built. Exit status 0 only when every check passes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-postgres.sh >/dev/null
profile=${SOAK_PROFILE:-debug}
if [ "$profile" = release ]; then
  cargo build --quiet --release --workspace --bins
else
  cargo build --quiet --workspace --bins
fi
exec "${CARGO_TARGET_DIR:-target}/$profile/enrichd-soak" "$@"
