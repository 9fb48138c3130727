-- prm.patient_stats_trigger() runs only as prm installed it: fired by the
-- trigger manager AFTER a statement, on prm's own tables, reading bigint
-- columns.  Anything else is refused with an SQLSTATE, never a crash.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(12);
SET LOCAL timezone = 'UTC';

CREATE ROLE regress_tgs_staff;
SELECT prm.create_organization('Clinic G', 'UTC', '+15558190001') AS org \gset
SELECT prm.add_provider(:org, 'Dr G') AS prov \gset
SELECT prm.grant_access('regress_tgs_staff', :org, 'staff');

-- called directly
SELECT throws_ok('SELECT prm.patient_stats_trigger()', '39P01', NULL, 'called directly: refused');

-- a look-alike temporary table with other types
CREATE TEMP TABLE tgs_wrong (org_id text, patient_id text);
CREATE TRIGGER tgs_wrong_stats AFTER INSERT ON tgs_wrong REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');
SELECT throws_ok($$INSERT INTO tgs_wrong VALUES ('x', 'y')$$, '42809', NULL,
                 'on a temporary table with other column types: refused on insert, no crash');
-- even with the right types, a table that is not prm's is refused
CREATE TEMP TABLE tgs_alike (org_id bigint, patient_id bigint);
CREATE TRIGGER tgs_alike_stats AFTER INSERT ON tgs_alike REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');
SELECT throws_ok(format('INSERT INTO tgs_alike VALUES (%s, 1)', :org), '42809', NULL,
                 'on a temporary table with the right types: still refused');
-- fired the wrong way
CREATE TEMP TABLE tgs_row (org_id bigint, patient_id bigint);
CREATE TRIGGER tgs_row_stats AFTER INSERT ON tgs_row FOR EACH ROW
    EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');
SELECT throws_ok('INSERT INTO tgs_row VALUES (1, 1)', '39P01', NULL, 'as a row trigger: refused');
CREATE TEMP TABLE tgs_noarg (org_id bigint, patient_id bigint);
CREATE TRIGGER tgs_noarg_stats AFTER INSERT ON tgs_noarg FOR EACH STATEMENT
    EXECUTE FUNCTION prm.patient_stats_trigger();
SELECT throws_ok('INSERT INTO tgs_noarg VALUES (1, 1)', '39P01', NULL, 'without the patient column argument: refused');

-- on prm's own table, a column that is not a bigint, or not there
CREATE TRIGGER tgs_bad_column AFTER INSERT ON prm.patient REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('given_name');
SELECT throws_ok(format($$SELECT prm.add_patient(%s, 'Ann', 'Text', '+12125550190')$$, :org), '42804', NULL,
                 'a text column as the patient column: refused');
DROP TRIGGER tgs_bad_column ON prm.patient;
CREATE TRIGGER tgs_no_column AFTER INSERT ON prm.patient REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('no_such_column');
SELECT throws_ok(format($$SELECT prm.add_patient(%s, 'Ann', 'Gone', '+12125550191')$$, :org), '42703', NULL,
                 'a column that does not exist: refused');
DROP TRIGGER tgs_no_column ON prm.patient;

-- a staff role cannot attach it to a table of its own in the first place
GRANT USAGE ON SCHEMA prm TO regress_tgs_staff;
SET LOCAL ROLE regress_tgs_staff;
CREATE TEMP TABLE tgs_staff (org_id text, patient_id text);
SELECT throws_ok($$CREATE TRIGGER tgs_staff_stats AFTER INSERT ON tgs_staff REFERENCING NEW TABLE AS new_rows
                   FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id')$$,
                 '42501', NULL, 'a staff role cannot attach the trigger function');
RESET ROLE;

-- the normal path still keeps the statistics
SELECT prm.add_patient(:org, 'Gail', 'Guard', '+12125550192') AS pat \gset
SELECT is((SELECT total_appointments FROM prm.patient_stats WHERE org_id = :org AND patient_id = :pat), 0,
          'a new patient gets a statistics row');
SELECT prm.book_appointment(:org, :pat, :prov, now() + interval '3 days', now() + interval '3 days 30 minutes') AS appt \gset
SELECT is((SELECT (total_appointments, next_appointment_at IS NOT NULL)::text FROM prm.patient_stats
            WHERE org_id = :org AND patient_id = :pat), '(1,t)', 'a booking is counted');
SELECT prm.cancel_appointment(:org, :appt);
SELECT is((SELECT (cancellations, next_appointment_at IS NULL)::text FROM prm.patient_stats
            WHERE org_id = :org AND patient_id = :pat), '(1,t)', 'a cancellation is counted');
SELECT is(prm.rebuild_patient_stats(:org), 1::bigint, 'rebuild still runs');

SELECT * FROM finish();
ROLLBACK;
