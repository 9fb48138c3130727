#!/bin/bash
# Worker benchmark (issue 4): how late does the next batch go out after a
# hold runs out, with the prm worker (woken at the earliest deadline) against
# a polling design that sweeps every 30 seconds, measured in the same run; and
# the worker's CPU time over 60 idle seconds against a 1-second poller's.
#
# Runs inside a cluster with prm preloaded (test/bench/run.sh starts one) in
# the database the worker serves (prm.databases, default postgres).
#   PGDATABASE=postgres bash test/bench/worker.sh
# Knobs: WORKER_HOLDS (200), POLL_INTERVAL (30), IDLE_SECONDS (60).
set -uo pipefail
HOLDS=${WORKER_HOLDS:-200}
POLL=${POLL_INTERVAL:-30}
IDLE=${IDLE_SECONDS:-60}
export PGDATABASE=${WORKER_DB:-postgres}
PSQL="psql -X -q -v ON_ERROR_STOP=1 -At"

# a clinic with 2 * HOLDS slots to free, each offered to one patient at a time
# with holds running out spread over 10 seconds from now
setup() {
    $PSQL <<SQL
DROP EXTENSION IF EXISTS prm CASCADE;
CREATE EXTENSION prm CASCADE;
SELECT prm.create_organization('Worker Bench', 'UTC', '+15558090000');
SELECT prm.configure(1, '{"quiet_hours": false, "batch_size": 1, "offer_hold": "1 second",
                          "min_notice": "0 seconds", "offer_daily_cap": 10, "offer_weekly_cap": 50}');
SELECT count(prm.add_provider(1, 'Dr ' || g)) FROM generate_series(1, $HOLDS) g;
SELECT count(prm.add_patient(1, 'P' || g, 'W', '+1555809' || lpad(g::text, 4, '0'))) FROM generate_series(1, 4 * $HOLDS) g;
-- canceller patients 1..HOLDS; waiting patients after them
SELECT count(prm.book_appointment(1, g, g, now() + interval '2 days', now() + interval '2 days 30 minutes')) FROM generate_series(1, $HOLDS) g;
SELECT count(prm.join_waitlist(1, g, (g - 1) % $HOLDS + 1)) FROM generate_series($HOLDS + 1, 4 * $HOLDS) g;
SQL
}

# free the slots: first batches with holds spread over the next 10 seconds
cancel_all() {
    $PSQL <<SQL
SELECT count(prm.cancel_appointment(1, g)) FROM generate_series(1, $HOLDS) g;
UPDATE prm.offer SET hold_until = clock_timestamp() + interval '3 seconds'
       + (id % 100) * interval '100 milliseconds' WHERE status = 'open';
SQL
}

# per slot: the second batch's transaction start minus the first hold's end
latency() {
    $PSQL <<SQL
WITH l AS (
  SELECT extract(epoch FROM b2.created_at - b1.hold_until) * 1000 AS ms
    FROM prm.offer b1 JOIN prm.offer b2 ON b2.slot_id = b1.slot_id AND b2.batch_no = 2
   WHERE b1.batch_no = 1)
SELECT count(*) || ' ' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' '
       || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ' || round(max(ms)::numeric, 1)
  FROM l;
SQL
}

wait_for_second_batches() {     # $1: seconds at most
    local i
    for ((i = 0; i < $1 * 10; i++)); do
        [ "$($PSQL -c "SELECT count(*) FROM prm.offer WHERE batch_no = 2")" -ge "$HOLDS" ] && return 0
        sleep 0.1
    done
    return 1
}

cpu_ns() {                      # CPU time a process has run, in nanoseconds
    awk '{print $1}' "/proc/$1/schedstat"
}

echo "== worker: deadline -> next batch queued, $HOLDS holds"
$PSQL -c "ALTER SYSTEM SET prm.worker_enabled = on" -c "SELECT pg_reload_conf()" > /dev/null
setup > /dev/null
cancel_all > /dev/null
wait_for_second_batches 60 || echo "  (not every slot got its second batch within 60 s)"
read -r n w50 w99 wmax <<< "$(latency)"
echo "  prm worker:         $n slots, p50 ${w50} ms, p99 ${w99} ms, max ${wmax} ms"

echo "== baseline: a poller calling prm.expire_offers() every ${POLL} s, same holds"
$PSQL -c "ALTER SYSTEM SET prm.worker_enabled = off" -c "SELECT pg_reload_conf()" > /dev/null
sleep 1
setup > /dev/null
cancel_all > /dev/null
# the poller's phase is arbitrary: start it at a random point of its period
sleep $((RANDOM % POLL))
end=$(($(date +%s) + 3 * POLL))
while [ "$(date +%s)" -lt "$end" ]; do
    $PSQL -c "SELECT prm.expire_offers()" > /dev/null
    [ "$($PSQL -c "SELECT count(*) FROM prm.offer WHERE batch_no = 2")" -ge "$HOLDS" ] && break
    sleep "$POLL"
done
read -r pn p50 p99 pmax <<< "$(latency)"
echo "  ${POLL}-second poller:  $pn slots, p50 ${p50} ms, p99 ${p99} ms, max ${pmax} ms"
awk -v a="$w50" -v b="$p50" -v c="$w99" -v d="$p99" 'BEGIN {
    if (a > 0 && c > 0) printf "  ratio poller/worker: p50 %.0fx, p99 %.0fx\n", b / a, d / c }'
$PSQL -c "ALTER SYSTEM SET prm.worker_enabled = on" -c "SELECT pg_reload_conf()" > /dev/null
sleep 1

echo "== worker CPU time over ${IDLE} idle seconds"
$PSQL -c "DROP EXTENSION prm CASCADE" -c "CREATE EXTENSION prm CASCADE" > /dev/null
wpid=$($PSQL -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'prm worker' LIMIT 1")
# baseline: the same steps run by a poller every second, in one backend
$PSQL -c "DO \$\$ BEGIN FOR i IN 1..$IDLE LOOP PERFORM prm.run_due_jobs(); PERFORM pg_sleep(1); COMMIT; END LOOP; END \$\$" > /dev/null &
poller=$!
sleep 1
ppid=$($PSQL -c "SELECT pid FROM pg_stat_activity WHERE query LIKE 'DO %run_due_jobs%' AND pid <> pg_backend_pid() LIMIT 1")
w0=$(cpu_ns "$wpid"); p0=$(cpu_ns "$ppid")
sleep $((IDLE - 2))
w1=$(cpu_ns "$wpid"); p1=$(cpu_ns "$ppid" 2> /dev/null || echo "$p0")
wait $poller
awk -v w=$((w1 - w0)) -v p=$((p1 - p0)) -v s=$((IDLE - 2)) 'BEGIN {
    printf "  prm worker:       %.2f ms CPU in %d s\n", w / 1e6, s;
    printf "  1-second poller:  %.2f ms CPU in %d s (the same steps, run_due_jobs() every second)\n", p / 1e6, s;
    if (w > 0) printf "  ratio poller/worker: %.1fx\n", p / w }'
echo "  reproduce: PGDATABASE=postgres bash test/bench/worker.sh (inside test/bench/run.sh's cluster)"
$PSQL -c "DROP EXTENSION prm CASCADE" > /dev/null
# back to the cluster's own setting (run.sh's cluster: off, for the other blocks)
$PSQL -c "ALTER SYSTEM RESET prm.worker_enabled" -c "SELECT pg_reload_conf()" > /dev/null
