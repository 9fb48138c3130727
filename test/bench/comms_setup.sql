-- Communications benchmark set-up: an organization with 1,000 patients who
-- gave SMS consent for promotional messages, an own promotional kind, caps
-- high enough that the run measures the checks rather than refusals, and
-- the bare baseline table (prm.outbound_message's columns, no triggers).
\set ON_ERROR_STOP 1
CREATE SCHEMA IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.comms_message;
CREATE TABLE bench.comms_message (LIKE prm.outbound_message INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING INDEXES);
SELECT prm.create_organization('Bench Comms', 'America/New_York') AS org \gset
SELECT prm.configure(:org, '{"quiet_hours": false, "promotional_daily_cap": 100, "promotional_weekly_cap": 500}') IS NOT NULL AS ok \gset
SELECT count(prm.add_patient(:org, 'P', 'N' || g, '+1555900' || lpad(g::text, 4, '0'))) FROM generate_series(1, 1000) g;
SELECT min(id) AS first FROM prm.patient WHERE org_id = :org \gset
SELECT prm.set_template(:org, 'news', '{clinic}: our spring newsletter is out.') IS NOT NULL AS ok \gset
SELECT count(prm.set_consent(:org, id, 'sms', 'promotional', true, 'written')) FROM prm.patient WHERE org_id = :org;
-- the shape test/bench/run.sh gives it, when the comms block runs after others
CREATE TABLE IF NOT EXISTS bench.setting (name text PRIMARY KEY, value text NOT NULL);
INSERT INTO bench.setting VALUES ('comms_org', :'org'), ('comms_first', :'first')
    ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value;
