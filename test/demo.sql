-- The prm demo: a clinic, its patients and a cancellation.
\set QUIET on
SET client_min_messages = warning;
CREATE EXTENSION prm CASCADE;
SET timezone = 'Australia/Sydney';
\echo
\echo '== A clinic in Sydney, its provider and four patients'
SELECT prm.create_organization('Harbour Physio', 'Australia/Sydney', '+61 2 9000 0001') AS org \gset
SELECT prm.configure(:org, '{"phone_region": "AU"}') ->> 'phone_region' AS phone_region;
SELECT prm.add_provider(:org, 'Dr Kim') AS kim \gset
SELECT prm.add_patient(:org, 'Ann', 'Lee', '0412 345 678') AS ann,
       prm.add_patient(:org, 'Bob', 'Ng', '+61 413 222 333') AS bob,
       prm.add_patient(:org, 'Cy', 'Ho', '0414 000 111') AS cy,
       prm.add_patient(:org, 'Di', 'Ma', '(04) 1500 0222') AS di \gset
SELECT id, given_name || ' ' || family_name AS patient, phone AS "phone (E.164)" FROM prm.patient ORDER BY id;
\echo '== Bookings for next week'
SELECT prm.book_appointment(:org, :ann, :kim, date_trunc('day', now()) + interval '7 days 9 hours', date_trunc('day', now()) + interval '7 days 9 hours 30 minutes') AS appt_ann \gset
SELECT prm.book_appointment(:org, :bob, :kim, date_trunc('day', now()) + interval '7 days 10 hours', date_trunc('day', now()) + interval '7 days 10 hours 30 minutes') AS appt_bob \gset
SELECT a.id, p.given_name AS patient, to_char(a.starts_at, 'Dy DD Mon HH24:MI') AS starts, a.status
  FROM prm.appointment a JOIN prm.patient p ON (p.org_id, p.id) = (a.org_id, a.patient_id) ORDER BY a.id;
\echo '== Bob double-booked on top of Ann: refused'
\set ON_ERROR_STOP 0
SELECT prm.book_appointment(:org, :bob, :kim, date_trunc('day', now()) + interval '7 days 9 hours 15 minutes', date_trunc('day', now()) + interval '7 days 9 hours 45 minutes');
\set ON_ERROR_STOP 1
\echo '== Ann cancels: her time becomes a free slot'
SELECT prm.cancel_appointment(:org, :appt_ann, 'called in sick') AS slot \gset
SELECT s.id AS slot, to_char(s.starts_at, 'Dy DD Mon HH24:MI') AS starts, s.status, s.appointment_id AS freed_by FROM prm.slot s;
\echo '== The event log'
SELECT id, kind, entity, entity_id, payload FROM prm.event ORDER BY id;
