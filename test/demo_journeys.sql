-- The demo's second act (read by demo.sql): a journey and an appointment
-- reminder answered with "X" -- the booking, its reminder queued, the
-- patient's X cancelling, the freed slot offered to the waitlist, the
-- journey ended by the cancellation, all in one transcript.
\echo
\echo '=== A journey: every booking gets a welcome text and a call from the front desk; a cancellation ends it'
SELECT prm.configure(:org, '{"appointment_reminders": true}') IS NOT NULL AS reminders_on \gset
SELECT prm.create_journey(:org, 'New booking', 'appointment_booked', '{"exit_events": ["appointment_cancelled"]}') AS jrn \gset
SELECT prm.add_journey_stage(:org, :jrn, 'Welcome',
       '[{"type": "send", "template": "booked", "channel": "sms"},
         {"type": "open_ticket", "subject": "Call to welcome the patient", "priority": "normal"}]', '0') AS stage1 \gset
SELECT prm.add_journey_stage(:org, :jrn, 'Day before', '[{"type": "wait", "before_appointment": "24 hours"}]') AS stage2 \gset
SELECT position, name, actions, advance_after FROM prm.journey_stage WHERE journey_id = :jrn ORDER BY position;

\echo '=== Fay books for the day after tomorrow (Gus joins the waitlist): her reminders are queued, the journey enrols her'
SELECT prm.add_patient(:org, 'Fay', 'Tran', '0417 000 444') AS fay, prm.add_patient(:org, 'Gus', 'Ray', '0418 000 555') AS gus \gset
SELECT prm.join_waitlist(:org, :gus) AS w_gus \gset
SELECT prm.book_appointment(:org, :fay, :kim, date_trunc('day', now()) + interval '3 days 11 hours',
                            date_trunc('day', now()) + interval '3 days 11 hours 30 minutes') AS appt_fay \gset
SELECT r.remind_before, to_char(r.due_at, 'Dy DD Mon HH24:MI') AS due, m.status, m.body
  FROM prm.appointment_reminder r JOIN prm.outbound_message m ON m.org_id = r.org_id AND m.id = r.message_id
 WHERE r.appointment_id = :appt_fay ORDER BY r.remind_before DESC;
SELECT id AS instance, status, stage_position, entered_by FROM prm.journey_instance WHERE patient_id = :fay;
\echo '=== The worker runs the journey''s first stage by itself (a text queued, a ticket opened), then waits until 24 hours before'
SELECT prm.run_due_jobs() IS NOT NULL AS ran \gset
DO $$ BEGIN  -- the worker may have taken it first: wait for its commit
  FOR i IN 1 .. 100 LOOP
    EXIT WHEN (SELECT stage_position = 2 FROM prm.journey_instance i JOIN prm.patient p ON p.id = i.patient_id
                WHERE p.given_name = 'Fay');
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
SELECT kind, stage, detail - 'stage_id' AS detail FROM prm.journey_history WHERE patient_id = :fay ORDER BY step_id;

\echo '=== Time passes: the 24-hour reminder is due; the sender sends what is due (with the welcome text)'
UPDATE prm.outbound_message m SET not_before = now() FROM prm.appointment_reminder r
 WHERE m.org_id = r.org_id AND m.id = r.message_id AND r.appointment_id = :appt_fay AND r.remind_before = interval '24 hours';
CREATE TEMP TABLE claimed_now AS SELECT c.id, c.lease_token, c.to_address, c.kind, c.body FROM prm.claim_messages('sms', 50, '60 seconds') c;
SELECT to_address AS "to", kind, body FROM claimed_now ORDER BY id;
SELECT count(*) AS sent FROM (SELECT prm.mark_message_sent(id, 'SMr' || id, lease_token) FROM claimed_now) x;
\echo '=== Fay answers "X": the appointment is cancelled, its slot offered to the waitlist at once'
SELECT prm.handle_inbound_sms('+61290000001', '+61417000444', 'X', 'SMin9') AS reply_to_fay;
SELECT a.id, to_char(a.starts_at, 'Dy DD Mon HH24:MI') AS starts, a.status, a.cancel_reason
  FROM prm.appointment a WHERE a.id = :appt_fay;
SELECT s.id AS slot, to_char(s.starts_at, 'Dy DD Mon HH24:MI') AS starts, s.fill_status,
       (SELECT string_agg(p.given_name || ' (' || o.status || ')', ', ' ORDER BY o.rank DESC)
          FROM prm.offer o JOIN prm.patient p ON p.org_id = o.org_id AND p.id = o.patient_id WHERE o.slot_id = s.id) AS offered_to
  FROM prm.slot s WHERE s.starts_at = (SELECT starts_at FROM prm.appointment WHERE id = :appt_fay);
\echo '=== ...her other reminder withdrawn, and the cancellation ended her journey'
SELECT r.remind_before, r.status FROM prm.appointment_reminder r WHERE r.appointment_id = :appt_fay ORDER BY r.remind_before DESC;
SELECT id AS instance, status, end_reason FROM prm.journey_instance WHERE patient_id = :fay;
