-- Conversations across organizations, and the webhooks' edges.
--  * Tenancy: a role of organization B, at every level, reads none of A's
--    conversations, messages, inbox or thread rows, inbound messages or
--    inbound addresses (organization.whatsapp_number / email_address: there
--    is no table of its own), and changes none of them through any function
--    (readonly reads the outbox's rows of its own organization, so the
--    thread with its delivery status works for a dashboard role);
--    each read is checked against the role's own organization first, so an
--    empty answer is not a broken query.
--  * Bad input for business_time_between and record_call_transcript.
--  * Replays through handle_inbound_message: WhatsApp and e-mail (one row,
--    one reply), and SMS YES and STOP exactly as handle_inbound_sms.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(92);
SET LOCAL timezone = 'UTC';

CREATE ROLE regress_ct_a_staff;
CREATE ROLE regress_ct_b_ro;
CREATE ROLE regress_ct_b_staff;
CREATE ROLE regress_ct_b_admin;
CREATE ROLE regress_ct_b_hook;

SELECT prm.create_organization('Conv A', 'Europe/Berlin', '+15558061000') AS org_a \gset
SELECT prm.create_organization('Conv B', 'UTC', '+15558062000') AS org_b \gset
SELECT prm.configure(:org_a, '{"quiet_hours": false, "phone_region": "US", "min_notice": "0 seconds"}') IS NOT NULL AS ok \gset
SELECT prm.configure(:org_b, '{"quiet_hours": false, "phone_region": "US"}') IS NOT NULL AS ok \gset
SELECT prm.grant_access('regress_ct_a_staff', :org_a, 'staff');
SELECT prm.grant_access('regress_ct_b_ro', :org_b, 'readonly');
SELECT prm.grant_access('regress_ct_b_staff', :org_b, 'staff');
SELECT prm.grant_access('regress_ct_b_admin', :org_b, 'admin');
SELECT prm.grant_access('regress_ct_b_hook', :org_b, 'webhook');
SELECT prm.add_staff(:org_a, 'Alma A') AS staff_a \gset
SELECT prm.add_staff(:org_b, 'Bodo B') AS staff_b \gset

SELECT prm.add_patient(:org_a, 'Ann', 'Alpha', '+15558061001', 'ann@a.example') AS ann \gset
SELECT prm.add_patient(:org_b, 'Ben', 'Beta', '+15558062001', 'ben@b.example') AS ben \gset
SELECT prm.set_inbound_address(:org_a, 'whatsapp', '+15558061009') IS NOT NULL AS ok \gset
SELECT prm.set_inbound_address(:org_a, 'email', 'desk@a.example') IS NOT NULL AS ok \gset
SELECT prm.set_inbound_address(:org_b, 'email', 'desk@b.example') IS NOT NULL AS ok \gset

-- A's traffic on every channel; B's own, so B's roles have something to see
SELECT prm.handle_inbound_message('sms', '+15558061000', '+15558061001', 'hello A', 'ct-a-sms-1') IS NOT NULL AS ok \gset
SELECT prm.handle_inbound_message('whatsapp', 'whatsapp:+15558061009', 'whatsapp:+15558061001', 'hi on WhatsApp', 'ct-a-wa-1') IS NULL AS ok \gset
SELECT prm.handle_inbound_message('email', 'desk@a.example', 'ann@a.example', 'About my bill', 'ct-a-em-1') IS NULL AS ok \gset
SELECT prm.record_call_transcript(:org_a, 'ct-a-call-1', '+15558061001', 'Ann asks for a call back', 40, 'completed') AS call_a \gset
SELECT prm.handle_inbound_message('sms', '+15558062000', '+15558062001', 'hello B', 'ct-b-sms-1') IS NOT NULL AS ok \gset
SELECT prm.handle_inbound_message('email', 'desk@b.example', 'ben@b.example', 'B mail', 'ct-b-em-1') IS NULL AS ok \gset
SELECT id AS conv_a FROM prm.conversation WHERE org_id = :org_a AND channel = 'whatsapp' \gset
SELECT id AS conv_a_sms FROM prm.conversation WHERE org_id = :org_a AND channel = 'sms' \gset
SELECT id AS conv_b FROM prm.conversation WHERE org_id = :org_b AND channel = 'sms' \gset
SELECT id AS msg_a FROM prm.conversation_message WHERE org_id = :org_a AND conversation_id = :conv_a ORDER BY id LIMIT 1 \gset
SELECT id AS in_a FROM prm.inbound_message WHERE org_id = :org_a AND provider_message_id = 'ct-a-wa-1' \gset

-- a fingerprint of everything of A's that these tests must leave alone
CREATE TEMP VIEW a_rows AS
SELECT md5(concat_ws('|',
    (SELECT string_agg(c::text, ';' ORDER BY c.id) FROM prm.conversation c WHERE c.org_id = :org_a),
    (SELECT string_agg(m::text, ';' ORDER BY m.id) FROM prm.conversation_message m WHERE m.org_id = :org_a),
    (SELECT string_agg(i::text, ';' ORDER BY i.id) FROM prm.inbound_message i WHERE i.org_id = :org_a),
    (SELECT string_agg(q::text, ';' ORDER BY q.id) FROM prm.outbound_message q WHERE q.org_id = :org_a),
    (SELECT concat_ws(',', o.whatsapp_number, o.email_address, o.sms_number) FROM prm.organization o WHERE o.id = :org_a),
    (SELECT string_agg(s::text, ';' ORDER BY s.id) FROM prm.staff s WHERE s.org_id = :org_a))) AS fp;
GRANT SELECT ON a_rows TO PUBLIC;
SELECT fp AS a_before FROM a_rows \gset
SELECT ok((SELECT count(*) FROM prm.conversation WHERE org_id = :org_a) >= 4
          AND (SELECT count(*) FROM prm.conversation_thread WHERE org_id = :org_a) >= 4
          AND (SELECT count(*) FROM prm.conversation_inbox WHERE org_id = :org_a) >= 4,
          'A has conversations on sms, whatsapp, email and voice');

-- ---------- reads: B's readonly, staff and admin roles ----------
SET LOCAL ROLE regress_ct_b_ro;
SELECT ok((SELECT count(*) FROM prm.conversation) > 0 AND (SELECT count(*) FROM prm.conversation_message) > 0,
          'B readonly sees B''s own conversations (the reads below work)');
SELECT is_empty(format('SELECT 1 FROM prm.conversation WHERE org_id = %s OR id = %s', :org_a, :conv_a), 'B readonly: no conversation of A');
SELECT is_empty(format('SELECT 1 FROM prm.conversation_message WHERE org_id = %s OR id = %s', :org_a, :msg_a), 'B readonly: no message of A');
SELECT is_empty(format('SELECT 1 FROM prm.conversation_inbox WHERE org_id = %s', :org_a), 'B readonly: A''s inbox is empty');
SELECT is_empty(format('SELECT 1 FROM prm.inbound_message WHERE org_id = %s', :org_a), 'B readonly: no inbound message of A');
SELECT is_empty($$SELECT 1 FROM prm.organization WHERE whatsapp_number = '+15558061009' OR email_address = 'desk@a.example'$$,
                'B readonly: A''s inbound addresses are not visible');
SELECT ok((SELECT count(*) FROM prm.conversation_thread) > 0,
          'B readonly reads B''s threads (the view joins the outbox for delivery status)');
SELECT is_empty(format('SELECT 1 FROM prm.conversation_thread WHERE org_id = %s', :org_a), 'B readonly: A''s thread is empty');
SELECT is_empty(format('SELECT 1 FROM prm.outbound_message WHERE org_id = %s', :org_a), 'B readonly: no outbound message of A');
RESET ROLE;
SET LOCAL ROLE regress_ct_b_staff;
SELECT ok((SELECT count(*) FROM prm.conversation_inbox) > 0 AND (SELECT count(*) FROM prm.conversation_thread) > 0,
          'B staff sees B''s inbox and threads');
SELECT is_empty(format('SELECT 1 FROM prm.conversation WHERE org_id = %s', :org_a), 'B staff: no conversation of A');
SELECT is_empty(format('SELECT 1 FROM prm.conversation_message WHERE org_id = %s', :org_a), 'B staff: no message of A');
SELECT is_empty(format('SELECT 1 FROM prm.conversation_inbox WHERE org_id = %s', :org_a), 'B staff: A''s inbox is empty');
SELECT is_empty(format('SELECT 1 FROM prm.conversation_thread WHERE org_id = %s', :org_a), 'B staff: A''s thread is empty');
SELECT is_empty(format('SELECT 1 FROM prm.organization WHERE id = %s', :org_a), 'B staff: A''s organization row (its addresses) is not visible');
RESET ROLE;
SET LOCAL ROLE regress_ct_b_admin;
SELECT ok((SELECT count(*) FROM prm.conversation_message) > 0 AND (SELECT count(*) FROM prm.conversation_thread) > 0,
          'B admin sees B''s messages and threads');
SELECT is_empty(format('SELECT 1 FROM prm.conversation WHERE org_id = %s', :org_a), 'B admin: no conversation of A');
SELECT is_empty(format('SELECT 1 FROM prm.conversation_message WHERE org_id = %s', :org_a), 'B admin: no message of A');
SELECT is_empty(format('SELECT 1 FROM prm.conversation_inbox WHERE org_id = %s', :org_a), 'B admin: A''s inbox is empty');
SELECT is_empty(format('SELECT 1 FROM prm.conversation_thread WHERE org_id = %s', :org_a), 'B admin: A''s thread is empty');
SELECT is_empty(format('SELECT 1 FROM prm.organization WHERE id = %s', :org_a), 'B admin: A''s organization row is not visible');
RESET ROLE;
SET LOCAL ROLE regress_ct_b_hook;
SELECT throws_ok('SELECT 1 FROM prm.conversation', '42501', NULL, 'B webhook reads no conversation table');
SELECT throws_ok('SELECT 1 FROM prm.conversation_thread', '42501', NULL, 'nor the thread view');
RESET ROLE;

-- ---------- changes: no direct DML, no function reaches A's rows ----------
SET LOCAL ROLE regress_ct_b_admin;
SELECT throws_ok(format('UPDATE prm.conversation SET unread_count = 0 WHERE id = %s', :conv_a), '42501', NULL, 'B admin: no direct UPDATE of conversations');
SELECT throws_ok(format('DELETE FROM prm.conversation_message WHERE id = %s', :msg_a), '42501', NULL, 'no direct DELETE of messages');
SELECT throws_ok(format('INSERT INTO prm.conversation (org_id, channel, address) VALUES (%s, %L, %L)', :org_a, 'sms', '+15558061001'),
                 '42501', NULL, 'no direct INSERT into A''s conversations');
SELECT throws_ok(format('SELECT prm.set_inbound_address(%s, %L, %L)', :org_a, 'email', 'evil@b.example'), '42501', NULL,
                 'B admin cannot set A''s inbound address');
SELECT throws_ok(format('SELECT prm.set_inbound_address(%s, %L, %L)', :org_b, 'whatsapp', '+15558061009'), '23505', NULL,
                 'nor take A''s WhatsApp number for B');
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, %s, %L)', :org_a, :conv_a, 'x'), '42501', NULL, 'reply through A: refused');
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, %s, %L)', :org_b, :conv_a, 'x'), 'P0002', NULL, 'reply to A''s conversation through B: not there');
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, %s, NULL, %L)', :org_b, :conv_a, 'hint'), 'P0002', NULL, 'nor with a template');
SELECT throws_ok(format('SELECT prm.mark_conversation_read(%s, %s)', :org_b, :conv_a), 'P0002', NULL, 'mark A''s conversation read through B: not there');
SELECT throws_ok(format('SELECT prm.mark_conversation_read(%s, %s)', :org_a, :conv_a), '42501', NULL, 'nor through A');
SELECT throws_ok(format('SELECT prm.assign_conversation(%s, %s, %s)', :org_b, :conv_a, :staff_b), 'P0002', NULL, 'assign A''s conversation through B: not there');
SELECT throws_ok(format('SELECT prm.assign_conversation(%s, %s, %s)', :org_a, :conv_a, :staff_a), '42501', NULL, 'nor through A');
SELECT throws_ok(format('SELECT prm.assign_conversation(%s, %s, %s)', :org_b, :conv_b, :staff_a), 'P0002', NULL, 'nor assign B''s conversation to A''s staff');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, %L)', :org_a, 'ct-b-call', '+15558061001', 'x'), '42501', NULL,
                 'nor record a call into A');
RESET ROLE;
SET LOCAL ROLE regress_ct_b_hook;
SELECT throws_ok($$SELECT prm.handle_inbound_message('sms', '+15558061000', '+15558061001', 'STOP', 'ct-b-x1')$$, '42501', NULL,
                 'B webhook: an SMS to A''s number is refused');
SELECT throws_ok($$SELECT prm.handle_inbound_message('whatsapp', '+15558061009', '+15558061001', 'x', 'ct-b-x2')$$, '42501', NULL,
                 'a WhatsApp message to A''s number too');
SELECT throws_ok($$SELECT prm.handle_inbound_message('email', 'desk@a.example', 'ann@a.example', 'x', 'ct-b-x3')$$, '42501', NULL,
                 'and an e-mail to A''s address');
SELECT throws_ok($$SELECT prm.handle_inbound_message('whatsapp', 'whatsapp:+15558061009', 'whatsapp:+15558061001', 'replay?', 'ct-a-wa-1')$$, '42501', NULL,
                 'a replay of A''s provider id through B''s webhook learns nothing');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, %L)', :org_a, 'ct-a-call-1', '+15558061001', 'replay'), '42501', NULL,
                 'nor a replay of A''s call id');
SELECT ok(prm.record_call_transcript(:org_b, 'ct-a-call-1', '+15558061001', 'B''s own call with the same provider id') <> :call_a,
          'the same call id in B is B''s own recording, not A''s');
RESET ROLE;
SELECT is((SELECT fp FROM a_rows), :'a_before', 'none of A''s conversations, messages, inbound messages, addresses or staff changed');

-- ---------- business_time_between: bad input ----------
SELECT throws_ok($$SELECT prm.business_time_between(NULL, now(), now())$$, '22004', NULL, 'business_time_between: NULL org');
SELECT throws_ok(format('SELECT prm.business_time_between(%s, NULL, now())', :org_a), '22004', NULL, 'NULL from');
SELECT throws_ok(format('SELECT prm.business_time_between(%s, now(), NULL)', :org_a), '22004', NULL, 'NULL to');
SELECT throws_ok($$SELECT prm.business_time_between(999999999, now(), now() + interval '1 day')$$, 'P0002', NULL, 'an unknown organization');
SELECT throws_ok(format('SELECT prm.business_time_between(%s, %L, now())', :org_a, '-infinity'), '22008', NULL, '-infinity from');
SELECT throws_ok(format('SELECT prm.business_time_between(%s, now(), %L)', :org_a, 'infinity'), '22008', NULL, 'infinity to');
SELECT prm.set_business_hours(:org_a, '{"mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]]}');
SELECT is(prm.business_time_between(:org_a, '2024-01-08 00:00+01', '2024-01-01 00:00+01'), '0'::interval, 'to before from: no business time');
SELECT is(prm.business_time_between(:org_a, '2024-01-01 00:00+01', '2024-01-08 00:00+01'), '16:00'::interval, 'a week: Monday and Tuesday');
-- the instant 0 (2000-01-01 00:00 UTC) is an instant like any other
SELECT is(prm.business_time_between(:org_a, '1999-12-27 00:00+01', '2000-01-01 00:00+00'), '16:00'::interval,
          'a span ending at 2000-01-01 00:00 UTC is measured, not mistaken for "no end"');
SELECT throws_ok(format('SELECT prm.business_time_between(%s, %L, %L)', :org_a, '2000-01-01', '3000-01-01'), '54000', NULL,
                 'a span of 1000 years is refused, not counted short');
SELECT throws_ok(format('SELECT prm.business_time_between(%s, %L, %L)', :org_a, '4713-01-01 BC', '294276-12-31'), '54000', NULL,
                 'the widest finite span too');
SELECT is(prm.business_time_between(:org_a, '2024-01-01 00:00+01', '2026-03-02 00:00+01'),
          (SELECT count(*) * interval '8 hours' FROM generate_series(date '2024-01-01', date '2026-03-01', '1 day') d
            WHERE extract(isodow FROM d) IN (1, 2)), 'two years and two months are counted in full');
SET LOCAL ROLE regress_ct_b_ro;
SELECT throws_ok(format('SELECT prm.business_time_between(%s, now(), now() + interval %L)', :org_a, '1 day'), '42501', NULL,
                 'B cannot measure A''s business hours');
RESET ROLE;

-- ---------- record_call_transcript: bad input ----------
SELECT count(*) AS calls_before FROM prm.conversation_message WHERE org_id = :org_a AND provider_call_id IS NOT NULL \gset
SELECT throws_ok($$SELECT prm.record_call_transcript(NULL, 'c1', '+15558061001', 't')$$, '22004', NULL, 'call: NULL org');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, NULL, %L, %L)', :org_a, '+15558061001', 't'), '22004', NULL, 'call: NULL call id');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, NULL, %L)', :org_a, 'c1', 't'), '22004', NULL, 'call: NULL caller');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, NULL)', :org_a, 'c1', '+15558061001'), '22004', NULL, 'call: NULL transcript');
SELECT throws_ok($$SELECT prm.record_call_transcript(999999999, 'c1', '+15558061001', 't')$$, 'P0002', NULL, 'call: an unknown organization');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, %L)', :org_a, repeat('c', 201), '+15558061001', 't'), '22001', NULL,
                 'call: an oversized call id');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, %L)', :org_a, 'c1', '+15558061001', repeat('t', 100001)), '22001', NULL,
                 'call: an oversized transcript');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, %L, %s)', :org_a, 'c1', '+15558061001', 't', -1), '22003', NULL,
                 'call: a negative duration');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, %L, %s)', :org_a, 'c1', '+15558061001', 't', 2147483647), '22003', NULL,
                 'call: an absurd duration');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, %L, %s)', :org_a, 'c1', '+15558061001', 't', 86401), '22003', NULL,
                 'call: a duration over a day');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, %L, 5, %L)', :org_a, 'c1', '+15558061001', 't', '''; DROP TABLE prm.conversation; --'),
                 '22023', NULL, 'call: an injection string as outcome');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, %L, 5, %L)', :org_a, 'c1', '+15558061001', 't', 'Completed'),
                 '22023', NULL, 'call: an outcome not in lower case');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, %L, 5, %L)', :org_a, 'c1', '+15558061001', 't', repeat('x', 41)),
                 '22001', NULL, 'call: an oversized outcome');
SELECT is((SELECT count(*) FROM prm.conversation_message WHERE org_id = :org_a AND provider_call_id IS NOT NULL), :calls_before::bigint,
          'bad calls recorded nothing');
-- a blank outcome is no outcome, as every optional text argument
SELECT prm.record_call_transcript(:org_a, 'ct-blank', '+15558061001', 't', 5, '  ') AS blank_call \gset
SELECT is((SELECT call ->> 'outcome' FROM prm.conversation_message WHERE id = :blank_call), NULL, 'call: a blank outcome is recorded as none');
-- injection strings in the call id, caller and transcript are data
SELECT prm.record_call_transcript(:org_a, '''; DROP TABLE prm.patient; --', 'Robert''); DROP TABLE prm.conversation;--',
                                  '$$; DELETE FROM prm.conversation; $$', 10, 'voicemail') AS inj_call \gset
SELECT is((SELECT body || ' | ' || provider_call_id FROM prm.conversation_message WHERE id = :inj_call),
          '$$; DELETE FROM prm.conversation; $$ | ''; DROP TABLE prm.patient; --', 'injection strings are stored verbatim');
SELECT is((SELECT address FROM prm.conversation c JOIN prm.conversation_message m ON m.conversation_id = c.id WHERE m.id = :inj_call),
          left('Robert''); DROP TABLE prm.conversation;--', 64), 'the caller is kept as sent, in a conversation of its own');

-- ---------- replays through handle_inbound_message ----------
SELECT count(*) AS out_before FROM prm.outbound_message WHERE org_id = :org_a \gset
SELECT is(prm.handle_inbound_message('whatsapp', 'whatsapp:+15558061009', 'whatsapp:+15558061001', 'a different body', 'ct-a-wa-1'),
          (SELECT reply FROM prm.inbound_message WHERE org_id = :org_a AND provider_message_id = 'ct-a-wa-1'),
          'WhatsApp: a replayed provider id gets the first reply (none)');
SELECT is((SELECT count(*)::int FROM prm.inbound_message WHERE org_id = :org_a AND provider_message_id = 'ct-a-wa-1'), 1, 'and is stored once');
SELECT is((SELECT count(*)::int FROM prm.conversation_message WHERE org_id = :org_a AND inbound_message_id = :in_a), 1, 'and threaded once');
SELECT is((SELECT body FROM prm.inbound_message WHERE org_id = :org_a AND provider_message_id = 'ct-a-wa-1'), 'hi on WhatsApp',
          'the first body is kept');
SELECT is(prm.handle_inbound_message('email', 'desk@a.example', 'ann@a.example', 'About my bill (resent)', 'ct-a-em-1'),
          (SELECT reply FROM prm.inbound_message WHERE org_id = :org_a AND provider_message_id = 'ct-a-em-1'),
          'e-mail: a replayed provider id gets the first reply (none)');
SELECT is((SELECT count(*)::int FROM prm.inbound_message WHERE org_id = :org_a AND provider_message_id = 'ct-a-em-1'), 1, 'and is stored once');
SELECT is((SELECT count(*)::int FROM prm.conversation_message m JOIN prm.inbound_message i ON i.org_id = m.org_id AND i.id = m.inbound_message_id
            WHERE i.org_id = :org_a AND i.provider_message_id = 'ct-a-em-1'), 1, 'and threaded once');
SELECT is((SELECT count(*) FROM prm.outbound_message WHERE org_id = :org_a), :out_before::bigint, 'the replays queued no reply');

-- ---------- YES and STOP by SMS through handle_inbound_message ----------
SELECT prm.add_provider(:org_a, 'Dr A') AS dr \gset
SELECT prm.add_patient(:org_a, 'Yara', 'Yes', '+15558061002') AS yara \gset
SELECT prm.add_patient(:org_a, 'Cato', 'Cancel', '+15558061003') AS cato \gset
SELECT prm.join_waitlist(:org_a, :yara) AS entry \gset
SELECT prm.book_appointment(:org_a, :cato, :dr, date_trunc('hour', now()) + interval '3 days',
                            date_trunc('hour', now()) + interval '3 days 30 minutes') AS cato_appt \gset
SELECT prm.cancel_appointment(:org_a, :cato_appt) AS slot \gset
SELECT is((SELECT count(*)::int FROM prm.offer WHERE org_id = :org_a AND slot_id = :slot AND patient_id = :yara AND status = 'open'), 1,
          'Yara holds an offer for the freed slot');
SELECT prm.handle_inbound_message('sms', '+15558061000', '+15558061002', 'yes', 'ct-yes-1') AS yes_reply \gset
SELECT ok(:'yes_reply' ILIKE '%booked%', 'YES through handle_inbound_message books, as handle_inbound_sms');
SELECT is((SELECT count(*)::int FROM prm.appointment WHERE org_id = :org_a AND patient_id = :yara AND status = 'booked'), 1, 'one booking');
SELECT is(prm.handle_inbound_message('sms', '+15558061000', '+15558061002', 'yes', 'ct-yes-1'), :'yes_reply', 'the replayed YES gets the same reply');
SELECT is((SELECT count(*)::int FROM prm.appointment WHERE org_id = :org_a AND patient_id = :yara AND status = 'booked'), 1, 'and books nothing more');
SELECT is((SELECT count(*)::int FROM prm.conversation_message m JOIN prm.conversation c ON c.org_id = m.org_id AND c.id = m.conversation_id
            WHERE c.org_id = :org_a AND c.patient_id = :yara AND c.channel = 'sms' AND m.direction = 'inbound'), 1, 'the YES is threaded once');
SELECT prm.handle_inbound_message('sms', '+15558061000', '+15558061003', 'STOP', 'ct-stop-1') AS stop_reply \gset
SELECT is((SELECT sms_opt_out FROM prm.patient WHERE id = :cato), true, 'STOP through handle_inbound_message opts out');
SELECT is(:'stop_reply', prm.handle_inbound_message('sms', '+15558061000', '+15558061003', 'START', 'ct-stop-1'),
          'a replay of the STOP id (whatever the body) gets the STOP reply');
SELECT is((SELECT sms_opt_out FROM prm.patient WHERE id = :cato), true, 'and does not undo it');

SELECT * FROM finish();
ROLLBACK;
