-- The prm demo: a clinic's day, played through prm's SQL API, as a transcript.
\set QUIET on
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION prm CASCADE;
SET timezone = 'Australia/Sydney';
SELECT prm.create_organization('Harbour Physio', 'Australia/Sydney', '+61 2 9000 0001') AS org \gset
-- quiet hours off so the demo shows the same whatever the hour it runs at
SELECT prm.configure(:org, '{"phone_region": "AU", "quiet_hours": false}') IS NOT NULL AS configured \gset
SELECT prm.add_provider(:org, 'Dr Kim') AS kim \gset
SELECT prm.add_patient(:org, 'Ann', 'Lee', '0412 345 678') AS ann, prm.add_patient(:org, 'Bob', 'Ng', '+61 413 222 333') AS bob,
       prm.add_patient(:org, 'Cy', 'Ho', '0414 000 111') AS cy, prm.add_patient(:org, 'Di', 'Ma', '(04) 1500 0222') AS di,
       prm.add_patient(:org, 'Ed', 'Fox', '0416 000 333') AS ed \gset
-- ---- reference clients (clients/, started by test/demo.sh): their roles, each with
-- only its level, and the clinic's Twilio auth token, which the webhook checks signatures with
CREATE ROLE clinic_sender LOGIN PASSWORD 'demo';
CREATE ROLE clinic_webhook LOGIN PASSWORD 'demo';
SELECT prm.grant_access('clinic_sender', :org, 'sender') IS NOT NULL AS granted,
       prm.grant_access('clinic_webhook', :org, 'webhook') IS NOT NULL AS granted \gset
\getenv twilio_token DEMO_TWILIO_TOKEN
SELECT prm.set_channel_credential(:org, 'twilio', :'twilio_token') IS NOT NULL AS stored \gset
-- ----
\echo
\echo '=== Harbour Physio (Sydney), Dr Kim, five patients; phone numbers stored in E.164'
SELECT id, given_name || ' ' || family_name AS patient, phone FROM prm.patient ORDER BY id;

SELECT prm.book_appointment(:org, :ann, :kim, date_trunc('day', now()) + interval '2 days 9 hours', date_trunc('day', now()) + interval '2 days 9 hours 30 minutes') AS appt_ann \gset
SELECT prm.book_appointment(:org, :cy, :kim, date_trunc('day', now()) + interval '20 days 9 hours', date_trunc('day', now()) + interval '20 days 9 hours 30 minutes') AS appt_cy \gset
SELECT prm.join_waitlist(:org, :bob, NULL, false, 10) AS w_bob, prm.join_waitlist(:org, :cy, NULL, true, 0) AS w_cy,
       prm.join_waitlist(:org, :di, NULL, false, 0) AS w_di, prm.join_waitlist(:org, :ed, NULL, false, 0) AS w_ed \gset
\echo '=== The waitlist, by priority (Cy is urgent and waits 20 days for his current appointment)'
SELECT w.id AS entry, p.given_name AS patient, w.priority_score AS score, w.urgent, w.manual_boost AS boost,
       to_char(w.current_appointment_at, 'Dy DD Mon HH24:MI') AS current_appointment
  FROM prm.waitlist_entry w JOIN prm.patient p ON p.org_id = w.org_id AND p.id = w.patient_id ORDER BY w.priority_score DESC, w.id;

\echo '=== Ann cancels her appointment in two days: the slot is offered at once to the best three'
SELECT prm.cancel_appointment(:org, :appt_ann, 'called in sick') AS slot \gset
SELECT o.id AS offer, p.given_name AS patient, o.rank, o.score_breakdown - ARRAY['days_on_list','days_to_wait','stored_score','score'] AS why,
       to_char(o.hold_until, 'HH24:MI:SS') AS held_until
  FROM prm.offer o JOIN prm.patient p ON p.org_id = o.org_id AND p.id = o.patient_id WHERE o.slot_id = :slot ORDER BY o.rank DESC;
\echo '=== The SMS queued for them (no names, no clinical details)'
SELECT m.id AS msg, m.to_address AS "to", m.body FROM prm.outbound_message m ORDER BY m.id;

-- ---- reference clients: the sender (clients/sender.js) with the fake provider ----
\echo '=== A sender process (clients/sender.js, fake provider) claims the outbox, sends, and reports delivery'
\! PGUSER=clinic_sender PGPASSWORD=demo PRM_PROVIDER=console node clients/sender.js --once
SELECT m.id AS msg, m.to_address AS "to", m.status, m.provider_message_id, m.attempts FROM prm.outbound_message m ORDER BY m.id;
SELECT prm.record_delivery_status(min(provider_message_id), 'sent') AS "a late 'sent' after 'delivered' changes nothing"
  FROM prm.outbound_message;

\echo '=== Replies arrive over HTTP: posted as Twilio (signed with the clinic''s token) to clients/webhook.js'
\! node test/clients/twilio.js inbound --as Di +61290000001 +61415000222 'no thanks' SMin1
\! node test/clients/twilio.js inbound --as Di +61290000001 +61415000222 'No.' SMin2
\! node test/clients/twilio.js inbound --as Cy +61290000001 +61414000111 'yes!' SMin3
\! node test/clients/twilio.js inbound --as 'Bob, too late' +61290000001 +61413222333 'YES' SMin4
\! node test/clients/twilio.js inbound --as 'Cy, retried by Twilio' +61290000001 +61414000111 'yes!' SMin3
\! node test/clients/twilio.js inbound --as Ed +61290000001 +61416000333 'HELP' SMin5
\! node test/clients/twilio.js inbound --as 'a forger, as Ann' --bad-signature +61290000001 +61412345678 'STOP' SMforged
SELECT count(*) AS "inbound messages recorded (not the forged one)" FROM prm.inbound_message;
-- ----

\echo '=== Offers now: one winner, the others withdrawn or declined'
SELECT o.id AS offer, p.given_name AS patient, o.status, o.response_channel AS via
  FROM prm.offer o JOIN prm.patient p ON p.org_id = o.org_id AND p.id = o.patient_id WHERE o.slot_id = :slot ORDER BY o.id;
\echo '=== Bob had seen his offer: Cy''s YES queued him a "slot taken" text; his own late YES was answered, so it was cancelled'
SELECT m.id AS msg, p.given_name AS patient, m.body, m.status, m.last_error
  FROM prm.outbound_message m JOIN prm.patient p ON p.org_id = m.org_id AND p.id = m.patient_id WHERE m.kind = 'slot_taken' ORDER BY m.id;
\echo '=== Appointments: Cy moved earlier; his old appointment in 20 days was released'
SELECT a.id, p.given_name AS patient, to_char(a.starts_at, 'Dy DD Mon HH24:MI') AS starts, a.status, a.cancel_reason
  FROM prm.appointment a JOIN prm.patient p ON p.org_id = a.org_id AND p.id = a.patient_id ORDER BY a.id;
\echo '=== ...and Cy''s old slot went straight out to the next patients'
SELECT s.id AS slot, to_char(s.starts_at, 'Dy DD Mon HH24:MI') AS starts, s.status, s.fill_status,
       (SELECT string_agg(p.given_name || ' (' || o.status || ')', ', ' ORDER BY o.rank DESC)
          FROM prm.offer o JOIN prm.patient p ON p.org_id = o.org_id AND p.id = o.patient_id WHERE o.slot_id = s.id) AS offers
  FROM prm.slot s ORDER BY s.id;

-- ---- reference clients: the sender again, as its LISTEN would wake it ----
\echo '=== The sender again: what the replies queued (Cy''s old slot, offered to Ed) leaves'
\! PGUSER=clinic_sender PGPASSWORD=demo PRM_PROVIDER=console node clients/sender.js --once
\echo
-- ----

\echo '=== Time passes: the holds on the new slot run out (run_due_jobs does what the worker does on its own)'
SELECT prm.expire_offers(now() + interval '8 minutes') AS offers_expired;
SELECT o.id AS offer, p.given_name AS patient, o.slot_id AS slot, o.batch_no AS batch, o.status
  FROM prm.offer o JOIN prm.patient p ON p.org_id = o.org_id AND p.id = o.patient_id ORDER BY o.id;
SELECT prm.run_due_jobs() AS "run_due_jobs()";
\echo '=== Background worker, as pg_stat_activity shows it'
SELECT backend_type, application_name FROM pg_stat_activity WHERE backend_type LIKE 'prm%' ORDER BY 1;
\ir demo_journeys.sql
\echo '=== Fill analytics'
SELECT key AS figure, value FROM jsonb_each(prm.fill_stats(:org)) WHERE key NOT LIKE 'period%' ORDER BY key;
\echo '=== Outbox health'
SELECT key AS figure, value FROM jsonb_each(prm.health()) WHERE key IN ('queue', 'due_now', 'dead') ORDER BY key;
\echo '=== The event log (last 12)'
SELECT id, kind, entity, entity_id FROM (SELECT * FROM prm.event ORDER BY id DESC LIMIT 12) e ORDER BY id;
