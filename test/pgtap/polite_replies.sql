-- A YES or NO with polite words after it is read as YES or NO; a question,
-- a negated YES or a long text is not; STOP and its synonyms stay exact.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(12);
SET LOCAL timezone = 'UTC';

SELECT prm.create_organization('Polite', 'UTC', '+15558007000') AS org \gset
SELECT prm.configure(:org, '{"quiet_hours": false, "batch_size": 1, "offer_daily_cap": 5}') IS NOT NULL AS configured \gset
SELECT prm.add_provider(:org, 'Dr Polite') AS dr \gset
SELECT prm.add_patient(:org, 'P' || g, 'Polite', '+1555800710' || g) FROM generate_series(1, 7) g;
SELECT prm.join_waitlist(:org, id) FROM prm.patient WHERE org_id = :org AND given_name IN ('P1', 'P2', 'P3', 'P4', 'P5', 'P6');
-- six slots, one offer each (batch_size 1), to P1..P6 in rank order
SELECT prm.book_appointment(:org, (SELECT id FROM prm.patient WHERE given_name = 'P7' AND org_id = :org), :dr,
                            date_trunc('hour', now()) + g * interval '1 day', date_trunc('hour', now()) + g * interval '1 day' + interval '30 minutes')
  FROM generate_series(3, 8) g;
SELECT prm.cancel_appointment(:org, a.id) FROM prm.appointment a WHERE a.org_id = :org ORDER BY a.id;
CREATE TEMP TABLE who AS SELECT p.phone, o.id AS offer FROM prm.offer o JOIN prm.patient p ON p.org_id = o.org_id AND p.id = o.patient_id
 WHERE o.org_id = :org AND o.status = 'open' ORDER BY p.given_name;
SELECT is((SELECT count(*)::int FROM who), 6, 'six patients hold an offer');
SELECT phone AS ph1 FROM who ORDER BY phone LIMIT 1 OFFSET 0 \gset
SELECT phone AS ph2 FROM who ORDER BY phone LIMIT 1 OFFSET 1 \gset
SELECT phone AS ph3 FROM who ORDER BY phone LIMIT 1 OFFSET 2 \gset
SELECT phone AS ph4 FROM who ORDER BY phone LIMIT 1 OFFSET 3 \gset
SELECT phone AS ph5 FROM who ORDER BY phone LIMIT 1 OFFSET 4 \gset
SELECT phone AS ph6 FROM who ORDER BY phone LIMIT 1 OFFSET 5 \gset

SELECT alike(prm.handle_inbound_sms('+15558007000', :'ph1', 'Yes please!', 'p-1'), '%booked%', '"Yes please!" books');
SELECT alike(prm.handle_inbound_sms('+15558007000', :'ph2', 'yes, I''ll take it', 'p-2'), '%booked%', '"yes, I''ll take it" books');
SELECT alike(prm.handle_inbound_sms('+15558007000', :'ph3', 'no thanks', 'p-3'), '%no problem%', '"no thanks" declines');
SELECT alike(prm.handle_inbound_sms('+15558007000', :'ph4', 'yes, is it still free?', 'p-4'), '%did not understand%',
             'a question is not a YES (a bare "Yes?" still is: keywords ignore punctuation)');
SELECT alike(prm.handle_inbound_sms('+15558007000', :'ph4', 'yes but I can''t make it', 'p-5'), '%did not understand%', 'a negated YES is not a YES');
SELECT alike(prm.handle_inbound_sms('+15558007000', :'ph4', 'yes I would love to come in on that day if my daughter can drive me', 'p-6'), '%did not understand%',
             'a long text starting with yes is not a YES');
SELECT is((SELECT status FROM prm.offer WHERE id = (SELECT offer FROM who WHERE phone = :'ph4')), 'open', 'and its offer is still open');
SELECT alike(prm.handle_inbound_sms('+15558007000', :'ph5', 'Stop please', 'p-7'), '%did not understand%', 'STOP stays exact: "Stop please" is not a STOP');
SELECT is((SELECT sms_opt_out FROM prm.patient WHERE phone = :'ph5'), false, 'so the patient is not opted out');
SELECT alike(prm.handle_inbound_sms('+15558007000', :'ph6', 'STOP.', 'p-8'), '%unsubscribed%', 'STOP with punctuation is still STOP');
SELECT is((SELECT count(*)::int FROM prm.appointment WHERE org_id = :org AND status = 'booked'), 2, 'exactly the two polite YES booked');

SELECT * FROM finish();
ROLLBACK;
