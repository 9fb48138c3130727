#!/bin/bash
# make demo: a throwaway PostgreSQL with pg_cron and prm preloaded, a clinic
# scenario played through prm's SQL API, and what the database then holds.
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- reference clients (clients/): node and the npm package pg ----
if [ "${1:-}" != --inner ]; then
    bash test/clients/deps.sh
    exec pg_virtualenv -t -o "shared_preload_libraries=pg_cron,prm" -o "cron.database_name=postgres" \
        bash "$0" --inner
fi
# Inside the cluster: the webhook server (clients/webhook.js) runs for the
# whole demo as the clinic's webhook role (test/demo.sql makes it), on a
# free port; the sender runs from test/demo.sql.  DEMO_TWILIO_TOKEN is the
# clinic's Twilio auth token, which signs the replies posted as Twilio.
export DEMO_TWILIO_TOKEN=demo-auth-token-0123456789abcdef TWILIO_AUTH_TOKEN=demo-auth-token-0123456789abcdef
WEBHOOK_LOG=$(mktemp /tmp/prm-demo-webhook.XXXXXX)
PGUSER=clinic_webhook PGPASSWORD=demo PORT=0 node clients/webhook.js > "$WEBHOOK_LOG" 2>&1 &
WEBHOOK_PID=$!
trap 'kill $WEBHOOK_PID 2> /dev/null || true; rm -f "$WEBHOOK_LOG"' EXIT
for _ in $(seq 1 100); do
    grep -q 'listening on' "$WEBHOOK_LOG" && break
    sleep 0.1
done
WEBHOOK_URL=$(sed -n 's/^webhook: listening on \(http[^ ]*\).*/\1/p' "$WEBHOOK_LOG")
[ -n "$WEBHOOK_URL" ] || { cat "$WEBHOOK_LOG"; echo "demo: the webhook did not start" >&2; exit 1; }
export WEBHOOK_URL
# ----

psql -X -q -v ON_ERROR_STOP=1 -P pager=off -f test/demo.sql

# ---- reference clients: what the webhook server saw ----
echo "=== The webhook server's log (clients/webhook.js)"
sed 's/^/  /' "$WEBHOOK_LOG"
# ----
