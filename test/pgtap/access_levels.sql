-- Several levels on one organization: a process that is both sender and
-- webhook holds both (grant_access adds sender and webhook to what a role
-- has); readonly, staff and admin replace one another, with a NOTICE, never
-- silently; revoke_access(role, org, level) takes one level and keeps the
-- others.  record_delivery_status needs sender or webhook: 42501 without.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(35);

CREATE ROLE regress_al_relay;
CREATE ROLE regress_al_reader;
CREATE ROLE regress_al_admin;
CREATE ROLE regress_al_none;
CREATE ROLE regress_al_b;

SELECT prm.create_organization('Clinic Alpha', 'UTC', '+12125550150') AS a \gset
SELECT prm.create_organization('B', 'UTC', '+12125550160') AS b \gset
SELECT prm.configure(:a, '{"quiet_hours": false}') IS NOT NULL AS x \gset
SELECT prm.add_patient(:a, 'Ann', 'A', '+12125550151') AS pa \gset
SELECT prm.grant_access('regress_al_admin', :a, 'admin');
SELECT prm.grant_access('regress_al_b', :b, 'webhook');

-- 1. sender and webhook on one organization: both rows, both abilities
SELECT lives_ok(format($$SELECT prm.grant_access('regress_al_relay', %s, 'sender')$$, :a), 'sender granted');
SELECT lives_ok(format($$SELECT prm.grant_access('regress_al_relay', %s, 'webhook')$$, :a), 'webhook granted beside it');
SELECT lives_ok(format($$SELECT prm.grant_access('regress_al_relay', %s, 'webhook')$$, :a), 'granting a level again changes nothing');
SELECT results_eq(format($$SELECT level FROM prm.org_access WHERE org_id = %s AND role_id = 'regress_al_relay'::regrole ORDER BY level$$, :a),
                  ARRAY['sender', 'webhook'], 'the role holds both levels');
SELECT prm.enqueue_message(:a, 'sms', '+12125550151', 'hello') AS m1 \gset
SET LOCAL ROLE regress_al_relay;
SELECT is((SELECT count(*)::int FROM prm.claim_messages('sms', 10)), 1, 'as sender it claims the queued message');
SELECT lives_ok(format($$SELECT prm.mark_message_sent(%s, 'SM-al-1', (SELECT lease_token FROM prm.outbound_message WHERE id = %s))$$, :m1, :m1),
                'and acknowledges it with its lease');
SELECT is(prm.record_delivery_status('SM-al-1', 'delivered'), true, 'it records the delivery status');
SELECT alike(prm.handle_inbound_sms('+12125550150', '+12125550151', 'HELP', 'SM-in-al-1'), '%Clinic Alpha%',
            'as webhook it handles an inbound SMS of its organization');
SELECT throws_ok($$SELECT prm.handle_inbound_sms('+12125550160', '+12125550151', 'HELP', 'SM-in-al-2')$$, '42501', NULL,
                 'but not one for organization B''s number');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"batch_size": 4}')$$, :a), '42501', NULL, 'and it is no admin');
RESET ROLE;

-- 2. revoking one level keeps the other
SET LOCAL ROLE regress_al_admin;
SELECT is(prm.revoke_access('regress_al_relay', :a, 'webhook'), true, 'revoke_access(role, org, level) takes webhook');
SELECT is(prm.revoke_access('regress_al_relay', :a, 'webhook'), false, 'a second time: it had it no more');
SELECT is(prm.revoke_access('regress_al_relay', :a, 'staff'), false, 'a level the role never had: false');
RESET ROLE;
SELECT results_eq(format($$SELECT level FROM prm.org_access WHERE org_id = %s AND role_id = 'regress_al_relay'::regrole$$, :a),
                  ARRAY['sender'], 'sender is kept');
SELECT prm.enqueue_message(:a, 'sms', '+12125550151', 'again') AS m2 \gset
SET LOCAL ROLE regress_al_relay;
SELECT is((SELECT count(*)::int FROM prm.claim_messages('sms', 10)), 1, 'the role still claims as sender');
SELECT throws_ok($$SELECT prm.handle_inbound_sms('+12125550150', '+12125550151', 'HELP', 'SM-in-al-3')$$, '42501', NULL,
                 'but handles inbound SMS no more');
RESET ROLE;
SELECT is(prm.revoke_access('regress_al_relay', :a), true, 'revoke_access(role, org) takes what is left');
SELECT is_empty(format($$SELECT 1 FROM prm.org_access WHERE org_id = %s AND role_id = 'regress_al_relay'::regrole$$, :a), 'nothing left');
SELECT is_empty($$SELECT 1 FROM prm.access_privilege WHERE role_id = 'regress_al_relay'::regrole$$,
                'and no privilege prm granted is left');

-- 3. readonly, staff and admin replace one another, and say so
SELECT prm.grant_access('regress_al_reader', :a, 'admin');
SELECT prm.grant_access('regress_al_reader', :a, 'sender');
-- the NOTICE goes to the client; the event records the replacement too
SELECT prm.grant_access('regress_al_reader', :a, 'readonly');
SELECT results_eq(format($$SELECT level FROM prm.org_access WHERE org_id = %s AND role_id = 'regress_al_reader'::regrole ORDER BY level$$, :a),
                  ARRAY['readonly', 'sender'], 'admin was replaced by readonly; sender stays');
SELECT is((SELECT payload ->> 'replaced' FROM prm.event WHERE org_id = :a AND kind = 'access_granted'
             AND entity_id = 'regress_al_reader'::regrole::oid::bigint ORDER BY id DESC LIMIT 1),
          'admin', 'the access_granted event says which level was replaced');
SET LOCAL ROLE regress_al_reader;
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"batch_size": 4}')$$, :a), '42501', NULL, 'the demoted role is no admin any more');
SELECT lives_ok(format($$SELECT prm.search_patients(%s, 'Ann')$$, :a), 'it reads as readonly');
RESET ROLE;

-- 4. record_delivery_status: 42501 without sender or webhook
SET LOCAL ROLE regress_al_none;
SELECT throws_ok($$SELECT prm.record_delivery_status('SM-al-1', 'read')$$, '42501', NULL, 'a role with no grant: 42501');
RESET ROLE;
SELECT prm.revoke_access('regress_al_reader', :a, 'sender');
SET LOCAL ROLE regress_al_reader;
SELECT throws_ok($$SELECT prm.record_delivery_status('SM-al-1', 'read')$$, '42501', NULL, 'a readonly role: 42501');
RESET ROLE;
SET LOCAL ROLE regress_al_b;
SELECT is(prm.record_delivery_status('SM-al-1', 'read'), false, 'a webhook of B: A''s message is not found, false');
RESET ROLE;
SELECT is((SELECT status FROM prm.outbound_message WHERE id = :m1), 'delivered', 'and nothing changed');

-- 5. bad input to revoke_access(role, org, level)
SET LOCAL ROLE regress_al_admin;
SELECT throws_ok(format($$SELECT prm.revoke_access('regress_al_reader', %s, 'superuser')$$, :a), '22023', NULL, 'an unknown level: 22023');
SELECT throws_ok(format($$SELECT prm.revoke_access('regress_al_reader', %s, 'readonly'' OR ''1')$$, :a),
                 '22023', NULL, 'an injection string is an unknown level');
SELECT throws_ok(format($$SELECT prm.revoke_access('regress_al_reader', %s, NULL)$$, :a), '22004', NULL, 'a NULL level: 22004');
SELECT throws_ok($$SELECT prm.revoke_access('regress_al_reader', NULL, 'readonly')$$, '22004', NULL, 'a NULL organization: 22004');
SELECT throws_ok(format($$SELECT prm.revoke_access('regress_al_b', %s, 'webhook')$$, :b), '42501', NULL,
                 'an admin of A cannot revoke a level on B');
SELECT throws_ok($$SELECT prm.revoke_access('regress_al_reader', 999999999, 'readonly')$$, '42501', NULL, 'nor on an unknown organization');
SELECT throws_ok(format($$SELECT prm.revoke_access('regress_al_reader', %s, repeat('x', 100000))$$, :a), '22001', NULL, 'an oversized level: 22001');
RESET ROLE;
SELECT results_eq(format($$SELECT level FROM prm.org_access WHERE org_id = %s AND role_id = 'regress_al_b'::regrole$$, :b),
                  ARRAY['webhook'], 'B''s grant is untouched');

SELECT * FROM finish();
ROLLBACK;
