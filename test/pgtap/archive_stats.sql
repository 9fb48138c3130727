-- Archiving moves finished outbound messages to the history without
-- recomputing patient statistics (the move changes none of them), and the
-- statistics still equal a rebuild from scratch.  Deletes and inserts that
-- are not the archive's move are still recomputed.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(11);
SET LOCAL timezone = 'UTC';
-- count the writes of statistics rows in this transaction: every patient
-- whose figures a statement changes gets its row updated once
CREATE TEMP VIEW recomputes AS
SELECT coalesce((SELECT n_tup_upd + n_tup_ins FROM pg_stat_xact_user_tables
                  WHERE relid = 'prm.patient_stats'::regclass), 0) AS n;
CREATE TEMP VIEW stats AS
SELECT patient_id, total_appointments, completed_visits, cancellations, no_shows, first_visit_at, last_visit_at,
       next_appointment_at, revenue, avg_days_between_visits, messages_out, messages_in, replied_out,
       last_outbound_at, last_inbound_at, engagement_level, churn_risk
  FROM prm.patient_stats WHERE org_id = (SELECT id FROM prm.organization WHERE name = 'Archive Clinic');

SELECT prm.create_organization('Archive Clinic', 'UTC', '+15558090000') AS org \gset
SELECT prm.configure(:org, '{"quiet_hours": false}') IS NOT NULL AS ok \gset
SELECT prm.add_patient(:org, 'Pat' || g, 'Archive', '+1555809100' || g) FROM generate_series(1, 3) g;
SELECT prm.enqueue_message(:org, 'sms', p.phone, 'hello ' || g, p.id)
  FROM prm.patient p, generate_series(1, 4) g WHERE p.org_id = :org;
SELECT prm.handle_inbound_sms('+15558090000', '+15558091001', 'thanks', 'arch-in-1') IS NOT NULL AS ok \gset
-- finished two days ago: due for the history
UPDATE prm.outbound_message SET status = 'delivered', updated_at = now() - interval '2 days' WHERE org_id = :org;

SELECT is((SELECT sum(messages_out)::int FROM prm.patient_stats WHERE org_id = :org), 12, 'before: twelve messages out');
CREATE TEMP TABLE before AS SELECT * FROM prm.patient_stats WHERE org_id = :org;
SELECT n AS calls_before FROM recomputes \gset

SELECT is((prm.run_due_jobs() ->> 'archive_messages')::int, 12, 'run_due_jobs archives the twelve messages');
SELECT is((SELECT count(*)::int FROM prm.outbound_message_history WHERE org_id = :org), 12, 'they are in the history');
SELECT is((SELECT n FROM recomputes) - :calls_before, 0::bigint, 'archiving recomputed no patient');
SELECT set_eq('SELECT * FROM prm.patient_stats', 'SELECT * FROM before', 'patient_stats untouched, computed_at and all');

-- the figures are what a rebuild from scratch gives
CREATE TEMP TABLE kept AS SELECT * FROM stats;
SELECT is(prm.rebuild_patient_stats(:org), 3::bigint, 'rebuild from scratch');
SELECT set_eq('SELECT * FROM stats', 'SELECT * FROM kept', 'the archived statistics equal the rebuilt ones');
SELECT is((SELECT sum(messages_out)::int FROM stats), 12, 'twelve messages out, now from the history');

-- anything but the archive's move is recomputed as before
SELECT n AS calls_before FROM recomputes \gset
DELETE FROM prm.outbound_message_history WHERE org_id = :org AND body = 'hello 1';
SELECT ok((SELECT n FROM recomputes) - :calls_before > 0, 'a delete from the history recomputes');
SELECT is((SELECT sum(messages_out)::int FROM stats), 9, 'and counts three messages fewer');
INSERT INTO prm.outbound_message_history (org_id, id, channel, to_address, body, status, created_at, kind, patient_id)
SELECT :org, 900000 + p.id, 'sms', p.phone, 'restored', 'delivered', now() - interval '3 days', 'other', p.id
  FROM prm.patient p WHERE p.org_id = :org;
SELECT is((SELECT sum(messages_out)::int FROM stats), 12, 'an insert into the history outside archiving (a restore) counts');

SELECT * FROM finish();
ROLLBACK;
