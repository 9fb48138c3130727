-- Metrics: prm.metrics reports the outbox, offers, fills, conversations and
-- the time-driven steps, one row per metric and labels; pg_monitor reads it,
-- no tenant level does (it spans organizations).
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(9);
SET LOCAL timezone = 'UTC';

CREATE ROLE regress_metrics_exporter IN ROLE pg_monitor;
CREATE ROLE regress_metrics_readonly;

SELECT prm.create_organization('Metered', 'UTC', '+15558004400') AS org \gset
SELECT prm.create_organization('Other', 'UTC', '+15558004401') AS org_b \gset
SELECT prm.configure(:org, '{"quiet_hours": false}') IS NOT NULL AS configured \gset
SELECT prm.grant_access('regress_metrics_readonly', :org, 'readonly');
SELECT prm.enqueue_message(:org, 'sms', '+15558004455', 'one') > 0 AS q1 \gset
SELECT prm.enqueue_message(:org, 'sms', '+15558004456', 'two') > 0 AS q2 \gset
SELECT prm.enqueue_message(:org, 'email', 'a@example.org', 'three') > 0 AS q3 \gset
SELECT prm.enqueue_message(:org_b, 'sms', '+15558004457', 'other') > 0 AS q4 \gset
SELECT prm.run_due_jobs() IS NOT NULL AS ran \gset

SELECT is((SELECT value FROM prm.metrics WHERE metric = 'outbox_messages' AND org_id = :org AND channel = 'sms' AND status = 'queued'),
          2::double precision, 'queue depth per organization, channel and status');
SELECT is((SELECT value FROM prm.metrics WHERE metric = 'outbox_messages' AND org_id = :org_b AND channel = 'sms'),
          1::double precision, 'each organization labelled apart');
SELECT ok((SELECT value FROM prm.metrics WHERE metric = 'outbox_oldest_due_seconds' AND org_id = :org AND channel = 'sms') >= 0,
          'the age of the oldest due message');
SELECT is((SELECT count(*)::int FROM prm.metrics WHERE metric = 'job_failed'), (SELECT count(*)::int FROM prm.job_run),
          'one failure gauge per time-driven step');
SELECT is((SELECT sum(value) FROM prm.metrics WHERE metric = 'job_failed'), 0::double precision, 'no step failed');
SELECT is((SELECT count(*)::int FROM prm.metrics WHERE value IS NULL), 0, 'every row has a value');

SET LOCAL ROLE regress_metrics_exporter;
SELECT ok((SELECT count(*) FROM prm.metrics) > 0, 'a pg_monitor member reads the metrics');
RESET ROLE;
SET LOCAL ROLE regress_metrics_readonly;
SELECT throws_ok('SELECT * FROM prm.metrics', '42501', NULL, 'a tenant role cannot: the view spans organizations');
RESET ROLE;
SELECT is(has_table_privilege('regress_metrics_readonly', 'prm.metrics', 'SELECT'), false, 'grant_access does not grant it');

SELECT * FROM finish();
ROLLBACK;
