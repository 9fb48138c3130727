-- Offers reach the right people at the right time (issue 16, item 5):
--  * offer_reachable_first: a batch goes first to patients whose offer SMS
--    can go out now, the places left to patients in their quiet hours, whose
--    hold starts when their SMS may go out; off: by rank alone;
--  * notify_slot_taken: a patient whose offer was withdrawn because the slot
--    was taken gets one slot_taken text -- once, not the winner, not for a
--    declined or expired offer, not when their offer SMS never went out, not
--    when opted out, held by quiet hours, none when the setting is off;
--  * offer texts give the time at the clinic, with the clinic zone's
--    abbreviation for a patient whose zone is at another offset.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(54);
SET LOCAL timezone = 'UTC';

-- Two fixed-offset zones: one where it is 03:xx now (quiet hours 21-08 hold
-- SMS), one where it is 13:xx (awake), whatever the hour the test runs at.
SELECT extract(hour FROM now() AT TIME ZONE 'UTC')::int AS h \gset
CREATE TEMP TABLE zone AS
SELECT which, CASE WHEN k = 0 THEN 'Etc/GMT' WHEN k > 0 THEN 'Etc/GMT-' || k ELSE 'Etc/GMT+' || -k END AS name
  FROM (SELECT which, CASE WHEN r > 12 THEN r - 24 ELSE r END AS k
          FROM (VALUES ('held', ((3 - :h) % 24 + 24) % 24), ('awake', ((13 - :h) % 24 + 24) % 24)) v(which, r)) z;
SELECT name AS held_tz FROM zone WHERE which = 'held' \gset
SELECT name AS awake_tz FROM zone WHERE which = 'awake' \gset
SELECT is(extract(hour FROM now() AT TIME ZONE :'held_tz')::int, 3, 'the held zone is at 03:xx now');

-- 1. Ranking: reachable-now patients first -------------------------------
SELECT prm.create_organization('Reach Clinic', 'UTC', '+15558090000') AS org \gset
SELECT prm.configure(:org, '{"batch_size": 2, "offer_daily_cap": 10, "offer_weekly_cap": 20}') IS NOT NULL AS ok \gset
SELECT prm.add_provider(:org, 'Dr Reach') AS dr \gset
SELECT prm.add_patient(:org, 'H1', 'Held', '+15558091001', NULL, :'held_tz') AS h1 \gset
SELECT prm.add_patient(:org, 'H2', 'Held', '+15558091002', NULL, :'held_tz') AS h2 \gset
SELECT prm.add_patient(:org, 'A1', 'Awake', '+15558091003', NULL, :'awake_tz') AS a1 \gset
SELECT prm.add_patient(:org, 'A2', 'Awake', '+15558091004', NULL, :'awake_tz') AS a2 \gset
SELECT prm.add_patient(:org, 'A3', 'Awake', '+15558091005', NULL, :'awake_tz') AS a3 \gset
SELECT prm.add_patient(:org, 'Canceller', 'C', '+15558091009') AS canceller \gset
SELECT prm.join_waitlist(:org, :h1, NULL, false, 40) IS NOT NULL AS ok \gset
SELECT prm.join_waitlist(:org, :h2, NULL, false, 30) IS NOT NULL AS ok \gset
SELECT prm.join_waitlist(:org, :a1, NULL, false, 10) IS NOT NULL AS ok \gset
SELECT prm.join_waitlist(:org, :a2, NULL, false, 5) IS NOT NULL AS ok \gset
SELECT prm.join_waitlist(:org, :a3, NULL, false, 0) IS NOT NULL AS ok \gset
SELECT prm.book_appointment(:org, :canceller, :dr, date_trunc('hour', now()) + interval '3 days',
                            date_trunc('hour', now()) + interval '3 days 30 minutes') AS appt \gset
SELECT is(prm.settings(:org) -> 'offer_reachable_first', 'true'::jsonb, 'offer_reachable_first is on by default');

SAVEPOINT ranking;
SELECT prm.cancel_appointment(:org, :appt) AS slot \gset
SELECT is(ARRAY(SELECT patient_id FROM prm.offer WHERE slot_id = :slot ORDER BY rank DESC),
          ARRAY[:a1, :a2]::bigint[], 'reachable first: the two places go to the best awake patients, not the better-ranked held ones');
SELECT is((SELECT max(hold_until) FROM prm.offer WHERE slot_id = :slot), now() + interval '7 minutes', 'their holds start now');
ROLLBACK TO ranking;

SELECT prm.configure(:org, '{"batch_size": 4}') IS NOT NULL AS ok \gset
SELECT prm.cancel_appointment(:org, :appt) AS slot \gset
SELECT is(ARRAY(SELECT patient_id FROM prm.offer WHERE slot_id = :slot ORDER BY id),
          ARRAY[:a1, :a2, :a3, :h1]::bigint[], 'the place left goes to the best held patient, after the awake ones');
SELECT is((SELECT o.hold_until - m.not_before FROM prm.offer o JOIN prm.outbound_message m ON m.offer_id = o.id AND m.kind = 'offer'
            WHERE o.slot_id = :slot AND o.patient_id = :h1), interval '7 minutes', 'the held patient''s hold starts when their SMS may go out');
SELECT is((SELECT (m.not_before AT TIME ZONE :'held_tz')::time FROM prm.outbound_message m
            JOIN prm.offer o ON o.id = m.offer_id WHERE o.slot_id = :slot AND o.patient_id = :h1 AND m.kind = 'offer'),
          '08:00'::time, '... at 08:00 in their time zone');
ROLLBACK TO ranking;

SELECT prm.configure(:org, '{"offer_reachable_first": false}') IS NOT NULL AS ok \gset
SELECT prm.cancel_appointment(:org, :appt) AS slot \gset
SELECT is(ARRAY(SELECT patient_id FROM prm.offer WHERE slot_id = :slot ORDER BY rank DESC),
          ARRAY[:h1, :h2]::bigint[], 'offer_reachable_first off: by rank alone, held patients included');
SELECT ok((SELECT bool_and(hold_until > now() + interval '1 hour') FROM prm.offer WHERE slot_id = :slot),
          'their holds do not tick while their SMS waits for the morning');
ROLLBACK TO ranking;

-- with quiet hours off every patient is reachable: by rank alone
SELECT prm.configure(:org, '{"quiet_hours": false}') IS NOT NULL AS ok \gset
SELECT prm.cancel_appointment(:org, :appt) AS slot \gset
SELECT is(ARRAY(SELECT patient_id FROM prm.offer WHERE slot_id = :slot ORDER BY rank DESC),
          ARRAY[:h1, :h2]::bigint[], 'no quiet hours: nobody is held, the rank decides');
ROLLBACK TO ranking;

-- everyone asleep (the whole clinic at night): the batch still goes out, by rank
UPDATE prm.patient SET timezone = :'held_tz' WHERE org_id = :org AND id IN (:a1, :a2, :a3);
SELECT prm.cancel_appointment(:org, :appt) AS slot \gset
SELECT is(ARRAY(SELECT patient_id FROM prm.offer WHERE slot_id = :slot ORDER BY rank DESC),
          ARRAY[:h1, :h2]::bigint[], 'nobody reachable now: the slot is still offered, by rank, for the morning');
ROLLBACK TO ranking;

-- a held patient still obeys every rule: an opted-out awake patient is not offered
UPDATE prm.patient SET sms_opt_out = true WHERE org_id = :org AND id IN (:a1, :a2);
SELECT prm.cancel_appointment(:org, :appt) AS slot \gset
SELECT is(ARRAY(SELECT patient_id FROM prm.offer WHERE slot_id = :slot ORDER BY id),
          ARRAY[:a3, :h1]::bigint[], 'opted-out patients are never offered; the held best takes the place left');
ROLLBACK TO ranking;

-- 2. Slot taken -----------------------------------------------------------
SELECT prm.create_organization('Taken Clinic', 'UTC', '+15558100000') AS torg \gset
SELECT prm.configure(:torg, '{"batch_size": 6, "offer_daily_cap": 10, "offer_weekly_cap": 20}') IS NOT NULL AS ok \gset
SELECT prm.add_provider(:torg, 'Dr Taken') AS tdr \gset
SELECT prm.add_patient(:torg, 'Win', 'T', '+15558101001', NULL, :'awake_tz') AS win \gset
SELECT prm.add_patient(:torg, 'Lou', 'T', '+15558101002', NULL, :'awake_tz') AS lou \gset
SELECT prm.add_patient(:torg, 'Dee', 'T', '+15558101003', NULL, :'awake_tz') AS dee \gset
SELECT prm.add_patient(:torg, 'Exp', 'T', '+15558101004', NULL, :'awake_tz') AS exp \gset
SELECT prm.add_patient(:torg, 'Opt', 'T', '+15558101005', NULL, :'awake_tz') AS opt \gset
SELECT prm.add_patient(:torg, 'Que', 'T', '+15558101006', NULL, :'held_tz') AS que \gset
SELECT prm.add_patient(:torg, 'Can', 'T', '+15558101009') AS tcan \gset
SELECT count(prm.join_waitlist(:torg, id)) AS n FROM prm.patient WHERE org_id = :torg AND id <> :tcan \gset
SELECT prm.book_appointment(:torg, :tcan, :tdr, date_trunc('hour', now()) + interval '3 days',
                            date_trunc('hour', now()) + interval '3 days 30 minutes') AS tappt \gset
SELECT prm.cancel_appointment(:torg, :tappt) AS tslot \gset
SELECT is((SELECT count(*)::int FROM prm.offer WHERE slot_id = :tslot), 6, 'six offers');
SELECT id AS lou_offer FROM prm.offer WHERE slot_id = :tslot AND patient_id = :lou \gset
SELECT id AS que_offer FROM prm.offer WHERE slot_id = :tslot AND patient_id = :que \gset
SELECT id AS exp_offer FROM prm.offer WHERE slot_id = :tslot AND patient_id = :exp \gset

-- the sender sends what is due: every offer but Que's, held till 08:00
CREATE TEMP TABLE claimed AS SELECT * FROM prm.claim_messages('sms', 50);
SELECT is((SELECT count(*)::int FROM claimed WHERE kind = 'offer' AND org_id = :torg), 5, 'five offer SMS go out');
SELECT count(prm.mark_message_sent(id, 'SM-' || id, lease_token)) AS sent FROM claimed \gset
-- Dee declines, Exp's offer expires, Opt opts out by hand (staff)
SELECT alike(prm.handle_inbound_sms('+15558100000', '+15558101003', 'NO', 'tk-1'), '%stay on our waitlist%', 'Dee declines');
UPDATE prm.offer SET hold_until = now() - interval '1 second' WHERE org_id = :torg AND id = :exp_offer;
SELECT is(prm.expire_offers(), 1, 'Exp''s offer expires');
UPDATE prm.patient SET sms_opt_out = true WHERE org_id = :torg AND id = :opt;
SELECT is(prm.settings(:torg) -> 'notify_slot_taken', 'true'::jsonb, 'notify_slot_taken is on by default');

SAVEPOINT taken;
SELECT alike(prm.handle_inbound_sms('+15558100000', '+15558101001', 'YES', 'tk-2'), '%you are booked%', 'Win books');
SELECT is(ARRAY(SELECT patient_id FROM prm.outbound_message WHERE org_id = :torg AND kind = 'slot_taken'),
          ARRAY[:lou]::bigint[], 'one slot_taken text, to Lou alone: not the winner, not declined, expired, opted out or never sent');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE org_id = :torg AND dedup_key = 'slot_taken:' || :lou_offer), 1, 'once for the offer');
SELECT is((SELECT body FROM prm.outbound_message WHERE org_id = :torg AND kind = 'slot_taken'),
          'Taken Clinic: the earlier appointment we offered you has been taken. You stay on our waitlist.',
          'a short text: no name, no clinical detail, no provider');
SELECT is((SELECT message_class || '/' || status FROM prm.outbound_message WHERE org_id = :torg AND kind = 'slot_taken'),
          'exempt/queued', 'exempt from the promotional caps, queued now');
SELECT is((SELECT not_before FROM prm.outbound_message WHERE org_id = :torg AND kind = 'slot_taken'), now(), 'Lou is awake: it goes now');
SELECT is((SELECT status || ': ' || last_error FROM prm.outbound_message WHERE org_id = :torg AND offer_id = :que_offer),
          'cancelled: offer closed before sending', 'Que''s offer SMS, never sent, is cancelled (and Que is not told)');
SELECT is((SELECT count(*)::int FROM prm.offer WHERE slot_id = :tslot AND status = 'withdrawn'), 3,
          'withdrawn: Lou, Opt and Que');
-- the conversation shows it, as every message to a patient
SELECT ok(EXISTS (SELECT 1 FROM prm.conversation_message cm JOIN prm.outbound_message m ON m.id = cm.outbound_message_id
                   WHERE m.org_id = :torg AND m.kind = 'slot_taken'), 'the text is threaded into Lou''s conversation');
-- Lou, not having read it yet, answers YES: told it is gone, and not twice
SELECT alike(prm.handle_inbound_sms('+15558100000', '+15558101002', 'YES', 'tk-3'), '%has just been taken%', 'Lou''s late YES is told it is gone');
SELECT is((SELECT status FROM prm.outbound_message WHERE org_id = :torg AND kind = 'slot_taken'), 'cancelled',
          'and the queued slot_taken text is cancelled: Lou is not told twice');
ROLLBACK TO taken;

-- quiet hours hold the slot_taken text like any other
SELECT to_char((now() AT TIME ZONE :'awake_tz') - interval '1 hour', 'HH24:MI') AS qs,
       to_char((now() AT TIME ZONE :'awake_tz') + interval '2 hours', 'HH24:MI') AS qe \gset
SELECT prm.configure(:torg, jsonb_build_object('quiet_start', :'qs', 'quiet_end', :'qe')) IS NOT NULL AS ok \gset
SELECT alike(prm.handle_inbound_sms('+15558100000', '+15558101001', 'YES', 'tk-2'), '%you are booked%', 'Win books, in quiet hours');
SELECT is((SELECT (not_before AT TIME ZONE :'awake_tz')::time FROM prm.outbound_message WHERE org_id = :torg AND kind = 'slot_taken'),
          :'qe'::time, 'the slot_taken text waits for the end of quiet hours in Lou''s time zone');
ROLLBACK TO taken;

-- setting off: nobody is told
SELECT prm.configure(:torg, '{"notify_slot_taken": false}') IS NOT NULL AS ok \gset
SELECT alike(prm.handle_inbound_sms('+15558100000', '+15558101001', 'YES', 'tk-2'), '%you are booked%', 'Win books, setting off');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE org_id = :torg AND kind = 'slot_taken'), 0, 'notify_slot_taken off: no text');
ROLLBACK TO taken;

-- the clinic books the slot directly: the same texts
SELECT prm.book_appointment(:torg, :tcan, :tdr, date_trunc('hour', now()) + interval '3 days',
                            date_trunc('hour', now()) + interval '3 days 30 minutes') IS NOT NULL AS ok \gset
SELECT is(ARRAY(SELECT patient_id FROM prm.outbound_message WHERE org_id = :torg AND kind = 'slot_taken' ORDER BY patient_id),
          ARRAY[:win, :lou]::bigint[], 'a booking by the clinic: every patient who saw an open offer is told');
ROLLBACK TO taken;

-- the clinic books the slot for one of the patients offered it: not told it is taken
SELECT prm.book_appointment(:torg, :lou, :tdr, date_trunc('hour', now()) + interval '3 days',
                            date_trunc('hour', now()) + interval '3 days 30 minutes') IS NOT NULL AS ok \gset
SELECT is(ARRAY(SELECT patient_id FROM prm.outbound_message WHERE org_id = :torg AND kind = 'slot_taken' ORDER BY patient_id),
          ARRAY[:win]::bigint[], 'booked by the clinic for Lou: Win is told, Lou is not');
ROLLBACK TO taken;

-- the cancellation is undone: the slot is gone for them too
SELECT ok(prm.undo_cancellation(:torg, :tappt), 'the cancellation is undone');
SELECT is(ARRAY(SELECT patient_id FROM prm.outbound_message WHERE org_id = :torg AND kind = 'slot_taken' ORDER BY patient_id),
          ARRAY[:win, :lou]::bigint[], 'an undone cancellation: those who saw an open offer are told');
ROLLBACK TO taken;

-- a template of its own for the kind
SELECT lives_ok(format($$SELECT prm.set_template(%s, 'slot_taken', '{clinic}: that time is gone, sorry.')$$, :torg),
                'slot_taken takes a wording of the organization''s own');
SELECT alike(prm.handle_inbound_sms('+15558100000', '+15558101001', 'YES', 'tk-2'), '%you are booked%', 'Win books');
SELECT is((SELECT body FROM prm.outbound_message WHERE org_id = :torg AND kind = 'slot_taken'), 'Taken Clinic: that time is gone, sorry.', 'and it is used');
ROLLBACK TO taken;

-- 3. The time in offer texts ------------------------------------------------
SELECT prm.create_organization('Zone Clinic', 'America/New_York', '+15558110000') AS zorg \gset
SELECT prm.configure(:zorg, '{"batch_size": 5, "quiet_hours": false, "offer_daily_cap": 10, "offer_weekly_cap": 20}') IS NOT NULL AS ok \gset
SELECT prm.add_provider(:zorg, 'Dr Zone') AS zdr \gset
SELECT prm.add_patient(:zorg, 'Local', 'Z', '+15558111001') AS zlocal \gset
SELECT prm.add_patient(:zorg, 'Same', 'Z', '+15558111002', NULL, 'America/New_York') AS zsame \gset
SELECT prm.add_patient(:zorg, 'Chi', 'Z', '+15558111003', NULL, 'America/Chicago') AS zchi \gset
SELECT prm.add_patient(:zorg, 'Tor', 'Z', '+15558111004', NULL, 'America/Toronto') AS ztor \gset
SELECT prm.add_patient(:zorg, 'Can', 'Z', '+15558111009') AS zcan \gset
SELECT count(prm.join_waitlist(:zorg, id)) AS n FROM prm.patient WHERE org_id = :zorg AND id <> :zcan \gset
-- Tue 2 Dec 2031, 14:30 in New York (EST)
SELECT prm.book_appointment(:zorg, :zcan, :zdr, '2031-12-02 19:30+00', '2031-12-02 20:00+00') AS zappt \gset
SELECT prm.cancel_appointment(:zorg, :zappt) AS zslot \gset
SELECT alike((SELECT body FROM prm.outbound_message WHERE org_id = :zorg AND patient_id = :zlocal AND kind = 'offer'),
             '%free on Tue 2 Dec at 14:30. Reply YES%', 'a patient in the clinic''s zone: the clinic''s time, no abbreviation');
SELECT alike((SELECT body FROM prm.outbound_message WHERE org_id = :zorg AND patient_id = :zsame AND kind = 'offer'),
             '%free on Tue 2 Dec at 14:30. Reply YES%', 'the same zone named: no abbreviation');
SELECT alike((SELECT body FROM prm.outbound_message WHERE org_id = :zorg AND patient_id = :zchi AND kind = 'offer'),
             '%free on Tue 2 Dec at 14:30 EST. Reply YES%', 'a patient in Chicago: the clinic''s 14:30, with EST (not their 13:30)');
SELECT alike((SELECT body FROM prm.outbound_message WHERE org_id = :zorg AND patient_id = :ztor AND kind = 'offer'),
             '%free on Tue 2 Dec at 14:30. Reply YES%', 'Toronto keeps New York''s offset: no abbreviation needed');
SELECT alike(prm.handle_inbound_sms('+15558110000', '+15558111003', 'YES', 'zn-1'), '%booked for Tue 2 Dec at 14:30 EST.%',
             'the booking confirmation says the same time');

-- a zone without letters for its abbreviation, and summer time
SELECT prm.add_patient(:zorg, 'Dub', 'Z', '+15558111005', NULL, 'Asia/Dubai') AS zdub \gset
SELECT prm.join_waitlist(:zorg, :zdub) IS NOT NULL AS ok \gset
SELECT prm.book_appointment(:zorg, :zcan, :zdr, '2031-07-01 18:00+00', '2031-07-01 18:30+00') AS zappt2 \gset
SELECT prm.cancel_appointment(:zorg, :zappt2) AS zslot2 \gset
SELECT alike((SELECT body FROM prm.outbound_message WHERE org_id = :zorg AND patient_id = :zdub AND kind = 'offer'),
             '%free on Tue 1 Jul at 14:00 EDT. Reply YES%', 'summer: 14:00 EDT');
SELECT alike((SELECT body FROM prm.outbound_message WHERE org_id = :zorg AND patient_id = :zlocal AND kind = 'offer'
               AND offer_id IN (SELECT id FROM prm.offer WHERE slot_id = :zslot2)),
             '%free on Tue 1 Jul at 14:00. Reply YES%', 'and no abbreviation for the clinic''s own zone');
SELECT prm.create_organization('Gulf Clinic', 'Asia/Dubai', '+15558120000') AS gorg \gset
SELECT prm.configure(:gorg, '{"quiet_hours": false}') IS NOT NULL AS ok \gset
SELECT prm.add_provider(:gorg, 'Dr Gulf') AS gdr \gset
SELECT prm.add_patient(:gorg, 'Away', 'G', '+15558121001', NULL, 'Europe/London') AS gaway \gset
SELECT prm.add_patient(:gorg, 'Can', 'G', '+15558121009') AS gcan \gset
SELECT prm.join_waitlist(:gorg, :gaway) IS NOT NULL AS ok \gset
SELECT prm.book_appointment(:gorg, :gcan, :gdr, '2031-12-02 06:00+00', '2031-12-02 06:30+00') AS gappt \gset
SELECT prm.cancel_appointment(:gorg, :gappt) AS gslot \gset
SELECT alike((SELECT body FROM prm.outbound_message WHERE org_id = :gorg AND patient_id = :gaway AND kind = 'offer'),
             '%free on Tue 2 Dec at 10:00 UTC+04. Reply YES%', 'a zone abbreviated by its offset reads UTC+04');

-- 4. The settings' bad input ---------------------------------------------
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"offer_reachable_first": "yes"}')$$, :org), '22023', NULL,
                 'offer_reachable_first must be a boolean, not a string');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"offer_reachable_first": 1}')$$, :org), '22023', NULL,
                 'offer_reachable_first must be a boolean, not a number');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"notify_slot_taken": "false"}')$$, :org), '22023', NULL,
                 'notify_slot_taken must be a boolean, not a string');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"notify_slot_taken": {"on": true}}')$$, :org), '22023', NULL,
                 'notify_slot_taken must be a boolean, not an object');
SELECT is(prm.settings(:org) -> 'notify_slot_taken', 'true'::jsonb, 'the bad values changed nothing');
SELECT is(prm.configure(:org, '{"notify_slot_taken": false, "offer_reachable_first": false}') -> 'notify_slot_taken', 'false'::jsonb, 'false is taken');
SELECT is(prm.configure(:org, '{"notify_slot_taken": null, "offer_reachable_first": null}') -> 'offer_reachable_first', 'true'::jsonb, 'null restores the default');

SELECT * FROM finish();
ROLLBACK;
