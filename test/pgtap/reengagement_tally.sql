-- Reengagement that costs what changed: after a random workload of
-- appointments and messages (inserts, updates, deletes, a move to the
-- history in one statement), a change of thresholds, a rebuild and an
-- erasure, prm.reengagement_summary() (the tally plus the rows due) equals
-- the summary computed from scratch through prm.patient_profile; the
-- stored judgement of every row that is not due equals the view's; and a
-- risk that changes with the clock alone is advanced by the
-- patient_stats_due step.  Not one transaction: the last part lets two
-- seconds pass.  Cleans up after itself.
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SET timezone = 'UTC';
SELECT plan(42);

DROP ROLE IF EXISTS regress_tally_b;
CREATE ROLE regress_tally_b;
SELECT prm.create_organization('Tally A', 'UTC', '+15558110001') AS org \gset
SELECT prm.create_organization('Tally B', 'UTC', '+15558110002') AS org_b \gset
SELECT prm.grant_access('regress_tally_b', :org_b, 'readonly');
SELECT prm.add_provider(:org, 'Dr Tally') AS prov \gset
SELECT prm.add_provider(:org, 'Dr Booker') AS prov_book \gset

-- the summary from scratch: every patient through the view
CREATE FUNCTION pg_temp.reference(org bigint) RETURNS jsonb LANGUAGE sql AS $$
SELECT jsonb_build_object(
  'org_id', org, 'patients', count(*),
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
  FROM prm.patient_profile v WHERE v.org_id = org $$;
CREATE FUNCTION pg_temp.summary(org bigint) RETURNS jsonb LANGUAGE sql AS $$
SELECT prm.reengagement_summary(org) - 'generated_at' $$;
-- the tally against the stored contributions
CREATE FUNCTION pg_temp.tally_drift(org bigint) RETURNS bigint LANGUAGE sql AS $$
SELECT count(*) FROM (
  SELECT sum(patients), sum(highly_engaged), sum(moderately_engaged), sum(low_engagement), sum(disengaged),
         sum(risk_low), sum(risk_medium), sum(risk_high), sum(risk_critical), sum(no_upcoming),
         sum(value_at_risk), sum(lifetime_value), sum(revenue)
    FROM prm.reengagement_tally WHERE org_id = org
  EXCEPT
  SELECT count(*), count(*) FILTER (WHERE engagement_level = 'highly_engaged'),
         count(*) FILTER (WHERE engagement_level = 'moderately_engaged'),
         count(*) FILTER (WHERE engagement_level = 'low_engagement'),
         count(*) FILTER (WHERE engagement_level = 'disengaged'),
         count(*) FILTER (WHERE churn_risk = 'low'), count(*) FILTER (WHERE churn_risk = 'medium'),
         count(*) FILTER (WHERE churn_risk = 'high'), count(*) FILTER (WHERE churn_risk = 'critical'),
         count(*) FILTER (WHERE next_appointment_at IS NULL),
         coalesce(sum(expected_horizon_value) FILTER (WHERE churn_risk IN ('high', 'critical')), 0),
         sum(lifetime_value), sum(revenue)
    FROM prm.patient_stats WHERE org_id = org) d $$;
-- rows that are not due whose stored judgement differs from the view's
CREATE FUNCTION pg_temp.misjudged(org bigint) RETURNS bigint LANGUAGE sql AS $$
SELECT count(*) FROM prm.patient_stats s JOIN prm.patient_profile v
    ON v.org_id = s.org_id AND v.patient_id = s.patient_id
 WHERE s.org_id = org AND (s.changes_at IS NULL OR s.changes_at > now() + interval '5 seconds')
   AND (s.engagement_level, s.churn_risk, s.expected_horizon_value, s.lifetime_value,
        s.next_appointment_at IS NOT NULL)
       IS DISTINCT FROM
       (v.engagement_level, v.churn_risk, v.expected_horizon_value, v.estimated_lifetime_value,
        v.has_upcoming_appointment) $$;

-- the profile as 0.2.0 spelled it out in SQL: prm.patient_judgement() must
-- give the same columns
CREATE TEMP VIEW profile_sql AS
SELECT p.org_id,
       p.id AS patient_id,
       p.given_name,
       p.family_name,
       p.given_name || ' ' || p.family_name AS full_name,
       p.email,
       p.phone,
       p.language,
       p.timezone,
       p.sms_opt_out,
       p.external_source,
       p.external_id,
       p.created_at AS patient_since,
       p.last_synced_at,
       coalesce(s.total_appointments, 0) AS total_appointment_count,
       coalesce(s.completed_visits, 0) AS completed_visit_count,
       coalesce(s.cancellations, 0) AS cancellation_count,
       coalesce(s.no_shows, 0) AS no_show_count,
       s.first_visit_at AS first_visit_time,
       s.last_visit_at AS last_visit_time,
       n.next_at AS next_appointment_time,
       n.next_at IS NOT NULL AS has_upcoming_appointment,
       d.days_since_last_visit,
       round((extract(epoch FROM n.next_at - now()) / 86400)::numeric, 1) AS days_until_next_appointment,
       s.avg_days_between_visits AS average_days_between_visits,
       round(d.rhythm::numeric, 1) AS visit_rhythm_days,
       round((d.days_since_last_visit / d.rhythm)::numeric, 2) AS visit_rhythm_ratio,
       CASE WHEN s.total_appointments > 0 THEN round(s.cancellations::numeric / s.total_appointments, 3) END AS cancellation_rate,
       CASE WHEN s.total_appointments > 0 THEN round(s.no_shows::numeric / s.total_appointments, 3) END AS no_show_rate,
       CASE WHEN s.completed_visits + s.no_shows + s.cancellations > 0
            THEN round(s.completed_visits::numeric / (s.completed_visits + s.no_shows + s.cancellations), 3) END AS attendance_rate,
       coalesce(s.revenue, 0) AS total_revenue,
       CASE WHEN s.completed_visits > 0 THEN round(s.revenue / s.completed_visits, 2) END AS average_visit_value,
       round(CASE WHEN s.completed_visits > 0 THEN s.revenue / s.completed_visits ELSE 0 END
             * (t.ltv_horizon_days / d.rhythm)::numeric, 2) AS expected_horizon_value,
       prm.lifetime_value(coalesce(s.revenue, 0), coalesce(s.completed_visits, 0),
                          s.avg_days_between_visits::float8, r.churn_risk,
                          t.ltv_horizon_days, t.default_visit_interval_days) AS estimated_lifetime_value,
       coalesce(s.messages_out, 0) AS messages_out_count,
       coalesce(s.messages_in, 0) AS messages_in_count,
       coalesce(s.replied_out, 0) AS replied_message_count,
       s.last_outbound_at AS last_outbound_message_time,
       s.last_inbound_at AS last_inbound_message_time,
       round(d.response_rate::numeric, 3) AS response_rate,
       round((extract(epoch FROM now() - greatest(s.last_outbound_at, s.last_inbound_at)) / 86400)::numeric, 1) AS days_since_last_contact,
       round(prm.engagement_score(coalesce(s.completed_visits, 0), d.days_since_last_visit,
                                  s.avg_days_between_visits::float8, n.next_at IS NOT NULL,
                                  d.missed_rate, d.response_rate, t.churn_critical_ratio,
                                  t.default_visit_interval_days, t.engagement_full_visits)::numeric, 1) AS engagement_score,
       prm.engagement_level(coalesce(s.completed_visits, 0), d.days_since_last_visit,
                            s.avg_days_between_visits::float8, n.next_at IS NOT NULL,
                            d.missed_rate, d.response_rate, t.churn_critical_ratio,
                            t.default_visit_interval_days, t.engagement_full_visits,
                            t.engagement_high_score, t.engagement_moderate_score,
                            t.engagement_low_score) AS engagement_level,
       r.churn_risk,
       s.engagement_level AS stored_engagement_level,
       s.churn_risk AS stored_churn_risk,
       s.computed_at AS stats_computed_at,
       now() AS view_generated_at
  FROM prm.patient p
  JOIN prm.reengagement_settings t ON t.org_id = p.org_id
  LEFT JOIN prm.patient_stats s ON s.org_id = p.org_id AND s.patient_id = p.id
  CROSS JOIN LATERAL (
       -- the stored next appointment, unless it has passed since
       SELECT CASE WHEN s.next_appointment_at IS NULL OR s.next_appointment_at > now()
                   THEN s.next_appointment_at
                   ELSE (SELECT min(a.starts_at) FROM prm.appointment a
                          WHERE a.org_id = p.org_id AND a.patient_id = p.id
                            AND a.status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in')
                            AND a.starts_at > now()) END AS next_at
        OFFSET 0) n
  CROSS JOIN LATERAL (
       SELECT date_part('epoch', now() - s.last_visit_at) / 86400 AS days_since_last_visit,
              prm.visit_rhythm_days(coalesce(s.completed_visits, 0), s.avg_days_between_visits::float8,
                                    t.default_visit_interval_days) AS rhythm,
              CASE WHEN s.total_appointments >= 3
                   THEN (s.cancellations + s.no_shows)::float8 / s.total_appointments END AS missed_rate,
              CASE WHEN s.messages_out > 0 THEN s.replied_out::float8 / s.messages_out END AS response_rate) d
  CROSS JOIN LATERAL (
       SELECT prm.churn_risk(coalesce(s.completed_visits, 0), d.days_since_last_visit,
                             s.avg_days_between_visits::float8, n.next_at IS NOT NULL, d.missed_rate,
                             t.churn_critical_ratio, t.churn_high_ratio, t.churn_medium_ratio,
                             t.default_visit_interval_days) AS churn_risk) r;

-- a random workload
SELECT setseed(0.17);
SELECT prm.add_patient(:org, 'Tally' || i, 'Patient', format('+1212556%s', 1000 + i)) FROM generate_series(1, 60) i;
INSERT INTO prm.appointment (org_id, patient_id, provider_id, starts_at, ends_at, status, price)
SELECT :org, r.ids[1 + floor(random() * 60)::int], :prov,
       now() - interval '700 days' + i * interval '9 hours', now() - interval '700 days' + i * interval '9 hours' + interval '30 minutes',
       CASE WHEN i * interval '9 hours' > interval '700 days' THEN 'booked'
            ELSE (ARRAY['fulfilled', 'fulfilled', 'fulfilled', 'cancelled', 'noshow', 'entered-in-error', 'booked'])[1 + floor(random() * 7)::int] END,
       round((random() * 150)::numeric, 2)
  FROM (SELECT array_agg(id ORDER BY id) AS ids FROM prm.patient WHERE org_id = :org) r, generate_series(1, 1950) i;
-- one appointment at a time, as an application books them
SELECT prm.book_appointment(:org, p.id, :prov_book, now() + interval '3 days' + g * interval '1 hour',
                            now() + interval '3 days' + g * interval '1 hour' + interval '30 minutes') > 0
  FROM (SELECT id, row_number() OVER (ORDER BY id) AS g FROM prm.patient WHERE org_id = :org ORDER BY id LIMIT 5) p;
SELECT is(pg_temp.summary(:org), pg_temp.reference(:org), 'after inserts: the summary equals the one from scratch');
UPDATE prm.appointment SET status = 'fulfilled' WHERE org_id = :org AND status = 'booked' AND starts_at < now() AND random() < 0.5;
UPDATE prm.appointment SET status = 'cancelled' WHERE org_id = :org AND status = 'booked' AND starts_at > now() AND random() < 0.3;
UPDATE prm.appointment SET price = price + 1 WHERE org_id = :org AND random() < 0.1;
UPDATE prm.appointment SET patient_id = (SELECT min(id) FROM prm.patient WHERE org_id = :org)
 WHERE org_id = :org AND random() < 0.03;
DELETE FROM prm.appointment WHERE org_id = :org AND random() < 0.1
   AND NOT EXISTS (SELECT 1 FROM prm.slot s WHERE s.org_id = appointment.org_id
                    AND (s.appointment_id = appointment.id OR s.booked_appointment_id = appointment.id));
SELECT is(pg_temp.summary(:org), pg_temp.reference(:org), 'after updates and deletes: the summary equals the one from scratch');
INSERT INTO prm.outbound_message (org_id, channel, to_address, body, patient_id, created_at, status)
SELECT :org, 'sms', '+12125560000', 'hello', p.id, now() - random() * interval '300 days', 'delivered'
  FROM prm.patient p, generate_series(1, 3) g WHERE p.org_id = :org AND random() < 0.7;
WITH moved AS (DELETE FROM prm.outbound_message m WHERE m.org_id = :org AND m.body = 'hello' AND random() < 0.4 RETURNING m.*)
INSERT INTO prm.outbound_message_history (org_id, id, channel, to_address, body, status, created_at, patient_id)
SELECT org_id, id, channel, to_address, body, status, created_at, patient_id FROM moved;
INSERT INTO prm.inbound_message (org_id, provider_message_id, from_address, body, keyword, received_at, patient_id)
SELECT :org, 'SM-tally-' || g, '+12125560000', 'ok', 'other', now() - random() * interval '300 days',
       (SELECT id FROM prm.patient WHERE org_id = :org ORDER BY id OFFSET g % 60 LIMIT 1)
  FROM generate_series(1, 150) g;
-- single inbound messages, as they arrive
INSERT INTO prm.inbound_message (org_id, provider_message_id, from_address, body, keyword, received_at, patient_id)
SELECT :org, 'SM-one-' || p.id, '+12125560000', 'hi', 'other', m.created_at + interval '1 hour', p.id
  FROM prm.patient p JOIN LATERAL (SELECT max(created_at) AS created_at FROM prm.outbound_message o
                                    WHERE o.org_id = p.org_id AND o.patient_id = p.id) m ON m.created_at IS NOT NULL
 WHERE p.org_id = :org LIMIT 1;
-- replies one at a time: the first answers the message, the second finds it
-- answered already, the third answers the later one (the first stays one reply)
SELECT prm.add_patient(:org, 'Replies', 'Patient', '+12125568888') AS replier \gset
INSERT INTO prm.outbound_message (org_id, channel, to_address, body, patient_id, created_at, status)
VALUES (:org, 'sms', '+12125568888', 'hello', :replier, now() - interval '30 hours', 'delivered'),
       (:org, 'sms', '+12125568888', 'hello', :replier, now() - interval '20 hours', 'delivered'),
       (:org, 'sms', '+12125568888', 'hello', :replier, now() - interval '3 hours', 'capped');
INSERT INTO prm.inbound_message (org_id, provider_message_id, from_address, body, keyword, received_at, patient_id)
VALUES (:org, 'SM-reply-1', '+12125568888', 'ok', 'other', now() - interval '29 hours', :replier);
INSERT INTO prm.inbound_message (org_id, provider_message_id, from_address, body, keyword, received_at, patient_id)
VALUES (:org, 'SM-reply-2', '+12125568888', 'ok', 'other', now() - interval '28 hours', :replier);
SELECT is((SELECT replied_out FROM prm.patient_stats WHERE org_id = :org AND patient_id = :replier), 1,
          'a reply to a message already answered adds no reply');
INSERT INTO prm.inbound_message (org_id, provider_message_id, from_address, body, keyword, received_at, patient_id)
VALUES (:org, 'SM-reply-3', '+12125568888', 'ok', 'other', now() - interval '1 hour', :replier);
SELECT is((SELECT (replied_out, messages_out) FROM prm.patient_stats WHERE org_id = :org AND patient_id = :replier)::text, '(2,2)',
          'a reply answers the later message (not the capped one)');
DELETE FROM prm.inbound_message WHERE org_id = :org AND provider_message_id LIKE 'SM-tally-%' AND random() < 0.1;
DELETE FROM prm.outbound_message_history WHERE org_id = :org AND random() < 0.1;
SELECT is(pg_temp.summary(:org), pg_temp.reference(:org), 'after messages: the summary equals the one from scratch');
SELECT is(pg_temp.tally_drift(:org), 0::bigint, 'the tally is the sum of the stored contributions');
SELECT is(pg_temp.misjudged(:org), 0::bigint, 'every row not due is judged as the view judges it');
SELECT cmp_ok((SELECT count(DISTINCT churn_risk)::int FROM prm.patient_stats WHERE org_id = :org), '>=', 3,
              'the workload produces several risks');
SELECT cmp_ok((SELECT count(DISTINCT engagement_level)::int FROM prm.patient_stats WHERE org_id = :org), '>=', 2,
              'and several levels');
SELECT ok((SELECT sum(value_at_risk) FROM prm.reengagement_tally WHERE org_id = :org) > 0, 'some value is at risk');
SELECT set_eq(format('SELECT * FROM prm.patient_profile WHERE org_id = %s', :org),
              format('SELECT * FROM profile_sql WHERE org_id = %s', :org),
              'the profile equals the one spelled out in SQL');
-- passed next appointments are looked up again; a patient without statistics
BEGIN;
UPDATE prm.patient_stats SET next_appointment_at = now() - interval '1 hour'
 WHERE org_id = :org AND patient_id IN (SELECT id FROM prm.patient WHERE org_id = :org ORDER BY id LIMIT 8);
DELETE FROM prm.patient_stats WHERE org_id = :org AND patient_id = (SELECT max(id) FROM prm.patient WHERE org_id = :org);
SELECT count(*) AS profile_differs FROM (
  (SELECT * FROM prm.patient_profile WHERE org_id = :org EXCEPT SELECT * FROM profile_sql WHERE org_id = :org)
  UNION ALL
  (SELECT * FROM profile_sql WHERE org_id = :org EXCEPT SELECT * FROM prm.patient_profile WHERE org_id = :org)) d \gset
SELECT count(*) AS looked_up FROM prm.patient_profile v JOIN prm.patient_stats s USING (org_id, patient_id)
 WHERE v.org_id = :org AND s.next_appointment_at < now() AND v.next_appointment_time > now() \gset
ROLLBACK;
SELECT is(:profile_differs::bigint, 0::bigint, 'with passed next appointments and a patient without statistics too');
SELECT cmp_ok(:looked_up::bigint, '>', 0::bigint, 'some passed next appointment was looked up again');

-- the differences equal a recomputation from the rows
CREATE TEMP TABLE incremental AS
SELECT patient_id, total_appointments, completed_visits, cancellations, no_shows, first_visit_at, last_visit_at,
       next_appointment_at, revenue, avg_days_between_visits, messages_out, messages_in, replied_out,
       last_outbound_at, last_inbound_at, engagement_level, churn_risk, changes_at, expected_horizon_value, lifetime_value
  FROM prm.patient_stats WHERE org_id = :org;
SELECT is(prm.rebuild_patient_stats(:org), 61::bigint, 'rebuild');
SELECT set_eq(format($$SELECT patient_id, total_appointments, completed_visits, cancellations, no_shows, first_visit_at, last_visit_at,
       next_appointment_at, revenue, avg_days_between_visits, messages_out, messages_in, replied_out,
       last_outbound_at, last_inbound_at, engagement_level, churn_risk, changes_at, expected_horizon_value, lifetime_value
  FROM prm.patient_stats WHERE org_id = %s$$, :org), 'SELECT * FROM incremental',
              'the rows kept by differences equal the rebuilt ones, judgement and deadline included');
SELECT is(pg_temp.tally_drift(:org), 0::bigint, 'the rebuilt tally is the sum of the stored contributions');
SELECT is(pg_temp.summary(:org), pg_temp.reference(:org), 'after the rebuild: the summary equals the one from scratch');

-- new thresholds: every row is due until the step re-judges it
UPDATE prm.organization SET settings = settings || '{"churn_medium_ratio": 1.0, "engagement_high_score": 60}' WHERE id = :org;
SELECT is((SELECT count(*) FROM prm.patient_stats WHERE org_id = :org AND changes_at <= now()), 61::bigint,
          'new thresholds make every row due');
SELECT is(pg_temp.summary(:org), pg_temp.reference(:org), 'the summary judges due rows afresh');
UPDATE prm.organization SET settings = settings || '{"quiet_hours": false}' WHERE id = :org_b;
SELECT is((SELECT count(*) FROM prm.patient_stats WHERE org_id = :org_b AND changes_at <= now()), 0::bigint,
          'a setting that is not a threshold makes nothing due');
SELECT is((prm.run_due_jobs() ->> 'patient_stats_due')::int, 61, 'the step re-judges the sixty-one rows');
SELECT is((SELECT count(*) FROM prm.patient_stats WHERE org_id = :org AND changes_at <= now()), 0::bigint, 'none is due after it');
SELECT is(pg_temp.misjudged(:org), 0::bigint, 'and each is judged with the new thresholds');
SELECT is(pg_temp.summary(:org), pg_temp.reference(:org), 'the summary still equals the one from scratch');

-- erasure leaves the tally
SELECT is(prm.erase_patient(:org, (SELECT min(id) FROM prm.patient WHERE org_id = :org)) IS NOT NULL, true, 'a patient erased');
SELECT is(pg_temp.tally_drift(:org), 0::bigint, 'the erased patient left the tally');
SELECT is(pg_temp.summary(:org), pg_temp.reference(:org), 'after the erasure: the summary equals the one from scratch');

-- a transaction's differences reach the tally at commit; until then the
-- summary adds them; a rolled back subtransaction's never do
BEGIN;
INSERT INTO prm.appointment (org_id, patient_id, provider_id, starts_at, ends_at, status, price)
SELECT :org, max(id), :prov_book, now() - interval '3 days', now() - interval '3 days' + interval '30 minutes', 'fulfilled', 75
  FROM prm.patient WHERE org_id = :org;
SELECT is(pg_temp.summary(:org), pg_temp.reference(:org), 'inside a transaction the summary counts its own writes');
SAVEPOINT before_more;
INSERT INTO prm.appointment (org_id, patient_id, provider_id, starts_at, ends_at, status, price)
SELECT :org, min(id), :prov_book, now() - interval '4 days', now() - interval '4 days' + interval '30 minutes', 'fulfilled', 500
  FROM prm.patient WHERE org_id = :org;
ROLLBACK TO SAVEPOINT before_more;
DO $$ BEGIN
  INSERT INTO prm.appointment (org_id, patient_id, provider_id, starts_at, ends_at, status, price)
  SELECT p.org_id, p.id, v.id, now() - interval '5 days', now() - interval '5 days' + interval '30 minutes', 'fulfilled', 900
    FROM prm.patient p JOIN prm.provider v ON v.org_id = p.org_id
   WHERE p.given_name = 'Tally7' AND v.name = 'Dr Booker';
  RAISE EXCEPTION 'undo';
EXCEPTION WHEN raise_exception THEN NULL;
END $$;
SELECT is(pg_temp.summary(:org), pg_temp.reference(:org), 'rolled back subtransactions are not counted');
COMMIT;
SELECT is(pg_temp.tally_drift(:org), 0::bigint, 'after commit the tally holds the transaction''s differences, and only its own');

-- tenancy and no direct writes
SELECT max(patient_id) AS a_patient FROM prm.patient_stats WHERE org_id = :org AND next_appointment_at > now() \gset
SET ROLE regress_tally_b;
SELECT is((SELECT count(*) FROM prm.reengagement_tally WHERE org_id = :org), 0::bigint, 'B reads none of A''s tally');
SELECT throws_ok(format('UPDATE prm.reengagement_tally SET patients = 0 WHERE org_id = %s', :org_b), '42501', NULL,
                 'no direct writes to the tally');
-- B's role cannot judge with A's organization: its thresholds (and so the
-- patient's appointments) are not B's to read
SELECT throws_ok(format($$SELECT prm.patient_judgement(%s, %s, 1, 1, 0, 0, now() - interval '10 days', NULL, 50, 0, 0,
                        NULL, NULL, now() - interval '1 day', now())$$, :org, :a_patient),
                 'P0002', format('organization %s does not exist', :org),
                 'patient_judgement: another organization''s thresholds stay hidden');
RESET ROLE;
SELECT ok((prm.patient_judgement(:org, :a_patient,
        1, 1, 0, 0, now() - interval '10 days', NULL, 50, 0, 0, NULL, NULL, now() - interval '1 day',
        now())).next_appointment_time > now(), 'while its owner finds the next one');
SELECT throws_ok('SELECT prm.patient_judgement(NULL, 1, 1, 1, 0, 0, now(), NULL, 50, 0, 0, NULL, NULL, NULL, now())',
                 '22004', NULL, 'patient_judgement: NULL org_id refused');
SELECT throws_ok('SELECT prm.patient_judgement(-1, 1, 1, 1, 0, 0, now(), NULL, 50, 0, 0, NULL, NULL, NULL, now())',
                 'P0002', 'organization -1 does not exist', 'patient_judgement: an unknown organization refused');
SELECT throws_ok('SELECT prm.patient_judgement(1, 1, 1, 1, 0, 0, now(), NULL, 50, 0, 0, NULL, NULL, NULL, NULL)',
                 '22004', NULL, 'patient_judgement: NULL as_of refused');
-- the organization's thresholds, as they are when the statement starts:
-- a rhythm of 73 days, 100 per visit, a horizon of 365 then 730 days
SELECT (prm.patient_judgement(:org, :a_patient, 4, 4, 0, 0, now() - interval '10 days', 73, 400, 0, 0,
        NULL, NULL, NULL, now())).expected_horizon_value AS horizon_365 \gset
UPDATE prm.organization SET settings = settings || '{"ltv_horizon_days": 730}' WHERE id = :org;
SELECT is(ARRAY[:horizon_365, (prm.patient_judgement(:org, :a_patient, 4, 4, 0, 0, now() - interval '10 days', 73, 400,
                0, 0, NULL, NULL, NULL, now())).expected_horizon_value],
          ARRAY[500.00, 1000.00], 'patient_judgement: judged with the organization''s thresholds, read again when they change');
SELECT throws_ok('SELECT prm.patient_stats_tally_trigger()', '39P01', NULL, 'the tally trigger is not called directly');

-- the clock alone: a patient whose risk turns medium in about a second
-- (225 days = 1.25 x the default rhythm of 180 days since the only visit)
UPDATE prm.organization SET settings = '{}' WHERE id = :org;
SELECT prm.run_due_jobs() IS NOT NULL AS ok \gset
SELECT prm.add_patient(:org, 'Clock', 'Patient', '+12125569999') AS clock \gset
INSERT INTO prm.appointment (org_id, patient_id, provider_id, starts_at, ends_at, status, price)
VALUES (:org, :clock, :prov, now() - interval '225 days' + interval '1.5 seconds',
        now() - interval '225 days' + interval '1.5 seconds' + interval '30 minutes', 'fulfilled', 90);
SELECT pg_sleep(2);
SELECT is((SELECT (churn_risk, changes_at <= now()) FROM prm.patient_stats WHERE org_id = :org AND patient_id = :clock)::text,
          '(low,t)', 'two seconds on, the stored risk is the old one and the row is due');
SELECT is(pg_temp.summary(:org), pg_temp.reference(:org), 'the summary counts it as the view does, medium');
SELECT prm.run_due_jobs() IS NOT NULL AS ok \gset
SELECT is((SELECT churn_risk FROM prm.patient_stats WHERE org_id = :org AND patient_id = :clock), 'medium',
          'the step advanced the stored risk');

SELECT * FROM finish();
SELECT prm.revoke_access('regress_tally_b', :org_b) IS NOT NULL AS gone \gset
DELETE FROM prm.organization WHERE id IN (:org, :org_b);
DROP ROLE regress_tally_b;
