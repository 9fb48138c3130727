-- The outbox: claiming with leases, acknowledgements, retries, dead letters,
-- delivery callbacks, dedup keys, quiet hours, templates, and bad input.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(63);

SELECT prm.create_organization('Out Clinic', 'Australia/Sydney', '+61290001000') AS org \gset
SELECT prm.create_organization('Far Clinic', 'UTC', '+15558020000') AS far \gset
SELECT prm.configure(:org, '{"phone_region": "AU", "max_attempts": 3}') IS NOT NULL AS ok \gset
SELECT prm.add_patient(:org, 'Pat', 'Out', '0412 111 222', 'pat@example.org', 'Australia/Sydney') AS pat \gset
SELECT prm.add_patient(:far, 'Far', 'Away', '+15558021111') AS far_pat \gset

-- quiet hours, in the patient's time zone (default 21:00-08:00)
SELECT prm.enqueue_message(:org, 'sms', '0412 111 222', 'late', :pat, 'q1', '2031-01-01 23:30 Australia/Sydney') AS q1,
       prm.enqueue_message(:org, 'sms', '0412 111 222', 'early', :pat, 'q2', '2031-01-02 07:59 Australia/Sydney') AS q2,
       prm.enqueue_message(:org, 'sms', '0412 111 222', 'noon', :pat, 'q3', '2031-01-02 12:00 Australia/Sydney') AS q3,
       prm.enqueue_message(:org, 'email', 'pat@example.org', 'mail', :pat, 'q4', '2031-01-01 23:30 Australia/Sydney') AS q4 \gset
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :q1),
          '2031-01-02 08:00 Australia/Sydney'::timestamptz, 'an SMS at 23:30 waits until 08:00 next morning');
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :q2),
          '2031-01-02 08:00 Australia/Sydney'::timestamptz, 'an SMS at 07:59 waits one minute');
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :q3),
          '2031-01-02 12:00 Australia/Sydney'::timestamptz, 'an SMS at noon goes at noon');
SELECT is((SELECT not_before FROM prm.outbound_message WHERE id = :q4),
          '2031-01-01 23:30 Australia/Sydney'::timestamptz, 'quiet hours hold SMS only');
-- the rest must not depend on the hour the test runs at
SELECT prm.configure(:org, '{"quiet_hours": false}') IS NOT NULL AS ok \gset
SELECT prm.configure(:far, '{"quiet_hours": false}') IS NOT NULL AS ok \gset

-- queueing
SELECT prm.enqueue_message(:org, 'sms', '0412 111 222', 'one', :pat, 'k1', now() - interval '1 minute') AS m1 \gset
SELECT is(prm.enqueue_message(:org, 'sms', '0412 111 222', 'one again', :pat, 'k1'), :'m1'::bigint, 'a dedup key queues once');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE dedup_key = 'k1'), 1, 'one row for the key');
SELECT is((SELECT to_address FROM prm.outbound_message WHERE id = :m1), '+61412111222', 'SMS address normalised');
SELECT prm.enqueue_message(:org, 'sms', '0412 111 222', 'two', :pat, NULL, now() - interval '1 minute') AS m2 \gset
SELECT prm.enqueue_message(:org, 'sms', '0412 111 222', 'three', :pat, NULL, now() - interval '1 minute') AS m3 \gset
SELECT prm.enqueue_message(:far, 'sms', '+15558021111', 'far', :far_pat, NULL, now() - interval '1 minute') AS mfar \gset

-- claiming
CREATE TEMP TABLE c1 AS SELECT * FROM prm.claim_messages('sms', 2, '60 seconds');
SELECT is((SELECT count(*)::int FROM c1), 2, 'claim takes at most max_count');
SELECT is((SELECT array_agg(id ORDER BY id) FROM c1), ARRAY[:m1, :m2]::bigint[], 'oldest due first');
SELECT ok((SELECT bool_and(status = 'sending' AND lease_token IS NOT NULL AND attempts = 1) FROM c1), 'claimed: sending, leased, attempt counted');
CREATE TEMP TABLE c2 AS SELECT * FROM prm.claim_messages('sms', 10);
SELECT is((SELECT array_agg(id ORDER BY id) FROM c2), ARRAY[:m3, :mfar]::bigint[], 'a second claim gets the rest, not the leased ones, and not future ones');
SELECT is((SELECT count(*)::int FROM prm.claim_messages('sms', 10)), 0, 'nothing left to claim');

-- acknowledgements with leases
SELECT throws_ok(format($$SELECT prm.mark_message_sent(%s, 'SM1', gen_random_uuid())$$, :m1), '55000', NULL, 'a foreign lease token is refused');
SELECT lives_ok(format($$SELECT prm.mark_message_sent(%s, 'SM1', %L)$$, :m1, (SELECT lease_token FROM c1 WHERE id = :m1)), 'the holder acknowledges');
SELECT is((SELECT status FROM prm.outbound_message WHERE id = :m1), 'sent', 'sent');
SELECT throws_ok(format($$SELECT prm.mark_message_sent(%s, 'SM1again', NULL)$$, :m1), '55000', NULL, 'a sent message cannot be acknowledged again');
SELECT lives_ok(format($$SELECT prm.mark_message_sent(%s, 'SMFAR')$$, :mfar), 'NULL lease token skips the lease check');

-- delivery callbacks move forward only
SELECT is(prm.record_delivery_status('SM1', 'sent'), false, 'a sent callback for a sent message changes nothing');
SELECT is(prm.record_delivery_status('SM1', 'delivered'), true, 'delivered applied');
SELECT is(prm.record_delivery_status('SM1', 'delivered'), false, 'repeated callback changes nothing');
SELECT is(prm.record_delivery_status('SM1', 'sent'), false, 'a late sent after delivered is ignored');
SELECT is(prm.record_delivery_status('SM1', 'queued'), false, 'a late queued is ignored');
SELECT is((SELECT status FROM prm.outbound_message WHERE id = :m1), 'delivered', 'still delivered');
SELECT is(prm.record_delivery_status('SM1', 'READ'), true, 'read after delivered, any letter case');
SELECT is(prm.record_delivery_status('SM-unknown', 'delivered'), false, 'unknown provider id: false');
SELECT throws_ok($$SELECT prm.record_delivery_status('SM1', 'teleported')$$, '22023', NULL, 'unknown status word refused');
SELECT throws_ok($$SELECT prm.record_delivery_status(NULL, 'sent')$$, '22004', NULL, 'NULL provider id refused');

-- failures: backoff, then dead, then re-drive
SELECT lives_ok(format($$SELECT prm.mark_message_failed(%s, 'carrier timeout', true, %L)$$, :m2, (SELECT lease_token FROM c1 WHERE id = :m2)), 'retryable failure');
SELECT ok((SELECT status = 'queued' AND not_before > now() AND last_error = 'carrier timeout' FROM prm.outbound_message WHERE id = :m2), 'queued again, later');
SELECT ok((SELECT not_before - now() BETWEEN interval '22 seconds' AND interval '38 seconds' FROM prm.outbound_message WHERE id = :m2), 'first retry after retry_base (30 s) +-25% jitter');
UPDATE prm.outbound_message SET not_before = now() - interval '1 second', attempts = 2 WHERE id = :m2;
CREATE TEMP TABLE c3 AS SELECT * FROM prm.claim_messages('sms', 1);
SELECT is((SELECT attempts FROM c3), 3, 'third attempt');
SELECT lives_ok(format($$SELECT prm.mark_message_failed(%s, 'still failing', true, %L)$$, :m2, (SELECT lease_token FROM c3)), 'failure at the last attempt');
SELECT is((SELECT status FROM prm.outbound_message WHERE id = :m2), 'dead', 'dead after max_attempts');
SELECT is((SELECT count(*)::int FROM prm.dead_message WHERE id = :m2), 1, 'visible in prm.dead_message');
SELECT ok(prm.redrive_message(:org, :m2), 're-driven');
SELECT ok((SELECT status = 'queued' AND attempts = 0 FROM prm.outbound_message WHERE id = :m2), 'queued with attempts reset');
SELECT is(prm.redrive_message(:org, :m2), false, 'only dead messages are re-driven');
SELECT lives_ok(format($$SELECT prm.mark_message_failed(%s, 'invalid number', false, %L)$$, :m3, (SELECT lease_token FROM c2 WHERE id = :m3)), 'permanent failure');
SELECT is((SELECT status FROM prm.outbound_message WHERE id = :m3), 'dead', 'not retryable: dead at once');

-- templates
SELECT ok(prm.render_template(:org, 'help') LIKE 'Out Clinic:%Msg & data rates may apply.', 'HELP names the clinic and the rates');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'offer', 'Hi {given_name}, a slot is free')$$, :org), '22023', NULL, 'patient details are not placeholders');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'offer', 'Open {date')$$, :org), '22023', NULL, 'unclosed placeholder refused');
SELECT throws_ok(format($$SELECT prm.set_template(%s, 'Poem!', 'Roses')$$, :org), '22023', NULL, 'a malformed kind refused');
SELECT lives_ok(format($$SELECT prm.set_template(%s, 'help', '{clinic} help: reply STOP to stop. Msg & data rates may apply.', 'sms', 'de')$$, :org), 'a German help text');
SELECT is(prm.render_template(:org, 'help', '{}', 'sms', 'de-AT'), 'Out Clinic help: reply STOP to stop. Msg & data rates may apply.', 'de-AT falls back to de');
SELECT throws_ok(format($$SELECT prm.render_template(%s, 'offer', '{}')$$, :org), '22023', NULL, 'a placeholder without value cannot render');

-- finished messages leave the hot queue after a day; callbacks still find them
UPDATE prm.outbound_message SET updated_at = now() - interval '2 days' WHERE id = :m1;
SELECT ok((prm.run_due_jobs() ->> 'archive_messages')::int >= 1, 'run_due_jobs archives finished messages');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE id = :m1), 0, 'gone from the hot queue');
SELECT is((SELECT status FROM prm.outbound_message_history WHERE id = :m1), 'read', 'kept in the history, status and all');
SELECT is(prm.record_delivery_status('SM1', 'delivered'), false, 'a late callback for an archived message changes nothing');
SELECT is(prm.enqueue_message(:org, 'sms', '0412 111 222', 'one more time', :pat, 'k1'), :'m1'::bigint, 'a dedup key stays used after its message was archived');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE dedup_key = 'k1'), 0, 'nothing queued again');

-- bad input: nothing claimed, nothing changed
SELECT throws_ok($$SELECT * FROM prm.claim_messages('fax', 1)$$, '22023', NULL, 'unknown channel');
SELECT throws_ok($$SELECT * FROM prm.claim_messages('sms', 0)$$, '22023', NULL, 'zero count');
SELECT throws_ok($$SELECT * FROM prm.claim_messages('sms', -5)$$, '22023', NULL, 'negative count');
SELECT throws_ok($$SELECT * FROM prm.claim_messages('sms', 1000000)$$, '22023', NULL, 'huge count');
SELECT throws_ok($$SELECT * FROM prm.claim_messages('sms', 1, '0 seconds')$$, '22023', NULL, 'zero lease');
SELECT throws_ok($$SELECT * FROM prm.claim_messages('sms', 1, '-5 seconds')$$, '22023', NULL, 'negative lease');
SELECT throws_ok($$SELECT * FROM prm.claim_messages('sms', 1, '10 days')$$, '22023', NULL, 'huge lease');
SELECT throws_ok($$SELECT * FROM prm.claim_messages(NULL, 1)$$, '22004', NULL, 'NULL channel');
SELECT throws_ok($$SELECT prm.mark_message_sent(987654321, 'x')$$, 'P0002', NULL, 'unknown message');
SELECT throws_ok(format($$SELECT prm.mark_message_failed(%s, %L)$$, :m2, repeat('e', 3000)), '22001', NULL, 'oversized error text');
SELECT is((SELECT status FROM prm.outbound_message WHERE id = :m2), 'queued', 'message untouched by the refused calls');

SELECT * FROM finish();
ROLLBACK;
