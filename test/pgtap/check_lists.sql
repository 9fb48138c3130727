-- CHECK lists are stored as one array constant each (src/v0.3.0/99_check_lists.sql):
-- none is left as an ARRAY constructor, which PostgreSQL would read back and
-- fold again in every write, and the rewritten ones keep their names and
-- still refuse what they refused.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(9);

SELECT is((SELECT pg_catalog.string_agg(k.conrelid::regclass || '.' || k.conname, ', ' ORDER BY 1)
             FROM pg_catalog.pg_constraint k
            WHERE k.connamespace = 'prm'::regnamespace AND k.contype = 'c'
              AND k.conbin::text LIKE '%{ARRAYEXPR %'),
          NULL, 'no CHECK constraint of prm lists its values as an ARRAY constructor');
SELECT is((SELECT pg_catalog.pg_get_constraintdef(k.oid) FROM pg_catalog.pg_constraint k
            WHERE k.conrelid = 'prm.offer'::regclass AND k.conname = 'offer_status_check'),
          'CHECK ((status = ANY (''{open,accepted,declined,expired,withdrawn}''::text[])))',
          'the offer statuses: the same name, the same five values, one constant');
SELECT is((SELECT pg_catalog.pg_get_constraintdef(k.oid) FROM pg_catalog.pg_constraint k
            WHERE k.conrelid = 'prm.waitlist_entry'::regclass AND k.conname = 'waitlist_entry_days_of_week_check'),
          'CHECK ((days_of_week <@ ''{1,2,3,4,5,6,7}''::integer[]))', 'the days of the week: an integer array constant');
SELECT is((SELECT pg_catalog.count(*)::int FROM pg_catalog.pg_constraint k
            WHERE k.connamespace = 'prm'::regnamespace AND k.contype = 'c' AND NOT k.convalidated),
          0, 'every rewritten constraint is validated');

SELECT prm.create_organization('Lists', 'UTC', '+15558009000') AS org \gset
SELECT prm.add_patient(:org, 'Ann', 'Lists', '+15558009001') AS ann \gset
SELECT prm.enqueue_message(:org, 'sms', '+15558009001', 'hi') AS msg \gset
SELECT throws_ok(format($$UPDATE prm.outbound_message SET status = 'bogus' WHERE id = %s$$, :msg), '23514', NULL,
                 'an outbound status outside the list is refused');
SELECT throws_ok(format($$UPDATE prm.outbound_message SET status = 'Queued' WHERE id = %s$$, :msg), '23514', NULL,
                 'the list is matched exactly (case)');
SELECT lives_ok(format($$UPDATE prm.outbound_message SET status = 'cancelled' WHERE id = %s$$, :msg),
                'a status of the list is accepted');
SELECT throws_ok(format($$INSERT INTO prm.waitlist_entry (org_id, patient_id, days_of_week) VALUES (%s, %s, '{1,8}')$$, :org, :ann),
                 '23514', NULL, 'a day of the week outside 1..7 is refused');
SELECT prm.add_provider(:org, 'Dr Lists') AS prov \gset
SELECT throws_ok(format($$INSERT INTO prm.slot (org_id, provider_id, starts_at, ends_at, status)
                          VALUES (%s, %s, now() + interval '2 days', now() + interval '2 days 30 minutes',
                                  'busy-unavailable'' OR true --')$$, :org, :prov),
                 '23514', NULL, 'an injection string is just a value outside the list');

SELECT * FROM finish();
ROLLBACK;
