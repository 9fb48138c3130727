-- One booking routine for every path (book, accept, sync, undo): a synced
-- appointment takes the free slots under it, undo checks the calendar, and
-- the SMS webhook answers or says nothing -- it never raises.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(13);
SET LOCAL timezone = 'UTC';

SELECT prm.create_organization('Routine', 'UTC', '+15558006000') AS org \gset
SELECT prm.configure(:org, '{"quiet_hours": false, "batch_size": 1, "offer_daily_cap": 5}') IS NOT NULL AS configured \gset
SELECT prm.add_provider(:org, 'Dr Route') AS dr \gset
SELECT prm.add_patient(:org, 'Pat', 'Waiting', '+15558006001') AS pat \gset
SELECT prm.add_patient(:org, 'Cal', 'Cancel', '+15558006002') AS cal \gset
SELECT prm.join_waitlist(:org, :pat) AS entry \gset
SELECT date_trunc('hour', now()) + interval '3 days' AS t0 \gset
SELECT prm.book_appointment(:org, :cal, :dr, :'t0', :'t0'::timestamptz + interval '30 minutes') AS cal_appt \gset
SELECT prm.cancel_appointment(:org, :cal_appt) AS slot \gset
SELECT id AS offer FROM prm.offer WHERE slot_id = :slot AND status = 'open' \gset

-- the practice system books the same time: the slot is taken, its offer withdrawn
SELECT prm.sync_patients(:org, 'cliniko', jsonb_build_array(jsonb_build_object(
    'external_id', 'x-cal', 'given_name', 'Cal', 'family_name', 'Cancel', 'phone', '+15558006002'))) IS NOT NULL AS synced \gset
SELECT is((prm.sync_appointments(:org, 'cliniko', jsonb_build_array(jsonb_build_object(
    'external_id', 'a-1', 'patient_external_id', 'x-cal', 'provider_id', :dr::text,
    'starts_at', to_char(:'t0'::timestamptz + interval '15 minutes', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    'ends_at', to_char(:'t0'::timestamptz + interval '45 minutes', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))))) ->> 'inserted', '1',
    'an overlapping appointment synced from the practice system');
SELECT is((SELECT status FROM prm.slot WHERE id = :slot), 'busy', 'the free slot under it is taken');
SELECT is((SELECT status FROM prm.offer WHERE id = :offer), 'withdrawn', 'and its open offer withdrawn');
SELECT alike(prm.handle_inbound_sms('+15558006000', '+15558006001', 'YES', 'r-1'), '%taken%',
             'a later YES is told the slot is gone (no 23P01 to the webhook)');
SELECT is((SELECT count(*)::int FROM prm.appointment WHERE patient_id = :pat), 0, 'and books nothing');

-- the webhook never raises: what fails inside is rolled back, logged as an event
SELECT prm.add_patient(:org, 'Cy', 'Cancel', '+15558006003') AS cy \gset
SELECT prm.book_appointment(:org, :cy, :dr, :'t0'::timestamptz + interval '1 day', :'t0'::timestamptz + interval '1 day 30 minutes') AS cy_appt \gset
SELECT prm.cancel_appointment(:org, :cy_appt) AS slot2 \gset
CREATE FUNCTION pg_temp.broken() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'disk quota of the practice system' USING ERRCODE = '22023'; END $$;
CREATE TRIGGER routine_broken BEFORE INSERT ON prm.appointment FOR EACH ROW EXECUTE FUNCTION pg_temp.broken();
SELECT is(prm.handle_inbound_sms('+15558006000', '+15558006001', 'YES', 'r-2'), NULL, 'a YES whose booking fails: no reply, no error');
SELECT is((SELECT payload ->> 'sqlstate' FROM prm.event WHERE kind = 'inbound_failed'), '22023', 'the failure is an event');
SELECT is((SELECT count(*)::int FROM prm.inbound_message WHERE provider_message_id = 'r-2'), 1, 'the message is kept (a retry is a replay)');
SELECT is((SELECT status FROM prm.offer WHERE slot_id = :slot2 AND patient_id = :pat), 'open', 'nothing of the failed booking remains');
DROP TRIGGER routine_broken ON prm.appointment;

-- every text input is capped: a 5 MB sender address is kept as 64 bytes
SELECT is(prm.handle_inbound_sms('+15558006000', repeat('9', 5000000), 'hello', 'r-big'), NULL,
          'an oversized sender: no reply, no error');
SELECT is((SELECT octet_length(from_address) FROM prm.inbound_message WHERE provider_message_id = 'r-big'), 64,
          'and only 64 bytes of it are stored');

-- undo_cancellation checks the calendar like a booking
SELECT prm.add_patient(:org, 'Di', 'Cancel', '+15558006004') AS di \gset
SELECT prm.book_appointment(:org, :di, :dr, :'t0'::timestamptz + interval '2 days', :'t0'::timestamptz + interval '2 days 30 minutes') AS di_appt \gset
SELECT prm.cancel_appointment(:org, :di_appt) AS slot3 \gset
INSERT INTO prm.appointment (org_id, patient_id, provider_id, starts_at, ends_at)
VALUES (:org, :cal, :dr, :'t0'::timestamptz + interval '2 days 10 minutes', :'t0'::timestamptz + interval '2 days 20 minutes');
SELECT throws_ok(format('SELECT prm.undo_cancellation(%s, %s)', :org, :di_appt), '23P01',
                 format('provider %s is already booked at that time', :dr), 'undo over a booking made meanwhile: a clear 23P01');
SELECT is((SELECT status FROM prm.appointment WHERE id = :di_appt), 'cancelled', 'and the appointment stays cancelled');

SELECT * FROM finish();
ROLLBACK;
