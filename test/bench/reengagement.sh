#!/bin/bash
# Reengagement benchmark: profile, summary, search and the cost of the
# statistics triggers, each printed against a baseline with the ratio.
#
#   PGHOST=... PGPORT=... PGUSER=... bash test/bench/reengagement.sh
#
# Needs a running server reachable through the usual PG* variables, a role
# that may create databases, and prm installed (make install).  It creates a
# scratch database prm_bench_reengagement_<pid>, loads one organization with
# PATIENTS patients, APPOINTMENTS appointments and MESSAGES messages (7 in 10
# archived outbound, 1 in 10 queued, 2 in 10 inbound), measures, and drops
# the database (KEEP=1 keeps it).  Defaults: 100,000 / 2,000,000 /
# 1,000,000; scale them down through the environment on a small machine.
set -eu
PATIENTS=${PATIENTS:-100000}
APPOINTMENTS=${APPOINTMENTS:-2000000}
MESSAGES=${MESSAGES:-1000000}
RUNS=${RUNS:-200}
DB=prm_bench_reengagement_$$
export PGDATABASE=$DB

createdb "$DB"
trap '[ "${KEEP:-0}" = 1 ] || dropdb --if-exists "$DB"' EXIT
P="psql -X -q -v ON_ERROR_STOP=1"
started=$(date +%s)

echo "== load: $PATIENTS patients, $APPOINTMENTS appointments, $MESSAGES messages (triggers off, then rebuild)"
$P -v patients="$PATIENTS" -v appointments="$APPOINTMENTS" -v messages="$MESSAGES" <<'SQL'
CREATE EXTENSION prm CASCADE;
SELECT prm.create_organization('Bench clinic', 'UTC') AS org \gset
ALTER TABLE prm.patient DISABLE TRIGGER USER;
ALTER TABLE prm.appointment DISABLE TRIGGER USER;
ALTER TABLE prm.outbound_message DISABLE TRIGGER USER;
ALTER TABLE prm.outbound_message_history DISABLE TRIGGER USER;
ALTER TABLE prm.inbound_message DISABLE TRIGGER USER;
INSERT INTO prm.provider (org_id, name) SELECT :org, 'Provider ' || g FROM generate_series(1, 200) g;
INSERT INTO prm.patient (org_id, given_name, family_name, phone, email)
SELECT :org,
       (ARRAY['James','Mary','John','Patricia','Robert','Jennifer','Michael','Linda','William','Elizabeth',
              'David','Barbara','Richard','Susan','Joseph','Jessica','Thomas','Sarah','Charles','Karen',
              'Olivia','Liam','Emma','Noah','Ava','Lucas','Mia','Ethan','Chloe','Oscar'])[1 + i % 30],
       (ARRAY['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Rodriguez','Martinez',
              'Hernandez','Lopez','Gonzalez','Wilson','Anderson','Thomas','Taylor','Moore','Jackson','Martin',
              'Lee','Perez','Thompson','White','Harris','Sanchez','Clark','Ramirez','Lewis','Robinson',
              'Walker','Young','Allen','King','Wright','Scott','Torres','Nguyen','Hill','Flores',
              'Green','Adams','Nelson','Baker','Hall','Rivera','Campbell','Mitchell','Carter','Roberts'])[1 + (i / 30) % 50]
         || (ARRAY['', 'son', 'ton', 'ley', 'field', 'wood', 'man', 'er', 'ford', 'well'])[1 + (i / 1500) % 10],
       '+1212' || lpad(i::text, 7, '0'),
       'patient' || i || '@example.org'
  FROM generate_series(1, :patients) i;
-- appointments: each provider's are an hour apart, so none overlap
INSERT INTO prm.appointment (org_id, patient_id, provider_id, starts_at, ends_at, status, price, created_at)
SELECT :org, p.first + (hashint4(i) & 2147483647) % :patients, v.first + i % 200,
       t, t + interval '30 minutes',
       CASE WHEN t > now() THEN 'booked'
            ELSE (ARRAY['fulfilled','fulfilled','fulfilled','fulfilled','fulfilled','fulfilled','cancelled','noshow','fulfilled','entered-in-error'])[1 + (hashint4(i + 7) & 2147483647) % 10] END,
       60 + (i % 9) * 10, t - interval '20 days'
  FROM (SELECT min(id) AS first FROM prm.patient WHERE org_id = :org) p,
       (SELECT min(id) AS first FROM prm.provider WHERE org_id = :org) v,
       generate_series(0, :appointments - 1) i,
       LATERAL (SELECT now() - interval '3 years' + (i / 200) * interval '1 hour' * (3 * 365 * 24 + 60 * 24) / greatest(:appointments / 200, 1) AS t) x;
INSERT INTO prm.outbound_message_history (org_id, id, channel, to_address, body, status, created_at, kind, patient_id, campaign)
SELECT :org, nextval('prm.outbound_message_id_seq'), 'sms', '+12120000000', 'We miss you', 'delivered',
       now() - (i % 1000) * interval '1 day', 'other', p.first + (hashint4(i + 11) & 2147483647) % :patients,
       'recall-' || (i % 4)
  FROM (SELECT min(id) AS first FROM prm.patient WHERE org_id = :org) p, generate_series(1, :messages * 7 / 10) i;
INSERT INTO prm.outbound_message (org_id, channel, to_address, body, status, created_at, kind, patient_id, campaign)
SELECT :org, 'sms', '+12120000000', 'See you soon', 'sent', now() - (i % 20) * interval '1 hour', 'other',
       p.first + (hashint4(i + 13) & 2147483647) % :patients, 'recall-' || (i % 4)
  FROM (SELECT min(id) AS first FROM prm.patient WHERE org_id = :org) p, generate_series(1, :messages / 10) i;
INSERT INTO prm.inbound_message (org_id, provider_message_id, from_address, body, keyword, patient_id, received_at)
SELECT :org, 'SM' || i, '+12120000000', 'YES', 'yes', p.first + (hashint4(i + 17) & 2147483647) % :patients,
       now() - (i % 1000) * interval '1 day' + interval '2 hours'
  FROM (SELECT min(id) AS first FROM prm.patient WHERE org_id = :org) p, generate_series(1, :messages * 2 / 10) i;
ALTER TABLE prm.patient ENABLE TRIGGER USER;
ALTER TABLE prm.appointment ENABLE TRIGGER USER;
ALTER TABLE prm.outbound_message ENABLE TRIGGER USER;
ALTER TABLE prm.outbound_message_history ENABLE TRIGGER USER;
ALTER TABLE prm.inbound_message ENABLE TRIGGER USER;
VACUUM ANALYZE;
\timing on
\echo rebuild_patient_stats (every patient from scratch):
SELECT prm.rebuild_patient_stats(:org) AS patients;
\timing off
ANALYZE prm.patient_stats;
SQL
echo "   load took $(( $(date +%s) - started )) s"

$P -v runs="$RUNS" <<'SQL'
\pset footer off
SELECT id AS org FROM prm.organization \gset
SELECT min(id) AS first, max(id) AS last FROM prm.patient WHERE org_id = :org \gset
CREATE TEMP TABLE timing (what text, ms float8);
CREATE FUNCTION pg_temp.measure(what text, sql text, runs int, arg_lo bigint, arg_hi bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
    a bigint;
BEGIN
    PERFORM setseed(0.5);
    FOR i IN 1 .. runs LOOP
        a := arg_lo + floor(random() * (arg_hi - arg_lo + 1))::bigint;
        t := clock_timestamp();
        EXECUTE sql USING a;
        INSERT INTO timing VALUES (what, extract(epoch FROM clock_timestamp() - t) * 1000);
    END LOOP;
END $$;

-- the figures and their baselines
SELECT pg_temp.measure('summary', format('SELECT prm.reengagement_summary(%s)', :org), 7, 0, 0);
SELECT pg_temp.measure('summary baseline: count(*) of the patients', format('SELECT count(*) FROM prm.patient WHERE org_id = %s', :org), 7, 0, 0);
SELECT pg_temp.measure('profile', format('SELECT * FROM prm.patient_profile WHERE org_id = %s AND patient_id = $1', :org), :runs, :first, :last);
SELECT pg_temp.measure('profile baseline: patient by primary key', format('SELECT * FROM prm.patient WHERE org_id = %s AND id = $1', :org), :runs, :first, :last);
-- the same two with their plans kept, as a driver's prepared statement keeps
-- them: each EXECUTE above parses and plans the view afresh
-- (pg_temp.measure's loop, with the two statements written in, not EXECUTEd)
CREATE FUNCTION pg_temp.measure_kept(what text, org bigint, runs int, lo bigint, hi bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
    a bigint;
BEGIN
    PERFORM setseed(0.5);
    FOR i IN 1 .. runs LOOP
        a := lo + floor(random() * (hi - lo + 1))::bigint;
        t := clock_timestamp();
        IF what = 'profile, plan kept' THEN
            PERFORM * FROM prm.patient_profile WHERE org_id = org AND patient_id = a;
        ELSE
            PERFORM * FROM prm.patient WHERE org_id = org AND id = a;
        END IF;
        INSERT INTO timing VALUES (what, extract(epoch FROM clock_timestamp() - t) * 1000);
    END LOOP;
END $$;
SELECT pg_temp.measure_kept('profile, plan kept', :org, :runs, :first, :last);
SELECT pg_temp.measure_kept('profile baseline, plan kept', :org, :runs, :first, :last);
SELECT pg_temp.measure('name search, with typos',
    format($q$SELECT prm.search_patients(%s, (ARRAY['jonh smiht', 'mary jonse', 'willaims', 'elizabeht taylorson', 'ocsar nguyenwood'])[1 + $1 %% 5])$q$, :org),
    :runs, 0, 4);
SELECT pg_temp.measure('name search baseline: phone search (unique index)',
    format($q$SELECT prm.search_patients(%s, '+1212' || lpad($1::text, 7, '0'))$q$, :org), :runs, 1, 100000);

SELECT what,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS median_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS p99_ms,
       count(*) AS runs
  FROM timing GROUP BY what ORDER BY min(ctid);

WITH m AS (SELECT what, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS med,
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99 FROM timing GROUP BY what)
SELECT x.label, round((a.med / b.med)::numeric, 1) AS median_ratio, round((a.p99 / b.p99)::numeric, 1) AS p99_ratio
  FROM (VALUES ('summary / count(*) of patients', 'summary', 'summary baseline: count(*) of the patients'),
               ('profile / patient by primary key', 'profile', 'profile baseline: patient by primary key'),
               ('profile, plan kept / patient by primary key, plan kept', 'profile, plan kept', 'profile baseline, plan kept'),
               ('name search / phone search', 'name search, with typos', 'name search baseline: phone search (unique index)')) x(label, a, b)
  JOIN m a ON a.what = x.a JOIN m b ON b.what = x.b;

-- appointment inserts with the statistics triggers against without, same run
TRUNCATE timing;
-- each phase books for a provider of its own, empty when it starts (the
-- exclusion constraint and the calendar checks cost more as a provider's
-- appointments grow: one shared provider favoured the phase run first)
SELECT prm.add_provider(:org, 'Insert bench') AS prov \gset
SELECT prm.add_provider(:org, 'Insert bench, with triggers') AS prov_with \gset
CREATE FUNCTION pg_temp.inserts(what text, n int, base timestamptz, org bigint, prov bigint,
                                 lo bigint, hi bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
    p bigint;
BEGIN
    PERFORM setseed(0.25);
    FOR i IN 1 .. n LOOP
        p := lo + floor(random() * (hi - lo + 1))::bigint;
        t := clock_timestamp();
        INSERT INTO prm.appointment (org_id, patient_id, provider_id, starts_at, ends_at, status, price)
        VALUES (org, p, prov, base + i * interval '1 hour', base + i * interval '1 hour' + interval '30 minutes', 'fulfilled', 80);
        INSERT INTO timing VALUES (what, extract(epoch FROM clock_timestamp() - t) * 1000);
    END LOOP;
END $$;
ALTER TABLE prm.appointment DISABLE TRIGGER patient_stats_insert;
SELECT pg_temp.inserts('insert without statistics triggers', 2000, now() + interval '10 years', :org, :prov, :first, :last);
ALTER TABLE prm.appointment ENABLE TRIGGER patient_stats_insert;
SELECT pg_temp.inserts('insert with statistics triggers', 2000, now() + interval '10 years', :org, :prov_with, :first, :last);
ALTER TABLE prm.appointment DISABLE TRIGGER patient_stats_insert;
\timing on
\echo bulk insert of 50,000 appointments without the statistics trigger:
INSERT INTO prm.appointment (org_id, patient_id, provider_id, starts_at, ends_at, status, price)
SELECT :org, :first + (hashint4(i) & 2147483647) % (:last - :first + 1), :prov,
       now() + interval '30 years' + i * interval '1 hour', now() + interval '30 years' + i * interval '1 hour' + interval '30 minutes', 'booked', 80
  FROM generate_series(1, 50000) i;
\timing off
ALTER TABLE prm.appointment ENABLE TRIGGER patient_stats_insert;
\timing on
\echo bulk insert of 50,000 appointments with the statistics trigger (one recompute per patient):
INSERT INTO prm.appointment (org_id, patient_id, provider_id, starts_at, ends_at, status, price)
SELECT :org, :first + (hashint4(i) & 2147483647) % (:last - :first + 1), :prov,
       now() + interval '40 years' + i * interval '1 hour', now() + interval '40 years' + i * interval '1 hour' + interval '30 minutes', 'booked', 80
  FROM generate_series(1, 50000) i;
\timing off

-- inbound messages one at a time (a patient's reply), with and without the trigger
CREATE FUNCTION pg_temp.inbound(what text, n int, org bigint, lo bigint, hi bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
    p bigint;
BEGIN
    PERFORM setseed(0.75);
    FOR i IN 1 .. n LOOP
        p := lo + floor(random() * (hi - lo + 1))::bigint;
        t := clock_timestamp();
        INSERT INTO prm.inbound_message (org_id, provider_message_id, from_address, body, keyword, patient_id)
        VALUES (org, what || '-' || i, '+12120000000', 'YES', 'yes', p);
        INSERT INTO timing VALUES (what, extract(epoch FROM clock_timestamp() - t) * 1000);
    END LOOP;
END $$;
ALTER TABLE prm.inbound_message DISABLE TRIGGER patient_stats_insert;
SELECT pg_temp.inbound('inbound insert without statistics triggers', 2000, :org, :first, :last);
ALTER TABLE prm.inbound_message ENABLE TRIGGER patient_stats_insert;
SELECT pg_temp.inbound('inbound insert with statistics triggers', 2000, :org, :first, :last);

SELECT what, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS median_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS p99_ms, count(*) AS runs
  FROM timing GROUP BY what ORDER BY 1 DESC;
SELECT round(((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM timing WHERE what LIKE 'insert with %')
            / (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM timing WHERE what LIKE 'insert without%'))::numeric, 2)
       AS "single-row insert: with / without statistics triggers (median)",
       round(((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM timing WHERE what LIKE 'inbound insert with %')
            / (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM timing WHERE what LIKE 'inbound insert without%'))::numeric, 2)
       AS "inbound message: with / without (median)";

-- correctness: the summary equals the one computed from scratch through the view
SELECT (prm.reengagement_summary(:org) - 'generated_at') = (
SELECT jsonb_build_object(
  'org_id', :org, 'patients', count(*),
  'engagement', jsonb_build_object(
     'highly_engaged', count(*) FILTER (WHERE v.engagement_level = 'highly_engaged'),
     'moderately_engaged', count(*) FILTER (WHERE v.engagement_level = 'moderately_engaged'),
     'low_engagement', count(*) FILTER (WHERE v.engagement_level = 'low_engagement'),
     'disengaged', count(*) FILTER (WHERE v.engagement_level = 'disengaged')),
  'churn_risk', jsonb_build_object(
     'critical', count(*) FILTER (WHERE v.churn_risk = 'critical'),
     'high', count(*) FILTER (WHERE v.churn_risk = 'high'),
     'medium', count(*) FILTER (WHERE v.churn_risk = 'medium'),
     'low', count(*) FILTER (WHERE v.churn_risk = 'low')),
  'no_upcoming_appointment', count(*) FILTER (WHERE NOT v.has_upcoming_appointment),
  'value_at_risk', coalesce(sum(v.expected_horizon_value) FILTER (WHERE v.churn_risk IN ('high', 'critical')), 0),
  'estimated_lifetime_value', coalesce(sum(v.estimated_lifetime_value), 0),
  'total_revenue', coalesce(sum(v.total_revenue), 0))
  FROM prm.patient_profile v WHERE v.org_id = :org) AS summary_equals_recomputation \gset
\echo summary equals the recomputation from scratch: :summary_equals_recomputation
SELECT :'summary_equals_recomputation'::boolean AS ok \gset
\if :ok
\else
\echo FAILED: the summary differs from the recomputation
SELECT 1/0;
\endif
SQL
echo "== total $(( $(date +%s) - started )) s; reproduce: PATIENTS=$PATIENTS APPOINTMENTS=$APPOINTMENTS MESSAGES=$MESSAGES bash test/bench/reengagement.sh"
