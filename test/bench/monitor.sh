#!/bin/bash
# Companion monitoring benchmark (issue 13), on an existing cluster (PGHOST,
# PGPORT, PGUSER as for psql; the database prm_bench_monitor is created and
# dropped).  With 100,000 monitored patients:
#   1. heartbeat ingest: prm.record_heartbeat vs the bare single-row UPDATE +
#      INSERT (one statement, same table shapes and indexes), CLIENTS clients
#      for BENCH_SECONDS each;
#   2. the inactivity step: run_due_jobs with nobody overdue, then with 1,000
#      patients gone silent at once (each alert opened, its first caregiver's
#      SMS queued); the step's cost follows the overdue, not the monitored.
#
#   PGHOST=/tmp/pg-monitor/sock PGPORT=5513 PGUSER=postgres bash test/bench/monitor.sh
set -euo pipefail
SECONDS_RUN=${BENCH_SECONDS:-10}
CLIENTS=${CLIENTS:-8}
N=${MONITORED:-100000}
DB=prm_bench_monitor
psql -X -qc "DROP DATABASE IF EXISTS $DB" >/dev/null
psql -X -qc "CREATE DATABASE $DB" >/dev/null
P="psql -X -q -v ON_ERROR_STOP=1 -d $DB"
$P <<SQL
CREATE EXTENSION prm CASCADE;
SELECT prm.create_organization('Bench', 'UTC', '+15558990000');
INSERT INTO prm.patient (org_id, given_name, family_name, phone)
SELECT 1, 'P' || i, 'Bench', '+1555' || lpad(i::text, 7, '0') FROM generate_series(1, $N) i;
INSERT INTO prm.caregiver (org_id, name, phone, preferences)
SELECT 1, 'C' || i, '+1666' || lpad(i::text, 7, '0'),
       '{"notifications": {"email": false, "sms": true, "push": false}, "alert_threshold": "low",
         "quiet_hours": {"enabled": false, "start": "22:00", "end": "07:00"}, "daily_summary_time": null}'
  FROM generate_series(1, $N) i;
INSERT INTO prm.care_link (org_id, patient_id, caregiver_id, position) SELECT 1, i, i, 1 FROM generate_series(1, $N) i;
INSERT INTO prm.monitoring (org_id, patient_id, settings, inactivity_threshold, escalation_wait, severity, next_due_at)
SELECT 1, i, '{}', interval '1 hour', interval '15 minutes', 'high', now() + interval '1 hour' FROM generate_series(1, $N) i;
-- the baseline: the same shapes, bare
CREATE TABLE bare_patient (LIKE prm.patient INCLUDING DEFAULTS);
INSERT INTO bare_patient SELECT * FROM prm.patient;
ALTER TABLE bare_patient ADD PRIMARY KEY (org_id, id);
CREATE INDEX ON bare_patient (org_id, phone);
CREATE TABLE bare_activity (LIKE prm.patient_activity INCLUDING DEFAULTS);
CREATE INDEX ON bare_activity (org_id, patient_id, occurred_at);
CREATE INDEX ON bare_activity USING brin (occurred_at);
VACUUM ANALYZE;
SQL
cat > /tmp/mon_prm.sql <<EOF2
\set p random(1, $N)
SELECT prm.record_heartbeat(1, :p);
EOF2
cat > /tmp/mon_bare.sql <<EOF2
\set p random(1, $N)
WITH u AS (UPDATE bare_patient SET last_heartbeat_at = now() WHERE org_id = 1 AND id = :p RETURNING id)
INSERT INTO bare_activity (org_id, patient_id, kind, details) SELECT 1, u.id, 'app', '{}' FROM u;
EOF2
tps() { pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_RUN" -f "$1" "$DB" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
bare=$(tps /tmp/mon_bare.sql)
prm=$(tps /tmp/mon_prm.sql)
echo "heartbeats, $N monitored, $CLIENTS clients, ${SECONDS_RUN}s: prm.record_heartbeat $prm/s, bare UPDATE+INSERT $bare/s, ratio $(LC_ALL=C awk -v a="$prm" -v b="$bare" 'BEGIN { printf "%.2f", a / b }')"
$P -At <<SQL
SELECT 'HOT updates of prm.patient: ' || n_tup_hot_upd || ' of ' || n_tup_upd FROM pg_stat_user_tables WHERE relid = 'prm.patient'::regclass;
SQL
# the inactivity step
ms() { $P -At -c "\\timing on" -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'; }
# nobody overdue, twice in one session: the session's first call also plans
# every step's statements; the second is what each round of the worker costs
idle_times=$($P -At -c "\\timing on" -c "SELECT prm.run_due_jobs()" -c "SELECT prm.run_due_jobs()" |
    sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
idle_first=$(echo "$idle_times" | head -1)
idle=$(echo "$idle_times" | tail -1)
$P -c "UPDATE prm.patient SET last_heartbeat_at = now() - interval '2 hours' WHERE id <= 1000;
       UPDATE prm.monitoring SET next_due_at = now() - interval '1 second', started_at = now() - interval '2 hours' WHERE patient_id <= 1000;" >/dev/null
busy=$(ms "SELECT prm.run_due_jobs()")
$P -At <<SQL
SELECT 'inactivity step, $N monitored: nobody overdue ${idle} ms (first call of its session ${idle_first} ms); 1,000 silent at once ${busy} ms for '
       || (SELECT count(*) FROM prm.alert) || ' alerts and '
       || (SELECT count(*) FROM prm.outbound_message WHERE kind = 'caregiver_alert') || ' first caregiver SMS queued ('
       || round(${busy} / 1000.0, 3) || ' ms per alert)';
SQL
# deadline -> first caregiver SMS queued, p50/p99: another 1,000 fall silent
# at the same instant T; the step runs as the worker runs it, and each
# message counts from T to the commit of the run that queued it
$P -c "CREATE TABLE tick (at timestamptz, n int);
       CREATE TABLE bench_t AS SELECT date_trunc('second', clock_timestamp()) + interval '5 seconds' AS t;
       UPDATE prm.patient SET last_heartbeat_at = now() - interval '2 hours' WHERE id BETWEEN 1001 AND 2000;
       UPDATE prm.monitoring SET next_due_at = (SELECT t FROM bench_t), started_at = now() - interval '2 hours'
        WHERE patient_id BETWEEN 1001 AND 2000;" >/dev/null
wait_s=$($P -At -c "SELECT extract(epoch FROM t - clock_timestamp()) FROM bench_t")
sleep "$(LC_ALL=C awk -v s="$wait_s" 'BEGIN { if (s > 0) print s; else print 0 }')"
script=$(mktemp)
for _ in $(seq 40); do
    printf '%s\n' "SELECT (SELECT count(*) FROM prm.outbound_message WHERE kind = 'caregiver_alert') AS before \\gset" \
        "SELECT prm.run_due_jobs() IS NOT NULL AS ran \\gset" \
        "INSERT INTO tick SELECT clock_timestamp(), count(*) - :before FROM prm.outbound_message WHERE kind = 'caregiver_alert';"
done > "$script"
$P -f "$script" >/dev/null
rm -f "$script"
$P -At <<SQL
WITH lat AS (SELECT extract(epoch FROM k.at - (SELECT t FROM bench_t)) AS s, k.n FROM tick k WHERE k.n > 0)
SELECT 'deadline -> first caregiver SMS queued (committed), 1,000 silent at the same instant, $N monitored: p50 '
       || round((SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY s) FROM lat, generate_series(1, lat.n))::numeric * 1000)
       || ' ms, p99 '
       || round((SELECT percentile_disc(0.99) WITHIN GROUP (ORDER BY s) FROM lat, generate_series(1, lat.n))::numeric * 1000)
       || ' ms (' || (SELECT sum(n) FROM lat) || ' messages); a poller every 30 s: p50 15,000 ms, p99 29,700 ms plus its sweep';
SQL
psql -X -qc "DROP DATABASE $DB" >/dev/null
