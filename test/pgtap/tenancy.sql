-- Tenancy: a role of one organization can neither read nor change another
-- organization's rows, through tables, views or functions.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(44);
SET LOCAL timezone = 'UTC';

CREATE ROLE regress_prm_a;
CREATE ROLE regress_prm_b;
CREATE ROLE regress_prm_ro;
CREATE ROLE regress_prm_hook;
CREATE ROLE regress_prm_none;

SELECT prm.create_organization('Clinic A', 'UTC', '+15558000001') AS org_a \gset
SELECT prm.create_organization('Clinic B', 'UTC', '+15558000002') AS org_b \gset
SELECT prm.add_provider(:org_a, 'Dr A') AS prov_a \gset
SELECT prm.add_provider(:org_b, 'Dr B') AS prov_b \gset
SELECT prm.add_patient(:org_a, 'Ann', 'A', '+15559110001') AS pat_a \gset
SELECT prm.add_patient(:org_b, 'Ben', 'B', '+15559110002') AS pat_b \gset
SELECT prm.book_appointment(:org_a, :pat_a, :prov_a, '2031-01-01 10:00+00', '2031-01-01 10:30+00') AS appt_a \gset
SELECT prm.book_appointment(:org_b, :pat_b, :prov_b, '2031-01-01 10:00+00', '2031-01-01 10:30+00') AS appt_b \gset
SELECT prm.cancel_appointment(:org_b, :appt_b) AS slot_b \gset
SELECT prm.book_appointment(:org_b, :pat_b, :prov_b, '2031-01-02 10:00+00', '2031-01-02 10:30+00') AS appt_b2 \gset

SELECT lives_ok(format('SELECT prm.grant_access(%L, %s, %L)', 'regress_prm_a', :org_a, 'staff'), 'grant staff on A');
SELECT lives_ok(format('SELECT prm.grant_access(%L, %s, %L)', 'regress_prm_b', :org_b, 'admin'), 'grant admin on B');
SELECT lives_ok(format('SELECT prm.grant_access(%L, %s, %L)', 'regress_prm_ro', :org_a, 'readonly'), 'grant readonly on A');
SELECT lives_ok(format('SELECT prm.grant_access(%L, %s, %L)', 'regress_prm_hook', :org_a, 'webhook'), 'grant webhook on A');
SELECT throws_ok(format('SELECT prm.grant_access(%L, %s, %L)', 'regress_prm_a', :org_a, 'owner'), '22023', NULL, 'unknown level refused');
SELECT throws_ok(format('SELECT prm.grant_access(NULL, %s, %L)', :org_a, 'staff'), '22004', NULL, 'NULL role refused');
SELECT throws_ok(format('SELECT prm.grant_access(%L, %s, %L)', 'postgres', :org_a, 'staff'), '22023', NULL, 'superuser cannot be given a level');

-- role A: sees A's rows only, in every table
SET LOCAL ROLE regress_prm_a;
SELECT results_eq('SELECT DISTINCT id FROM prm.organization', ARRAY[:org_a::bigint], 'A sees only organization A');
SELECT results_eq('SELECT DISTINCT org_id FROM prm.patient', ARRAY[:org_a::bigint], 'A sees only A''s patients');
SELECT results_eq('SELECT DISTINCT org_id FROM prm.provider', ARRAY[:org_a::bigint], 'A sees only A''s providers');
SELECT results_eq('SELECT DISTINCT org_id FROM prm.appointment', ARRAY[:org_a::bigint], 'A sees only A''s appointments');
SELECT is_empty('SELECT 1 FROM prm.slot', 'A sees none of B''s slots');
SELECT results_eq('SELECT DISTINCT org_id FROM prm.event', ARRAY[:org_a::bigint], 'A sees only A''s events');
SELECT results_eq('SELECT DISTINCT org_id FROM prm.org_access', ARRAY[:org_a::bigint], 'A sees only its own access');
-- and cannot change anything directly
SELECT throws_ok(format('UPDATE prm.patient SET given_name = %L', 'x'), '42501', NULL, 'no direct UPDATE');
SELECT throws_ok(format('DELETE FROM prm.appointment WHERE org_id = %s', :org_b), '42501', NULL, 'no direct DELETE');
SELECT throws_ok(format('INSERT INTO prm.patient (org_id, given_name, family_name) VALUES (%s, %L, %L)', :org_b, 'x', 'y'), '42501', NULL, 'no direct INSERT');
-- functions on B's organization are refused
SELECT throws_ok(format('SELECT prm.add_patient(%s, %L, %L, %L)', :org_b, 'Eve', 'X', '+15559119999'), '42501', NULL, 'add_patient on B refused');
SELECT throws_ok(format('SELECT prm.add_provider(%s, %L)', :org_b, 'Dr X'), '42501', NULL, 'add_provider on B refused');
SELECT throws_ok(format('SELECT prm.cancel_appointment(%s, %s)', :org_b, :appt_b2), '42501', NULL, 'cancel on B refused');
SELECT throws_ok(format('SELECT prm.book_appointment(%s, %s, %s, %L, %L)', :org_b, :pat_b, :prov_b, '2031-02-01 10:00+00', '2031-02-01 10:30+00'), '42501', NULL, 'book on B refused');
SELECT throws_ok(format('SELECT prm.settings(%s)', :org_b), '42501', NULL, 'settings of B refused');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org_b, '{"batch_size": 9}'), '42501', NULL, 'configure of B refused');
SELECT throws_ok(format('SELECT prm.grant_access(%L, %s, %L)', 'regress_prm_a', :org_b, 'admin'), '42501', NULL, 'A cannot grant itself B');
SELECT throws_ok(format('SELECT prm.revoke_access(%L, %s)', 'regress_prm_b', :org_b), '42501', NULL, 'A cannot revoke B''s roles');
-- B's ids used through A's organization are simply not there
SELECT throws_ok(format('SELECT prm.book_appointment(%s, %s, %s, %L, %L)', :org_a, :pat_b, :prov_a, '2031-02-01 10:00+00', '2031-02-01 10:30+00'), 'P0002', NULL, 'B''s patient through A');
SELECT throws_ok(format('SELECT prm.book_appointment(%s, %s, %s, %L, %L)', :org_a, :pat_a, :prov_b, '2031-02-01 10:00+00', '2031-02-01 10:30+00'), 'P0002', NULL, 'B''s provider through A');
SELECT throws_ok(format('SELECT prm.cancel_appointment(%s, %s)', :org_a, :appt_b2), 'P0002', NULL, 'B''s appointment through A');
SELECT throws_ok(format('SELECT prm.set_appointment_status(%s, %s, %L)', :org_a, :appt_b2, 'noshow'), 'P0002', NULL, 'B''s appointment status through A');
-- staff may work in A but not administer it
SELECT lives_ok(format('SELECT prm.add_patient(%s, %L, %L, %L)', :org_a, 'Al', 'A', '+15559110003'), 'staff adds a patient to A');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org_a, '{"batch_size": 9}'), '42501', NULL, 'staff cannot configure');
SELECT throws_ok(format('SELECT prm.create_organization(%L)', 'Rogue'), '42501', NULL, 'staff cannot create organizations');
RESET ROLE;

-- readonly reads A but changes nothing
SET LOCAL ROLE regress_prm_ro;
SELECT ok((SELECT count(*) FROM prm.patient) = 2, 'readonly reads A''s patients');
SELECT throws_ok(format('SELECT prm.add_provider(%s, %L)', :org_a, 'Dr Y'), '42501', NULL, 'readonly cannot add');
SELECT throws_ok(format('SELECT prm.cancel_appointment(%s, %s)', :org_a, :appt_a), '42501', NULL, 'readonly cannot cancel');
RESET ROLE;

-- a webhook role reads no tenant table
SET LOCAL ROLE regress_prm_hook;
SELECT throws_ok('SELECT * FROM prm.patient', '42501', NULL, 'webhook cannot read patients');
SELECT throws_ok(format('SELECT prm.add_provider(%s, %L)', :org_a, 'Dr Z'), '42501', NULL, 'webhook cannot add providers');
RESET ROLE;

-- a role without access sees nothing and learns nothing
SET LOCAL ROLE regress_prm_none;
SELECT throws_ok('SELECT 1 FROM prm.organization', '42501', NULL, 'no access: organizations not readable');
SELECT throws_ok('SELECT * FROM prm.patient', '42501', NULL, 'no access: no table');
SELECT throws_ok(format('SELECT prm.settings(%s)', 999999), '42501', NULL, 'unknown organization looks the same as a foreign one');
RESET ROLE;

-- B's data is unchanged by all of the above
SELECT results_eq(format('SELECT count(*)::int FROM prm.appointment WHERE org_id = %s AND status = %L', :org_b, 'booked'), ARRAY[1], 'B''s booking untouched');
SELECT results_eq(format('SELECT count(*)::int FROM prm.patient WHERE org_id = %s', :org_b), ARRAY[1], 'B''s patients untouched');

-- revoking takes the privileges away again
SELECT ok(prm.revoke_access('regress_prm_ro', :org_a), 'revoke readonly');
SET LOCAL ROLE regress_prm_ro;
SELECT throws_ok('SELECT * FROM prm.patient', '42501', NULL, 'revoked role cannot read');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
