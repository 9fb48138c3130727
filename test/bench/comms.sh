#!/bin/bash
# Communications benchmark: the cost of queueing a message to a patient.
#   bash test/bench/comms.sh            (against $PGDATABASE, default prm_bench)
# Prints transactions per second, one client, for
#   enqueue      prm.enqueue_message to a patient (exempt: no consent or cap query)
#   promotional  prm.schedule_message of an own promotional kind (template,
#                address, consent probe, caps count with the patient locked)
#   bare         the bare INSERT of the same row into a table without triggers
# and each one's cost relative to the bare INSERT.  BENCH_SECONDS (10).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SECS=${BENCH_SECONDS:-10}
export PGDATABASE=${PGDATABASE:-prm_bench}
psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION IF NOT EXISTS prm CASCADE' >/dev/null
psql -X -q -f "$here/comms_setup.sql" >/dev/null
org=$(psql -X -Atc "SELECT value FROM bench.setting WHERE name = 'comms_org'")
first=$(psql -X -Atc "SELECT value FROM bench.setting WHERE name = 'comms_first'")
tps() {
    pgbench -n -c 1 -T "$SECS" -D org="$org" -D first="$first" -f "$here/$1" 2>/dev/null |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
bare=$(tps comms_bare.sql)
enq=$(tps comms_enqueue.sql)
promo=$(tps comms_promotional.sql)
capped=$(psql -X -Atc "SELECT count(*) FILTER (WHERE status IN ('capped', 'refused')) FROM prm.outbound_message WHERE org_id = $org")
echo "comms: bare INSERT          $bare tps  (pgbench -n -c 1 -T $SECS -f test/bench/comms_bare.sql)"
echo "comms: enqueue_message      $enq tps, cost x$(echo "scale=2; $bare / $enq" | bc) of the bare INSERT (test/bench/comms_enqueue.sql)"
echo "comms: schedule_message     $promo tps, cost x$(echo "scale=2; $bare / $promo" | bc) of the bare INSERT (test/bench/comms_promotional.sql); capped or refused: $capped"
[ "$capped" = 0 ] || { echo "comms: the caps were meant to pass every message" >&2; exit 1; }
