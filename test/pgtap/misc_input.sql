-- Bad input to the functions the other suites reach only with good input:
-- a precise SQLSTATE each time, and nothing changed.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(34);

CREATE ROLE regress_misc_staff;
SELECT prm.create_organization('Misc Clinic', 'UTC', '+15558100000') AS org, prm.create_organization('Other', 'UTC') AS other \gset
SELECT prm.add_patient(:org, 'Mia', 'Misc', '+15558101001') AS pat, prm.add_patient(:other, 'Oz', 'Other', '+15558101002') AS other_pat \gset
SELECT prm.add_provider(:org, 'Dr M') AS dr \gset
SELECT prm.join_waitlist(:org, :pat) AS entry \gset
SELECT prm.grant_access('regress_misc_staff', :org, 'staff');
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM prm.outbound_message) m, (SELECT count(*) FROM prm.waitlist_entry WHERE status = 'waiting') w,
       (SELECT count(*) FROM prm.location) l, (SELECT count(*) FROM prm.message_template) t;

-- enqueue_message
SELECT throws_ok(format('SELECT prm.enqueue_message(%s, %L, %L, NULL)', :org, 'sms', '+15558101001'), '22004', NULL, 'enqueue: NULL body');
SELECT throws_ok(format('SELECT prm.enqueue_message(%s, %L, %L, %L)', :org, 'fax', '+15558101001', 'x'), '22023', NULL, 'enqueue: unknown channel');
SELECT throws_ok(format('SELECT prm.enqueue_message(%s, %L, %L, %L)', :org, 'sms', 'not a phone', 'x'), '22023', NULL, 'enqueue: malformed SMS address');
SELECT throws_ok(format('SELECT prm.enqueue_message(%s, %L, %L, %L)', :org, 'sms', '+15558101001', repeat('b', 1601)), '22001', NULL, 'enqueue: oversized body');
SELECT throws_ok(format('SELECT prm.enqueue_message(%s, %L, %L, %L, %s)', :org, 'sms', '+15558101001', 'x', :other_pat), 'P0002', NULL, 'enqueue: another organization''s patient');
SELECT throws_ok(format('SELECT prm.enqueue_message(%s, %L, %L, %L, NULL, %L)', :org, 'sms', '+15558101001', 'x', repeat('k', 201)), '22001', NULL, 'enqueue: oversized dedup key');
UPDATE prm.patient SET sms_opt_out = true WHERE id = :pat;
SELECT throws_ok(format('SELECT prm.enqueue_message(%s, %L, %L, %L, %s)', :org, 'sms', '+15558101001', 'x', :pat), '55000', NULL, 'enqueue: SMS to an opted-out patient');
UPDATE prm.patient SET sms_opt_out = false WHERE id = :pat;

-- templates
SELECT throws_ok(format('SELECT prm.set_template(%s, %L, %L)', :org, 'help', repeat('h', 1601)), '22001', NULL, 'set_template: oversized body');
SELECT throws_ok(format('SELECT prm.set_template(%s, %L, %L, %L)', :org, 'help', 'Hi', 'pigeon'), '22023', NULL, 'set_template: unknown channel');
SELECT throws_ok(format('SELECT prm.set_template(%s, %L, NULL)', :org, 'help'), '22004', NULL, 'set_template: NULL body');
SELECT throws_ok(format('SELECT prm.render_template(%s, %L, %L)', :org, 'help', '[1]'), '22023', NULL, 'render_template: vars not an object');
SELECT throws_ok(format('SELECT prm.render_template(%s, %L)', :org, 'sonnet'), '22023', NULL, 'render_template: unknown kind');

-- the fill engine's other entry points
SELECT throws_ok('SELECT prm.accept_offer(NULL)', '22004', NULL, 'accept_offer: NULL token');
SELECT throws_ok('SELECT prm.expire_offers(NULL)', '22004', NULL, 'expire_offers: NULL time');
SELECT throws_ok(format('SELECT prm.undo_cancellation(%s, 987654)', :org), 'P0002', NULL, 'undo_cancellation: unknown appointment');
SELECT throws_ok(format('SELECT prm.undo_cancellation(%s, NULL)', :org), '22004', NULL, 'undo_cancellation: NULL appointment');
SELECT throws_ok(format('SELECT prm.fill_stats(%s, now(), now() - interval %L)', :org, '1 day'), '22023', NULL, 'fill_stats: period ends before it starts');
SELECT throws_ok(format('SELECT prm.fill_stats(%s, NULL)', :org), '22004', NULL, 'fill_stats: NULL period start');
SELECT throws_ok(format('SELECT prm.fill_slot(%s, -1)', :org), 'P0002', NULL, 'fill_slot: negative slot id');

-- waitlist
SELECT throws_ok(format('SELECT prm.leave_waitlist(%s, NULL)', :org), '22004', NULL, 'leave_waitlist: NULL entry');
SELECT throws_ok(format('SELECT prm.leave_waitlist(%s, 987654)', :org), 'P0002', NULL, 'leave_waitlist: unknown entry');
SELECT throws_ok(format('SELECT prm.explain_priority(%s, NULL)', :org), '22004', NULL, 'explain_priority: NULL entry');
SELECT throws_ok(format('SELECT prm.set_waitlist_preferences(%s, %s, %L)', :org, :entry, '"urgent"'), '22023', NULL, 'set_waitlist_preferences: not an object');
SELECT throws_ok(format('SELECT prm.set_waitlist_preferences(%s, %s, %L)', :org, :entry, '{"urgent": "very"}'), '22023', NULL, 'set_waitlist_preferences: wrong JSON type');

-- directory and access
SELECT throws_ok(format('SELECT prm.add_location(%s, %L, %L)', :org, 'Annex', 'Moon/Base'), '22023', NULL, 'add_location: unknown time zone');
SELECT throws_ok(format('SELECT prm.add_location(%s, NULL)', :org), '22004', NULL, 'add_location: NULL name');
SELECT throws_ok(format('SELECT prm.add_location(%s, %L, NULL, %L)', :org, 'Annex', repeat('a', 501)), '22001', NULL, 'add_location: oversized address');
SELECT throws_ok(format('SELECT prm.revoke_access(NULL, %s)', :org), '22004', NULL, 'revoke_access: NULL role');
SELECT throws_ok('SELECT prm.redrive_message(NULL, 1)', '22004', NULL, 'redrive_message: NULL organization');
SELECT throws_ok(format('SELECT prm.redrive_message(%s, 987654)', :org), 'P0002', NULL, 'redrive_message: unknown message');
SELECT throws_ok('SELECT prm.schedule_with_pg_cron()', '0A000', NULL, 'schedule_with_pg_cron: pg_cron not installed here');
SET LOCAL ROLE regress_misc_staff;
SELECT throws_ok('SELECT prm.sync_access_privileges()', '42501', NULL, 'sync_access_privileges: owner only');
SELECT throws_ok('SELECT prm.next_deadline() IS NULL AND prm.run_due_jobs() IS NULL', '42501', NULL, 'run_due_jobs from a staff role');
RESET ROLE;

SELECT results_eq(
    $$SELECT (SELECT count(*) FROM prm.outbound_message), (SELECT count(*) FROM prm.waitlist_entry WHERE status = 'waiting'),
             (SELECT count(*) FROM prm.location), (SELECT count(*) FROM prm.message_template)$$,
    'SELECT m, w, l, t FROM before', 'no refused call changed anything');

SELECT * FROM finish();
ROLLBACK;
