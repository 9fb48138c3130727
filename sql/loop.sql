-- The loop helper: a statement_timeout (or a query cancel) that strikes
-- inside one item of a sweep ends the whole call -- it is never swallowed
-- as that item's failure -- and the call's work is rolled back.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS prm CASCADE;
CREATE EXTENSION prm CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
\set VERBOSITY terse
SELECT prm.create_organization('Loop Clinic') AS org \gset
SELECT prm.add_provider(:org, 'Dr Loop') AS dr \gset
-- 300 slots, each with one open offer whose hold ran out a minute ago
WITH p AS (
    INSERT INTO prm.patient (org_id, given_name, family_name, phone)
    SELECT :org, 'P' || g, 'Loop', '+1555' || lpad(g::text, 7, '0') FROM generate_series(1, 300) g
    RETURNING org_id, id),
w AS (INSERT INTO prm.waitlist_entry (org_id, patient_id) SELECT org_id, id FROM p RETURNING org_id, id, patient_id),
s AS (
    INSERT INTO prm.slot (org_id, provider_id, starts_at, ends_at, fill_status)
    SELECT :org, :dr, '2031-01-01 09:00+00'::timestamptz + g * interval '1 hour',
           '2031-01-01 09:30+00'::timestamptz + g * interval '1 hour', 'offering'
      FROM generate_series(1, 300) g RETURNING org_id, id),
ws AS (SELECT w.*, row_number() OVER (ORDER BY w.id) rn FROM w),
ss AS (SELECT s.*, row_number() OVER (ORDER BY s.id) rn FROM s)
INSERT INTO prm.offer (org_id, slot_id, patient_id, waitlist_entry_id, hold_until, batch_no, rank, score_breakdown, token_hash)
SELECT ss.org_id, ss.id, ws.patient_id, ws.id, now() - interval '1 minute', 1, 1, '{}', sha256(uuid_send(gen_random_uuid())) FROM ss JOIN ws USING (rn);
-- each expiry takes 5 ms, so the sweep outlives a 100 ms statement_timeout
CREATE FUNCTION slow_offer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END $$;
CREATE TRIGGER slow_offer BEFORE UPDATE ON prm.offer FOR EACH ROW EXECUTE FUNCTION slow_offer();
SET statement_timeout = '100ms';
SELECT prm.run_due_jobs();
SELECT prm.expire_offers(now());
RESET statement_timeout;
-- nothing of the cancelled calls remains
SELECT count(*) AS still_open FROM prm.offer WHERE status = 'open';
SELECT count(*) AS job_runs_recorded FROM prm.job_run;
-- and without the timeout the same sweep goes through
DROP TRIGGER slow_offer ON prm.offer;
SELECT (prm.run_due_jobs() ->> 'expire_offers')::int AS expired;
DROP FUNCTION slow_offer();
-- a read-only function that fails in a fresh session leaves it writable
\c
SET client_min_messages = warning;
SELECT prm.fill_stats(987654321, now() - interval '1 day', now());
SELECT prm.add_provider(:org, 'Dr After') > 0 AS wrote_after_a_failed_read;
