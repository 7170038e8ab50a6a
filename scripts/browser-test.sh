#!/usr/bin/env bash
# The dashboard end to end in Debian's chromium (installed by .ci/run; nothing downloads a browser)
# driven by Playwright for Python (PyPI, in a virtualenv kept in BROWSER_TEST_VENV), against the
# real service, the Apollo simulator and a callback receiver. Screenshots: $TARGET/ui-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
VENV=${BROWSER_TEST_VENV:-$HOME/.cache/enrichd-playwright}
[ -x /usr/bin/chromium ] || { echo "browser test: /usr/bin/chromium missing (apt-get install -y chromium)"; exit 1; }
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import playwright' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet 'playwright>=1.40,<2'
fi
cargo build --quiet -p enrichd -p apollo-sim --bins

WORK=$(mktemp -d)
SHOTS="$TARGET/ui-screenshots"
mkdir -p "$SHOTS"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SIM_PORT=$(free_port)
API_PORT=$(free_port)
RECV_PORT=$(free_port)
KEY="ui-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
ADMIN_KEY="ops-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"

"$TARGET/debug/apollo-sim" --bind "127.0.0.1:$SIM_PORT" --minute-ms 1000 --delivery-delay-ms 300 >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
# The callback receiver: answers 200 to every POST.
python3 - "$RECV_PORT" >"$WORK/receiver.log" 2>&1 <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
PIDS+=($!)
BASE="http://127.0.0.1:$API_PORT"
DATABASE_URL="sqlite://$WORK/enrichd.db?mode=rwc" BIND="127.0.0.1:$API_PORT" PUBLIC_BASE_URL="$BASE" \
  APOLLO_API_KEY=sim-key APOLLO_BASE_URL="http://127.0.0.1:$SIM_PORT" \
  ENRICHD_API_KEYS="browser=$KEY" ENRICHD_ADMIN_KEYS="ops=$ADMIN_KEY" CALLBACK_SIGNING_SECRET="whsec_$(head -c 24 /dev/urandom | base64)" \
  CALLBACK_ALLOW_HTTP=true CALLBACK_ALLOW_HOSTS=127.0.0.1 \
  RUST_LOG=warn "$TARGET/debug/enrichd" serve >"$WORK/enrichd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$BASE/healthz" >/dev/null || { cat "$WORK/enrichd.log"; exit 1; }

cat >"$WORK/people.csv" <<'CSV'
First Name,Last Name,Email Address,Company Domain,Notes
Dana,Smith,dana.smith@acme-corp.com,acme-corp.com,"said ""hi"""
Zoë,Ångström,zoe.angstrom@northwind-labs.com,northwind-labs.com,<script>alert(1)</script>
Li,Wei,li.wei@harbor-analytics.io,harbor-analytics.io,
CSV
"$VENV/bin/python" scripts/browser_test.py "$BASE" "$KEY" "$WORK/people.csv" "$SHOTS" "$TARGET/debug/enrichd" \
  "http://127.0.0.1:$RECV_PORT/callback" "$ADMIN_KEY" || { tail -50 "$WORK/enrichd.log"; exit 1; }
