-- Settings: the registry is the one source (every default goes through its
-- own check, the loader decodes every type), and the per-transaction cache
-- never outlives a rolled-back subtransaction.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(15);
SET LOCAL timezone = 'UTC';

SELECT prm.create_organization('Cache Clinic', 'UTC', '+15558070000') AS org \gset
SELECT prm.configure(:org, '{"quiet_hours": false, "offer_daily_cap": 10, "offer_weekly_cap": 20}') IS NOT NULL AS ok \gset
SELECT prm.add_provider(:org, 'Dr Cache') AS dr \gset
SELECT prm.add_patient(:org, 'Pat' || g, 'Cache', '+1555807100' || g) FROM generate_series(1, 6) g;
SELECT id AS p6 FROM prm.patient WHERE given_name = 'Pat6' \gset
SELECT prm.join_waitlist(:org, id) FROM prm.patient WHERE given_name <> 'Pat6';
SELECT id AS entry FROM prm.waitlist_entry WHERE patient_id = (SELECT id FROM prm.patient WHERE given_name = 'Pat1') \gset

-- the registry: every default passes its own validation and comes back as is
SELECT prm.settings(:org) AS defaults \gset
SELECT is(prm.configure(:org, (SELECT jsonb_object_agg(key, value) FROM jsonb_each(:'defaults'::jsonb) WHERE value <> 'null')),
          :'defaults'::jsonb, 'every default, set explicitly, is valid and canonical');
SELECT is((SELECT count(*)::int FROM jsonb_object_keys(prm.settings(:org))), 49, 'prm.settings lists the 49 settings');

-- the loader decodes each type into its field
SELECT prm.configure(:org, '{"weight_urgent": 44, "recent_offer_window": "3 days 4 hours"}') IS NOT NULL AS ok \gset
SELECT is((prm.explain_priority(:org, :entry) #>> '{components,urgent,max}')::int, 44, 'an int setting reaches the engine');
SELECT is(prm.explain_priority(:org, :entry) #>> '{recent_offer_penalty,window}', '3 days 04:00:00', 'an interval setting reaches the engine');
SELECT prm.configure(:org, '{"weight_urgent": null, "recent_offer_window": null}') IS NOT NULL AS ok \gset
SELECT is(prm.configure(:org, '{"min_notice": "86401 seconds"}') ->> 'min_notice', '1 day 00:00:01', 'intervals are stored as days and HH:MM:SS');
SELECT prm.configure(:org, '{"min_notice": null}') IS NOT NULL AS ok \gset

-- a value written by hand with the wrong type: a clean error, not a crash
SAVEPOINT hand;
UPDATE prm.organization SET settings = settings || '{"weight_urgent": "many"}' WHERE id = :org;
-- (configure drops the cache and loads the new settings)
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"batch_size": 4}')$$, :org), '22023',
                 'stored setting "weight_urgent" of organization ' || :org || ' has the wrong type', 'a hand-written bad value is reported');
ROLLBACK TO hand;

-- the cache and savepoints
SELECT is((prm.explain_priority(:org, :entry) #>> '{components,urgent,max}')::int, 30, 'the default weight, now cached');
SAVEPOINT s;
SELECT prm.configure(:org, '{"weight_urgent": 50}') IS NOT NULL AS ok \gset
SELECT is((prm.explain_priority(:org, :entry) #>> '{components,urgent,max}')::int, 50, 'inside the savepoint: the new weight');
ROLLBACK TO s;
SELECT is((prm.explain_priority(:org, :entry) #>> '{components,urgent,max}')::int, 30, 'ROLLBACK TO SAVEPOINT: the engine forgets the undone weight');
SELECT is(prm.settings(:org) ->> 'weight_urgent', '30', 'and so do the stored settings');

SAVEPOINT s2;
SELECT prm.configure(:org, '{"weight_urgent": 40}') IS NOT NULL AS ok \gset
RELEASE s2;
SELECT is((prm.explain_priority(:org, :entry) #>> '{components,urgent,max}')::int, 40, 'a released savepoint keeps its configure');
SELECT prm.configure(:org, '{"weight_urgent": null}') IS NOT NULL AS ok \gset

-- the issue's case: batch_size 9 set and undone in a savepoint; the fill uses 3
SELECT prm.book_appointment(:org, :p6, :dr, date_trunc('hour', now()) + interval '3 days', date_trunc('hour', now()) + interval '3 days 30 minutes') AS appt \gset
SAVEPOINT s3;
SELECT prm.configure(:org, '{"batch_size": 9}') ->> 'batch_size' AS nine \gset
ROLLBACK TO s3;
SELECT prm.cancel_appointment(:org, :appt) AS slot \gset
SELECT is((SELECT count(*)::int FROM prm.offer WHERE slot_id = :slot), 3, 'batch_size 9 undone by ROLLBACK TO: three offers, not five');

-- an error inside a subtransaction that configured nothing costs a reload, nothing else
SELECT throws_ok(format('SELECT (prm.explain_priority(%s, %s) IS NOT NULL)::int / 0', :org, :entry), '22012', NULL,
                 'an error in a subtransaction that loaded the settings');
SELECT is((prm.explain_priority(:org, :entry) #>> '{components,urgent,max}')::int, 30, 'after an unrelated rollback the settings reload unchanged');

-- an organization's own columns load with its settings
SELECT is(prm.render_template(:org, 'help') LIKE 'Cache Clinic:%', true, 'the organization''s name reaches the templates');

SELECT * FROM finish();
ROLLBACK;
