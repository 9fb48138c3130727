-- Appointment reminders: a booking queues one outbound message per offset
-- (none whose time has passed), a cancellation withdraws them, a moved
-- appointment gets them again for its new time; quiet hours move a reminder
-- earlier; C confirms and X cancels (the freed slot is offered at once) only
-- while a reminder is pending; CANCEL stays an opt-out; no patient or
-- clinical detail in the text; bad settings; another organization's roles.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(53);
SET LOCAL timezone = 'UTC';

CREATE ROLE regress_rem_staff;
CREATE ROLE regress_rem_other;

SELECT prm.create_organization('Clinic R', 'UTC', '+15558070000') AS org \gset
SELECT prm.create_organization('Other R', 'UTC', '+15558079999') AS org_b \gset
SELECT prm.grant_access('regress_rem_staff', :org, 'staff');
SELECT prm.grant_access('regress_rem_other', :org_b, 'staff');
SELECT prm.add_provider(:org, 'Dr Remind') AS dr \gset
SELECT prm.add_provider(:org_b, 'Dr B') AS dr_b \gset
SELECT prm.add_patient(:org, 'Rita', 'Rem', '+15558071001') AS rita \gset
SELECT prm.add_patient(:org, 'Carl', 'Conf', '+15558071002') AS carl \gset
SELECT prm.add_patient(:org, 'Xena', 'Cxl', '+15558071003') AS xena \gset
SELECT prm.add_patient(:org, 'Will', 'Wait', '+15558071004') AS will \gset
SELECT prm.add_patient(:org, 'Opal', 'Out', '+15558071005') AS opal \gset
SELECT prm.add_patient(:org_b, 'Bea', 'B', '+15558079001') AS bea \gset
-- the hour three days ahead, on the hour
SELECT date_trunc('hour', now()) + interval '3 days' AS t \gset

-- 1. settings
SELECT is(prm.settings(:org) -> 'appointment_reminders', 'false'::jsonb, 'reminders are off until an organization turns them on');
SELECT is(prm.settings(:org) ->> 'reminder_offsets', '24 hours,2 hours', 'default offsets: 24 and 2 hours before');
SELECT is(prm.settings(:org) ->> 'reminder_channel', 'sms', 'default channel: SMS');
SELECT prm.book_appointment(:org, :rita, :dr, :'t'::timestamptz - interval '1 day', :'t'::timestamptz - interval '23 hours') AS appt_off \gset
SELECT is((SELECT count(*)::int FROM prm.appointment_reminder WHERE org_id = :org), 0, 'with reminders off a booking queues none');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"reminder_offsets": "24 hours,24 hours"}'), '22023', NULL, 'an offset given twice is refused');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"reminder_offsets": "2 weeks"}'), '22023', NULL, 'an unknown unit is refused');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"reminder_offsets": "1 minute"}'), '22023', NULL, 'an offset under 5 minutes is refused');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"reminder_offsets": "31 days"}'), '22023', NULL, 'an offset over 30 days is refused');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"reminder_offsets": "-2 hours"}'), '22023', NULL, 'a negative offset is refused');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"reminder_offsets": "soon"}'), '22023', NULL, 'a word is refused');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"reminder_offsets": "1 day,2 days,3 days,4 days,5 days,6 days"}'), '22023', NULL, 'more than 5 offsets are refused');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"reminder_channel": "voice"}'), '22023', NULL, 'a reminder channel other than sms or email is refused');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"appointment_reminders": "yes"}'), '22023', NULL, 'appointment_reminders is a boolean');
SELECT is(prm.configure(:org, '{"appointment_reminders": true, "quiet_hours": false, "reminder_offsets": "1 day, 2 h"}') ->> 'reminder_offsets',
          '1 day, 2 h', 'offsets in other words are accepted');
SELECT prm.configure(:org, '{"reminder_offsets": null}') IS NOT NULL AS ok \gset
SELECT is(prm.settings(:org) ->> 'reminder_offsets', '24 hours,2 hours', 'reset to the default');

-- 2. booking schedules them
SELECT prm.book_appointment(:org, :rita, :dr, :'t', :'t'::timestamptz + interval '30 minutes') AS appt \gset
SELECT results_eq(format('SELECT r.due_at, m.not_before, m.kind, m.status FROM prm.appointment_reminder r JOIN prm.outbound_message m ON m.id = r.message_id WHERE r.appointment_id = %s ORDER BY r.due_at', :appt),
                  format('VALUES (%L::timestamptz - interval ''24 hours'', %L::timestamptz - interval ''24 hours'', ''appointment_reminder''::text, ''queued''::text), (%L::timestamptz - interval ''2 hours'', %L::timestamptz - interval ''2 hours'', ''appointment_reminder'', ''queued'')', :'t', :'t', :'t', :'t'),
                  'a booking queues two reminders, 24 and 2 hours before, as outbox deadlines');
SELECT is((SELECT body FROM prm.outbound_message m JOIN prm.appointment_reminder r ON m.id = r.message_id WHERE r.appointment_id = :appt LIMIT 1),
          format('Clinic R: reminder of your appointment on %s at %s. Reply C to confirm or X to cancel.',
                 to_char(:'t'::timestamptz, 'Dy FMDD Mon'), to_char(:'t'::timestamptz, 'HH24:MI')),
          'the text: clinic, date and time, and C or X to answer');
SELECT ok((SELECT bool_and(body NOT LIKE '%Rita%' AND body NOT LIKE '%Rem%' AND body NOT LIKE '%Dr %' AND body NOT LIKE '%CANCEL%')
             FROM prm.outbound_message WHERE kind = 'appointment_reminder'), 'no patient name, no provider, and never the opt-out word CANCEL');
SELECT is(prm.schedule_reminders(:org, :appt), 0, 'scheduling again queues nothing');
SELECT is((SELECT count(*)::int FROM prm.appointment_reminder WHERE appointment_id = :appt), 2, 'and keeps two');
SELECT prm.book_appointment(:org, :rita, :dr, date_trunc('minute', now()) + interval '3 hours', date_trunc('minute', now()) + interval '3 hours 20 minutes') AS appt_soon \gset
SELECT is((SELECT array_agg(remind_before) FROM prm.appointment_reminder WHERE appointment_id = :appt_soon), ARRAY[interval '2 hours'],
          'an appointment in 3 hours gets only its 2-hour reminder: the 24-hour one has passed');
SELECT prm.book_appointment(:org, :rita, :dr, date_trunc('minute', now()) + interval '90 minutes', date_trunc('minute', now()) + interval '100 minutes') AS appt_sooner \gset
SELECT is((SELECT count(*)::int FROM prm.appointment_reminder WHERE appointment_id = :appt_sooner), 0, 'an appointment in 90 minutes gets none');

-- 3. cancelling withdraws them
SELECT prm.cancel_appointment(:org, :appt, 'patient called') AS slot_a \gset
SELECT is((SELECT array_agg(DISTINCT status) FROM prm.appointment_reminder WHERE appointment_id = :appt), ARRAY['withdrawn'], 'a cancellation withdraws the reminders');
SELECT is((SELECT array_agg(DISTINCT m.status) FROM prm.outbound_message m JOIN prm.appointment_reminder r ON m.id = r.message_id WHERE r.appointment_id = :appt),
          ARRAY['cancelled'], 'and cancels their queued messages');
SELECT prm.set_appointment_status(:org, :appt_soon, 'entered-in-error');
SELECT is((SELECT status FROM prm.appointment_reminder WHERE appointment_id = :appt_soon), 'withdrawn', 'an appointment entered in error loses its reminder');

-- 4. a synced appointment that moves is rescheduled
SELECT prm.sync_patients(:org, 'cliniko', '[{"external_id": "s1", "given_name": "Sam", "family_name": "Sync", "phone": "+15558071006"}]') IS NOT NULL AS ok \gset
SELECT prm.sync_appointments(:org, 'cliniko', jsonb_build_array(jsonb_build_object('external_id', 'x1', 'patient_external_id', 's1', 'provider_id', :dr,
       'starts_at', to_char(:'t'::timestamptz + interval '1 day', 'YYYY-MM-DD"T"HH24:MI:SS"+00"'), 'ends_at', to_char(:'t'::timestamptz + interval '1 day 30 minutes', 'YYYY-MM-DD"T"HH24:MI:SS"+00"'), 'status', 'booked'))) IS NOT NULL AS ok \gset
SELECT id AS appt_sync FROM prm.appointment WHERE org_id = :org AND external_id = 'x1' \gset
SELECT is((SELECT count(*)::int FROM prm.appointment_reminder WHERE appointment_id = :appt_sync AND status = 'scheduled'), 2, 'a synced booking gets its reminders');
SELECT prm.sync_appointments(:org, 'cliniko', jsonb_build_array(jsonb_build_object('external_id', 'x1', 'patient_external_id', 's1', 'provider_id', :dr,
       'starts_at', to_char(:'t'::timestamptz + interval '2 days', 'YYYY-MM-DD"T"HH24:MI:SS"+00"'), 'ends_at', to_char(:'t'::timestamptz + interval '2 days 30 minutes', 'YYYY-MM-DD"T"HH24:MI:SS"+00"'), 'status', 'booked'))) IS NOT NULL AS ok \gset
SELECT results_eq(format('SELECT status, count(*)::int FROM prm.appointment_reminder WHERE appointment_id = %s GROUP BY status ORDER BY status', :appt_sync),
                  $$VALUES ('scheduled'::text, 2), ('withdrawn', 2)$$, 'moved: the old reminders withdrawn, two new ones');
SELECT results_eq(format('SELECT due_at FROM prm.appointment_reminder WHERE appointment_id = %s AND status = ''scheduled'' ORDER BY due_at', :appt_sync),
                  format('VALUES (%L::timestamptz + interval ''1 day''), (%L::timestamptz + interval ''46 hours'')', :'t', :'t'),
                  'the new reminders are for the new time');

-- 5. replies: C confirms
SELECT prm.book_appointment(:org, :carl, :dr, :'t'::timestamptz + interval '1 hour', :'t'::timestamptz + interval '90 minutes') AS appt_c \gset
SELECT alike(prm.handle_inbound_sms('+15558070000', '+15558071002', 'C', 'rin-1'), '%did not understand%',
             'C before any reminder went out is not an answer: the hint');
UPDATE prm.outbound_message m SET status = 'sent', sent_at = now() FROM prm.appointment_reminder r
 WHERE m.id = r.message_id AND r.appointment_id = :appt_c AND r.remind_before = interval '24 hours';
SELECT is((SELECT count(*)::int FROM prm.appointment_reminders WHERE appointment_id = :appt_c AND sent), 1, 'the view shows the reminder sent');
SELECT is(prm.handle_inbound_sms('+15558070000', '+15558071002', ' c! ', 'rin-2'),
          format('Clinic R: thank you, your appointment on %s at %s is confirmed.',
                 to_char(:'t'::timestamptz + interval '1 hour', 'Dy FMDD Mon'), to_char(:'t'::timestamptz + interval '1 hour', 'HH24:MI')),
          'C answers a sent reminder: confirmed');
SELECT ok((SELECT confirmed_at IS NOT NULL AND status = 'booked' FROM prm.appointment WHERE id = :appt_c), 'the appointment is marked confirmed (confirmed_at), still booked');
SELECT results_eq(format('SELECT remind_before, status FROM prm.appointment_reminder WHERE appointment_id = %s ORDER BY remind_before', :appt_c),
                  $$VALUES (interval '2 hours', 'scheduled'::text), (interval '24 hours', 'confirmed')$$, 'the answered reminder is confirmed, the later one still goes out');
SELECT is((SELECT count(*)::int FROM prm.event WHERE org_id = :org AND kind = 'appointment_confirmed' AND entity_id = :appt_c), 1, 'an appointment_confirmed event');
SELECT alike(prm.handle_inbound_sms('+15558070000', '+15558071002', 'CONFIRM', 'rin-3'), '%did not understand%',
             'a second C with nothing pending gets the hint');

-- 6. X cancels and the slot is offered to the waitlist at once
SELECT prm.join_waitlist(:org, :will, NULL, true, 0) AS entry_w \gset
SELECT prm.book_appointment(:org, :xena, :dr, :'t'::timestamptz + interval '2 hours', :'t'::timestamptz + interval '150 minutes') AS appt_x \gset
SELECT prm.book_appointment(:org, :will, :dr, :'t'::timestamptz + interval '20 days', :'t'::timestamptz + interval '20 days 30 minutes') AS appt_w \gset
UPDATE prm.outbound_message m SET status = 'delivered', sent_at = now() FROM prm.appointment_reminder r
 WHERE m.id = r.message_id AND r.appointment_id = :appt_x AND r.remind_before = interval '24 hours';
SELECT is(prm.handle_inbound_sms('+15558070000', '+15558071003', 'x', 'rin-4'),
          format('Clinic R: your appointment on %s at %s is cancelled. Reply HELP for help.',
                 to_char(:'t'::timestamptz + interval '2 hours', 'Dy FMDD Mon'), to_char(:'t'::timestamptz + interval '2 hours', 'HH24:MI')),
          'X answers a sent reminder: cancelled');
SELECT is((SELECT status FROM prm.appointment WHERE id = :appt_x), 'cancelled', 'the appointment is cancelled');
SELECT results_eq(format('SELECT remind_before, status FROM prm.appointment_reminder WHERE appointment_id = %s ORDER BY remind_before', :appt_x),
                  $$VALUES (interval '2 hours', 'withdrawn'::text), (interval '24 hours', 'cancelled')$$, 'answered: cancelled; the later one withdrawn');
SELECT is((SELECT o.patient_id FROM prm.offer o JOIN prm.slot s ON s.id = o.slot_id WHERE s.appointment_id = :appt_x), :will::bigint,
          'the freed slot is offered to the waitlist patient at once');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE kind = 'offer' AND patient_id = :will), 1, 'with its offer SMS queued');
SELECT alike(prm.handle_inbound_sms('+15558070000', '+15558071003', 'X', 'rin-5'), '%did not understand%',
             'X again: nothing pending, the hint');

-- 7. CANCEL is an opt-out, not an answer
SELECT prm.book_appointment(:org, :opal, :dr, :'t'::timestamptz + interval '3 hours', :'t'::timestamptz + interval '200 minutes') AS appt_o \gset
UPDATE prm.outbound_message m SET status = 'sent', sent_at = now() FROM prm.appointment_reminder r
 WHERE m.id = r.message_id AND r.appointment_id = :appt_o AND r.remind_before = interval '24 hours';
SELECT alike(prm.handle_inbound_sms('+15558070000', '+15558071005', 'CANCEL', 'rin-6'), '%unsubscribed%', 'CANCEL opts out, even with a reminder pending');
SELECT ok((SELECT sms_opt_out FROM prm.patient WHERE id = :opal) AND (SELECT status FROM prm.appointment WHERE id = :appt_o) = 'booked',
          'the patient is opted out and the appointment stays booked');
SELECT is((SELECT m.status FROM prm.outbound_message m JOIN prm.appointment_reminder r ON m.id = r.message_id
            WHERE r.appointment_id = :appt_o AND r.remind_before = interval '2 hours'), 'cancelled', 'the queued reminder is cancelled by the opt-out');
SELECT prm.book_appointment(:org, :opal, :dr, :'t'::timestamptz + interval '5 days', :'t'::timestamptz + interval '5 days 30 minutes') AS appt_o2 \gset
SELECT is((SELECT count(*)::int FROM prm.appointment_reminder WHERE appointment_id = :appt_o2), 0, 'an opted-out patient gets no reminders');

-- 8. quiet hours move a reminder earlier; offsets are elapsed time across DST
SELECT prm.create_organization('Quiet R', 'America/New_York', '+15558078888') AS org_q \gset
SELECT prm.configure(:org_q, '{"appointment_reminders": true}') IS NOT NULL AS ok \gset
SELECT prm.add_provider(:org_q, 'Dr Q') AS dr_q \gset
SELECT prm.add_patient(:org_q, 'Quin', 'Q', '+15558078001') AS quin \gset
-- 2030-03-10 is the day New York springs forward (02:00 -> 03:00)
SELECT prm.book_appointment(:org_q, :quin, :dr_q, '2030-03-10 09:00 America/New_York', '2030-03-10 09:30 America/New_York') AS appt_q \gset
SELECT results_eq(format('SELECT (due_at AT TIME ZONE ''America/New_York'')::text FROM prm.appointment_reminder WHERE appointment_id = %s ORDER BY due_at', :appt_q),
                  $$VALUES ('2030-03-09 08:00:00'), ('2030-03-09 20:59:00')$$,
                  '24 hours before is 08:00 the day before (a 23-hour day); 2 hours before (07:00, quiet) moves to 20:59 the evening before');

-- e-mail reminders: to the patient's address, not held by quiet hours (SMS only)
SELECT prm.configure(:org_q, '{"reminder_channel": "email"}') IS NOT NULL AS ok \gset
SELECT prm.add_patient(:org_q, 'Emma', 'Mail', '+15558078002', 'emma@example.org') AS emma \gset
SELECT prm.book_appointment(:org_q, :emma, :dr_q, '2030-04-10 08:30 America/New_York', '2030-04-10 09:00 America/New_York') AS appt_e \gset
SELECT results_eq(format('SELECT m.channel, m.to_address, (r.due_at AT TIME ZONE ''America/New_York'')::text FROM prm.appointment_reminder r JOIN prm.outbound_message m ON m.id = r.message_id WHERE r.appointment_id = %s ORDER BY r.due_at', :appt_e),
                  $$VALUES ('email'::text, 'emma@example.org'::text, '2030-04-09 08:30:00'), ('email', 'emma@example.org', '2030-04-10 06:30:00')$$,
                  'e-mail reminders go to the patient''s address, at their time even in quiet hours');
SELECT prm.book_appointment(:org_q, :quin, :dr_q, '2030-04-11 10:00 America/New_York', '2030-04-11 10:30 America/New_York') AS appt_noemail \gset
SELECT is((SELECT count(*)::int FROM prm.appointment_reminder WHERE appointment_id = :appt_noemail), 0, 'a patient without an e-mail address gets no e-mail reminders');

-- 9. tenancy
SET LOCAL ROLE regress_rem_other;
SELECT is((SELECT count(*)::int FROM prm.appointment_reminder), 0, 'another organization''s role sees none of its reminders');
SELECT is((SELECT count(*)::int FROM prm.appointment_reminders), 0, 'nor through the view');
SELECT throws_ok(format('SELECT prm.schedule_reminders(%s, %s)', :org, :appt_c), '42501', NULL, 'nor schedules them');
SELECT throws_ok(format('SELECT prm.schedule_reminders(%s, %s)', :org_b, :appt_c), 'P0002', NULL, 'another organization''s appointment is not found in its own');
RESET ROLE;
SET LOCAL ROLE regress_rem_staff;
SELECT ok((SELECT count(*) FROM prm.appointment_reminder) > 0, 'the organization''s staff see its reminders');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
