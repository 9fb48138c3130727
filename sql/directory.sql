-- The clinic directory: organizations, settings, providers, patients,
-- bookings and cancellations, with the texts of their errors.
CREATE EXTENSION prm CASCADE;
SET timezone = 'UTC';
\set VERBOSITY default

SELECT prm.create_organization('Harbour Physio', 'Australia/Sydney', '+61 2 9000 0001') AS org \gset
SELECT id, name, timezone, sms_number FROM prm.organization;
SELECT prm.configure(:org, '{"phone_region": "AU", "batch_size": 4, "offer_hold": "10 minutes"}') ->> 'batch_size' AS batch_size;
SELECT prm.settings(:org) -> 'offer_hold' AS offer_hold, prm.settings(:org) -> 'phone_region' AS region;
-- a JSON null puts a setting back to its default
SELECT prm.configure(:org, '{"batch_size": null}') -> 'batch_size' AS batch_size;
SELECT prm.configure(:org, '{"batch_size": 0}');
SELECT prm.configure(:org, '{"offer_hold": "3 days"}');
SELECT prm.configure(:org, '{"no_such_setting": 1}');
SELECT prm.configure(:org, '[1, 2]');

SELECT prm.add_provider(:org, 'Dr Kim') AS kim \gset
SELECT prm.add_location(:org, 'Bondi', 'Australia/Sydney', '1 Beach Rd') AS loc \gset

-- phone numbers in every common form end up in E.164
SELECT prm.add_patient(:org, 'Ann', 'Lee', '0412 345 678', 'ann@example.org') AS ann \gset
SELECT prm.add_patient(:org, 'Bob', 'Ng', '+61 (0)413-222-333'::text) AS bob \gset
SELECT prm.add_patient(:org, 'Cy', 'Ho', '0061 414 000 111', NULL, 'Australia/Perth') AS cy \gset
SELECT id, given_name, family_name, phone, email, timezone FROM prm.patient ORDER BY id;
SELECT prm.normalize_phone('(212) 555-0100', 'US') AS us, prm.normalize_phone('020 7946 0958', 'GB') AS gb,
       prm.normalize_phone('011 49 30 1234567', 'US') AS intl;
SELECT prm.normalize_phone('0412 345', 'AU');
SELECT prm.normalize_phone('+0412345678');
SELECT prm.normalize_phone('call me');
SELECT prm.normalize_phone('0412345678', 'XX');
SELECT prm.add_patient(:org, 'Dee', 'Ma', '12');
SELECT prm.add_patient(:org, 'Dee', 'Ma', '0415 000 000', 'not-an-email');
SELECT prm.add_patient(:org, 'Dee', 'Ma', '0415 000 000', NULL, 'Mars/Olympus');
SELECT prm.add_patient(:org, repeat('x', 201), 'Ma', '0415 000 000');
SELECT prm.add_patient(:org, '   ', 'Ma', '0415 000 000');

-- bookings; a provider cannot be in two places at once
SELECT prm.book_appointment(:org, :ann, :kim, '2031-03-03 09:00+00', '2031-03-03 09:30+00') AS a1 \gset
SELECT prm.book_appointment(:org, :bob, :kim, '2031-03-03 09:15+00', '2031-03-03 09:45+00');
SELECT prm.book_appointment(:org, :bob, :kim, '2031-03-03 09:30+00', '2031-03-03 10:00+00') AS a2 \gset
SELECT prm.book_appointment(:org, :cy, :kim, '2031-03-03 11:00+00', '2031-03-03 11:00+00');
SELECT prm.book_appointment(:org, :cy, :kim, '2031-03-03 11:00+00', '2031-03-05 11:00+00');
SELECT prm.book_appointment(:org, 999, :kim, '2031-03-03 11:00+00', '2031-03-03 11:30+00');
SELECT prm.book_appointment(:org, :cy, 999, '2031-03-03 11:00+00', '2031-03-03 11:30+00');
SELECT id, patient_id, provider_id, starts_at, ends_at, status FROM prm.appointment ORDER BY id;

-- cancelling frees the time as a slot
SELECT prm.cancel_appointment(:org, :a1, 'feeling better') AS slot \gset
SELECT id, provider_id, starts_at, ends_at, status, appointment_id FROM prm.slot;
SELECT id, status, cancel_reason FROM prm.appointment WHERE id = :a1;
SELECT prm.cancel_appointment(:org, :a1);
SELECT prm.cancel_appointment(:org, 424242);
-- booking over a free slot makes it busy
SELECT prm.book_appointment(:org, :cy, :kim, '2031-03-03 09:00+00', '2031-03-03 09:30+00') AS a3 \gset
SELECT id, status, booked_appointment_id = :a3 AS taken_by_new_booking FROM prm.slot;
SELECT prm.set_appointment_status(:org, :a2, 'fulfilled');
SELECT prm.set_appointment_status(:org, :a1, 'fulfilled');
SELECT prm.set_appointment_status(:org, :a2, 'done');

-- every change left an event
SELECT kind, entity, payload FROM prm.event ORDER BY id;

DROP EXTENSION prm;
DROP EXTENSION btree_gist;
DROP EXTENSION pg_trgm;
