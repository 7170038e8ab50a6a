#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 with trust auth for user `postgres`,
# installing and starting the packaged one if needed. Fails (exit 1) when it cannot: the store and
# end-to-end suites must never silently skip PostgreSQL.
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "ensure-postgres: installing PostgreSQL from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi

if ! ready; then
  version=$(ls /etc/postgresql | sort -V | tail -1)
  if [ -z "$version" ]; then
    echo "ensure-postgres: no PostgreSQL cluster configured" >&2
    exit 1
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi

if ! ready; then
  echo "ensure-postgres: PostgreSQL is not answering on 127.0.0.1:5432" >&2
  exit 1
fi

# Tests connect as `postgres` without a password: allow it if the cluster is not trust already.
url=${TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
if ! psql "$url" -qAtc 'select 1' >/dev/null 2>&1; then
  version=$(ls /etc/postgresql | sort -V | tail -1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  echo "ensure-postgres: enabling trust auth on loopback in $hba" >&2
  sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  sleep 1
  psql "$url" -qAtc 'select 1' >/dev/null
fi
echo "ensure-postgres: ready at $url" >&2
