-- The fill engine's outputs: who is offered a freed slot and why, what the
-- SMS say, and the replies patients get.
CREATE EXTENSION prm CASCADE;
SET timezone = 'UTC';
SELECT prm.create_organization('Regress Physio', 'Europe/London', '+44 20 7946 0100') AS org \gset
SELECT prm.configure(:org, '{"phone_region": "GB", "quiet_hours": false, "offer_daily_cap": 5}') IS NOT NULL AS configured;
SELECT prm.add_provider(:org, 'Dr Lane') AS dr \gset
SELECT prm.add_patient(:org, g, 'Regress', '07700 900' || lpad(n::text, 3, '0')) FROM unnest(ARRAY['Ann', 'Bob', 'Cat', 'Dan', 'Eve']) WITH ORDINALITY AS t(g, n) ORDER BY n;
-- Ann cancels; Cat has a later appointment, Dan an earlier one
SELECT prm.book_appointment(:org, 1, :dr, '2031-03-03 09:00+00', '2031-03-03 09:30+00') AS ann_appt \gset
SELECT prm.book_appointment(:org, 3, :dr, '2031-04-01 09:00+00', '2031-04-01 09:30+00') AS cat_appt \gset
SELECT prm.book_appointment(:org, 4, :dr, '2031-03-01 09:00+00', '2031-03-01 09:30+00') AS dan_appt \gset
SELECT prm.join_waitlist(:org, 2, NULL, false, 10) AS bob_entry, prm.join_waitlist(:org, 3, NULL, true, 0) AS cat_entry,
       prm.join_waitlist(:org, 4, NULL, false, 40) AS dan_entry, prm.join_waitlist(:org, 5) AS eve_entry \gset
SELECT p.given_name, w.priority_score, w.urgent, w.manual_boost
  FROM prm.waitlist_entry w JOIN prm.patient p ON p.id = w.patient_id ORDER BY w.priority_score DESC, w.id;

-- the cancellation offers the slot to the best three who would be seen sooner
SELECT prm.cancel_appointment(:org, :ann_appt, 'flu') AS slot \gset
SELECT p.given_name, o.status, o.batch_no, o.rank, o.score_breakdown - ARRAY['days_on_list', 'days_to_wait'] AS breakdown
  FROM prm.offer o JOIN prm.patient p ON p.id = o.patient_id ORDER BY o.rank DESC;
SELECT to_address, body FROM prm.outbound_message ORDER BY id;

-- replies
SELECT prm.handle_inbound_sms('+442079460100', '07700 900005', 'maybe?', 'SM1');
SELECT prm.handle_inbound_sms('+442079460100', '+447700900005', 'N', 'SM2');
SELECT prm.handle_inbound_sms('+442079460100', '+447700900003', ' Yes! ', 'SM3');
SELECT prm.handle_inbound_sms('+442079460100', '+447700900002', 'yes', 'SM4');
SELECT prm.handle_inbound_sms('+442079460100', '+447700900003', ' Yes! ', 'SM3');
SELECT prm.handle_inbound_sms('+442079460100', '+447700900004', 'info', 'SM5');
SELECT prm.handle_inbound_sms('+442079460100', '+447700900004', 'STOPALL', 'SM6');
SELECT prm.handle_inbound_sms('+442079460100', '+447700900004', 'stop', 'SM7');
SELECT p.given_name, o.slot_id, o.status, o.response_channel
  FROM prm.offer o JOIN prm.patient p ON p.id = o.patient_id ORDER BY o.id;
SELECT a.id, p.given_name, a.starts_at, a.status, a.cancel_reason
  FROM prm.appointment a JOIN prm.patient p ON p.id = a.patient_id ORDER BY a.id;
SELECT id, status, fill_status, batches_sent FROM prm.slot ORDER BY id;
SELECT provider_message_id, keyword, reply IS NOT NULL AS replied FROM prm.inbound_message ORDER BY id;

-- errors a caller can make
SELECT prm.fill_slot(:org, 999);
SELECT prm.fill_slot(NULL, :slot);
SELECT prm.handle_inbound_sms('+442079460100', '+447700900004', 'YES', NULL);
SELECT prm.join_waitlist(:org, 2, NULL, false, 41);

DROP EXTENSION prm;
DROP EXTENSION btree_gist;
DROP EXTENSION pg_trgm;
