#!/bin/bash
# Journeys benchmark (issue 12), on an existing cluster (PGHOST, PGPORT,
# PGUSER as for psql; the database prm_bench_journeys is created and dropped).
#   1. N instances (default 100,000) whose waits end at the same moment T:
#      prm's deadline step (run_due_jobs, as the worker runs it, a batch of
#      500 per transaction) moves each on to its next stage and queues its
#      message; deadline -> action queued (committed) p50/p99 and advances
#      per second.  Baseline: the bare SQL sweep a scheduler would run every
#      30 seconds over the same rows (one UPDATE ... RETURNING feeding an
#      INSERT); its duration is measured, its deadline -> action latency is
#      that duration plus the wait for the next tick (uniform over 0..30 s:
#      p50 15 s, p99 29.7 s).
#   2. The cost a triggering event adds to book_appointment: bookings per
#      second with 0, 10 and 100 journeys on appointment_booked whose filter
#      does not match, and with one journey that enrols each booking.
#
#   PGHOST=... PGPORT=... PGUSER=postgres bash test/bench/journeys.sh
set -euo pipefail
N=${JOURNEY_INSTANCES:-100000}
SECS=${BENCH_SECONDS:-10}
DB=prm_bench_journeys
psql -X -qc "DROP DATABASE IF EXISTS $DB" >/dev/null
psql -X -qc "CREATE DATABASE $DB" >/dev/null
P="psql -X -q -v ON_ERROR_STOP=1 -d $DB"
ratio() { LC_ALL=C awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

$P >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION prm CASCADE;
SELECT prm.create_organization('Bench', 'UTC', '+15558980000');
SELECT prm.configure(1, '{"quiet_hours": false}');
INSERT INTO prm.patient (org_id, given_name, family_name, phone)
SELECT 1, 'P' || i, 'Bench', '+1555' || lpad(i::text, 7, '0') FROM generate_series(1, $N) i;
SELECT prm.create_journey(1, 'Recall');
SELECT prm.add_journey_stage(1, 1, 'Wait', '[{"type": "wait", "for": "1 hour"}]', '0');
SELECT prm.add_journey_stage(1, 1, 'Text', '[{"type": "send", "template": "declined", "channel": "sms"}]', '0');
-- every instance has run stage 1's wait; all of them end at T
CREATE TABLE bench_t AS SELECT date_trunc('second', clock_timestamp()) + interval '30 seconds' AS t;
INSERT INTO prm.journey_instance (org_id, journey_id, patient_id, stage_id, stage_position, stage_entered_at,
                                  next_action, due_at, entered_by)
SELECT 1, 1, i, 1, 1, now(), 1, (SELECT t FROM bench_t), 'segment' FROM generate_series(1, $N) i;
-- the baseline: the same rows, bare
CREATE TABLE bare_instance (id bigint PRIMARY KEY, patient_id bigint NOT NULL, stage int NOT NULL, due_at timestamptz);
CREATE INDEX ON bare_instance (due_at) WHERE due_at IS NOT NULL;
INSERT INTO bare_instance SELECT id, patient_id, 1, due_at FROM prm.journey_instance;
CREATE TABLE bare_outbox (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, patient_id bigint, to_address text,
                          body text, created_at timestamptz);
CREATE TABLE tick (at timestamptz, n int);
-- statistics for the tables filled above; the outbox and the conversations
-- stay never analysed (planned as small tables, by their indexes), not
-- analysed empty: plans cached while their statistics said zero rows would
-- scan them as they grow, which a running clinic's tables never do
VACUUM ANALYZE prm.patient, prm.journey_instance, bare_instance;
SQL

# 1. prm: wait for T, then run the step until nothing is due
t=$($P -At -c "SELECT extract(epoch FROM t - clock_timestamp()) FROM bench_t")
sleep "$(LC_ALL=C awk -v s="$t" 'BEGIN { if (s > 0) print s; else print 0 }')"
script=$(mktemp)
for _ in $(seq $((N / 500 + 20))); do
    printf '%s\n' "SELECT (prm.run_due_jobs()->>'journey_steps')::int AS n \\gset" \
        "INSERT INTO tick VALUES (clock_timestamp(), :n);"
done > "$script"
$P -f "$script" >/dev/null
rm -f "$script"
$P -At <<SQL
WITH b AS (SELECT at, n, sum(n) OVER (ORDER BY at) AS upto FROM tick WHERE n > 0),
     lat AS (SELECT extract(epoch FROM b.at - (SELECT t FROM bench_t)) AS s, b.n FROM b)
SELECT 'prm journey_steps, $N instances due at once: deadline -> message queued p50 '
       || round((SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY s) FROM lat, generate_series(1, lat.n))::numeric, 2) || ' s, p99 '
       || round((SELECT percentile_disc(0.99) WITHIN GROUP (ORDER BY s) FROM lat, generate_series(1, lat.n))::numeric, 2) || ' s; '
       || round((SELECT sum(n) FROM b) / greatest((SELECT max(s) FROM lat), 0.001)) || ' advances/s ('
       || (SELECT count(*) FROM prm.outbound_message WHERE dedup_key LIKE 'journey:%') || ' messages, '
       || (SELECT count(*) FROM prm.journey_instance WHERE stage_position = 2 AND status = 'completed') || ' completed)';
SQL
ok=$($P -At -c "SELECT count(*) = $N FROM prm.outbound_message WHERE dedup_key LIKE 'journey:%'")
[ "$ok" = t ] || { echo "FAILED: not every instance queued its message"; exit 1; }

# the bare sweep over the same rows, as a scheduler's tick after T
bare_ms=$($P -At -c '\timing on' -c "
WITH d AS (UPDATE bare_instance SET stage = 2, due_at = NULL WHERE due_at <= now() RETURNING patient_id)
INSERT INTO bare_outbox (patient_id, to_address, body, created_at)
SELECT d.patient_id, p.phone, 'Bench: you are booked.', clock_timestamp()
  FROM d JOIN prm.patient p ON p.org_id = 1 AND p.id = d.patient_id" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
bare_n=$($P -At -c "SELECT count(*) FROM bare_outbox")
echo "bare SQL sweep every 30 s, same $bare_n rows: the sweep takes $(LC_ALL=C awk -v m="$bare_ms" 'BEGIN { printf "%.2f", m / 1000 }') s" \
     "($(LC_ALL=C awk -v n="$bare_n" -v m="$bare_ms" 'BEGIN { printf "%.0f", n / (m / 1000) }') rows/s);" \
     "deadline -> action p50 $(LC_ALL=C awk -v m="$bare_ms" 'BEGIN { printf "%.2f", 15 + m / 1000 }') s," \
     "p99 $(LC_ALL=C awk -v m="$bare_ms" 'BEGIN { printf "%.2f", 29.7 + m / 1000 }') s (the tick's wait, uniform over 0..30 s, plus the sweep)"

# 2. enrolment cost per booking
cat > /tmp/jb_book.sql <<EOF2
\set p random(1, $N)
\set pr random(1, 100)
SELECT prm.book_appointment(1, :p, :pr, timestamptz '2030-01-01 00:00+00' + d * interval '10 minutes',
                            timestamptz '2030-01-01 00:10+00' + d * interval '10 minutes')
  FROM nextval('bench_booking_slot') d;
EOF2
# each booking its own 10 minutes: random times collided once runs got long enough
$P -c "CREATE SEQUENCE bench_booking_slot" >/dev/null
$P -c "INSERT INTO prm.provider (org_id, name) SELECT 1, 'Dr ' || i FROM generate_series(1, 100) i" >/dev/null
tps() { pgbench -n -M prepared -c 1 -T "$SECS" -f /tmp/jb_book.sql "$DB" 2>&1 | sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
add_journeys() {   # $1 more journeys on appointment_booked whose filter never matches
    $P -c "SELECT prm.create_journey(1, 'Never ' || g || '-' || pg_backend_pid(), 'appointment_booked',
                                     '{\"trigger_filter\": {\"never\": true}}')
             FROM generate_series(1, $1) g" >/dev/null
}
t0=$(tps); add_journeys 10; t10=$(tps); add_journeys 90; t100=$(tps)
$P -c "SELECT prm.update_journey(1, 1, '{\"trigger_event\": \"appointment_booked\", \"reentry\": \"1 second\"}')" >/dev/null
t1m=$(tps)
enrolled=$($P -At -c "SELECT count(*) FROM prm.journey_instance WHERE entered_by = 'event'")
cost() { LC_ALL=C awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", 1000 / b - 1000 / a }'; }
echo "book_appointment, 1 client, ${SECS}s each: no journeys $t0/s; 10 non-matching $t10/s (ratio $(ratio "$t10" "$t0"), +$(cost "$t0" "$t10") ms);" \
     "100 non-matching $t100/s (ratio $(ratio "$t100" "$t0"), +$(cost "$t0" "$t100") ms); one matching (enrols; 100 non-matching too) $t1m/s" \
     "(ratio $(ratio "$t1m" "$t0"), +$(cost "$t0" "$t1m") ms; $enrolled enrolled)"
psql -X -qc "DROP DATABASE $DB" >/dev/null
