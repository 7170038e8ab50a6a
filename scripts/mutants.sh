#!/usr/bin/env bash
# Mutation testing of the rule modules against the tests that pin them (cargo-mutants, from
# crates.io: `cargo install cargo-mutants --locked`, checked with 27.1). One mutant at a time, each
# bounded by MUTANTS_TIMEOUT seconds (default 120); results per module in mutants.out/<module>/
# (outcomes.json, caught.txt, missed.txt, timeout.txt). Runs in place: run it in a checkout of its
# own (`git worktree add`), never in one you are editing. Without debug info a mutant of job-store
# builds in about 3 s, of enrichd in about 15 s.
# Usage: scripts/mutants.sh [module ...]   (default: every module below)
set -euo pipefail
cd "$(dirname "$0")/.."
timeout=${MUTANTS_TIMEOUT:-120}
# module -> package, file, and the tests that pin its rules (a filter selects the store suite's
# scenarios for the modules whose rules run inside database functions; they need PostgreSQL at
# TEST_PG_URL, as scripts/test.sh provides).
declare -A modules=(
  [states]="rules crates/rules/src/states.rs --lib"
  [counts]="rules crates/rules/src/counts.rs --lib"
  [lifecycle]="rules crates/rules/src/lifecycle.rs --lib"
  [merge]="rules crates/rules/src/merge.rs --lib"
  [person_key]="rules crates/rules/src/person_key.rs --lib"
  [reuse]="rules crates/rules/src/reuse.rs --lib"
  [budget]="rules crates/rules/src/budget.rs --lib"
  [window]="rules crates/rules/src/window.rs --lib"
  [ratelimit]="rules crates/rules/src/ratelimit.rs --lib"
  [records]="rules crates/rules/src/records.rs --lib"
  [person_fields]="rules crates/rules/src/person_fields.rs --lib"
  [estimate]="rules crates/rules/src/estimate.rs --lib"
  [retry]="rules crates/rules/src/retry.rs --lib"
  [usage_window]="rules crates/rules/src/usage_window.rs --lib"
  [claims]="job-store crates/job-store/src/claims.rs --test store claims"
  [callback_url]="enrichd crates/enrichd/src/core/callback_url.rs --lib"
  [keys]="enrichd crates/enrichd/src/core/keys.rs --lib"
  [signing]="enrichd crates/enrichd/src/core/signing.rs --lib"
  [validate]="enrichd crates/enrichd/src/core/validate.rs --lib --test fuzz_validate"
  [delivery]="apollo-client crates/apollo-client/src/delivery.rs --tests"
  [facts]="apollo-client crates/apollo-client/src/facts.rs --tests"
)
export TEST_PG_URL=${TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-0} CARGO_PROFILE_TEST_DEBUG=${CARGO_PROFILE_TEST_DEBUG:-0}
selected=("$@")
[ ${#selected[@]} -eq 0 ] && selected=(states counts lifecycle merge person_fields person_key reuse budget estimate retry usage_window window ratelimit records claims callback_url keys signing validate delivery facts)
mkdir -p mutants.out
for name in "${selected[@]}"; do
  read -r package file tests <<<"${modules[$name]:?unknown module $name}"
  echo "== $name ($file)"
  # Status 2 (survivors) and 3 (timeouts) are reported in the summary; anything else stops.
  status=0
  # shellcheck disable=SC2086 # the test arguments are words
  cargo mutants --in-place --timeout "$timeout" --package "$package" --file "$file" \
    --output "mutants.out/$name" -- $tests || status=$?
  case $status in 0 | 2 | 3) ;; *) exit "$status" ;; esac
done
for name in "${selected[@]}"; do
  dir="mutants.out/$name/mutants.out"
  caught=$(wc -l <"$dir/caught.txt") missed=$(wc -l <"$dir/missed.txt") timeouts=$(wc -l <"$dir/timeout.txt")
  unviable=$(wc -l <"$dir/unviable.txt")
  echo "$name: caught $caught, missed $missed, timeout $timeouts, unviable $unviable"
done
