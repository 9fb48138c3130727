-- Reengagement: practice-system sync, statistics kept by triggers (and equal
-- to a rebuild after a random workload), profiles, scoring, summary,
-- outreach performance, search, tenancy and bad input.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(102);
SET LOCAL timezone = 'UTC';

CREATE ROLE regress_reeng_a;
CREATE ROLE regress_reeng_none;
SELECT prm.create_organization('Clinic A', 'UTC', '+15558100001') AS org_a \gset
SELECT prm.create_organization('Clinic B', 'UTC', '+15558100002') AS org_b \gset
SELECT prm.add_provider(:org_a, 'Dr A') AS prov_a \gset
SELECT prm.add_provider(:org_a, 'Dr A2') AS prov_a2 \gset
SELECT prm.add_provider(:org_b, 'Dr B') AS prov_b \gset
SELECT prm.grant_access('regress_reeng_a', :org_a, 'staff');

-- 1. sync_patients: bad arguments
SELECT throws_ok(format('SELECT prm.sync_patients(%s, %L, %L)', :org_a, 'epic', '[]'), '22023', NULL, 'unknown source refused');
SELECT throws_ok(format('SELECT prm.sync_patients(%s, %L, %L)', :org_a, 'cliniko''; DROP TABLE prm.patient; --', '[]'), '22023', NULL, 'injection in source refused');
SELECT throws_ok(format('SELECT prm.sync_patients(NULL, %L, %L)', 'cliniko', '[]'), '22004', NULL, 'NULL org refused');
SELECT throws_ok(format('SELECT prm.sync_patients(%s, %L, NULL)', :org_a, 'cliniko'), '22004', NULL, 'NULL records refused');
SELECT throws_ok(format('SELECT prm.sync_patients(%s, %L, %L)', :org_a, 'cliniko', '{"external_id": 1}'), '22023', NULL, 'records must be an array');
SELECT throws_ok(format('SELECT prm.sync_patients(%s, %L, %L)', :org_a, 'cliniko', '"x"'), '22023', NULL, 'a scalar is not an array');
SELECT throws_ok(format('SELECT prm.sync_patients(%s, %L, %L)', :org_a, repeat('x', 41), '[]'), '22001', NULL, 'oversized source refused');
SELECT throws_ok('SELECT prm.sync_patients(999999, ''cliniko'', ''[]'')', 'P0002', NULL, 'unknown organization');

-- 2. sync_patients: each record accepted or rejected with its reason
SELECT prm.sync_patients(:org_a, 'cliniko', jsonb_build_array(
    '{"external_id": "c1", "given_name": "John", "family_name": "Smith", "phone": "(212) 555-0101", "email": "John.Smith@example.org"}'::jsonb,
    '{"external_id": 2, "given_name": "Mary", "family_name": "Jones"}'::jsonb,
    '{"external_id": "c3", "given_name": "No Family"}'::jsonb,
    '42'::jsonb,
    '{"external_id": "c1", "given_name": "Dup", "family_name": "Dup"}'::jsonb,
    '{"external_id": "c5", "given_name": "Bad", "family_name": "Phone", "phone": "call me"}'::jsonb,
    jsonb_build_object('external_id', 'c6', 'given_name', repeat('x', 201), 'family_name', 'Long'),
    '{"external_id": "c7", "given_name": "Robert''); DROP TABLE prm.patient; --", "family_name": "Tables"}'::jsonb,
    '{"given_name": "No", "family_name": "Id"}'::jsonb,
    '{"external_id": "c9", "given_name": "Bad", "family_name": "Mail", "email": "not an address"}'::jsonb,
    '{"external_id": "c10", "given_name": ["x"], "family_name": "Array"}'::jsonb)) AS r1 \gset
SELECT is((:'r1'::jsonb ->> 'inserted')::int, 3, 'three records inserted');
SELECT is((:'r1'::jsonb ->> 'rejected')::int, 8, 'eight records rejected');
SELECT is((SELECT array_agg((x ->> 'index')::int ORDER BY (x ->> 'index')::int)
             FROM jsonb_array_elements(:'r1'::jsonb -> 'rejections') x),
          ARRAY[2, 3, 4, 5, 6, 8, 9, 10], 'rejections name their index');
SELECT ok((SELECT x ->> 'reason' FROM jsonb_array_elements(:'r1'::jsonb -> 'rejections') x
            WHERE x ->> 'index' = '2') LIKE '%family_name%', 'missing field named in the reason');
SELECT is((SELECT x ->> 'external_id' FROM jsonb_array_elements(:'r1'::jsonb -> 'rejections') x
            WHERE x ->> 'index' = '5'), 'c5', 'rejection carries the external id');
SELECT ok((SELECT x ->> 'reason' FROM jsonb_array_elements(:'r1'::jsonb -> 'rejections') x
            WHERE x ->> 'index' = '6') LIKE '%too long%', 'oversized name rejected as too long');
SELECT is((SELECT family_name FROM prm.patient WHERE org_id = :org_a AND external_id = 'c7'), 'Tables',
          'an injection string in a name is stored as text');
SELECT is((SELECT phone FROM prm.patient WHERE org_id = :org_a AND external_id = 'c1'), '+12125550101',
          'phone normalised to E.164');
SELECT ok((SELECT bool_and(last_synced_at IS NOT NULL) FROM prm.patient WHERE org_id = :org_a AND external_source = 'cliniko'),
          'last_synced_at set');
SELECT is((SELECT count(*)::int FROM prm.event WHERE org_id = :org_a AND kind = 'patients_synced'), 1, 'one event per sync');

-- idempotent: the same records again change nothing; a changed one is updated
SELECT prm.sync_patients(:org_a, 'cliniko',
    '[{"external_id": "c1", "given_name": "John", "family_name": "Smith", "phone": "+12125550101", "email": "John.Smith@example.org"},
      {"external_id": 2, "given_name": "Mary", "family_name": "Jones-Brown"}]') AS r2 \gset
SELECT is(:'r2'::jsonb - 'rejections' - 'source' - 'records',
          '{"inserted": 0, "updated": 1, "unchanged": 1, "rejected": 0}'::jsonb, 'second sync: one unchanged, one updated');
SELECT is((SELECT count(*)::int FROM prm.patient WHERE org_id = :org_a), 3, 'no duplicate patients');

-- 3. sync_appointments
SELECT prm.sync_patients(:org_b, 'cliniko', '[{"external_id": "b1", "given_name": "Ben", "family_name": "Other"}]');
SELECT id AS pat_c1 FROM prm.patient WHERE org_id = :org_a AND external_id = 'c1' \gset
SELECT prm.sync_appointments(:org_a, 'cliniko', jsonb_build_array(
    jsonb_build_object('external_id', 'a1', 'patient_external_id', 'c1', 'provider_id', :prov_a,
                       'starts_at', '2024-01-10 09:00+00', 'ends_at', '2024-01-10 09:30+00', 'status', 'fulfilled', 'price', 100),
    jsonb_build_object('external_id', 'a2', 'patient_external_id', 'c1', 'provider_id', :prov_a,
                       'starts_at', '2024-03-10 09:00+00', 'ends_at', '2024-03-10 09:30+00', 'status', 'fulfilled', 'price', 150.5),
    jsonb_build_object('external_id', 'a3', 'patient_external_id', 'c1', 'provider_id', :prov_a,
                       'starts_at', '2024-05-10 09:00+00', 'ends_at', '2024-05-10 09:30+00', 'status', 'noshow'),
    jsonb_build_object('external_id', 'a4', 'patient_external_id', 'b1', 'provider_id', :prov_a,
                       'starts_at', '2024-05-11 09:00+00', 'ends_at', '2024-05-11 09:30+00'),
    jsonb_build_object('external_id', 'a5', 'patient_external_id', 'c1', 'provider_id', :prov_b,
                       'starts_at', '2024-05-12 09:00+00', 'ends_at', '2024-05-12 09:30+00'),
    jsonb_build_object('external_id', 'a6', 'patient_external_id', 'c1', 'provider_id', :prov_a,
                       'starts_at', 'yesterday-ish', 'ends_at', '2024-05-12 09:30+00'),
    jsonb_build_object('external_id', 'a7', 'patient_external_id', 'c1', 'provider_id', :prov_a,
                       'starts_at', '2024-05-13 10:00+00', 'ends_at', '2024-05-13 09:00+00'),
    jsonb_build_object('external_id', 'a8', 'patient_external_id', 'c1', 'provider_id', :prov_a,
                       'starts_at', '2024-05-14 10:00+00', 'ends_at', '2024-05-14 10:30+00', 'status', 'done'),
    jsonb_build_object('external_id', 'a9', 'patient_external_id', 'c1', 'provider_id', :prov_a,
                       'starts_at', '2024-05-15 10:00+00', 'ends_at', '2024-05-15 10:30+00', 'price', -5),
    jsonb_build_object('external_id', 'a10', 'patient_external_id', 'c1', 'provider_id', :prov_a,
                       'starts_at', '2024-01-10 09:10+00', 'ends_at', '2024-01-10 09:40+00'),
    jsonb_build_object('external_id', 'a11', 'patient_external_id', 'c1', 'provider_id', 'x1',
                       'starts_at', '2024-05-16 10:00+00', 'ends_at', '2024-05-16 10:30+00'))) AS r3 \gset
SELECT is((:'r3'::jsonb ->> 'inserted')::int, 3, 'three appointments inserted');
SELECT is((SELECT array_agg((x ->> 'index')::int ORDER BY (x ->> 'index')::int)
             FROM jsonb_array_elements(:'r3'::jsonb -> 'rejections') x),
          ARRAY[3, 4, 5, 6, 7, 8, 9, 10],
          'another organization''s patient and provider, bad times, status, price, overlap and id rejected');
SELECT ok((SELECT x ->> 'reason' FROM jsonb_array_elements(:'r3'::jsonb -> 'rejections') x
            WHERE x ->> 'index' = '4') LIKE '%does not exist in organization%', 'B''s provider is not in A');
SELECT is((prm.sync_appointments(:org_a, 'cliniko', jsonb_build_array(
    jsonb_build_object('external_id', 'a1', 'patient_external_id', 'c1', 'provider_id', :prov_a,
                       'starts_at', '2024-01-10 09:00+00', 'ends_at', '2024-01-10 09:30+00', 'status', 'fulfilled', 'price', 100)))
           ->> 'unchanged')::int, 1, 'appointment sync is idempotent');
SELECT throws_ok(format('SELECT prm.sync_appointments(%s, %L, %L)', :org_a, 'nookal2', '[]'), '22023', NULL, 'unknown source refused for appointments');
SELECT ok((SELECT x ->> 'reason' FROM jsonb_array_elements(prm.sync_appointments(:org_a, 'cliniko', jsonb_build_array(
    jsonb_build_object('external_id', 'a20', 'patient_external_id', 'c1', 'provider_id', :prov_a,
                       'starts_at', '2024-06-10 09:00', 'ends_at', '2024-06-10 09:30+00'))) -> 'rejections') x)
          LIKE '%not an ISO 8601 time with a UTC offset%', 'a time without a UTC offset is rejected: it would depend on the session time zone');

-- 4. statistics of a known patient
SELECT is((SELECT (completed_visits, no_shows, total_appointments, revenue, avg_days_between_visits)::text
             FROM prm.patient_stats WHERE org_id = :org_a AND patient_id = :pat_c1),
          '(2,1,3,250.50,60.00)', 'visits, no-shows, revenue and rhythm counted');
SELECT is((SELECT first_visit_at FROM prm.patient_stats WHERE org_id = :org_a AND patient_id = :pat_c1),
          '2024-01-10 09:00+00'::timestamptz, 'first visit');
SELECT is((SELECT last_visit_at FROM prm.patient_stats WHERE org_id = :org_a AND patient_id = :pat_c1),
          '2024-03-10 09:00+00'::timestamptz, 'last visit');
SELECT is((SELECT churn_risk FROM prm.patient_profile WHERE org_id = :org_a AND patient_id = :pat_c1),
          'critical', 'long lapsed patient is at critical risk');
-- an upcoming booking makes the risk low, in the view and in the stored row
SELECT prm.book_appointment(:org_a, :pat_c1, :prov_a, now() + interval '10 days', now() + interval '10 days 30 minutes') AS next_appt \gset
SELECT is((SELECT churn_risk FROM prm.patient_profile WHERE org_id = :org_a AND patient_id = :pat_c1), 'low', 'booked patient is low risk');
SELECT is((SELECT stored_churn_risk FROM prm.patient_profile WHERE org_id = :org_a AND patient_id = :pat_c1), 'low', 'stored risk follows the booking');
SELECT is((SELECT next_appointment_time FROM prm.patient_profile WHERE org_id = :org_a AND patient_id = :pat_c1),
          now() + interval '10 days', 'next appointment');
SELECT prm.cancel_appointment(:org_a, :next_appt);
SELECT is((SELECT (cancellations, next_appointment_at IS NULL)::text FROM prm.patient_stats
            WHERE org_id = :org_a AND patient_id = :pat_c1), '(1,t)', 'cancellation counted, no next appointment');
SELECT is((SELECT churn_risk FROM prm.patient_profile WHERE org_id = :org_a AND patient_id = :pat_c1), 'critical', 'risk back to critical');

-- messages: outbound (queue and history) and inbound, with a reply within 48 hours
INSERT INTO prm.outbound_message (org_id, channel, to_address, body, kind, patient_id, campaign, status, created_at)
VALUES (:org_a, 'sms', '+12125550101', 'We miss you', 'other', :pat_c1, 'recall-2024', 'delivered', now() - interval '3 days'),
       (:org_a, 'sms', '+12125550101', 'Still there?', 'other', :pat_c1, 'recall-2024', 'delivered', now() - interval '10 days');
WITH moved AS (DELETE FROM prm.outbound_message m WHERE m.org_id = :org_a AND m.body = 'Still there?' RETURNING m.*)
INSERT INTO prm.outbound_message_history (org_id, id, channel, to_address, body, status, created_at, kind, patient_id, campaign)
SELECT org_id, id, channel, to_address, body, status, created_at, kind, patient_id, campaign FROM moved;
INSERT INTO prm.inbound_message (org_id, provider_message_id, from_address, body, keyword, received_at)
VALUES (:org_a, 'SM-r1', '+12125550101', 'YES', 'yes', now() - interval '2 days');
UPDATE prm.inbound_message SET patient_id = :pat_c1 WHERE org_id = :org_a AND provider_message_id = 'SM-r1';
SELECT is((SELECT (messages_out, messages_in, replied_out)::text FROM prm.patient_stats
            WHERE org_id = :org_a AND patient_id = :pat_c1), '(2,1,1)', 'messages out (queue + history), in, replied');
SELECT is((SELECT response_rate FROM prm.patient_profile WHERE org_id = :org_a AND patient_id = :pat_c1), 0.500, 'response rate');
SELECT prm.book_appointment(:org_a, :pat_c1, :prov_a2, now() + interval '20 days', now() + interval '20 days 30 minutes');
SELECT is((SELECT c FROM jsonb_array_elements(prm.outreach_performance(:org_a) -> 'campaigns') c
            WHERE c ->> 'campaign' = 'recall-2024') - 'reply_rate' - 'rebook_rate',
          '{"campaign": "recall-2024", "messages": 2, "patients": 1, "reached": 1, "replied": 1, "rebooked": 1}'::jsonb,
          'outreach performance: reached, replied, rebooked');
SELECT throws_ok(format('SELECT prm.outreach_performance(%s, NULL, %L)', :org_a, '-1 day'), '22023', NULL, 'negative window refused');

-- 5. profile and summary
SELECT cmp_ok((SELECT count(*)::int FROM information_schema.columns
                WHERE table_schema = 'prm' AND table_name = 'patient_profile'), '>=', 40, 'profile has 40+ fields');
SELECT is((SELECT count(*)::int FROM prm.patient_profile WHERE org_id = :org_a),
          (SELECT count(*)::int FROM prm.patient WHERE org_id = :org_a), 'one profile row per patient');
SELECT has_column('prm', 'patient_profile', 'estimated_lifetime_value', 'estimated_lifetime_value');
SELECT has_column('prm', 'patient_profile', 'view_generated_at', 'view_generated_at');
SELECT is((prm.reengagement_summary(:org_a) ->> 'patients')::int, 3, 'summary counts patients');
SELECT is((SELECT sum(value::int)::int FROM jsonb_each_text(prm.reengagement_summary(:org_a) -> 'churn_risk')), 3,
          'every patient has one risk');

-- 6. scoring functions
SELECT is(prm.churn_risk(4, 100, 30, false, NULL), 'critical', 'ratio 3.3: critical');
SELECT is(prm.churn_risk(4, 65, 30, false, NULL), 'high', 'ratio 2.2: high');
SELECT is(prm.churn_risk(4, 40, 30, false, NULL), 'medium', 'ratio 1.3: medium');
SELECT is(prm.churn_risk(4, 20, 30, false, NULL), 'low', 'ratio 0.7: low');
SELECT is(prm.churn_risk(4, 20, 30, false, 0.6), 'medium', 'missing half the appointments raises the risk');
SELECT is(prm.churn_risk(4, 400, 30, true, NULL), 'low', 'an upcoming appointment means low');
SELECT is(prm.churn_risk(4, 40, 30, false, NULL, 6, 4, 2), 'low', 'organization thresholds apply');
SELECT throws_ok('SELECT prm.churn_risk(4, 40, 30, false, NULL, 1, 2, 3)', '22023', NULL, 'ratios out of order refused');
SELECT is(prm.engagement_level(6, 10, 30, true, 0, 1), 'highly_engaged', 'regular, booked, replying: highly engaged');
SELECT is(prm.engagement_level(0, NULL, NULL, false, NULL, NULL), 'disengaged', 'never visited, nothing booked: disengaged');
SELECT is(prm.engagement_level(0, NULL, NULL, true, NULL, NULL), 'moderately_engaged', 'new patient with a booking: moderately engaged');
SELECT is(prm.engagement_level(1, 1000, NULL, false, 1, 0), 'disengaged', 'lapsed and silent: disengaged');
SELECT is(prm.lifetime_value(200, 2, 60, 'critical'), 260.83, 'lifetime value: revenue + discounted horizon value');
SELECT throws_ok('SELECT prm.lifetime_value(200, 2, 60, ''doomed'')', '22023', NULL, 'unknown churn risk refused');
SELECT throws_ok(format('SELECT prm.lifetime_value(200, 2, 60, %L)', repeat('x', 100000)), '22023',
                 format('churn risk "%s..." is not recognized', repeat('x', 40)),
                 'an oversized churn risk is quoted by its first 40 characters only');
SELECT throws_ok(format('SELECT prm.lifetime_value(200, 2, 60, %L)', repeat('é', 41)), '22023',
                 format('churn risk "%s..." is not recognized', repeat('é', 40)),
                 'the cut falls between characters, not inside one');
SELECT throws_ok(format('SELECT prm.lifetime_value(200, 2, 60, %L)', repeat('y', 40)), '22023',
                 format('churn risk "%s" is not recognized', repeat('y', 40)),
                 'a risk of 40 characters is quoted whole');
SELECT is((SELECT engagement_level FROM prm.patient_profile WHERE org_id = :org_a AND external_id = '2'), 'disengaged',
          'default engagement thresholds');
UPDATE prm.organization SET settings = settings || '{"engagement_low_score": 10}' WHERE id = :org_a;
SELECT is((SELECT engagement_level FROM prm.patient_profile WHERE org_id = :org_a AND external_id = '2'), 'low_engagement',
          'per-organization thresholds read from settings');
UPDATE prm.organization SET settings = '{}' WHERE id = :org_a;

-- 7. incremental statistics equal a rebuild after a random workload
SELECT setseed(0.42);
SELECT prm.add_patient(:org_a, 'Rand' || i, 'Patient', format('+1212555%s', 2000 + i)) FROM generate_series(1, 30) i;
INSERT INTO prm.appointment (org_id, patient_id, provider_id, starts_at, ends_at, status, price)
SELECT :org_a, r.ids[1 + floor(random() * 30)::int],
       :prov_a2, now() - interval '400 days' + i * interval '7 hours', now() - interval '400 days' + i * interval '7 hours' + interval '30 minutes',
       (ARRAY['booked', 'fulfilled', 'fulfilled', 'fulfilled', 'cancelled', 'noshow', 'entered-in-error'])[1 + floor(random() * 7)::int],
       round((random() * 200)::numeric, 2)
  FROM (SELECT array_agg(id ORDER BY id) AS ids FROM prm.patient WHERE org_id = :org_a AND given_name LIKE 'Rand%') r,
       generate_series(1, 1500) i;
UPDATE prm.appointment SET status = 'fulfilled' WHERE org_id = :org_a AND provider_id = :prov_a2 AND status = 'booked' AND random() < 0.3 AND starts_at < now();
UPDATE prm.appointment SET patient_id = (SELECT id FROM prm.patient WHERE org_id = :org_a AND given_name = 'Rand7')
 WHERE org_id = :org_a AND provider_id = :prov_a2 AND random() < 0.05;
DELETE FROM prm.appointment WHERE org_id = :org_a AND provider_id = :prov_a2 AND status = 'cancelled' AND random() < 0.3
   AND NOT EXISTS (SELECT 1 FROM prm.slot s WHERE s.org_id = appointment.org_id AND (s.appointment_id = appointment.id OR s.booked_appointment_id = appointment.id));
INSERT INTO prm.outbound_message (org_id, channel, to_address, body, patient_id, created_at, status)
SELECT :org_a, 'sms', '+12125550000', 'hello', p.id, now() - random() * interval '300 days', 'delivered'
  FROM prm.patient p, generate_series(1, 4) g WHERE p.org_id = :org_a AND random() < 0.6;
WITH moved AS (DELETE FROM prm.outbound_message m WHERE m.org_id = :org_a AND m.body = 'hello' AND random() < 0.5 RETURNING m.*)
INSERT INTO prm.outbound_message_history (org_id, id, channel, to_address, body, status, created_at, patient_id)
SELECT org_id, id, channel, to_address, body, status, created_at, patient_id FROM moved;
INSERT INTO prm.inbound_message (org_id, provider_message_id, from_address, body, keyword, received_at)
SELECT :org_a, 'SM-rand-' || g, '+12125550000', 'ok', 'other', now() - random() * interval '300 days' FROM generate_series(1, 120) g;
UPDATE prm.inbound_message i SET patient_id = (SELECT id FROM prm.patient WHERE org_id = :org_a AND given_name = 'Rand' || (1 + (hashtext(i.provider_message_id) & 1023) % 30))
 WHERE i.org_id = :org_a AND i.provider_message_id LIKE 'SM-rand-%';
CREATE TEMP TABLE incremental AS
SELECT org_id, patient_id, total_appointments, completed_visits, cancellations, no_shows, first_visit_at, last_visit_at,
       next_appointment_at, revenue, avg_days_between_visits, messages_out, messages_in, replied_out,
       last_outbound_at, last_inbound_at, engagement_level, churn_risk
  FROM prm.patient_stats WHERE org_id = :org_a;
SELECT cmp_ok((SELECT count(DISTINCT churn_risk)::int FROM incremental), '>=', 2, 'the workload produces several risk levels');
SELECT is(prm.rebuild_patient_stats(:org_a), (SELECT count(*) FROM prm.patient WHERE org_id = :org_a), 'rebuild covers every patient');
SELECT is_empty($$
  (SELECT * FROM incremental
   EXCEPT
   SELECT org_id, patient_id, total_appointments, completed_visits, cancellations, no_shows, first_visit_at, last_visit_at,
          next_appointment_at, revenue, avg_days_between_visits, messages_out, messages_in, replied_out,
          last_outbound_at, last_inbound_at, engagement_level, churn_risk
     FROM prm.patient_stats WHERE org_id = $$ || :org_a || $$)
  UNION ALL
  (SELECT org_id, patient_id, total_appointments, completed_visits, cancellations, no_shows, first_visit_at, last_visit_at,
          next_appointment_at, revenue, avg_days_between_visits, messages_out, messages_in, replied_out,
          last_outbound_at, last_inbound_at, engagement_level, churn_risk
     FROM prm.patient_stats WHERE org_id = $$ || :org_a || $$
   EXCEPT
   SELECT * FROM incremental)$$, 'incremental statistics equal the rebuild');
SELECT is((SELECT sum(completed_visits)::int FROM prm.patient_stats WHERE org_id = :org_a),
          (SELECT count(*)::int FROM prm.appointment WHERE org_id = :org_a AND status = 'fulfilled'), 'fulfilled visits add up');
SELECT is((SELECT sum(messages_out)::int FROM prm.patient_stats WHERE org_id = :org_a),
          (SELECT (SELECT count(*) FROM prm.outbound_message WHERE org_id = :org_a AND patient_id IS NOT NULL)
                + (SELECT count(*) FROM prm.outbound_message_history WHERE org_id = :org_a AND patient_id IS NOT NULL))::int,
          'outbound messages add up across queue and history');

-- 8. search
SELECT prm.add_patient(:org_a, 'Alex', 'Smithson' || i, format('+1212555%s', 3000 + i)) FROM generate_series(1, 25) i;
SELECT is((prm.search_patients(:org_a, 'jonh smiht') -> 'results' -> 0 ->> 'patient_id')::bigint, :pat_c1::bigint,
          'typos in both names still find the patient');
SELECT is((prm.search_patients(:org_a, 'JOHN.SMITH@EXAMPLE.ORG') -> 'results' -> 0 ->> 'patient_id')::bigint, :pat_c1::bigint,
          'e-mail in any case');
SELECT is((prm.search_patients(:org_a, '212 555 0101') -> 'results' -> 0 ->> 'patient_id')::bigint, :pat_c1::bigint,
          'phone in national format');
SELECT is(jsonb_array_length(prm.search_patients(:org_a, 'x'' OR 1=1 --') -> 'results'), 0, 'injection string finds nothing');
-- a number a family shares, one patient a page: the pages go in id order and end
SELECT prm.add_patient(:org_a, 'Kim', 'Family', '+12125559901') AS kim1 \gset
SELECT prm.add_patient(:org_a, 'Lee', 'Family', '+12125559901') AS kim2 \gset
SELECT prm.search_patients(:org_a, '+1 212 555 9901', 1) AS fam1 \gset
SELECT is(ARRAY[(:'fam1'::jsonb -> 'results' -> 0 ->> 'patient_id')::bigint,
                (prm.search_patients(:org_a, '+1 212 555 9901', 1, :'fam1'::jsonb ->> 'next_cursor') -> 'results' -> 0 ->> 'patient_id')::bigint],
          ARRAY[:kim1, :kim2]::bigint[], 'a shared phone: one patient a page, in id order');
SELECT is(prm.search_patients(:org_a, '+1 212 555 9901', 2) -> 'next_cursor', 'null'::jsonb,
          'a shared phone: both on one page of two, and no next page');
SELECT prm.search_patients(:org_a, 'alex smithson', 10) AS page1 \gset
SELECT prm.search_patients(:org_a, 'alex smithson', 10, :'page1'::jsonb ->> 'next_cursor') AS page2 \gset
SELECT prm.search_patients(:org_a, 'alex smithson', 10, :'page2'::jsonb ->> 'next_cursor') AS page3 \gset
CREATE TEMP TABLE paged AS
SELECT x FROM (SELECT jsonb_array_elements(:'page1'::jsonb -> 'results') x
               UNION ALL SELECT jsonb_array_elements(:'page2'::jsonb -> 'results')
               UNION ALL SELECT jsonb_array_elements(:'page3'::jsonb -> 'results')) s;
SELECT is((SELECT count(DISTINCT x ->> 'patient_id') FROM paged), (SELECT count(*) FROM paged), 'pages never overlap');
SELECT is((SELECT count(*)::int FROM paged WHERE x ->> 'family_name' LIKE 'Smithson%'), 25, 'the pages hold all 25 Smithsons');
SELECT ok(:'page3'::jsonb -> 'next_cursor' = 'null'::jsonb, 'the last page has no cursor');
-- a name search first looks among rows scoring >= 0.5 and searches fully
-- only when they do not fill the page: every page, paged through with
-- cursors, equals the full ordering recomputed here (rows on both sides of
-- 0.5, pages that cross it)
SELECT prm.add_patient(:org_a, 'Alexa', 'Smit' || i, format('+1212555%s', 3100 + i)) FROM generate_series(1, 6) i;
CREATE FUNCTION pg_temp.search_ids(org bigint, q text, page int) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[] := '{}';
    r jsonb;
    c text;
BEGIN
    LOOP
        r := prm.search_patients(org, q, page, c);
        ids := ids || ARRAY(SELECT (x ->> 'patient_id')::bigint FROM jsonb_array_elements(r -> 'results') x);
        c := r ->> 'next_cursor';
        EXIT WHEN c IS NULL;
    END LOOP;
    RETURN ids;
END $$;
CREATE TEMP VIEW search_reference AS
SELECT q.q, p.id, word_similarity(lower(q.q), lower(p.given_name || ' ' || p.family_name)) AS score
  FROM prm.patient p, (VALUES ('alex smithson'), ('alexa smit')) q(q)
 WHERE p.org_id = :org_a AND word_similarity(lower(q.q), lower(p.given_name || ' ' || p.family_name)) >= 0.3;
SELECT ok((SELECT bool_and(n_high > 3 AND n_low > 0) FROM (
             SELECT q, count(*) FILTER (WHERE score >= 0.5) AS n_high, count(*) FILTER (WHERE score < 0.5) AS n_low
               FROM search_reference GROUP BY q) x)
          AND (SELECT count(DISTINCT q) FROM search_reference) = 2,
          'the search property below has rows on both sides of 0.5');
SELECT is(pg_temp.search_ids(:org_a, q.q, page.n),
          ARRAY(SELECT r.id FROM search_reference r WHERE r.q = q.q ORDER BY r.score DESC, r.id),
          format('name search %L in pages of %s equals the full ordering', q.q, page.n))
  FROM (VALUES ('alex smithson'), ('alexa smit')) q(q), (VALUES (1), (3), (10), (100)) page(n);
SELECT throws_ok(format('SELECT prm.search_patients(%s, %L, 10, %L)', :org_a, 'alex', 'garbage'), '22023', NULL, 'bad cursor refused');
SELECT throws_ok(format('SELECT prm.search_patients(%s, %L, 0)', :org_a, 'alex'), '22023', NULL, 'page size 0 refused');
SELECT throws_ok(format('SELECT prm.search_patients(%s, %L)', :org_a, repeat('a', 201)), '22001', NULL, 'oversized query refused');
SELECT throws_ok(format('SELECT prm.search_patients(%s, %L)', :org_a, '   '), '22023', NULL, 'blank query refused');
SELECT throws_ok(format('SELECT prm.search_patients(%s, NULL)', :org_a), '22004', NULL, 'NULL query refused');

-- 9. tenancy
SET LOCAL ROLE regress_reeng_a;
SELECT results_eq('SELECT DISTINCT org_id FROM prm.patient_stats', ARRAY[:org_a::bigint], 'A sees only A''s statistics');
SELECT results_eq('SELECT DISTINCT org_id FROM prm.patient_profile', ARRAY[:org_a::bigint], 'A sees only A''s profiles');
SELECT results_eq('SELECT org_id FROM prm.reengagement_settings', ARRAY[:org_a::bigint], 'A sees only A''s thresholds');
SELECT throws_ok(format('SELECT prm.sync_patients(%s, %L, %L)', :org_b, 'cliniko', '[]'), '42501', NULL, 'sync into B refused');
SELECT throws_ok(format('SELECT prm.reengagement_summary(%s)', :org_b), '42501', NULL, 'summary of B refused');
SELECT throws_ok(format('SELECT prm.search_patients(%s, %L)', :org_b, 'ben'), '42501', NULL, 'search in B refused');
SELECT throws_ok(format('SELECT prm.rebuild_patient_stats(%s)', :org_b), '42501', NULL, 'rebuild of B refused');
SELECT throws_ok(format('SELECT prm.outreach_performance(%s)', :org_b), '42501', NULL, 'outreach of B refused');
SELECT throws_ok('UPDATE prm.patient_stats SET revenue = 0', '42501', NULL, 'no direct writes to statistics');
RESET ROLE;
SET LOCAL ROLE regress_reeng_none;
SELECT throws_ok('SELECT * FROM prm.patient_profile', '42501', NULL, 'a role without access cannot read profiles');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
