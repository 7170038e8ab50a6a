#!/usr/bin/env bash
# OpenAPI conformance: `schemathesis run --checks all` (every check, the stateful phase included)
# against the real service and the Apollo simulator, four runs: SQLite and a fresh PostgreSQL
# database, each with a client key and with an admin key. Before the runs each service gets jobs,
# so that routes under /v1/jobs/{id} reach a real job and the webhook route a real batch (see
# scripts/schemathesis.toml). schemathesis comes from PyPI into a virtualenv (SCHEMATHESIS_VENV).
# Extra arguments go to every `schemathesis run`.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
VENV=${SCHEMATHESIS_VENV:-$HOME/.cache/enrichd-schemathesis}
PG_URL=${TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet 'schemathesis>=4,<5'
fi
cargo build --quiet -p enrichd -p apollo-sim --bins
bash scripts/ensure-postgres.sh

WORK=$(mktemp -d)
PIDS=()
PG_DB="enrichd_schemathesis_$$_$RANDOM"
PG_CREATED=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$PG_CREATED" ] && psql "$PG_URL" -qAtc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
# The runs use copies of what was just built: another build sharing the target directory may
# replace the binaries while they run.
cp "$TARGET/debug/enrichd" "$TARGET/debug/apollo-sim" "$WORK/"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
new_key() { echo "st-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"; }
CLIENT_KEY=$(new_key)
OTHER_KEY=$(new_key)
ADMIN_KEY=$(new_key)

# Three identities: the client the runs act as, a second client that must never see the first
# one's jobs (object_level_authorization), and an operator.
export ENRICHD_AUTH_FILE="$WORK/auth.json"
cat >"$ENRICHD_AUTH_FILE" <<EOF
{"auth": [
  {"name": "client", "fixedHeaders": [{"name": "Authorization", "value": "Bearer $CLIENT_KEY"}]},
  {"name": "other-client", "fixedHeaders": [{"name": "Authorization", "value": "Bearer $OTHER_KEY"}]},
  {"name": "admin", "fixedHeaders": [{"name": "Authorization", "value": "Bearer $ADMIN_KEY"}]}
]}
EOF

SIM_PORT=$(free_port)
"$WORK/apollo-sim" --bind "127.0.0.1:$SIM_PORT" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)

# Starts the service on DATABASE_URL $1 (log $2); sets BASE and API_PID.
start_service() {
  local port
  port=$(free_port)
  DATABASE_URL="$1" BIND="127.0.0.1:$port" \
    APOLLO_API_KEY=sim-key APOLLO_BASE_URL="http://127.0.0.1:$SIM_PORT" \
    ENRICHD_API_KEYS="schemathesis=$CLIENT_KEY,other=$OTHER_KEY" ENRICHD_ADMIN_KEYS="ops=$ADMIN_KEY" \
    CALLBACK_SIGNING_SECRET="whsec_$(head -c 24 /dev/urandom | base64)" SUPPRESSION_KEY="$(head -c 24 /dev/urandom | base64)" \
    RUST_LOG=warn "$WORK/enrichd" serve >"$2" 2>&1 &
  API_PID=$!
  PIDS+=("$API_PID")
  BASE="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    curl -fsS "$BASE/healthz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  cat "$2"
  return 1
}

submit() {
  curl -fsS -X POST "$BASE/v1/jobs" -H "authorization: Bearer $CLIENT_KEY" -H 'content-type: application/json' \
    -d '{"people": [{"email": "dana@northwind-labs.com"}, {"first_name": "Li", "last_name": "Wei", "domain": "harbor.io"}]}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

# Prints "batch_id token" of a batch of job $2 once one is formed; $1 asks the database for it.
batch_of() {
  local row
  for _ in $(seq 1 100); do
    row=$($1 "$2")
    [ -n "$row" ] && { echo "$row"; return 0; }
    sleep 0.1
  done
  echo "no batch was formed for job $2" >&2
  return 1
}

# One schemathesis run against $BASE as identity $1; its label is $2.
status=0
run() {
  local rc=0 started=$SECONDS
  echo "=== schemathesis: $2, $1 key"
  ENRICHD_AUTH_USER=$1 "$VENV/bin/schemathesis" --config-file scripts/schemathesis.toml run "$BASE/openapi.json" \
    --checks all --request-timeout 10 "${@:3}" || rc=$?
  echo "=== $2, $1 key: exit $rc in $((SECONDS - started)) s"
  if [ "$rc" -ne 0 ]; then
    status=$rc
    echo "--- service log (last lines) ---"
    tail -n 40 "$LOG"
  fi
}

# Runs both identities against a fresh service on DATABASE_URL $2 (label $1); $3 prints a batch of a job.
run_database() {
  LOG="$WORK/enrichd-$1.log"
  start_service "$2" "$LOG"
  ENRICHD_JOB_ID=$(submit)
  ENRICHD_ERASE_JOB_ID=$(submit)
  export ENRICHD_JOB_ID ENRICHD_ERASE_JOB_ID
  local batch
  batch=$(batch_of "$3" "$ENRICHD_JOB_ID")
  read -r ENRICHD_BATCH_ID ENRICHD_WEBHOOK_TOKEN <<<"$batch"
  export ENRICHD_BATCH_ID ENRICHD_WEBHOOK_TOKEN
  run client "$1" "${@:4}"
  run admin "$1" "${@:4}"
  kill "$API_PID"
  wait "$API_PID" 2>/dev/null || true
}

SQLITE_FILE="$WORK/enrichd.db"
# SQLite holds ids as 16-byte blobs, PostgreSQL as uuid.
sqlite_batch() {
  python3 - "$SQLITE_FILE" "$1" <<'PY'
import sqlite3, sys, uuid
row = sqlite3.connect(sys.argv[1]).execute(
    "SELECT b.id, b.webhook_secret FROM batches b JOIN batch_people bp ON bp.batch_id = b.id WHERE bp.job_id = ? LIMIT 1",
    (uuid.UUID(sys.argv[2]).bytes,)).fetchone()
if row:
    print(uuid.UUID(bytes=row[0]), row[1])
PY
}
run_database sqlite "sqlite://$SQLITE_FILE?mode=rwc" sqlite_batch "$@"

psql "$PG_URL" -qAtc "CREATE DATABASE $PG_DB" >/dev/null
PG_CREATED=1
PG_DB_URL="${PG_URL%/*}/$PG_DB"
pg_batch() {
  psql "$PG_DB_URL" -qAt -F ' ' -c "SELECT b.id, b.webhook_secret FROM batches b JOIN batch_people bp ON bp.batch_id = b.id WHERE bp.job_id = '$1' LIMIT 1"
}
run_database postgres "$PG_DB_URL" pg_batch "$@"

exit "$status"
