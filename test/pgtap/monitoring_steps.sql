-- Companion monitoring steps fail per item: an alert whose escalation
-- fails (a caregiver row broken by hand) is logged and retried a minute
-- later, and the other due alerts of the same run are escalated.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(4);
SET LOCAL timezone = 'UTC';

SELECT prm.create_organization('Steps', 'UTC', '+15558060500') AS org \gset
SELECT prm.add_patient(:org, 'Ada', 'A', '+15558061501') AS ada \gset
SELECT prm.add_patient(:org, 'Bo', 'B', '+15558061502') AS bo \gset
SELECT prm.add_caregiver(:org, 'Cy', '+15558062501') AS cy \gset
SELECT prm.add_caregiver(:org, 'Di', '+15558062502') AS di \gset
SELECT prm.link_caregiver(:org, :ada, :cy);
SELECT prm.link_caregiver(:org, :bo, :di);
SELECT prm.set_monitoring(:org, :ada, '{"inactivity_threshold": "1 hour"}') IS NOT NULL AS ok \gset
SELECT prm.set_monitoring(:org, :bo, '{"inactivity_threshold": "1 hour"}') IS NOT NULL AS ok \gset
-- Cy's preferences broken behind prm's back: telling Cy fails
UPDATE prm.caregiver SET preferences = jsonb_set(preferences, '{quiet_hours,start}', '"noon"') WHERE id = :cy;
UPDATE prm.patient SET last_heartbeat_at = now() - interval '2 hours' WHERE id IN (:ada, :bo);
UPDATE prm.monitoring SET next_due_at = now() - interval '1 second', started_at = now() - interval '2 hours';
SELECT is(prm.run_due_jobs() -> 'monitor_alerts', '1'::jsonb, 'the step goes on past the failing patient');
SELECT is((SELECT count(*)::int FROM prm.alert_notification WHERE caregiver_id = :di AND purpose = 'alert'), 1, 'Bo''s caregiver is told');
SELECT is((SELECT count(*)::int FROM prm.alert WHERE patient_id = :ada), 0, 'Ada''s alert was rolled back alone');
SELECT is((SELECT next_due_at FROM prm.monitoring WHERE patient_id = :ada), now() + interval '1 minute', 'and is tried again a minute later');

SELECT * FROM finish();
ROLLBACK;
