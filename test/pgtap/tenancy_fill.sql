-- Tenancy of the fill engine and the outbox: roles of organization A can
-- neither read nor change B's waitlist, offers, messages or replies, through
-- tables, views or (SECURITY DEFINER) functions.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(37);

CREATE ROLE regress_fa_staff;
CREATE ROLE regress_fa_sender;
CREATE ROLE regress_fa_hook;
CREATE ROLE regress_fb_staff;

-- two clinics, each with a cancellation, offers and queued SMS
SELECT prm.create_organization('A', 'UTC', '+15558040001') AS a, prm.create_organization('B', 'UTC', '+15558040002') AS b \gset
SELECT prm.configure(:a, '{"quiet_hours": false, "accept_url": "https://a.example/o/"}') IS NOT NULL AS x,
       prm.configure(:b, '{"quiet_hours": false, "accept_url": "https://b.example/o/"}') IS NOT NULL AS y \gset
SELECT prm.add_provider(:a, 'Dr A') AS dra, prm.add_provider(:b, 'Dr B') AS drb \gset
SELECT prm.add_patient(:a, 'Ann', 'A', '+15558041001') AS pa1, prm.add_patient(:a, 'Abe', 'A', '+15558041002') AS pa2 \gset
SELECT prm.add_patient(:b, 'Ben', 'B', '+15558042001') AS pb1, prm.add_patient(:b, 'Bea', 'B', '+15558042002') AS pb2 \gset
SELECT prm.join_waitlist(:a, :pa2) AS ea, prm.join_waitlist(:b, :pb2) AS eb \gset
SELECT prm.book_appointment(:a, :pa1, :dra, now() + interval '3 days', now() + interval '3 days 30 minutes') AS appa \gset
SELECT prm.book_appointment(:b, :pb1, :drb, now() + interval '3 days', now() + interval '3 days 30 minutes') AS appb \gset
SELECT prm.cancel_appointment(:a, :appa) AS slota, prm.cancel_appointment(:b, :appb) AS slotb \gset
SELECT o.id AS offa, substring(m.body from '/o/([0-9a-f-]{36})') AS toka
  FROM prm.offer o JOIN prm.outbound_message m ON m.org_id = o.org_id AND m.offer_id = o.id WHERE o.org_id = :a \gset
SELECT o.id AS offb, substring(m.body from '/o/([0-9a-f-]{36})') AS tokb
  FROM prm.offer o JOIN prm.outbound_message m ON m.org_id = o.org_id AND m.offer_id = o.id WHERE o.org_id = :b \gset
SELECT id AS msga FROM prm.outbound_message WHERE org_id = :a \gset
SELECT id AS msgb FROM prm.outbound_message WHERE org_id = :b \gset

-- job bookkeeping exists (so that not seeing it below means something)
SELECT prm.run_due_jobs() IS NOT NULL AS ran \gset
SELECT ok((SELECT count(*) FROM prm.job_run) > 0, 'the jobs left their bookkeeping');
SELECT prm.grant_access('regress_fa_staff', :a, 'staff');
SELECT prm.grant_access('regress_fa_sender', :a, 'sender');
SELECT prm.grant_access('regress_fa_hook', :a, 'webhook');
SELECT prm.grant_access('regress_fb_staff', :b, 'staff');

SET LOCAL ROLE regress_fa_staff;
SELECT results_eq('SELECT DISTINCT org_id FROM prm.waitlist_entry', ARRAY[:a::bigint], 'staff A: only A''s waitlist');
SELECT results_eq('SELECT DISTINCT org_id FROM prm.offer', ARRAY[:a::bigint], 'staff A: only A''s offers');
SELECT results_eq('SELECT DISTINCT org_id FROM prm.outbound_message', ARRAY[:a::bigint], 'staff A: only A''s messages');
SELECT is_empty(format('SELECT 1 FROM prm.inbound_message WHERE org_id = %s', :b), 'staff A: none of B''s inbound messages');
SELECT is_empty(format('SELECT 1 FROM prm.dead_message WHERE org_id = %s', :b), 'staff A: the dead_message view shows none of B''s');
SELECT is_empty('SELECT 1 FROM prm.job_run', 'job bookkeeping is not readable by tenants');
SELECT throws_ok(format('SELECT prm.fill_slot(%s, %s)', :b, :slotb), '42501', NULL, 'fill_slot on B refused');
SELECT throws_ok(format('SELECT prm.fill_slot(%s, %s)', :a, :slotb), 'P0002', NULL, 'B''s slot through A is not there');
SELECT throws_ok(format('SELECT prm.explain_priority(%s, %s)', :b, :eb), '42501', NULL, 'explain_priority on B refused');
SELECT throws_ok(format('SELECT prm.explain_priority(%s, %s)', :a, :eb), 'P0002', NULL, 'B''s entry through A is not there');
SELECT throws_ok(format('SELECT prm.leave_waitlist(%s, %s)', :a, :eb), 'P0002', NULL, 'cannot remove B''s entry through A');
SELECT throws_ok(format('SELECT prm.set_waitlist_preferences(%s, %s, %L)', :a, :eb, '{"urgent": true}'), 'P0002', NULL, 'cannot change B''s entry through A');
SELECT throws_ok(format('SELECT prm.recalculate_priorities(%s)', :b), '42501', NULL, 'recalculate B refused');
SELECT throws_ok('SELECT prm.recalculate_priorities(NULL)', '42501', NULL, 'recalculate all refused');
SELECT throws_ok(format('SELECT prm.redrive_message(%s, %s)', :b, :msgb), '42501', NULL, 'redrive on B refused');
SELECT throws_ok(format('SELECT prm.redrive_message(%s, %s)', :a, :msgb), 'P0002', NULL, 'B''s message through A is not there');
SELECT throws_ok(format('SELECT prm.fill_stats(%s)', :b), '42501', NULL, 'B''s analytics refused');
SELECT throws_ok(format('SELECT prm.set_template(%s, %L, %L)', :b, 'help', 'x'), '42501', NULL, 'B''s templates refused');
SELECT throws_ok('SELECT prm.run_due_jobs()', '42501', NULL, 'run_due_jobs is for the owner');
SELECT throws_ok('SELECT prm.health()', '42501', NULL, 'health is for the owner');
SELECT lives_ok(format('SELECT prm.expire_offers(now() + interval %L)', '1 hour'), 'staff may expire offers: of its own organization only');
RESET ROLE;
SELECT is((SELECT status FROM prm.offer WHERE id = :offb), 'open', 'B''s offer untouched by A''s expiry');
SELECT is((SELECT status FROM prm.offer WHERE id = :offa), 'expired', 'A''s offer expired');

-- a sender of A claims A's messages only, and cannot acknowledge B's
SELECT is((SELECT status FROM prm.outbound_message WHERE id = :msga), 'cancelled', 'the SMS of A''s expired offer was never sent');
SELECT prm.enqueue_message(:a, 'sms', '+15558041001', 'A reminder') AS msga2 \gset
SET LOCAL ROLE regress_fa_sender;
SELECT results_eq($$SELECT org_id FROM prm.claim_messages('sms', 100)$$, ARRAY[:a::bigint], 'sender A claims A''s message only');
SELECT throws_ok(format('SELECT prm.mark_message_sent(%s, %L)', :msgb, 'SMB'), 'P0002', NULL, 'sender A cannot acknowledge B''s message');
SELECT throws_ok(format('SELECT prm.mark_message_failed(%s, %L)', :msgb, 'x'), 'P0002', NULL, 'nor fail it');
SELECT throws_ok('SELECT * FROM prm.patient', '42501', NULL, 'a sender reads no patients');
RESET ROLE;
SELECT is((SELECT status FROM prm.outbound_message WHERE id = :msgb), 'queued', 'B''s message still queued');

-- a webhook of A cannot act for B's number or B's offers
SET LOCAL ROLE regress_fa_hook;
SELECT throws_ok($$SELECT prm.handle_inbound_sms('+15558040002', '+15558042002', 'YES', 'hook-1')$$, '42501', NULL, 'webhook A cannot deliver to B''s number');
SELECT throws_ok(format('SELECT prm.accept_offer(%L)', :'tokb'), 'P0002', NULL, 'webhook A cannot accept B''s offer by link');
SELECT lives_ok($$SELECT prm.handle_inbound_sms('+15558040001', '+15558041002', 'HELP', 'hook-2')$$, 'webhook A delivers to A''s number');
SELECT throws_ok($$SELECT prm.handle_inbound_sms('+15558041002', '+15558040001', 'HELP', 'hook-3')$$, 'P0002',
                 'no organization has the SMS number +15558041002', 'To and From swapped: told which argument is which, not "permission denied"');
RESET ROLE;
SELECT is((SELECT status FROM prm.offer WHERE id = :offb), 'open', 'B''s offer still open');
UPDATE prm.outbound_message SET provider_message_id = 'SM-B' WHERE id = :msgb;
SET LOCAL ROLE regress_fa_hook;
SELECT is(prm.record_delivery_status('SM-B', 'delivered'), false, 'webhook A cannot record B''s delivery status');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM prm.inbound_message WHERE org_id = :b), 0, 'nothing reached B');

SELECT * FROM finish();
ROLLBACK;
