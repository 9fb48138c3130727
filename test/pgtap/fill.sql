-- The fill engine: who is offered a freed slot, replies, the one winner,
-- batches, holds, opt-outs, links, delays, cut-offs and analytics.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(67);
SET LOCAL timezone = 'UTC';

SELECT prm.create_organization('Fill Clinic', 'UTC', '+15558030000') AS org \gset
SELECT prm.configure(:org, '{"quiet_hours": false, "offer_daily_cap": 10, "offer_weekly_cap": 20}') IS NOT NULL AS ok \gset
SELECT prm.add_provider(:org, 'Dr Fill') AS dr \gset
SELECT prm.add_provider(:org, 'Dr Other') AS dr2 \gset
-- patients 1..7 on the list; 8 cancels; phones +1555803100N
SELECT prm.add_patient(:org, 'Pat' || g, 'Zed', '+1555803100' || g) FROM generate_series(1, 8) g;
SELECT id AS p1 FROM prm.patient WHERE given_name = 'Pat1' \gset
SELECT id AS p2 FROM prm.patient WHERE given_name = 'Pat2' \gset
SELECT id AS p3 FROM prm.patient WHERE given_name = 'Pat3' \gset
SELECT id AS p4 FROM prm.patient WHERE given_name = 'Pat4' \gset
SELECT id AS p5 FROM prm.patient WHERE given_name = 'Pat5' \gset
SELECT id AS p6 FROM prm.patient WHERE given_name = 'Pat6' \gset
SELECT id AS p7 FROM prm.patient WHERE given_name = 'Pat7' \gset
SELECT id AS p8 FROM prm.patient WHERE given_name = 'Pat8' \gset
-- the slot to be freed: in 3 days; p1 has a later appointment it wants earlier
SELECT prm.book_appointment(:org, :p8, :dr, date_trunc('hour', now()) + interval '3 days', date_trunc('hour', now()) + interval '3 days 30 minutes') AS appt8 \gset
SELECT prm.book_appointment(:org, :p1, :dr, date_trunc('hour', now()) + interval '31 days', date_trunc('hour', now()) + interval '31 days 30 minutes') AS appt1_later \gset
-- p7 already has an appointment before the slot: not eligible
SELECT prm.book_appointment(:org, :p7, :dr, date_trunc('hour', now()) + interval '2 days', date_trunc('hour', now()) + interval '2 days 30 minutes') AS appt7 \gset
-- urgent: 30 + wait 10 = 40
SELECT prm.join_waitlist(:org, :p1, NULL, true, 0) AS e1 \gset
-- 15 + 20 = 35
SELECT prm.join_waitlist(:org, :p2, NULL, false, 15) AS e2 \gset
-- 30
SELECT prm.join_waitlist(:org, :p3, NULL, false, 10) AS e3 \gset
-- 25
SELECT prm.join_waitlist(:org, :p4, NULL, false, 5) AS e4 \gset
-- 20
SELECT prm.join_waitlist(:org, :p5, NULL, false, 0) AS e5 \gset
-- other provider only
SELECT prm.join_waitlist(:org, :p6, :dr2, false, 40) AS e6 \gset
-- already sooner
SELECT prm.join_waitlist(:org, :p7, NULL, false, 40) AS e7 \gset

-- cancelling offers the slot to the best three eligible patients, at once
SELECT prm.cancel_appointment(:org, :appt8, 'sick') AS slot \gset
SELECT results_eq(format('SELECT patient_id FROM prm.offer WHERE slot_id = %s ORDER BY rank DESC', :slot),
                  format('VALUES (%s::bigint), (%s), (%s)', :p1, :p2, :p3), 'batch 1: the three best eligible, by score');
SELECT is((SELECT array_agg(rank ORDER BY rank DESC) FROM prm.offer WHERE slot_id = :slot), ARRAY[40, 35, 30], 'ranks are the scores');
SELECT ok((SELECT bool_and(status = 'open' AND batch_no = 1 AND hold_until BETWEEN now() + interval '6 minutes 59 seconds' AND now() + interval '7 minutes 1 second') FROM prm.offer WHERE slot_id = :slot), 'open, held 7 minutes');
SELECT is((SELECT (score_breakdown ->> 'urgent')::int FROM prm.offer WHERE patient_id = :p1), 30, 'the offer keeps its score breakdown');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE kind = 'offer'), 3, 'one SMS per offer, queued in the same transaction');
SELECT ok((SELECT bool_and(body NOT LIKE '%Pat%' AND body NOT LIKE '%Zed%' AND body NOT LIKE '%Dr %') FROM prm.outbound_message WHERE kind = 'offer'), 'no patient or provider details in the SMS');
SELECT ok((SELECT bool_and(body LIKE 'Fill Clinic: an earlier appointment is free on % at %. Reply YES to book it or NO to pass.%') FROM prm.outbound_message WHERE kind = 'offer'), 'the SMS says when and how to answer');
SELECT is((SELECT fill_status FROM prm.slot WHERE id = :slot), 'offering', 'slot is being offered');
SELECT is(prm.fill_slot(:org, :slot), 0, 'fill_slot sends nothing while offers are open');

-- replies
SELECT alike(prm.handle_inbound_sms('+15558030000', '+15558031002', 'Maybe later!', 'in-1'), '%did not understand%', 'an unreadable reply gets a hint ("No thanks!" is a NO: polite_replies.sql)');
SELECT alike(prm.handle_inbound_sms('+15558030000', '+15558031002', ' n. ', 'in-2'), '%stay on our waitlist%', 'NO, any case and punctuation');
SELECT is((SELECT status FROM prm.offer WHERE patient_id = :p2), 'declined', 'NO releases the offer');
SELECT is((SELECT count(*)::int FROM prm.offer WHERE slot_id = :slot AND status = 'open'), 2, 'no new batch while two offers are open');
SELECT is(prm.handle_inbound_sms('+15558030000', '+15558031002', ' n. ', 'in-2'), (SELECT reply FROM prm.inbound_message WHERE provider_message_id = 'in-2'), 'a retried webhook gets the same reply');
SELECT is((SELECT count(*)::int FROM prm.inbound_message WHERE provider_message_id = 'in-2'), 1, 'and is stored once');
SELECT alike(prm.handle_inbound_sms('+15558030000', '+15558031003', 'NO', 'in-3'), '%stay on our waitlist%', 'second NO');
SELECT is((SELECT count(*)::int FROM prm.offer WHERE slot_id = :slot AND batch_no = 2), 0, 'still one open offer: no batch yet');

-- the YES that books
SELECT alike(prm.handle_inbound_sms('+15558030000', '+15558031001', 'Yes!', 'in-4'), 'Fill Clinic: you are booked for %', 'YES books');
SELECT is((SELECT status FROM prm.offer WHERE patient_id = :p1 AND slot_id = :slot), 'accepted', 'offer accepted');
SELECT is((SELECT status FROM prm.slot WHERE id = :slot), 'busy', 'slot busy');
SELECT is((SELECT fill_status FROM prm.slot WHERE id = :slot), 'filled', 'slot filled');
SELECT is((SELECT count(*)::int FROM prm.appointment a JOIN prm.slot s ON s.booked_appointment_id = a.id WHERE s.id = :slot AND a.patient_id = :p1 AND a.status = 'booked'), 1, 'the winner holds the slot''s appointment');
SELECT is((SELECT status FROM prm.waitlist_entry WHERE id = :e1), 'booked', 'the winner leaves the waitlist');
SELECT is((SELECT status FROM prm.appointment WHERE id = :appt1_later), 'cancelled', 'the winner''s later appointment is released');
SELECT ok((SELECT count(*) > 0 FROM prm.slot WHERE appointment_id = :appt1_later), 'and becomes a slot to fill in turn');
SELECT alike(prm.handle_inbound_sms('+15558030000', '+15558031001', 'YES', 'in-5'), 'Fill Clinic: you are booked for %', 'a repeated YES confirms again');
SELECT is((SELECT count(*)::int FROM prm.appointment WHERE patient_id = :p1 AND status = 'booked'), 1, 'and books nothing more');
SELECT alike(prm.handle_inbound_sms('+15558030000', '+15558031003', 'yes', 'in-6'), '%you are booked%', 'a NO to one slot does not stand in the way of a YES to the next offer');

-- the later slot went to the next best for it
SELECT ok((SELECT count(*) >= 1 FROM prm.offer o JOIN prm.slot s ON s.id = o.slot_id WHERE s.appointment_id = :appt1_later), 'the released slot was offered');
SELECT is((SELECT count(*)::int FROM prm.offer o WHERE o.patient_id = :p6), 0, 'a patient waiting for another provider is never offered');
SELECT is((SELECT count(*)::int FROM prm.offer o WHERE o.patient_id = :p7 AND o.slot_id = :slot), 0, 'a patient already seen sooner was not offered the earlier slot');

-- a late YES from a patient whose offer was withdrawn: told it is gone
SELECT prm.book_appointment(:org, :p8, :dr, date_trunc('hour', now()) + interval '5 days', date_trunc('hour', now()) + interval '5 days 30 minutes') AS appt8b \gset
SELECT prm.cancel_appointment(:org, :appt8b) AS slot2 \gset
SELECT ok((SELECT count(*) >= 2 FROM prm.offer WHERE slot_id = :slot2 AND status = 'open'), 'second slot offered');
SELECT patient_id AS first_yes FROM prm.offer WHERE slot_id = :slot2 AND status = 'open' ORDER BY rank DESC LIMIT 1 \gset
SELECT patient_id AS late_yes FROM prm.offer WHERE slot_id = :slot2 AND status = 'open' ORDER BY rank ASC LIMIT 1 \gset
SELECT alike(prm.handle_inbound_sms('+15558030000', (SELECT phone FROM prm.patient WHERE id = :first_yes), 'YES', 'in-7'), '%you are booked%', 'first YES wins');
SELECT alike(prm.handle_inbound_sms('+15558030000', (SELECT phone FROM prm.patient WHERE id = :late_yes), 'YES', 'in-8'), '%has just been taken%', 'a later YES is told it is gone');
SELECT is((SELECT count(*)::int FROM prm.appointment a JOIN prm.slot s ON s.booked_appointment_id = a.id WHERE s.id = :slot2), 1, 'exactly one booking for the slot');

-- STOP / START / HELP
SELECT alike(prm.handle_inbound_sms('+15558030000', '+15558031005', 'Opt out', 'in-9'), '%unsubscribed%', '"opt out" is STOP');
SELECT ok((SELECT sms_opt_out FROM prm.patient WHERE id = :p5), 'patient opted out');
SELECT is(prm.handle_inbound_sms('+15558030000', '+15558031005', 'STOP', 'in-10'), NULL, 'one STOP confirmation only');
SELECT is(prm.handle_inbound_sms('+15558030000', '+15558031005', 'YES', 'in-11'), NULL, 'an opted-out patient gets no reply to YES');
SELECT alike(prm.handle_inbound_sms('+15558030000', '+15558031005', 'help', 'in-12'), '%Msg & data rates may apply.', 'HELP is always answered');
SELECT ok(prm.handle_inbound_sms('+15558030000', '+15558031005', 'help', 'in-12b') ~ 'Fill Clinic.*msgs/week.*STOP.*HELP', 'HELP names clinic, frequency, STOP and HELP');
SELECT alike(prm.handle_inbound_sms('+15558030000', '+15558031005', 'UNSTOP', 'in-13'), '%subscribed again%', 'UNSTOP is START');
SELECT ok(NOT (SELECT sms_opt_out FROM prm.patient WHERE id = :p5), 'patient opted in again');
SELECT alike(prm.handle_inbound_sms('+15558030000', '+15558031005', 'unsubscribe', 'in-14'), '%unsubscribed%', 'UNSUBSCRIBE is STOP');
SELECT is(prm.handle_inbound_sms('+15558030000', '+15559999999', 'YES', 'in-15'), NULL, 'an unknown sender gets no reply');
SELECT is(prm.handle_inbound_sms('+15558039999', '+15558031001', 'YES', 'in-16'), NULL, 'an unknown clinic number: no reply (superuser)');
SELECT is(prm.handle_inbound_sms('+15558030000', 'ALPHA-SENDER', 'YES', 'in-17'), NULL, 'an unreadable sender number: no reply, no error');
SELECT alike(prm.handle_inbound_sms('+15558030000', '+15558031004', repeat('x', 100000), 'in-18'), '%did not understand%', 'an oversized body gets a hint, not an error');
SELECT is(prm.handle_inbound_sms('+15558030000', '+15558031004', NULL, 'in-19') IS NOT NULL, true, 'a NULL body gets a hint');
SELECT throws_ok($$SELECT prm.handle_inbound_sms('+15558030000', '+15558031004', 'YES', NULL)$$, '22004', NULL, 'a NULL provider message id is a webhook bug');

-- opted-out patients are skipped; accept by link; expiry and next batches
SELECT prm.book_appointment(:org, :p8, :dr, date_trunc('hour', now()) + interval '6 days', date_trunc('hour', now()) + interval '6 days 30 minutes') AS appt8c \gset
SELECT prm.configure(:org, '{"accept_url": "https://book.example/a/"}') IS NOT NULL AS linked \gset
SELECT prm.cancel_appointment(:org, :appt8c) AS slot3 \gset
SELECT is((SELECT count(*)::int FROM prm.offer WHERE slot_id = :slot3 AND patient_id = :p5), 0, 'an opted-out patient is not offered');
-- the token is only in the SMS (the table keeps its hash)
SELECT substring(m.body from 'https://book\.example/a/([0-9a-f-]{36})') AS tok, o.patient_id AS tok_patient
  FROM prm.offer o JOIN prm.outbound_message m ON m.org_id = o.org_id AND m.offer_id = o.id
 WHERE o.slot_id = :slot3 AND o.status = 'open' ORDER BY o.rank DESC LIMIT 1 \gset
SELECT alike(prm.accept_offer(:'tok'), '%you are booked%', 'accept by link token');
SELECT alike(prm.accept_offer(:'tok'), '%you are booked%', 'the same link again only confirms');
SELECT is((SELECT count(*)::int FROM prm.appointment a JOIN prm.slot s ON s.booked_appointment_id = a.id WHERE s.id = :slot3), 1, 'one booking');
SELECT throws_ok($$SELECT prm.accept_offer(gen_random_uuid())$$, 'P0002', 'offer link is not valid', 'an unknown token');

SELECT prm.add_patient(:org, 'Pat9', 'Zed', '+15558031009') AS p9 \gset
SELECT prm.add_patient(:org, 'Pat10', 'Zed', '+15558031010') AS p10 \gset
SELECT prm.join_waitlist(:org, :p9, NULL, true, 40) AS e9 \gset
SELECT prm.join_waitlist(:org, :p10, NULL, true, 39) AS e10 \gset
SELECT prm.book_appointment(:org, :p8, :dr, date_trunc('hour', now()) + interval '7 days', date_trunc('hour', now()) + interval '7 days 30 minutes') AS appt8d \gset
SELECT prm.configure(:org, '{"batch_size": 1, "max_batches": 2}') IS NOT NULL AS ok \gset
SELECT prm.cancel_appointment(:org, :appt8d) AS slot4 \gset
SELECT is((SELECT patient_id FROM prm.offer WHERE slot_id = :slot4), :'p9'::bigint, 'batch of one: the best');
SELECT is(prm.expire_offers(now() + interval '8 minutes'), 1, 'the hold ran out');
SELECT is((SELECT patient_id FROM prm.offer WHERE slot_id = :slot4 AND batch_no = 2 AND status = 'open'), :'p10'::bigint, 'expiry sent the next batch to the next best');
SELECT is(prm.expire_offers(now() + interval '20 minutes'), 1, 'second hold ran out');
SELECT is((SELECT fill_status FROM prm.slot WHERE id = :slot4), 'exhausted', 'cut-off after max_batches');

-- minimum notice, delay before the first batch, undo
SELECT prm.configure(:org, '{"batch_size": 3, "max_batches": 10}') IS NOT NULL AS ok \gset
SELECT prm.book_appointment(:org, :p8, :dr, now() + interval '30 minutes', now() + interval '60 minutes') AS soon \gset
SELECT prm.cancel_appointment(:org, :soon) AS slot5 \gset
SELECT is((SELECT fill_status FROM prm.slot WHERE id = :slot5), 'too_late', 'a slot within the hold plus minimum notice is not offered');
SELECT prm.configure(:org, '{"first_batch_delay": "5 minutes"}') IS NOT NULL AS ok \gset
SELECT prm.book_appointment(:org, :p8, :dr, date_trunc('hour', now()) + interval '8 days', date_trunc('hour', now()) + interval '8 days 30 minutes') AS appt8e \gset
SELECT prm.cancel_appointment(:org, :appt8e) AS slot6 \gset
SELECT is((SELECT fill_status FROM prm.slot WHERE id = :slot6), 'pending', 'first batch delayed');
SELECT ok(prm.undo_cancellation(:org, :appt8e), 'cancellation undone within the delay');
SELECT is((SELECT count(*)::int FROM prm.offer WHERE slot_id = :slot6), 0, 'an undone cancellation sent nothing');
SELECT is((SELECT status FROM prm.appointment WHERE id = :appt8e), 'booked', 'the appointment is back');

SELECT ok((prm.fill_stats(:org) ->> 'filled')::int >= 3, 'fill analytics count the fills');
SELECT ok(prm.fill_stats(:org) ?& ARRAY['fill_rate', 'median_time_to_fill_seconds', 'offers_per_fill', 'median_reply_latency_seconds', 'opt_out_rate'], 'fill analytics have every figure');

SELECT * FROM finish();
ROLLBACK;
