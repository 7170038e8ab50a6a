#!/usr/bin/env bash
# Makes sure libfaketime is installed: the replicas test runs each enrichd process with its own
# clock offset (LD_PRELOAD). Fails (exit 1) when it cannot: that test must never silently skip.
set -euo pipefail
for d in /usr/lib/x86_64-linux-gnu/faketime /usr/lib/aarch64-linux-gnu/faketime /usr/lib/faketime; do
  [ -e "$d/libfaketimeMT.so.1" ] && exit 0
done
echo "ensure-faketime: installing libfaketime from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq libfaketime >/dev/null
