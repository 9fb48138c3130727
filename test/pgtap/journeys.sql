-- Journeys: bad input of every function; enrolment by event (with a
-- filter, exactly once per event, never from a rolled-back one), by
-- start_journey and by segment; stage actions run by the worker's step
-- (send, open_ticket, a failing action recorded and skipped); waits for an
-- interval, until a local time, before the next appointment; advance_after,
-- advance_on with its timeout; exit and goal events; reentry; moving and
-- retiring stages (an emptied stage list under a running instance);
-- retiring journeys; events carrying patient_id; export and erasure; and
-- tenancy for every table, the view and every function.
-- now() is the transaction's start here: time passes by moving due_at and
-- stage_entered_at back, as the worker would find them later.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(151);

SELECT prm.create_organization('Journey Clinic A', 'America/New_York', '+15558090000') AS org \gset
SELECT prm.create_organization('Journey Clinic B', 'UTC', '+15558090001') AS org_b \gset
SELECT prm.add_patient(:org, 'Jo', 'Journey', '+15558091001') AS pat \gset
SELECT prm.add_patient(:org, 'Kai', 'Second', '+15558091002', 'kai@example.com') AS pat2 \gset
SELECT prm.add_patient(:org, 'Lu', 'Third', '+15558091003') AS pat3 \gset
SELECT prm.add_patient(:org_b, 'Bo', 'Other', '+15558091009') AS pat_b \gset
SELECT prm.add_provider(:org, 'Dr J') AS prov \gset

-- ---------- create_journey: bad input ----------
SELECT throws_ok('SELECT prm.create_journey(NULL, ''J'')', '22004', NULL, 'create_journey: NULL org');
SELECT throws_ok(format('SELECT prm.create_journey(%s, NULL)', :org), '22004', NULL, 'create_journey: NULL name');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''  '')', :org), '22023', NULL, 'create_journey: blank name');
SELECT throws_ok(format('SELECT prm.create_journey(%s, %L)', :org, repeat('n', 201)), '22001', NULL, 'create_journey: oversized name');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''J'', ''appointment_bookd'')', :org), '22023',
                 'unknown event kind "appointment_bookd" for trigger_event', 'create_journey: unknown event kind');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''J'', %L)', :org, 'x''); DROP TABLE prm.journey; --'), '22023', NULL,
                 'create_journey: an injection string is an unknown event kind');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''J'', NULL, ''[]'')', :org), '22023', 'journey settings must be a JSON object', 'create_journey: settings not an object');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''J'', NULL, ''{"colour": "red"}'')', :org), '22023', NULL, 'create_journey: unknown setting');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''J'', NULL, ''{"exit_events": "appointment_cancelled"}'')', :org), '22023', NULL, 'create_journey: exit_events not an array');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''J'', NULL, ''{"exit_events": ["nope"]}'')', :org), '22023', NULL, 'create_journey: unknown exit event');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''J'', NULL, ''{"reentry": "soon"}'')', :org), '22007', NULL, 'create_journey: malformed reentry');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''J'', NULL, ''{"reentry": "-1 day"}'')', :org), '22023', NULL, 'create_journey: negative reentry');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''J'', NULL, ''{"reentry": "5000 days"}'')', :org), '22023', NULL, 'create_journey: absurd reentry');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''J'', NULL, ''{"active": "yes"}'')', :org), '22023', NULL, 'create_journey: active not a boolean');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''J'', NULL, ''{"trigger_filter": [1]}'')', :org), '22023', NULL, 'create_journey: filter not an object');
SELECT throws_ok('SELECT prm.create_journey(999999, ''J'')', NULL, NULL, 'create_journey: unknown organization');
SELECT is((SELECT count(*)::int FROM prm.journey), 0, 'create_journey: bad input made nothing');

-- ---------- a journey triggered by bookings ----------
SELECT prm.create_journey(:org, 'New patient', 'appointment_booked',
                          '{"exit_events": ["appointment_cancelled"], "goal_events": ["waitlist_left"]}') AS j \gset
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''New patient'')', :org), '23505', NULL, 'create_journey: duplicate name');
SELECT prm.create_journey(:org_b, 'B journey') AS jb \gset

-- ---------- add_journey_stage: bad input ----------
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'')', :org, :jb), 'P0002', NULL, 'stage: another org''s journey');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, 999999, ''S'')', :org), 'P0002', NULL, 'stage: unknown journey');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, NULL)', :org, :j), '22004', NULL, 'stage: NULL name');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', NULL)', :org, :j), '22004', NULL, 'stage: NULL actions');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''{"type": "send"}'')', :org, :j), '22023', NULL, 'stage: actions not an array');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[42]'')', :org, :j), '22023', NULL, 'stage: an action not an object');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"template": "x"}]'')', :org, :j), '22023', NULL, 'stage: an action without type');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "call"}]'')', :org, :j), '22023', NULL, 'stage: unknown action type');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "send"}]'')', :org, :j), '22023', NULL, 'stage: send without template');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', %L)', :org, :j,
                        '[{"type": "send", "template": "x''); DROP TABLE prm.journey; --"}]'), '22023', NULL, 'stage: an injection string is no message kind');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "send", "template": "booked", "channel": "pigeon"}]'')', :org, :j), '22023', NULL, 'stage: unknown channel');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "send", "template": "booked", "colour": 1}]'')', :org, :j), '22023', NULL, 'stage: unknown key of an action');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "open_ticket"}]'')', :org, :j), '22023', NULL, 'stage: ticket without subject');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "open_ticket", "subject": "s", "priority": "asap"}]'')', :org, :j), '22023', NULL, 'stage: unknown ticket priority');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "wait"}]'')', :org, :j), '22023', NULL, 'stage: wait for nothing');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "wait", "for": "1 hour", "until_local": "09:00"}]'')', :org, :j), '22023', NULL, 'stage: wait for two things');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "wait", "for": "-1 hour"}]'')', :org, :j), '22023', NULL, 'stage: negative wait');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "wait", "for": "0"}]'')', :org, :j), '22023', NULL, 'stage: zero wait');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "wait", "for": "400 days"}]'')', :org, :j), '22023', NULL, 'stage: absurd wait');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "wait", "until_local": "25:00"}]'')', :org, :j), '22023', NULL, 'stage: no such time of day');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[{"type": "wait", "for": 60}]'')', :org, :j), '22023', NULL, 'stage: wait not a string');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', %L)', :org, :j,
                        (SELECT jsonb_agg('{"type": "wait", "for": "1 minute"}'::jsonb) FROM generate_series(1, 21))), '54000', NULL, 'stage: too many actions');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[]'', ''-1 day'')', :org, :j), '22023', NULL, 'stage: negative advance_after');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[]'', ''1000 days'')', :org, :j), '22023', NULL, 'stage: absurd advance_after');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''S'', ''[]'', NULL, ''tea_time'')', :org, :j), '22023', NULL, 'stage: unknown advance_on event');
SELECT is((SELECT count(*)::int FROM prm.journey_stage), 0, 'stage: bad input made nothing');

-- stage 1: a message, a ticket, a failing send (unknown kind), then on after a day
SELECT prm.add_journey_stage(:org, :j, 'Welcome',
    '[{"type": "send", "template": "booked", "channel": "sms"},
      {"type": "open_ticket", "subject": "Call the new patient", "priority": "high"},
      {"type": "send", "template": "no_such_kind"},
      {"type": "wait", "for": "2 hours"}]', '1 day') AS st1 \gset
-- stage 2: until 09:00 local, then on at the patient's confirmation or after 3 days
SELECT prm.add_journey_stage(:org, :j, 'Nudge', '[{"type": "wait", "until_local": "09:00"}]', '3 days', 'waitlist_joined') AS st2 \gset
-- stage 3: 24 hours before the appointment, by hand only
SELECT prm.add_journey_stage(:org, :j, 'Before', '[{"type": "wait", "before_appointment": "24 hours"}]') AS st3 \gset
SELECT is((SELECT array_agg(position ORDER BY id) FROM prm.journey_stage WHERE journey_id = :j), '{1,2,3}', 'stages: numbered 1..3 in order');

-- ---------- enrolment by event ----------
SAVEPOINT before_rollback;
SELECT prm.book_appointment(:org, :pat2, :prov, now() + interval '5 days', now() + interval '5 days 1 hour');
ROLLBACK TO SAVEPOINT before_rollback;
SELECT is((SELECT count(*)::int FROM prm.journey_instance), 0, 'event: a rolled-back booking enrols nobody');

SELECT prm.book_appointment(:org, :pat, :prov, now() + interval '4 days', now() + interval '4 days 1 hour') AS appt \gset
SELECT is((SELECT count(*)::int FROM prm.journey_instance WHERE patient_id = :pat), 1, 'event: the booking enrolled its patient');
SELECT id AS inst FROM prm.journey_instance WHERE patient_id = :pat \gset
SELECT is((SELECT source_event_id FROM prm.journey_instance WHERE id = :inst),
          (SELECT id FROM prm.event WHERE kind = 'appointment_booked' AND entity_id = :appt),
          'event: the instance names the event that enrolled it');
SELECT is((SELECT patient_id FROM prm.event WHERE kind = 'appointment_booked' AND entity_id = :appt), :pat::bigint,
          'events carry the patient of their appointment');
SELECT is((SELECT status || '/' || stage_position || '/' || entered_by FROM prm.journey_instance WHERE id = :inst),
          'active/1/event', 'event: active in stage 1');
SELECT ok((SELECT due_at <= now() FROM prm.journey_instance WHERE id = :inst), 'event: due at once for the worker');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE patient_id = :pat AND dedup_key LIKE 'journey:%'), 0,
          'event: no action ran inside the booking''s transaction');
-- a second booking of the same patient: one active instance per journey
SELECT prm.book_appointment(:org, :pat, :prov, now() + interval '6 days', now() + interval '6 days 1 hour') AS appt2 \gset
SELECT is((SELECT count(*)::int FROM prm.journey_instance WHERE patient_id = :pat), 1, 'event: one active instance per patient');
SELECT throws_ok(format('INSERT INTO prm.journey_instance (org_id, journey_id, patient_id, entered_by) VALUES (%s, %s, %s, ''event'')', :org, :j, :pat),
                 '23505', NULL, 'one active instance is a unique index');

-- ---------- the worker runs stage 1 ----------
SELECT is((prm.run_due_jobs()->>'journey_steps')::int, 1, 'worker: one instance due');
SELECT ok((SELECT detail ? 'error' AND detail->>'action' = '2' FROM prm.journey_history WHERE instance_id = :inst AND kind = 'action'
            ORDER BY step_id DESC LIMIT 1), 'a failing action is recorded with its error');
SELECT is((prm.run_due_jobs()->>'journey_steps')::int, 1, 'worker: the run after the failure goes on');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE patient_id = :pat AND dedup_key = 'journey:' || :inst || ':' || :st1 || ':0'), 1,
          'send: the message is queued to the patient');
SELECT is((SELECT source || '/' || priority FROM prm.ticket WHERE patient_id = :pat AND subject = 'Call the new patient'), 'journey/high',
          'open_ticket: the ticket is opened for the patient');
SELECT is((SELECT count(*)::int FROM prm.journey_history WHERE instance_id = :inst AND kind = 'action' AND detail ? 'message_id'), 1,
          'the rerun ran the actions the failure had rolled back');
SELECT ok((SELECT next_action = 4 AND failed_actions = '{2}' AND abs(extract(epoch FROM due_at - (now() + interval '2 hours'))) < 1
             FROM prm.journey_instance WHERE id = :inst), 'wait for: due two hours on, after the failed action');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE patient_id = :pat AND dedup_key LIKE 'journey:%'), 1,
          'the rerun sent nothing twice');
-- the wait ends; advance_after (1 day) is not yet over
UPDATE prm.journey_instance SET due_at = now() - interval '1 second' WHERE id = :inst;
SELECT prm.run_due_jobs();
SELECT ok((SELECT stage_position = 1 AND due_at = stage_entered_at + interval '1 day' FROM prm.journey_instance WHERE id = :inst),
          'advance_after: due a day after the stage was entered');
UPDATE prm.journey_instance SET stage_entered_at = now() - interval '25 hours', due_at = now() - interval '1 hour' WHERE id = :inst;
SELECT prm.run_due_jobs();
SELECT is((SELECT stage_position FROM prm.journey_instance WHERE id = :inst), 2, 'advance_after: moved on to stage 2');
SELECT is((SELECT due_at FROM prm.journey_instance WHERE id = :inst),
          (SELECT (detail->>'until')::timestamptz FROM prm.journey_history WHERE instance_id = :inst AND kind = 'waiting' ORDER BY step_id DESC LIMIT 1),
          'until_local: the wait''s end is recorded');
SELECT ok((SELECT due_at > now() AND due_at <= now() + interval '1 day'
                  AND to_char(due_at AT TIME ZONE 'America/New_York', 'HH24:MI') = '09:00'
             FROM prm.journey_instance WHERE id = :inst), 'until_local: the next 09:00 in the patient''s time zone');
SELECT is((SELECT awaiting_event FROM prm.journey_instance WHERE id = :inst), 'waitlist_joined', 'advance_on: awaiting its event');

-- advance_on: the awaited event moves it on, before the wait ends
SELECT prm.join_waitlist(:org, :pat, :prov) AS entry \gset
SELECT ok((SELECT awaiting_event IS NULL AND due_at <= now() AND next_action >= 1000 FROM prm.journey_instance WHERE id = :inst),
          'advance_on: the event makes the instance due at once');
SELECT prm.run_due_jobs();
SELECT is((SELECT stage_position FROM prm.journey_instance WHERE id = :inst), 3, 'advance_on: moved on to stage 3');
SELECT is((SELECT detail->>'reason' FROM prm.journey_history WHERE instance_id = :inst AND kind = 'entered' ORDER BY step_id DESC LIMIT 1),
          'event', 'advance_on: the history says why');
SELECT ok((SELECT due_at = (SELECT starts_at FROM prm.appointment WHERE id = :appt) - interval '24 hours'
             FROM prm.journey_instance WHERE id = :inst), 'before_appointment: due 24 hours before the next appointment');

-- advance_journey
SELECT throws_ok(format('SELECT prm.advance_journey(%s, 999999)', :org), 'P0002', NULL, 'advance: unknown instance');
SELECT throws_ok(format('SELECT prm.advance_journey(%s, %s)', :org_b, :inst), 'P0002', NULL, 'advance: another org''s instance');
SELECT throws_ok(format('SELECT prm.advance_journey(%s, NULL)', :org), '22004', NULL, 'advance: NULL instance');
SELECT is(prm.advance_journey(:org, :inst), NULL::int, 'advance: past the last stage completes (NULL)');
SELECT is((SELECT status || '/' || end_reason FROM prm.journey_instance WHERE id = :inst), 'completed/finished', 'advance: completed');
SELECT throws_ok(format('SELECT prm.advance_journey(%s, %s)', :org, :inst), '55000', NULL, 'advance: a completed instance');
SELECT ok(EXISTS (SELECT 1 FROM prm.event WHERE kind = 'journey_completed' AND entity_id = :inst AND patient_id = :pat),
          'advance: a journey_completed event about the patient');

-- ---------- start_journey and reentry ----------
SELECT throws_ok(format('SELECT prm.start_journey(%s, %s, %s)', :org, :j, :pat), '55000', NULL, 'reentry never: refused');
SELECT throws_ok(format('SELECT prm.start_journey(%s, %s, %s)', :org, :j, :pat_b), 'P0002', NULL, 'start: another org''s patient');
SELECT throws_ok(format('SELECT prm.start_journey(%s, %s, %s)', :org, :jb, :pat2), 'P0002', NULL, 'start: another org''s journey');
SELECT throws_ok(format('SELECT prm.start_journey(%s, NULL, %s)', :org, :pat2), '22004', NULL, 'start: NULL journey');
SELECT lives_ok(format('SELECT prm.update_journey(%s, %s, ''{"reentry": "1 hour"}'')', :org, :j), 'update: reentry by interval');
UPDATE prm.journey_instance SET started_at = now() - interval '2 hours' WHERE id = :inst;
SELECT prm.start_journey(:org, :j, :pat) AS inst2 \gset
SELECT ok(:inst2 <> :inst, 'reentry: a new instance after the interval');
SELECT throws_ok(format('SELECT prm.start_journey(%s, %s, %s)', :org, :j, :pat), '23505', NULL, 'start: already on the journey');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE dedup_key = 'journey:' || :inst2 || ':' || :st1 || ':0'), 1,
          'start: the first stage ran at once');
-- exit event: ends it at once, whatever stage
SELECT prm.cancel_appointment(:org, :appt2);
SELECT is((SELECT status || '/' || end_reason FROM prm.journey_instance WHERE id = :inst2), 'exited/exit_event', 'exit event: exited at once');
-- goal event
SELECT prm.start_journey(:org, :j, :pat2) AS inst3 \gset
SELECT prm.join_waitlist(:org, :pat2, :prov) AS entry2 \gset
SELECT prm.leave_waitlist(:org, :entry2);
SELECT is((SELECT status || '/' || end_reason FROM prm.journey_instance WHERE id = :inst3), 'completed/goal', 'goal event: completed as a goal');
-- cancel
SELECT prm.start_journey(:org, :j, :pat3) AS inst4 \gset
SELECT throws_ok(format('SELECT prm.cancel_journey_instance(%s, %s)', :org_b, :inst4), 'P0002', NULL, 'cancel: through another org');
SELECT lives_ok(format('SELECT prm.cancel_journey_instance(%s, %s)', :org, :inst4), 'cancel: an active instance');
SELECT is((SELECT status FROM prm.journey_instance WHERE id = :inst4), 'cancelled', 'cancel: cancelled');
SELECT throws_ok(format('SELECT prm.cancel_journey_instance(%s, %s)', :org, :inst4), '55000', NULL, 'cancel: twice');

-- ---------- update_journey ----------
SELECT throws_ok(format('SELECT prm.update_journey(%s, %s, NULL)', :org, :j), '22004', NULL, 'update: NULL settings');
SELECT throws_ok(format('SELECT prm.update_journey(%s, %s, ''{"active": 1}'')', :org, :j), '22023', NULL, 'update: malformed active');
SELECT throws_ok(format('SELECT prm.update_journey(%s, %s, ''{"active": false}'')', :org, :jb), 'P0002', NULL, 'update: another org''s journey');
SELECT throws_ok(format('SELECT prm.update_journey(%s, %s, ''{"trigger_event": "nope"}'')', :org, :j), '22023', NULL, 'update: unknown trigger');
SELECT lives_ok(format('SELECT prm.update_journey(%s, %s, ''{"active": false}'')', :org, :j), 'update: deactivated');
SELECT prm.book_appointment(:org, :pat3, :prov, now() + interval '8 days', now() + interval '8 days 1 hour') AS appt3 \gset
SELECT is((SELECT count(*)::int FROM prm.journey_instance WHERE patient_id = :pat3 AND status = 'active'), 0, 'an inactive journey enrols nobody');
SELECT throws_ok(format('SELECT prm.start_journey(%s, %s, %s)', :org, :j, :pat3), '55000', NULL, 'start: an inactive journey');

-- ---------- a trigger filter ----------
SELECT prm.create_journey(:org, 'Aftercare', 'appointment_status_changed', '{"trigger_filter": {"status": "fulfilled"}}') AS j2 \gset
SELECT prm.add_journey_stage(:org, :j2, 'Ask', '[{"type": "send", "template": "booked"}]') AS j2s1 \gset
SELECT prm.set_appointment_status(:org, :appt3, 'arrived');
SELECT is((SELECT count(*)::int FROM prm.journey_instance WHERE journey_id = :j2), 0, 'filter: another status enrols nobody');
SELECT prm.set_appointment_status(:org, :appt3, 'fulfilled');
SELECT is((SELECT count(*)::int FROM prm.journey_instance WHERE journey_id = :j2 AND patient_id = :pat3), 1, 'filter: the matching status enrols');

-- ---------- moving and retiring stages ----------
SELECT prm.add_journey_stage(:org, :j2, 'Second') AS j2s2 \gset
SELECT prm.add_journey_stage(:org, :j2, 'Third') AS j2s3 \gset
SELECT throws_ok(format('SELECT prm.move_journey_stage(%s, %s, 0)', :org, :j2s3), '22023', NULL, 'move: position 0');
SELECT throws_ok(format('SELECT prm.move_journey_stage(%s, %s, 4)', :org, :j2s3), '22023', NULL, 'move: beyond the last');
SELECT throws_ok(format('SELECT prm.move_journey_stage(%s, %s, 1)', :org_b, :j2s3), 'P0002', NULL, 'move: another org''s stage');
SELECT lives_ok(format('SELECT prm.move_journey_stage(%s, %s, 1)', :org, :j2s3), 'move: third to first');
SELECT is((SELECT array_agg(id ORDER BY position) FROM prm.journey_stage WHERE journey_id = :j2 AND retired_at IS NULL),
          ARRAY[:j2s3, :j2s1, :j2s2]::bigint[], 'move: renumbered');
SELECT is((SELECT stage_position FROM prm.journey_instance WHERE journey_id = :j2 AND patient_id = :pat3), 2,
          'move: the instance shows its stage''s new position');
SELECT throws_ok(format('SELECT prm.update_journey_stage(%s, %s, ''X'', ''[{"type": "nope"}]'')', :org, :j2s2), '22023', NULL, 'update stage: malformed actions');
SELECT throws_ok(format('SELECT prm.update_journey_stage(%s, %s, ''X'', ''[]'')', :org_b, :j2s2), 'P0002', NULL, 'update stage: another org''s stage');
SELECT throws_ok(format('SELECT prm.update_journey_stage(%s, 999999, ''X'', ''[]'')', :org), 'P0002', NULL, 'update stage: unknown stage');
SELECT throws_ok(format('SELECT prm.update_journey_stage(%s, %s, NULL, ''[]'')', :org, :j2s2), '22004', NULL, 'update stage: NULL name');
SELECT throws_ok(format('SELECT prm.move_journey_stage(%s, %s, NULL)', :org, :j2s2), '22004', NULL, 'move: NULL position');
SELECT throws_ok(format('SELECT prm.retire_journey_stage(%s, %s)', :org_b, :j2s2), 'P0002', NULL, 'retire stage: another org''s stage');
SELECT lives_ok(format('SELECT prm.update_journey_stage(%s, %s, ''Second, renamed'', ''[]'', ''1 hour'')', :org, :j2s2), 'update stage');
SELECT is((SELECT name || '/' || advance_after FROM prm.journey_stage WHERE id = :j2s2), 'Second, renamed/01:00:00', 'update stage: replaced');
-- retire the instance's stage: it moves on to the next one
SELECT is(prm.retire_journey_stage(:org, :j2s1), 1, 'retire stage: its instance moves on');
SELECT is((SELECT stage_id || '/' || stage_position FROM prm.journey_instance WHERE journey_id = :j2 AND patient_id = :pat3),
          :j2s2 || '/2', 'retire stage: in the next stage, renumbered');
SELECT throws_ok(format('SELECT prm.retire_journey_stage(%s, %s)', :org, :j2s1), '55000', NULL, 'retire stage: twice');
-- empty the stage list under the running instance: it completes
SELECT prm.retire_journey_stage(:org, :j2s3);
SELECT prm.retire_journey_stage(:org, :j2s2);
SELECT prm.run_due_jobs();
SELECT is((SELECT status || '/' || end_reason FROM prm.journey_instance WHERE journey_id = :j2 AND patient_id = :pat3),
          'completed/finished', 'an emptied stage list completes the running instance');

-- ---------- segments ----------
SELECT prm.create_journey(:org, 'Recall') AS j3 \gset
SELECT prm.add_journey_stage(:org, :j3, 'Only') AS j3s1 \gset
SELECT throws_ok(format('SELECT prm.start_journey_segment(%s, %s, NULL)', :org, :j3), '22004', NULL, 'segment: NULL');
SELECT throws_ok(format('SELECT prm.start_journey_segment(%s, %s, ARRAY(SELECT generate_series(1, 10001)::bigint))', :org, :j3), '54000', NULL, 'segment: too many');
SELECT throws_ok(format('SELECT prm.start_journey_segment(%s, %s, ARRAY[%s]::bigint[])', :org, :jb, :pat), 'P0002', NULL, 'segment: another org''s journey');
SELECT is(prm.start_journey_segment(:org, :j3, ARRAY[:pat, :pat2, :pat_b, 999999, :pat]::bigint[]), 2,
          'segment: own patients enrolled once, other org''s and unknown skipped');
SELECT is(prm.start_journey_segment(:org, :j3, ARRAY[:pat, :pat3]::bigint[]), 1, 'segment: those already on it skipped');

-- ---------- retire a journey ----------
SELECT is(prm.retire_journey(:org, :j3), 3, 'retire: its active instances are cancelled');
SELECT is((SELECT count(*)::int FROM prm.journey_instance WHERE journey_id = :j3 AND end_reason = 'journey_retired'), 3, 'retire: end_reason');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''Late'')', :org, :j3), '55000', NULL, 'retire: no more stages');
SELECT throws_ok(format('SELECT prm.update_journey(%s, %s, ''{"active": true}'')', :org, :j3), '55000', NULL, 'retire: cannot be reactivated');
SELECT throws_ok(format('SELECT prm.retire_journey(%s, %s)', :org_b, :j3), 'P0002', NULL, 'retire: through another org');
SELECT throws_ok(format('SELECT prm.retire_journey(%s, 999999)', :org), 'P0002', NULL, 'retire: unknown journey');
SELECT throws_ok(format('SELECT prm.cancel_journey_instance(%s, NULL)', :org), '22004', NULL, 'cancel: NULL instance');

-- ---------- export and erasure ----------
SELECT ok(jsonb_array_length(prm.export_patient(:org, :pat)->'journeys') = 3, 'export: the patient''s journeys with their history');
SELECT ok(prm.export_patient(:org, :pat)->'journeys'->0->'history' @> '[{"kind": "entered"}]', 'export: history included');
SELECT prm.update_journey(:org, :j, '{"active": true, "reentry": "never"}');
SELECT prm.add_patient(:org, 'Eve', 'Erased', '+15558091004') AS pat4 \gset
SELECT prm.start_journey(:org, :j, :pat4) AS inst5 \gset
SELECT prm.erase_patient(:org, :pat4);
SELECT is((SELECT status || '/' || end_reason FROM prm.journey_instance WHERE id = :inst5), 'cancelled/patient_erased', 'erasure: cancels the patient''s instances');

-- ---------- tenancy ----------
CREATE ROLE regress_jn_b;
SELECT prm.grant_access('regress_jn_b', :org_b, 'admin');
CREATE ROLE regress_jn_ro;
SELECT prm.grant_access('regress_jn_ro', :org, 'readonly');
SET LOCAL ROLE regress_jn_b;
SELECT is((SELECT count(*)::int FROM prm.journey WHERE org_id = :org), 0, 'tenancy: B reads none of A''s journeys');
SELECT is((SELECT count(*)::int FROM prm.journey_stage WHERE org_id = :org), 0, 'tenancy: B reads none of A''s stages');
SELECT is((SELECT count(*)::int FROM prm.journey_instance WHERE org_id = :org), 0, 'tenancy: B reads none of A''s instances');
SELECT is((SELECT count(*)::int FROM prm.journey_step WHERE org_id = :org), 0, 'tenancy: B reads none of A''s steps');
SELECT is((SELECT count(*)::int FROM prm.journey_history WHERE org_id = :org), 0, 'tenancy: B reads none of A''s history');
SELECT is((SELECT count(*)::int FROM prm.event WHERE org_id = :org), 0, 'tenancy: B reads none of A''s events');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''Mole'')', :org), '42501', NULL, 'tenancy: B cannot create A''s journey');
SELECT throws_ok(format('SELECT prm.add_journey_stage(%s, %s, ''Mole'')', :org, :j), '42501', NULL, 'tenancy: B cannot add A''s stage');
SELECT throws_ok(format('SELECT prm.start_journey(%s, %s, %s)', :org, :j, :pat2), '42501', NULL, 'tenancy: B cannot enrol A''s patient');
SELECT throws_ok(format('SELECT prm.advance_journey(%s, %s)', :org, :inst3), '42501', NULL, 'tenancy: B cannot advance A''s instance');
SELECT throws_ok(format('SELECT prm.retire_journey(%s, %s)', :org, :j), '42501', NULL, 'tenancy: B cannot retire A''s journey');
SELECT throws_ok(format('SELECT prm.advance_journey(%s, %s)', :org_b, :inst3), 'P0002', NULL, 'tenancy: A''s instance through B is unknown');
SELECT throws_ok(format('SELECT prm.start_journey(%s, %s, %s)', :org_b, :jb, :pat), 'P0002', NULL, 'tenancy: A''s patient through B is unknown');
SELECT is((SELECT count(*)::int FROM prm.journey), 1, 'tenancy: B reads its own journey');
RESET ROLE;
SET LOCAL ROLE regress_jn_ro;
SELECT ok((SELECT count(*) FROM prm.journey_history WHERE org_id = :org) > 0, 'readonly: reads its organization''s history');
SELECT throws_ok(format('SELECT prm.create_journey(%s, ''Nope'')', :org), '42501', NULL, 'readonly: cannot create journeys');
SELECT throws_ok(format('SELECT prm.start_journey(%s, %s, %s)', :org, :j, :pat2), '42501', NULL, 'readonly: cannot enrol');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
