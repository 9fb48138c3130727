-- The loop helper and the sweeps built on it: a cancel or statement_timeout
-- inside an item ends the call (never swallowed as an item's failure); an
-- item's own error is rolled back alone, reported, and backs that slot off
-- alone; a sweep holds a bounded number of subtransactions.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(14);
SET LOCAL timezone = 'UTC';

SELECT prm.create_organization('Clinic A', 'UTC', '+15558002001') AS org_a \gset
SELECT prm.create_organization('Clinic B', 'UTC', '+15558002002') AS org_b \gset
SELECT prm.add_provider(:org_a, 'Dr A') AS prov_a \gset
SELECT prm.add_provider(:org_b, 'Dr B') AS prov_b \gset

-- n slots per organization, each with one open offer whose hold ran out
CREATE FUNCTION pg_temp.expired_offers(org bigint, prov bigint, n int) RETURNS void LANGUAGE sql AS $$
    WITH p AS (
        INSERT INTO prm.patient (org_id, given_name, family_name, phone)
        SELECT org, 'P' || g, 'Loop', '+1555' || lpad((org * 100000 + g)::text, 7, '0')
          FROM generate_series(1, n) g RETURNING org_id, id),
    w AS (
        INSERT INTO prm.waitlist_entry (org_id, patient_id) SELECT org_id, id FROM p RETURNING org_id, id, patient_id),
    s AS (
        INSERT INTO prm.slot (org_id, provider_id, starts_at, ends_at, fill_status)
        SELECT org, prov, '2031-01-01 09:00+00'::timestamptz + g * interval '1 hour',
               '2031-01-01 09:30+00'::timestamptz + g * interval '1 hour', 'offering'
          FROM generate_series(1, n) g RETURNING org_id, id),
    ws AS (SELECT w.*, row_number() OVER (ORDER BY w.id) rn FROM w),
    ss AS (SELECT s.*, row_number() OVER (ORDER BY s.id) rn FROM s)
    INSERT INTO prm.offer (org_id, slot_id, patient_id, waitlist_entry_id, hold_until, batch_no, rank, score_breakdown, token_hash)
    SELECT ss.org_id, ss.id, ws.patient_id, ws.id, now() - interval '1 minute', 1, 1, '{}', sha256(uuid_send(gen_random_uuid()))
      FROM ss JOIN ws USING (rn);
$$;
SELECT pg_temp.expired_offers(:org_a, :prov_a, 300);
SELECT pg_temp.expired_offers(:org_b, :prov_b, 1);

-- 1. running out of resources inside an item is not an item's failure
-- (cancels and statement_timeout, which PL/pgSQL and so pgTAP cannot catch,
-- are shown in sql/loop.sql)
CREATE FUNCTION pg_temp.out_of_memory() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'out of memory' USING ERRCODE = '53200'; END $$;
CREATE TRIGGER loop_oom BEFORE UPDATE ON prm.offer FOR EACH ROW EXECUTE FUNCTION pg_temp.out_of_memory();
SELECT throws_ok('SELECT prm.run_due_jobs()', '53200', NULL,
                 'run_due_jobs: out of memory inside a step ends the call');
SELECT throws_ok('SELECT prm.expire_offers(now())', '53200', NULL,
                 'expire_offers: out of memory inside one slot is re-raised, not skipped');
DROP TRIGGER loop_oom ON prm.offer;

-- 2. an item's own error: that slot alone is rolled back, reported and backed off
CREATE FUNCTION pg_temp.broken_slot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.slot_id = (SELECT min(id) FROM prm.slot WHERE org_id = NEW.org_id) AND NEW.org_id = current_setting('loop.org')::bigint THEN
        RAISE EXCEPTION 'broken template' USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$;
SELECT set_config('loop.org', :'org_a', true);
CREATE TRIGGER loop_broken BEFORE UPDATE ON prm.offer FOR EACH ROW EXECUTE FUNCTION pg_temp.broken_slot();
SELECT is((prm.run_due_jobs() ->> 'expire_offers')::int, 300, 'the sweep expired the holds of every other slot');
SELECT matches((SELECT last_error FROM prm.job_run WHERE job = 'expire_offers'),
               '^slot [0-9]+ of organization ' || :org_a || ': broken template$',
               'the failing slot is recorded as the step''s error');
SELECT is((SELECT count(*) FROM prm.offer WHERE status = 'open')::int, 1, 'every other hold expired, the broken slot''s stays open');
SELECT is((SELECT count(*) FROM prm.offer WHERE org_id = :org_b AND status = 'expired')::int, 1, 'the other organization''s hold expired');
SELECT ok((SELECT sweep_failures = 1 AND sweep_retry_at > now() FROM prm.slot WHERE org_id = :org_a AND id = (SELECT min(id) FROM prm.slot WHERE org_id = :org_a)),
          'the failing slot backs off alone');
SELECT is((SELECT count(*) FROM prm.slot WHERE sweep_failures > 0)::int, 1, 'no other slot is marked');

-- 3. bounded subtransactions: 301 slots did not take 301 subtransactions;
-- every subtransaction that wrote has an xid of its own, seen as xmin (the
-- 300 were expired by the one statement above)
SELECT cmp_ok((SELECT count(DISTINCT xmin::text) FROM prm.offer WHERE status = 'expired')::int, '<=', 48,
              'the sweep wrote its 300 slots in at most 48 subtransactions');
SELECT cmp_ok((SELECT count(DISTINCT xmin::text) FROM prm.offer WHERE status = 'expired')::int, '>=', 2,
              'and the slots were not all in one (a failing group is redone item by item)');

-- 4. while backing off, the slot is passed over, and it is not a deadline in the past
SELECT is((prm.run_due_jobs() ->> 'expire_offers')::int, 0, 'the next sweep passes the backed-off slot over');
SELECT ok(prm.next_deadline() > now(), 'the back-off moves the deadline: nothing is due now');
DROP TRIGGER loop_broken ON prm.offer;
UPDATE prm.slot SET sweep_retry_at = now() - interval '1 second' WHERE sweep_failures > 0;
-- the budget is a statement's: this suite is one long transaction, and a
-- new statement sweeps again (a long transaction never sees sweeps go idle)
SELECT is((prm.run_due_jobs() ->> 'expire_offers')::int, 1,
          'after its back-off the mended slot is expired, in a later statement of the same transaction');
SELECT ok((SELECT sweep_failures = 0 AND sweep_retry_at IS NULL FROM prm.slot WHERE org_id = :org_a AND id = (SELECT min(id) FROM prm.slot WHERE org_id = :org_a)),
          'and its failures are forgotten');

SELECT * FROM finish();
ROLLBACK;
