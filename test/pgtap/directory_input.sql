-- Bad input to the directory functions: a precise SQLSTATE and nothing changed.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(51);

SELECT prm.create_organization('Input Clinic', 'Europe/Berlin', '+49 30 0000001') AS org \gset
SELECT prm.configure(:org, '{"phone_region": "DE"}') IS NOT NULL AS configured \gset
SELECT prm.add_provider(:org, 'Dr Input') AS prov \gset
SELECT prm.add_patient(:org, 'Ina', 'Put', '030 1234567') AS pat \gset
SELECT prm.book_appointment(:org, :pat, :prov, '2031-05-05 08:00+00', '2031-05-05 08:30+00') AS appt \gset
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM prm.organization) o, (SELECT count(*) FROM prm.patient) p,
       (SELECT count(*) FROM prm.provider) v, (SELECT count(*) FROM prm.appointment) a,
       (SELECT count(*) FROM prm.slot) s, (SELECT count(*) FROM prm.event) e;

-- NULLs where a value is required: 22004
SELECT throws_ok('SELECT prm.create_organization(NULL)', '22004', NULL, 'create_organization(NULL name)');
SELECT throws_ok('SELECT prm.create_organization(''X'', NULL)', '22004', NULL, 'create_organization(NULL timezone)');
SELECT throws_ok('SELECT prm.add_provider(NULL, ''X'')', '22004', NULL, 'add_provider(NULL org)');
SELECT throws_ok(format('SELECT prm.add_provider(%s, NULL)', :org), '22004', NULL, 'add_provider(NULL name)');
SELECT throws_ok(format('SELECT prm.add_patient(%s, NULL, %L, %L)', :org, 'X', '030 1234568'), '22004', NULL, 'add_patient(NULL given)');
SELECT throws_ok(format('SELECT prm.add_patient(%s, %L, NULL, %L)', :org, 'X', '030 1234568'), '22004', NULL, 'add_patient(NULL family)');
SELECT throws_ok(format('SELECT prm.add_patient(%s, %L, %L, NULL)', :org, 'X', 'Y'), '22004', NULL, 'add_patient(NULL phone)');
SELECT throws_ok(format('SELECT prm.book_appointment(%s, NULL, %s, now(), now() + %L)', :org, :prov, '1 hour'), '22004', NULL, 'book(NULL patient)');
SELECT throws_ok(format('SELECT prm.book_appointment(%s, %s, NULL, now(), now() + %L)', :org, :pat, '1 hour'), '22004', NULL, 'book(NULL provider)');
SELECT throws_ok(format('SELECT prm.book_appointment(%s, %s, %s, NULL, now())', :org, :pat, :prov), '22004', NULL, 'book(NULL starts_at)');
SELECT throws_ok(format('SELECT prm.book_appointment(%s, %s, %s, now(), NULL)', :org, :pat, :prov), '22004', NULL, 'book(NULL ends_at)');
SELECT throws_ok(format('SELECT prm.cancel_appointment(%s, NULL)', :org), '22004', NULL, 'cancel(NULL appointment)');
SELECT throws_ok('SELECT prm.cancel_appointment(NULL, 1)', '22004', NULL, 'cancel(NULL org)');
SELECT throws_ok(format('SELECT prm.configure(%s, NULL)', :org), '22004', NULL, 'configure(NULL settings)');
SELECT throws_ok('SELECT prm.settings(NULL)', '22004', NULL, 'settings(NULL)');

-- unknown ids: P0002
SELECT throws_ok('SELECT prm.add_provider(987654, ''X'')', 'P0002', NULL, 'unknown organization');
SELECT throws_ok(format('SELECT prm.book_appointment(%s, 987654, %s, %L, %L)', :org, :prov, '2031-06-01 08:00+00', '2031-06-01 08:30+00'), 'P0002', NULL, 'unknown patient');
SELECT throws_ok(format('SELECT prm.book_appointment(%s, %s, 987654, %L, %L)', :org, :pat, '2031-06-01 08:00+00', '2031-06-01 08:30+00'), 'P0002', NULL, 'unknown provider');
SELECT throws_ok(format('SELECT prm.cancel_appointment(%s, 987654)', :org), 'P0002', NULL, 'unknown appointment');
SELECT throws_ok(format('SELECT prm.cancel_appointment(%s, -1)', :org), 'P0002', NULL, 'negative appointment id');

-- malformed values: 22023; oversized text: 22001
SELECT throws_ok(format('SELECT prm.add_patient(%s, %L, %L, %L)', :org, 'X', 'Y', '123'), '22023', NULL, 'too-short phone');
SELECT throws_ok(format('SELECT prm.add_patient(%s, %L, %L, %L)', :org, 'X', 'Y', '+1 555 8100 0100 0100 01'), '22023', NULL, 'too-long phone');
SELECT throws_ok(format('SELECT prm.add_patient(%s, %L, %L, %L)', :org, 'X', 'Y', '030 12345 ext 6'), '22023', NULL, 'phone with letters');
SELECT throws_ok(format('SELECT prm.add_patient(%s, %L, %L, %L)', :org, 'X', 'Y', '+49+30 1234567'), '22023', NULL, 'phone with two plus signs');
SELECT throws_ok(format('SELECT prm.add_patient(%s, %L, %L, %L)', :org, 'X', 'Y', '''; DROP TABLE prm.patient; --'), '22023', NULL, 'injection string as phone');
SELECT throws_ok(format('SELECT prm.add_patient(%s, %L, %L, %L, %L)', :org, 'X', 'Y', '030 1234569', 'x@y'), '22023', NULL, 'e-mail without domain dot');
SELECT throws_ok(format('SELECT prm.add_patient(%s, %L, %L, %L, NULL, %L)', :org, 'X', 'Y', '030 1234569', 'Europe/Atlantis'), '22023', NULL, 'unknown patient time zone');
SELECT throws_ok('SELECT prm.create_organization(''X'', ''UTC+5'')', '22023', NULL, 'POSIX offset is not a zone name');
SELECT throws_ok('SELECT prm.create_organization(''X'', ''Europe/Berlin''''; DROP SCHEMA prm; --'')', '22023', NULL, 'injection string as time zone');
SELECT throws_ok('SELECT prm.create_organization(''X'', ''UTC'', ''12'')', '22023', NULL, 'malformed SMS number');
SELECT throws_ok(format('SELECT prm.create_organization(%L, %L, %L)', 'X', 'UTC', '+49 30 0000001'), '23505', NULL, 'SMS number of another clinic');
SELECT throws_ok(format('SELECT prm.add_provider(%s, %L)', :org, repeat('n', 201)), '22001', NULL, 'oversized provider name');
SELECT throws_ok(format('SELECT prm.add_patient(%s, %L, %L, %L)', :org, repeat('n', 5000), 'Y', '030 1234569'), '22001', NULL, 'oversized given name');
SELECT throws_ok(format('SELECT prm.cancel_appointment(%s, %s, %L)', :org, :appt, repeat('r', 501)), '22001', NULL, 'oversized reason');
SELECT throws_ok(format('SELECT prm.book_appointment(%s, %s, %s, %L, %L)', :org, :pat, :prov, '2031-06-01 09:00+00', '2031-06-01 08:00+00'), '22023', NULL, 'ends before it starts');
SELECT throws_ok(format('SELECT prm.book_appointment(%s, %s, %s, %L, %L)', :org, :pat, :prov, '2031-06-01 09:00+00', '2031-06-01 09:00+00'), '22023', NULL, 'ends when it starts');
SELECT throws_ok(format('SELECT prm.book_appointment(%s, %s, %s, %L, %L)', :org, :pat, :prov, '-infinity', '2031-06-01 09:00+00'), '22023', NULL, 'infinite start');
SELECT throws_ok(format('SELECT prm.book_appointment(%s, %s, %s, %L, %L)', :org, :pat, :prov, '2031-05-05 08:15+00', '2031-05-05 08:45+00'), '23P01', 'provider ' || :prov || ' is already booked at that time', 'double booking: 23P01 naming the provider');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"batch_size": "three"}'), '22023', NULL, 'setting of the wrong type');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"batch_size": 51}'), '22023', NULL, 'setting out of range');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"offer_hold": "forever"}'), '22007', NULL, 'malformed interval');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"batch_size; DROP TABLE prm.patient": 1}'), '22023', NULL, 'injection string as a setting key');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '"batch_size"'), '22023', NULL, 'settings that are not an object');
SELECT throws_ok(format('SELECT prm.set_appointment_status(%s, %s, %L)', :org, :appt, 'cancelled'), '22023', NULL, 'cancelled is not set by status');

-- nothing above changed anything
SELECT results_eq(
    'SELECT (SELECT count(*) FROM prm.organization), (SELECT count(*) FROM prm.patient), (SELECT count(*) FROM prm.provider), (SELECT count(*) FROM prm.appointment), (SELECT count(*) FROM prm.slot), (SELECT count(*) FROM prm.event)',
    'SELECT o, p, v, a, s, e FROM before', 'no row was added or removed by the refused calls');
SELECT is((SELECT status FROM prm.appointment WHERE id = :appt), 'booked', 'appointment still booked');

-- an injection string in a name is only a name
SELECT lives_ok(format('SELECT prm.add_patient(%s, %L, %L, %L)', :org, 'Robert''); DROP TABLE prm.patient; --', 'Tables', '030 7654321'), 'injection string stored as a name');
SELECT is((SELECT given_name FROM prm.patient WHERE family_name = 'Tables'), 'Robert''); DROP TABLE prm.patient; --', 'stored verbatim');
SELECT has_table('prm', 'patient', 'prm.patient still exists');
SELECT is((SELECT phone FROM prm.patient WHERE id = :pat), '+49301234567', 'German national number read with the organization''s region');
SELECT is(prm.normalize_phone('+44 (0)20 7946 0958'), '+442079460958', 'bracketed trunk prefix dropped');

SELECT * FROM finish();
ROLLBACK;
