-- Least privilege: PUBLIC executes no prm function; each access level gets
-- EXECUTE on exactly the functions it needs; revoke_access takes back only
-- what prm granted; BYPASSRLS roles are refused; trigger functions refuse
-- any relation but their own; a NULL lease token is an admin's override.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(50);
SET LOCAL timezone = 'UTC';

CREATE ROLE regress_lp_none;
CREATE ROLE regress_lp_sender;
CREATE ROLE regress_lp_webhook;
CREATE ROLE regress_lp_readonly;
CREATE ROLE regress_lp_staff;
CREATE ROLE regress_lp_admin;
CREATE ROLE regress_lp_dba;
CREATE ROLE regress_lp_bypass BYPASSRLS;

SELECT prm.create_organization('Clinic A', 'UTC', '+15558001001') AS org_a \gset
SELECT prm.create_organization('Clinic B', 'UTC', '+15558001002') AS org_b \gset
SELECT prm.grant_access('regress_lp_sender', :org_a, 'sender');
SELECT prm.grant_access('regress_lp_webhook', :org_a, 'webhook');
SELECT prm.grant_access('regress_lp_readonly', :org_a, 'readonly');
SELECT prm.grant_access('regress_lp_staff', :org_a, 'staff');
SELECT prm.grant_access('regress_lp_admin', :org_a, 'admin');

-- the registry covers every function, and PUBLIC executes none
SELECT set_eq(
    $$SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'prm'::regnamespace$$,
    $$SELECT signature FROM prm.function_level$$,
    'every prm function has its level in prm.function_level');
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p, aclexplode(p.proacl) x
       WHERE p.pronamespace = 'prm'::regnamespace AND x.grantee = 0$$,
    'PUBLIC holds EXECUTE on no prm function');
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p
       WHERE p.pronamespace = 'prm'::regnamespace AND p.proacl IS NULL$$,
    'no prm function keeps the default ACL (which includes PUBLIC)');
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p
       WHERE p.pronamespace = 'prm'::regnamespace
         AND has_function_privilege('regress_lp_none', p.oid, 'EXECUTE')$$,
    'a role with no grant executes no prm function');

-- the execute matrix: the set each level may execute, written out as the
-- rule of the README (staff and admin also do what sender and webhook do)
CREATE TEMP TABLE lp_rule (level text, needs text);
INSERT INTO lp_rule VALUES
    ('sender', 'any'), ('sender', 'sender'), ('sender', 'relay'),
    ('webhook', 'any'), ('webhook', 'webhook'), ('webhook', 'relay'),
    ('readonly', 'any'), ('readonly', 'readonly'),
    ('staff', 'any'), ('staff', 'sender'), ('staff', 'webhook'), ('staff', 'relay'), ('staff', 'readonly'), ('staff', 'staff'),
    ('admin', 'any'), ('admin', 'sender'), ('admin', 'webhook'), ('admin', 'relay'), ('admin', 'readonly'), ('admin', 'staff'), ('admin', 'admin');
GRANT SELECT ON lp_rule TO PUBLIC;
SELECT set_eq(
    format($$SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'prm'::regnamespace
               AND has_function_privilege(%L, p.oid, 'EXECUTE')$$, 'regress_lp_' || l),
    format($$SELECT f.signature FROM prm.function_level f JOIN lp_rule r ON r.needs = f.level WHERE r.level = %L$$, l),
    l || ' executes exactly the functions of its level')
  FROM unnest(ARRAY['sender', 'webhook', 'readonly', 'staff', 'admin']) l;
-- pinned by name, so the registry itself cannot drift unnoticed
SELECT ok(has_function_privilege('regress_lp_sender', 'prm.claim_messages(text,integer,interval)', 'EXECUTE')
          AND NOT has_function_privilege('regress_lp_sender', 'prm.handle_inbound_sms(text,text,text,text)', 'EXECUTE')
          AND NOT has_function_privilege('regress_lp_sender', 'prm.add_patient(bigint,text,text,text,text,text)', 'EXECUTE'),
          'sender: claims, but no webhook and no clinic work');
SELECT ok(has_function_privilege('regress_lp_webhook', 'prm.handle_inbound_sms(text,text,text,text)', 'EXECUTE')
          AND has_function_privilege('regress_lp_webhook', 'prm.accept_offer(uuid)', 'EXECUTE')
          AND NOT has_function_privilege('regress_lp_webhook', 'prm.claim_messages(text,integer,interval)', 'EXECUTE'),
          'webhook: inbound SMS and links, no claims');
SELECT ok(has_function_privilege('regress_lp_readonly', 'prm.fill_stats(bigint,timestamptz,timestamptz)', 'EXECUTE')
          AND NOT has_function_privilege('regress_lp_readonly', 'prm.fill_slot(bigint,bigint)', 'EXECUTE'),
          'readonly: analytics, no fills');
SELECT ok(has_function_privilege('regress_lp_staff', 'prm.fill_slot(bigint,bigint)', 'EXECUTE')
          AND NOT has_function_privilege('regress_lp_staff', 'prm.configure(bigint,jsonb)', 'EXECUTE')
          AND NOT has_function_privilege('regress_lp_staff', 'prm.erase_patient(bigint,bigint)', 'EXECUTE'),
          'staff: fills, no settings and no erasure');
SELECT ok(has_function_privilege('regress_lp_admin', 'prm.configure(bigint,jsonb)', 'EXECUTE')
          AND has_function_privilege('regress_lp_admin', 'prm.grant_access(regrole,bigint,text)', 'EXECUTE'),
          'admin: settings and access');
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc p JOIN prm.function_level f ON f.signature = p.oid::regprocedure::text
       WHERE f.level = 'none'
         AND (has_function_privilege('regress_lp_admin', p.oid, 'EXECUTE')
              OR has_function_privilege('regress_lp_staff', p.oid, 'EXECUTE'))$$,
    'cluster-wide jobs and trigger functions: no level executes them');
SELECT ok(NOT has_function_privilege('regress_lp_admin', 'prm.run_due_jobs()', 'EXECUTE')
          AND NOT has_function_privilege('regress_lp_admin', 'prm.create_organization(text,text,text)', 'EXECUTE')
          AND NOT has_function_privilege('regress_lp_admin', 'prm.waitlist_entry_score_trigger()', 'EXECUTE'),
          'run_due_jobs, create_organization and trigger functions are privileged only');

-- calls: stopped by EXECUTE before the function runs
SET LOCAL ROLE regress_lp_none;
SELECT throws_ok(format('SELECT prm.fill_stats(%s, now() - interval %L, now())', :org_a, '1 day'), '42501', NULL, 'no grant: refused');
SELECT throws_ok('SELECT prm.next_deadline()', '42501', NULL, 'no grant: next_deadline refused');
SELECT throws_ok($$SELECT prm.handle_inbound_sms('+15558001001', '+15559234567', 'YES', 'x1')$$, '42501', NULL, 'no grant: webhook refused');
RESET ROLE;
SET LOCAL ROLE regress_lp_staff;
SELECT throws_ok('SELECT prm.next_deadline()', '42501', NULL, 'staff: next_deadline (every clinic''s holds) refused');
SELECT lives_ok(format('SELECT prm.add_provider(%s, %L)', :org_a, 'Dr A'), 'staff: clinic work allowed');
SELECT throws_ok(format('SELECT prm.add_provider(%s, %L)', :org_b, 'Dr B'), '42501', NULL, 'staff of A: B refused by the check inside');
RESET ROLE;

-- revoke_access takes back only what prm granted
GRANT SELECT ON prm.slot TO regress_lp_dba;
GRANT EXECUTE ON FUNCTION prm.normalize_phone(text, text) TO regress_lp_dba;
SELECT prm.grant_access('regress_lp_dba', :org_a, 'readonly');
SELECT prm.grant_access('regress_lp_dba', :org_b, 'staff');
SELECT ok(has_function_privilege('regress_lp_dba', 'prm.fill_slot(bigint,bigint)', 'EXECUTE'), 'staff on B: fill_slot');
SELECT is(prm.revoke_access('regress_lp_dba', :org_b), true, 'revoke B');
SELECT ok(NOT has_function_privilege('regress_lp_dba', 'prm.fill_slot(bigint,bigint)', 'EXECUTE')
          AND has_function_privilege('regress_lp_dba', 'prm.fill_stats(bigint,timestamptz,timestamptz)', 'EXECUTE')
          AND has_table_privilege('regress_lp_dba', 'prm.offer', 'SELECT'),
          'after revoking B: A''s readonly privileges remain, staff ones are gone');
SELECT is(prm.revoke_access('regress_lp_dba', :org_a), true, 'revoke A');
SELECT ok(has_table_privilege('regress_lp_dba', 'prm.slot', 'SELECT'), 'a SELECT the DBA granted by hand survives');
SELECT ok(has_function_privilege('regress_lp_dba', 'prm.normalize_phone(text,text)', 'EXECUTE'), 'an EXECUTE the DBA granted by hand survives');
SELECT ok(NOT has_table_privilege('regress_lp_dba', 'prm.offer', 'SELECT')
          AND NOT has_function_privilege('regress_lp_dba', 'prm.fill_stats(bigint,timestamptz,timestamptz)', 'EXECUTE'),
          'what prm granted is gone');
SELECT is((SELECT count(*) FROM prm.access_privilege WHERE role_id = 'regress_lp_dba'::regrole)::int, 0,
          'nothing of the role is left on record');
SELECT is(prm.revoke_access('regress_lp_dba', :org_a), false, 'revoking again: had no access');

-- BYPASSRLS roles would read every clinic's rows through the table privileges
SELECT throws_ok(format('SELECT prm.grant_access(%L, %s, %L)', 'regress_lp_bypass', :org_a, 'readonly'),
                 '22023', 'role "regress_lp_bypass" bypasses row-level security', 'a BYPASSRLS role is refused');
SELECT is_empty($$SELECT 1 FROM prm.org_access WHERE role_id = 'regress_lp_bypass'::regrole$$, 'and was given nothing');

-- trigger functions: only by the trigger manager, only on their own table
SELECT throws_ok('SELECT prm.waitlist_entry_score_trigger()', '39P01', NULL, 'score trigger called directly');
SELECT throws_ok('SELECT prm.appointment_waitlist_trigger()', '39P01', NULL, 'appointment trigger called directly');
CREATE TEMP TABLE lp_t (org_id bigint, urgent boolean, manual_boost int, current_appointment_at timestamptz,
                        joined_at timestamptz, priority_score text, patient_id text);
CREATE TRIGGER lp_t_score BEFORE INSERT ON lp_t FOR EACH ROW EXECUTE FUNCTION prm.waitlist_entry_score_trigger();
CREATE TRIGGER lp_t_appt AFTER UPDATE ON lp_t FOR EACH ROW EXECUTE FUNCTION prm.appointment_waitlist_trigger();
SELECT throws_ok($$INSERT INTO lp_t VALUES (1, true, 0, NULL, now(), 'x', 'y')$$, '42809', NULL,
                 'score trigger on a look-alike table with other types: refused, no crash');
ALTER TABLE lp_t DISABLE TRIGGER lp_t_score;
INSERT INTO lp_t VALUES (1, true, 0, NULL, now(), 'x', 'y');
SELECT throws_ok($$UPDATE lp_t SET urgent = false$$, '42809', NULL, 'appointment trigger on another table: refused');
GRANT ALL ON lp_t TO regress_lp_staff;
SET LOCAL ROLE regress_lp_staff;
CREATE TEMP TABLE lp_u (org_id bigint, urgent boolean, manual_boost int, current_appointment_at timestamptz,
                        joined_at timestamptz, priority_score text);
SELECT throws_ok($$CREATE TRIGGER lp_u_score BEFORE INSERT ON lp_u FOR EACH ROW EXECUTE FUNCTION prm.waitlist_entry_score_trigger()$$,
                 '42501', NULL, 'a staff role cannot even attach prm''s trigger function');
RESET ROLE;

-- a NULL lease token skips the lease check: an admin's override, on record
SELECT prm.enqueue_message(:org_a, 'sms', '+15557770001', 'hello') AS m1 \gset
SELECT prm.enqueue_message(:org_a, 'sms', '+15557770002', 'hello') AS m2 \gset
CREATE TEMP TABLE lp_claimed AS SELECT id, lease_token FROM prm.claim_messages('sms', 10);
GRANT SELECT ON lp_claimed TO PUBLIC;
SET LOCAL ROLE regress_lp_staff;
SELECT throws_ok(format($$SELECT prm.mark_message_sent(%s, 'SM1')$$, :m1), '42501', NULL, 'staff: an ack without the lease is refused');
SELECT throws_ok(format($$SELECT prm.mark_message_failed(%s, 'x', false)$$, :m1), '42501', NULL, 'staff: a failure without the lease is refused');
RESET ROLE;
SET LOCAL ROLE regress_lp_sender;
SELECT throws_ok(format($$SELECT prm.mark_message_sent(%s, 'SM1', NULL)$$, :m1), '42501', NULL, 'sender: an ack without the lease is refused');
SELECT lives_ok(format($$SELECT prm.mark_message_sent(%s, 'SM1', %L)$$, :m1, (SELECT lease_token FROM lp_claimed WHERE id = :m1)),
                'sender with the lease: acknowledged');
SELECT is(prm.record_delivery_status('SM1', 'delivered'), true, 'a sender records the status its provider reported');
RESET ROLE;
SET LOCAL ROLE regress_lp_none;
SELECT throws_ok($$SELECT prm.record_delivery_status('SM1', 'read')$$, '42501', NULL, 'a role with no grant is refused, not told false');
RESET ROLE;
SET LOCAL ROLE regress_lp_admin;
SELECT lives_ok(format($$SELECT prm.mark_message_sent(%s, 'SM2')$$, :m2), 'admin: acknowledges without the lease');
RESET ROLE;
SELECT is((SELECT count(*) FROM prm.event WHERE kind = 'lease_overridden' AND entity_id = :m2 AND actor = 'regress_lp_admin')::int, 1,
          'the override is recorded with who did it');

-- prm.grant_table_access = off: a role reads through prm's functions only
CREATE ROLE regress_lp_functions_only;
SET LOCAL prm.grant_table_access = off;
SELECT prm.grant_access('regress_lp_functions_only', :org_a, 'readonly');
SELECT ok(has_function_privilege('regress_lp_functions_only', 'prm.fill_stats(bigint,timestamptz,timestamptz)', 'EXECUTE'),
          'table access off: the readonly functions are granted');
SELECT ok(NOT has_table_privilege('regress_lp_functions_only', 'prm.offer', 'SELECT')
          AND NOT has_table_privilege('regress_lp_functions_only', 'prm.patient', 'SELECT'),
          'table access off: no SELECT on any prm table');
SET LOCAL ROLE regress_lp_functions_only;
SELECT throws_ok('EXPLAIN SELECT * FROM prm.patient WHERE family_name = ''x''', '42501', NULL,
                 'so EXPLAIN cannot estimate another clinic''s values');
SELECT lives_ok(format('SELECT prm.fill_stats(%s, now() - interval %L, now())', :org_a, '1 day'),
                'while the functions still read the clinic''s own rows');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
