-- What a sender needs: the From address in the row it claims (each
-- organization's own), and the batch acknowledgement mark_messages_sent:
-- the good path, a lease no longer held, bad input, unknown ids, another
-- organization's ids, and roles without the sender level.  Every refusal
-- changes nothing.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(41);

CREATE ROLE regress_ack_a;
CREATE ROLE regress_ack_b;
CREATE ROLE regress_ack_ro;
CREATE ROLE regress_ack_none;
SELECT prm.create_organization('Ack Clinic A', 'UTC', '+12025550100') AS a \gset
SELECT prm.create_organization('Ack Clinic B', 'UTC', '+12025550200') AS b \gset
SELECT prm.configure(:a, '{"quiet_hours": false}') IS NOT NULL AS ok \gset
SELECT prm.configure(:b, '{"quiet_hours": false}') IS NOT NULL AS ok \gset
SELECT prm.set_inbound_address(:a, 'whatsapp', '+12025550199') IS NULL AS ok \gset
SELECT prm.set_inbound_address(:a, 'email', 'desk@clinic-a.example') IS NULL AS ok \gset
SELECT prm.grant_access('regress_ack_a', :a, 'sender') IS NULL AS ok \gset
SELECT prm.grant_access('regress_ack_b', :b, 'sender') IS NULL AS ok \gset
SELECT prm.grant_access('regress_ack_ro', :a, 'readonly') IS NULL AS ok \gset

SELECT prm.enqueue_message(:a, 'sms', '+12025550111', 'a1') AS a1,
       prm.enqueue_message(:a, 'sms', '+12025550112', 'a2') AS a2,
       prm.enqueue_message(:a, 'sms', '+12025550113', 'a3') AS a3,
       prm.enqueue_message(:a, 'whatsapp', '+12025550114', 'aw') AS aw,
       prm.enqueue_message(:a, 'email', 'pat@example.org', 'ae') AS ae,
       prm.enqueue_message(:b, 'sms', '+12025550211', 'b1') AS b1 \gset

-- the From address, each organization's own, for the sender of each
CREATE TEMP TABLE claimed (LIKE prm.outbound_message);
GRANT ALL ON claimed TO PUBLIC;
SET ROLE regress_ack_a;
INSERT INTO claimed SELECT * FROM prm.claim_messages('sms', 10, '60 seconds');
INSERT INTO claimed SELECT * FROM prm.claim_messages('whatsapp', 10, '60 seconds');
INSERT INTO claimed SELECT * FROM prm.claim_messages('email', 10, '60 seconds');
SELECT is((SELECT array_agg(id ORDER BY id) FROM claimed), ARRAY[:a1, :a2, :a3, :aw, :ae]::bigint[],
          'the sender of A claims A''s messages only');
SELECT is((SELECT array_agg(DISTINCT org_id) FROM claimed), ARRAY[:a]::bigint[], 'each claimed row names its organization');
SELECT is((SELECT array_agg(DISTINCT from_address) FROM claimed WHERE channel = 'sms'), ARRAY['+12025550100'],
          'an SMS is sent from the clinic''s SMS number');
SELECT is((SELECT from_address FROM claimed WHERE id = :aw), '+12025550199', 'WhatsApp from its WhatsApp number');
SELECT is((SELECT from_address FROM claimed WHERE id = :ae), 'desk@clinic-a.example', 'e-mail from its e-mail address');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE org_id = :b), 0,
          'the sender of A reads none of B''s messages, nor their From address');
RESET ROLE;
SET ROLE regress_ack_b;
INSERT INTO claimed SELECT * FROM prm.claim_messages('sms', 10, '60 seconds');
SELECT is((SELECT id || ' ' || from_address FROM claimed WHERE org_id = :b), :b1 || ' +12025550200',
          'the sender of B gets B''s message, from B''s number');
RESET ROLE;
SELECT is((SELECT from_address FROM prm.outbound_message WHERE id = :b1), '+12025550200', 'the From address is kept in the row');

-- the good path: the whole SMS batch of A in one call
SET ROLE regress_ack_a;
SELECT is((SELECT count(*)::int FROM prm.mark_messages_sent(
              (SELECT array_agg(id ORDER BY id) FROM claimed WHERE org_id = :a AND channel = 'sms'),
              (SELECT array_agg('SM' || id ORDER BY id) FROM claimed WHERE org_id = :a AND channel = 'sms'),
              (SELECT array_agg(lease_token ORDER BY id) FROM claimed WHERE org_id = :a AND channel = 'sms'))),
          0, 'a batch acknowledged with its leases: nothing refused');
RESET ROLE;
SELECT is((SELECT string_agg(status || ':' || provider_message_id, ',' ORDER BY id) FROM prm.outbound_message
            WHERE id IN (:a1, :a2, :a3)),
          format('sent:SM%s,sent:SM%s,sent:SM%s', :a1, :a2, :a3), 'each one sent, with its provider id');
SELECT ok((SELECT bool_and(lease_token IS NULL AND lease_expires_at IS NULL AND sent_at IS NOT NULL)
             FROM prm.outbound_message WHERE id IN (:a1, :a2, :a3)), 'their leases are cleared, sent_at set');

-- a lease no longer held: refused and returned, the rest of the batch acknowledged
SET ROLE regress_ack_a;
SELECT results_eq(format($$SELECT * FROM prm.mark_messages_sent(ARRAY[%s, %s], ARRAY['W1', 'E1'], ARRAY[%L, %L]::uuid[])$$,
                         :aw, :ae, (SELECT lease_token FROM claimed WHERE id = :aw), gen_random_uuid()),
                  ARRAY[:ae]::bigint[], 'a lease that is not the message''s own is refused: its id comes back');
RESET ROLE;
SELECT is((SELECT status FROM prm.outbound_message WHERE id = :aw), 'sent', 'the message with its lease is sent');
SELECT is((SELECT status FROM prm.outbound_message WHERE id = :ae), 'sending', 'the refused one is untouched');
SET ROLE regress_ack_a;
SELECT results_eq(format($$SELECT * FROM prm.mark_messages_sent(ARRAY[%s], ARRAY['SMagain'], ARRAY[%L]::uuid[])$$,
                         :a1, (SELECT lease_token FROM claimed WHERE id = :a1)),
                  ARRAY[:a1]::bigint[], 'a message already acknowledged is refused the second time');
RESET ROLE;
SELECT is((SELECT provider_message_id FROM prm.outbound_message WHERE id = :a1), 'SM' || :a1, 'and keeps its first provider id');

-- bad input: a clear error, nothing changed (ae stays sending throughout)
SET ROLE regress_ack_a;
SELECT format('ARRAY[%L]::uuid[]', (SELECT lease_token FROM claimed WHERE id = :ae)) AS tok \gset
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(NULL, ARRAY['x'], %s)$$, :'tok'), '22004', NULL, 'NULL message_ids');
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s], NULL, %s)$$, :ae, :'tok'), '22004', NULL, 'NULL provider_message_ids');
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s], ARRAY['x'], NULL)$$, :ae), '22004', NULL, 'NULL lease_tokens');
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s, NULL], ARRAY['x', 'y'], ARRAY[%L, %L]::uuid[])$$,
                        :ae, (SELECT lease_token FROM claimed WHERE id = :ae), gen_random_uuid()),
                 '22004', NULL, 'a NULL id in the batch');
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s], ARRAY[NULL::text], %s)$$, :ae, :'tok'), '22004', NULL, 'a NULL provider id');
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s], ARRAY['x'], ARRAY[NULL::uuid])$$, :ae), '22004', NULL, 'a NULL lease token');
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s], ARRAY['x', 'y'], %s)$$, :ae, :'tok'), '22023', NULL,
                 'arrays of different lengths');
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s, %s], ARRAY['x', 'y'], ARRAY[%L, %L]::uuid[])$$,
                        :ae, :ae, (SELECT lease_token FROM claimed WHERE id = :ae), (SELECT lease_token FROM claimed WHERE id = :ae)),
                 '22023', NULL, 'an id twice');
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[[%s]], ARRAY[['x']], ARRAY[[%L]]::uuid[])$$,
                        :ae, (SELECT lease_token FROM claimed WHERE id = :ae)), '22023', NULL, 'a two-dimensional array');
SELECT throws_ok($$SELECT prm.mark_messages_sent(array_agg(g), array_agg('x' || g), array_agg(gen_random_uuid()))
                     FROM generate_series(1, 1001) g$$, '22023', NULL, 'more than 1000 messages');
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s], ARRAY[repeat('x', 201)], %s)$$, :ae, :'tok'), '22001', NULL,
                 'a provider id over 200 characters');
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s], ARRAY['  '], %s)$$, :ae, :'tok'), '22023', NULL, 'a blank provider id');
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s, 999999999], ARRAY['x', 'y'], ARRAY[%L, %L]::uuid[])$$,
                        :ae, (SELECT lease_token FROM claimed WHERE id = :ae), gen_random_uuid()),
                 'P0002', NULL, 'an unknown id refuses the whole batch');
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s, %s], ARRAY['x', 'y'], ARRAY[%L, %L]::uuid[])$$,
                        :ae, :b1, (SELECT lease_token FROM claimed WHERE id = :ae), (SELECT lease_token FROM claimed WHERE id = :b1)),
                 '42501', NULL, 'another organization''s message, even with its lease token, refuses the whole batch');
SELECT is((SELECT count(*)::int FROM prm.mark_messages_sent('{}', '{}', '{}')), 0, 'an empty batch acknowledges nothing');
RESET ROLE;
SELECT is((SELECT status FROM prm.outbound_message WHERE id = :ae), 'sending', 'none of the refused calls acknowledged the message of A');
SELECT is((SELECT status || ':' || coalesce(provider_message_id, '-') FROM prm.outbound_message WHERE id = :b1), 'sending:-',
          'nor B''s message');

-- a provider id that looks like SQL is stored as text
SET ROLE regress_ack_a;
SELECT is((SELECT count(*)::int FROM prm.mark_messages_sent(ARRAY[:ae]::bigint[], ARRAY['x''); DROP TABLE prm.patient; --'],
                                                          ARRAY[(SELECT lease_token FROM claimed WHERE id = :ae)])),
          0, 'an injection-looking provider id is just a provider id');
RESET ROLE;
SELECT is((SELECT provider_message_id FROM prm.outbound_message WHERE id = :ae), 'x''); DROP TABLE prm.patient; --', 'stored verbatim');
SELECT has_table('prm', 'patient', 'and nothing was run');

-- roles without the sender level
SET ROLE regress_ack_none;
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s], ARRAY['x'], ARRAY[%L]::uuid[])$$,
                        :b1, (SELECT lease_token FROM claimed WHERE id = :b1)), '42501', NULL, 'a role with no grant: 42501');
RESET ROLE;
SET ROLE regress_ack_ro;
SELECT throws_ok(format($$SELECT prm.mark_messages_sent(ARRAY[%s], ARRAY['x'], ARRAY[%L]::uuid[])$$,
                        :b1, (SELECT lease_token FROM claimed WHERE id = :b1)), '42501', NULL, 'a readonly role: 42501');
RESET ROLE;
SELECT is((SELECT level FROM prm.function_level WHERE signature = 'prm.mark_messages_sent(bigint[],text[],uuid[])'), 'sender',
          'the batch acknowledgement needs the sender level');

-- B's own sender acknowledges B's message
SET ROLE regress_ack_b;
SELECT is((SELECT count(*)::int FROM prm.mark_messages_sent(ARRAY[:b1]::bigint[], ARRAY['SMB'],
                                                          ARRAY[(SELECT lease_token FROM claimed WHERE id = :b1)])),
          0, 'B''s sender acknowledges B''s message');
RESET ROLE;
SELECT is((SELECT status FROM prm.outbound_message WHERE id = :b1), 'sent', 'sent');

SELECT * FROM finish();
ROLLBACK;
