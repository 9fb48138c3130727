-- One booking per waitlist entry, whatever the path; the appointment the
-- score counted is the one released; accept tokens are stored as hashes and
-- an expired one is good only within late_accept_window.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(20);
SET LOCAL timezone = 'UTC';

SELECT prm.create_organization('One Booking', 'UTC', '+15558005000') AS org \gset
SELECT prm.configure(:org, '{"quiet_hours": false, "batch_size": 1, "offer_daily_cap": 5, "offer_weekly_cap": 10,
                             "accept_url": "https://ob.example/a/"}') IS NOT NULL AS configured \gset
SELECT prm.add_provider(:org, 'Dr One') AS dr \gset
SELECT prm.add_patient(:org, 'Pat', 'Waiting', '+15558005001') AS pat \gset
SELECT prm.add_patient(:org, 'Cal', 'Cancel', '+15558005002') AS cal \gset
SELECT prm.add_patient(:org, 'Cy', 'Cancel', '+15558005003') AS cy \gset
-- Pat's current appointment, in 20 days: the one a booking from the list releases
SELECT prm.book_appointment(:org, :pat, :dr, date_trunc('hour', now()) + interval '20 days',
                            date_trunc('hour', now()) + interval '20 days 30 minutes') AS pat_appt \gset
SELECT prm.join_waitlist(:org, :pat) AS entry \gset
SELECT prm.book_appointment(:org, :cal, :dr, date_trunc('hour', now()) + interval '3 days',
                            date_trunc('hour', now()) + interval '3 days 30 minutes') AS cal_appt \gset
SELECT prm.book_appointment(:org, :cy, :dr, date_trunc('hour', now()) + interval '4 days',
                            date_trunc('hour', now()) + interval '4 days 30 minutes') AS cy_appt \gset

-- tokens: only their hash is kept; the token itself is in the SMS
SELECT prm.cancel_appointment(:org, :cal_appt) AS slot_a \gset
SELECT o.id AS offer_a, substring(m.body from '/a/([0-9a-f-]{36})') AS tok_a
  FROM prm.offer o JOIN prm.outbound_message m ON m.org_id = o.org_id AND m.offer_id = o.id
 WHERE o.slot_id = :slot_a \gset
SELECT hasnt_column('prm', 'offer', 'token', 'prm.offer keeps no plain token');
SELECT is((SELECT token_hash FROM prm.offer WHERE id = :offer_a), sha256(uuid_send(:'tok_a'::uuid)), 'token_hash is the SHA-256 of the token in the SMS');
SELECT is((SELECT scored_appointment_id FROM prm.offer WHERE id = :offer_a), :pat_appt::bigint, 'the offer keeps the appointment its score counted');

-- Pat's first offer expires; a second slot is offered to Pat
UPDATE prm.offer SET hold_until = now() - interval '1 minute' WHERE id = :offer_a;
SELECT prm.expire_offers(now()) AS expired \gset
SELECT is((SELECT status FROM prm.offer WHERE id = :offer_a), 'expired', 'the first offer expired');
SELECT prm.cancel_appointment(:org, :cy_appt) AS slot_b \gset
SELECT id AS offer_b FROM prm.offer WHERE slot_id = :slot_b AND patient_id = :pat AND status = 'open' \gset
SELECT ok(:offer_b IS NOT NULL, 'Pat holds an open offer for the second slot');

-- the expired link, then YES: one booking, from one entry
SELECT alike(prm.accept_offer(:'tok_a'), '%you are booked%', 'the expired link books the first slot (within the late window)');
SELECT is((SELECT status FROM prm.offer WHERE id = :offer_b), 'withdrawn', 'the patient''s other open offer is withdrawn in the same transaction');
SELECT alike(prm.handle_inbound_sms('+15558005000', '+15558005001', 'YES', 'ob-1'), '%booked%', 'a YES after it only confirms the booking');
SELECT is((SELECT count(*)::int FROM prm.appointment WHERE patient_id = :pat AND status = 'booked'), 1, 'Pat has exactly one booked appointment');
SELECT is((SELECT status FROM prm.slot WHERE id = :slot_b), 'free', 'the second slot stays free');
SELECT is((SELECT count(*)::int FROM prm.event WHERE kind = 'appointment_cancelled' AND entity_id = :pat_appt), 1,
          'the old appointment was released once');
SELECT is((SELECT status FROM prm.waitlist_entry WHERE id = :entry), 'booked', 'the entry is booked');

-- an entry booked by another path cannot book again
SELECT prm.add_patient(:org, 'Ida', 'Idle', '+15558005004') AS ida \gset
SELECT prm.join_waitlist(:org, :ida) AS ida_entry \gset
SELECT prm.add_patient(:org, 'Cas', 'Cancel', '+15558005005') AS cas \gset
SELECT prm.book_appointment(:org, :cas, :dr, date_trunc('hour', now()) + interval '5 days',
                            date_trunc('hour', now()) + interval '5 days 30 minutes') AS cas_appt \gset
SELECT prm.cancel_appointment(:org, :cas_appt) AS slot_c \gset
SELECT id AS offer_c FROM prm.offer WHERE slot_id = :slot_c AND patient_id = :ida \gset
UPDATE prm.waitlist_entry SET status = 'booked' WHERE id = :ida_entry;
SELECT alike(prm.handle_inbound_sms('+15558005000', '+15558005004', 'YES', 'ob-2'), '%no open offer%', 'a YES from an entry no longer waiting books nothing');
SELECT is((SELECT status FROM prm.slot WHERE id = :slot_c), 'free', 'and the slot was given back');
UPDATE prm.waitlist_entry SET status = 'waiting' WHERE id = :ida_entry;
UPDATE prm.offer SET status = 'open' WHERE id = :offer_c;

-- late accept window: an expired link is good for late_accept_window only
SELECT substring(m.body from '/a/([0-9a-f-]{36})') AS tok_c FROM prm.outbound_message m WHERE m.offer_id = :offer_c \gset
UPDATE prm.offer SET status = 'expired', hold_until = now() - interval '2 days' WHERE id = :offer_c;
SELECT alike(prm.accept_offer(:'tok_c'), '%no open offer%', 'a link expired two days ago books nothing (window 1 day)');
SELECT prm.configure(:org, '{"late_accept_window": "3 days"}') IS NOT NULL AS widened \gset
SELECT alike(prm.accept_offer(:'tok_c'), '%you are booked%', 'with a 3-day window it books');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"late_accept_window": "31 days"}')$$, :org), '22023', NULL, 'late_accept_window is bounded');

-- release exactly the scored appointment: one that changed meanwhile is left, with an event
SELECT prm.add_patient(:org, 'Ray', 'Release', '+15558005006') AS ray \gset
SELECT prm.book_appointment(:org, :ray, :dr, date_trunc('hour', now()) + interval '30 days',
                            date_trunc('hour', now()) + interval '30 days 30 minutes') AS ray_x \gset
SELECT prm.join_waitlist(:org, :ray) AS ray_entry \gset
SELECT prm.add_patient(:org, 'Cid', 'Cancel', '+15558005007') AS cid \gset
SELECT prm.book_appointment(:org, :cid, :dr, date_trunc('hour', now()) + interval '6 days',
                            date_trunc('hour', now()) + interval '6 days 30 minutes') AS cid_appt \gset
SELECT prm.cancel_appointment(:org, :cid_appt) AS slot_d \gset
SELECT id AS offer_d FROM prm.offer WHERE slot_id = :slot_d AND patient_id = :ray \gset
-- meanwhile staff cancel Ray's scored appointment and book another later one
SELECT prm.cancel_appointment(:org, :ray_x, 'moved') AS ray_x_slot \gset
SELECT prm.book_appointment(:org, :ray, :dr, date_trunc('hour', now()) + interval '40 days',
                            date_trunc('hour', now()) + interval '40 days 30 minutes') AS ray_y \gset
UPDATE prm.offer SET status = 'open' WHERE id = :offer_d AND status <> 'open';
SELECT alike(prm.handle_inbound_sms('+15558005000', '+15558005006', 'YES', 'ob-3'), '%booked%', 'Ray books the freed slot');
SELECT is((SELECT status FROM prm.appointment WHERE id = :ray_y), 'booked', 'the appointment booked after the offer is not touched');
SELECT is((SELECT count(*)::int FROM prm.event WHERE kind = 'release_skipped' AND entity_id = :ray_x), 1, 'release_skipped says why');

SELECT * FROM finish();
ROLLBACK;
