-- Conversations and inbound channels: every message threaded per
-- (organization, channel, address); SMS, WhatsApp and e-mail routed by the
-- clinic's address and idempotent on the provider's id; unknown senders
-- kept; staff replies on the conversation's channel with WhatsApp's 24-hour
-- rule; reading, timers (inactive, closed, never reopened), voice
-- transcripts, handoff keywords; bad input and another organization's ids.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(75);
SET LOCAL timezone = 'UTC';

CREATE ROLE regress_conv_hook;
CREATE ROLE regress_conv_staff;
CREATE ROLE regress_conv_other;

SELECT prm.create_organization('Talk', 'Europe/London', '+447700900001') AS org \gset
SELECT prm.create_organization('Other', 'UTC', '+15558009999') AS org_b \gset
SELECT prm.configure(:org, '{"quiet_hours": false, "phone_region": "GB"}') IS NOT NULL AS configured \gset
SELECT prm.add_patient(:org, 'Ann', 'Talk', '+447700900123', 'ann@example.org') AS ann \gset
SELECT prm.add_patient(:org_b, 'Ben', 'Other', '+15558009123') AS ben \gset
SELECT prm.grant_access('regress_conv_hook', :org, 'webhook');
SELECT prm.grant_access('regress_conv_staff', :org, 'staff');
SELECT prm.grant_access('regress_conv_other', :org_b, 'staff');

-- routing addresses
SELECT is(prm.set_inbound_address(:org, 'whatsapp', 'whatsapp:+447700900001'), '+447700900001', 'WhatsApp number stored in E.164');
SELECT is(prm.set_inbound_address(:org, 'email', 'Front Desk <Desk@Talk.example>'), 'desk@talk.example', 'e-mail address stored in lower case');
SELECT throws_ok(format('SELECT prm.set_inbound_address(%s, %L, %L)', :org, 'sms', '+447700900002'), '22023', NULL, 'the SMS number is not set here');
SELECT throws_ok(format('SELECT prm.set_inbound_address(%s, %L, %L)', :org, 'email', 'not-an-address'), '22023', NULL, 'a malformed e-mail address is refused');
SELECT throws_ok(format('SELECT prm.set_inbound_address(%s, %L, %L)', :org, 'whatsapp', '12'), '22023', NULL, 'a malformed WhatsApp number is refused');

-- SMS: threaded, exactly as handle_inbound_sms otherwise
SELECT alike(prm.handle_inbound_message('sms', '+447700900001', '+447700900123', 'hello there', 'SM1'),
             '%did not understand%', 'free text by SMS gets the hint, as handle_inbound_sms');
SELECT is((SELECT count(*)::int FROM prm.conversation WHERE org_id = :org AND channel = 'sms' AND patient_id = :ann), 1,
          'the SMS opened the patient''s SMS conversation');
SELECT id AS sms_conv FROM prm.conversation WHERE org_id = :org AND channel = 'sms' \gset
SELECT results_eq(format('SELECT direction FROM prm.conversation_thread WHERE conversation_id = %s ORDER BY id', :sms_conv),
                  ARRAY['inbound', 'outbound'], 'the message and prm''s reply are both in the thread, in order');
SELECT is((SELECT unread_count FROM prm.conversation WHERE id = :sms_conv), 1, 'the free text is unread for staff');
SELECT is(prm.handle_inbound_message('sms', '+447700900001', '+447700900123', 'something else', 'SM1'),
          (SELECT reply FROM prm.inbound_message WHERE provider_message_id = 'SM1'), 'a replayed id gets the first reply');
SELECT is((SELECT count(*)::int FROM prm.conversation_message WHERE conversation_id = :sms_conv), 2, 'and threads nothing more');
SELECT is(prm.handle_inbound_sms('+447700900001', '+447700900123', 'HELP', 'SM2') IS NOT NULL, true, 'handle_inbound_sms threads too');
SELECT is((SELECT count(*)::int FROM prm.conversation_message WHERE conversation_id = :sms_conv), 4, 'HELP and its answer joined the same conversation');
SELECT is((SELECT unread_count FROM prm.conversation WHERE id = :sms_conv), 1, 'a keyword prm answered is not left unread');
SELECT is((SELECT conversation_id FROM prm.inbound_message WHERE provider_message_id = 'SM2'), :sms_conv::bigint,
          'the inbound message knows its conversation');

-- WhatsApp and e-mail
SELECT is(prm.handle_inbound_message('whatsapp', 'whatsapp:+447700900001', 'whatsapp:+447700900123', 'hi on WhatsApp', 'WA1'),
          NULL, 'a WhatsApp message is stored, no automatic reply');
SELECT is((SELECT patient_id FROM prm.conversation WHERE org_id = :org AND channel = 'whatsapp'), :ann::bigint,
          'routed by the clinic''s WhatsApp number to the patient with that phone');
SELECT id AS wa_conv FROM prm.conversation WHERE org_id = :org AND channel = 'whatsapp' \gset
SELECT is(prm.handle_inbound_message('email', 'DESK@talk.example', 'Ann Talk <ANN@example.org>', 'About my invoice', 'EM1'),
          NULL, 'an e-mail is stored');
SELECT is((SELECT patient_id FROM prm.conversation WHERE org_id = :org AND channel = 'email'), :ann::bigint,
          'routed by the clinic''s address, the sender found by e-mail whatever its case');
SELECT is(prm.handle_inbound_message('email', 'desk@talk.example', 'stranger@example.net', 'Do you treat knees?', 'EM2'),
          NULL, 'an unknown sender''s e-mail');
SELECT is((SELECT count(*)::int FROM prm.conversation WHERE org_id = :org AND address = 'stranger@example.net' AND patient_id IS NULL), 1,
          'is kept for staff in a conversation of its own, with no patient');
SELECT is(prm.handle_inbound_message('email', 'desk@talk.example', 'stranger@example.net', repeat('x', 200000), 'EM3'), NULL,
          'an oversized e-mail is taken');
SELECT is((SELECT length(body) FROM prm.inbound_message WHERE provider_message_id = 'EM3'), 100000, 'and clipped to 100,000 characters');
SELECT throws_ok($$SELECT prm.handle_inbound_message('fax', '+447700900001', '+447700900123', 'x', 'FX1')$$, '22023', NULL, 'an unknown channel is refused');
SELECT throws_ok($$SELECT prm.handle_inbound_message(NULL, '+447700900001', '+447700900123', 'x', 'FX2')$$, '22004', NULL, 'a NULL channel is refused');
SELECT throws_ok($$SELECT prm.handle_inbound_message('sms', '+447700900001', '+447700900123', 'x', NULL)$$, '22004', NULL, 'a NULL provider id is refused');

-- the webhook role: its own organization only
SET LOCAL ROLE regress_conv_hook;
SELECT is(prm.handle_inbound_message('whatsapp', 'whatsapp:+447700900001', '+447700900123', '''; DROP TABLE prm.conversation; --', 'WA2'),
          NULL, 'the webhook role stores an injection string');
SELECT throws_ok($$SELECT prm.handle_inbound_message('whatsapp', 'whatsapp:+15558009999', '+447700900123', 'x', 'WA3')$$, 'P0002', NULL,
                 'an address no organization owns is refused to a webhook');
SELECT throws_ok($$SELECT prm.handle_inbound_message('sms', '+15558009999', '+15558009123', 'x', 'SMB1')$$, '42501', NULL,
                 'another organization''s number is refused');
RESET ROLE;
SELECT is((SELECT body FROM prm.conversation_message WHERE org_id = :org AND conversation_id = :wa_conv ORDER BY id DESC LIMIT 1),
          '''; DROP TABLE prm.conversation; --', 'stored verbatim, in the same WhatsApp conversation');

-- replies
SET LOCAL ROLE regress_conv_staff;
SELECT prm.reply_in_conversation(:org, :wa_conv, 'Hello Ann') AS wa_reply \gset
RESET ROLE;
SELECT is((SELECT channel || ' ' || to_address FROM prm.outbound_message WHERE id = :wa_reply), 'whatsapp +447700900123',
          'a reply is queued on the conversation''s channel and address');
SELECT is((SELECT author FROM prm.conversation_message WHERE outbound_message_id = :wa_reply), 'regress_conv_staff',
          'with the staff role as its author');
SELECT is((SELECT delivery_status FROM prm.conversation_thread WHERE outbound_message_id = :wa_reply), 'queued',
          'the thread shows its delivery status');
UPDATE prm.conversation SET last_inbound_at = now() - interval '25 hours' WHERE id = :wa_conv;
SELECT throws_like(format('SELECT prm.reply_in_conversation(%s, %s, %L)', :org, :wa_conv, 'late'), '%within 24 hours%',
                   'WhatsApp: no free-form reply 25 hours after the patient''s last message');
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, %s, NULL, %L)', :org, :wa_conv, 'hint'), 'P0002', NULL,
                 'a template the organization did not store for WhatsApp is not approved');
SELECT prm.set_template(:org, 'hint', '{clinic}: we have news for you, reply to this message to talk to us.', 'whatsapp') IS NOT NULL AS set \gset
SELECT ok(prm.reply_in_conversation(:org, :wa_conv, NULL, 'hint') > 0, 'but a stored WhatsApp template may go out');
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, %s, %L, %L)', :org, :wa_conv, 'x', 'hint'), '22023', NULL, 'body and template together are refused');
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, %s, %L)', :org, :wa_conv, repeat('x', 1601)), '22001', NULL, 'an oversized reply is refused');
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, %s, %L)', :org, 999999, 'x'), 'P0002', NULL, 'an unknown conversation');
SET LOCAL ROLE regress_conv_other;
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, %s, %L)', :org, :wa_conv, 'x'), '42501', NULL, 'another organization''s staff cannot reply');
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, %s, %L)', :org_b, :wa_conv, 'x'), 'P0002', NULL, 'nor reach it through their own organization');
SELECT is_empty('SELECT 1 FROM prm.conversation UNION ALL SELECT 1 FROM prm.conversation_message UNION ALL SELECT 1 FROM prm.conversation_inbox',
                'and see none of its conversations');
RESET ROLE;

-- messages queued to a patient join the conversation
SELECT prm.enqueue_message(:org, 'sms', '+447700900123', 'Your appointment is confirmed', :ann) AS queued \gset
SELECT is((SELECT conversation_id FROM prm.conversation_message WHERE outbound_message_id = :queued), :sms_conv::bigint,
          'a message queued to the patient is threaded into their conversation');

-- reading
SELECT is(prm.mark_conversation_read(:org, :sms_conv), 1, 'mark read returns the unread count');
SELECT is((SELECT unread_count FROM prm.conversation WHERE id = :sms_conv), 0, 'and clears it');
SELECT is(prm.mark_conversation_read(:org, :sms_conv), 0, 'again: nothing was unread');
SELECT throws_ok(format('SELECT prm.mark_conversation_read(%s, %s)', :org, 999999), 'P0002', NULL, 'mark read: an unknown conversation');
SELECT throws_ok(format('SELECT prm.mark_conversation_read(%s, NULL)', :org), '22004', NULL, 'mark read: a NULL conversation');
SELECT throws_ok(format('SELECT prm.assign_conversation(%s, 999999, NULL)', :org), 'P0002', NULL, 'assign: an unknown conversation');
SET LOCAL ROLE regress_conv_other;
SELECT throws_ok(format('SELECT prm.mark_conversation_read(%s, %s)', :org, :sms_conv), '42501', NULL, 'another organization''s staff cannot mark it read');
SELECT throws_ok(format('SELECT prm.assign_conversation(%s, %s, NULL)', :org, :sms_conv), '42501', NULL, 'nor assign it');
RESET ROLE;
SELECT throws_ok(format('SELECT prm.set_inbound_address(%s, %L, %L)', :org, 'email', repeat('a', 400) || '@x.example'), '22001', NULL, 'an oversized address is refused');

-- voice transcripts
SELECT prm.record_call_transcript(:org, 'CA1', '07700 900123', 'I would like to move my appointment', 95, 'completed') AS call1 \gset
SELECT is(prm.record_call_transcript(:org, 'CA1', '07700 900123', 'replayed', 95, 'completed'), :call1::bigint, 'a replayed call id returns the first recording');
SELECT is((SELECT c.patient_id FROM prm.conversation c JOIN prm.conversation_message m ON m.conversation_id = c.id WHERE m.id = :call1),
          :ann::bigint, 'the call is in the caller''s voice conversation');
SELECT is((SELECT call->>'duration_seconds' FROM prm.conversation_message WHERE id = :call1), '95', 'with its duration');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, %L, %s)', :org, 'CA2', '+447700900123', 't', -5), '22003', NULL, 'a negative duration is refused');
SELECT throws_ok(format('SELECT prm.record_call_transcript(%s, %L, %L, %L, 5, %L)', :org, 'CA3', '+447700900123', 't', 'Good; DROP'), '22023', NULL, 'a malformed outcome is refused');
SELECT ok(prm.record_call_transcript(:org, 'CA4', 'anonymous', 'Withheld caller asked for opening hours', 30, 'no-answer') > 0,
          'a withheld caller and a provider''s hyphenated outcome are taken, not refused');
SELECT is((SELECT count(*)::int FROM prm.conversation WHERE org_id = :org AND channel = 'voice' AND address = 'anonymous' AND patient_id IS NULL), 1,
          'the withheld call is kept in a conversation of its own');
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, (SELECT conversation_id FROM prm.conversation_message WHERE id = %s), %L)', :org, :call1, 'x'),
                 '55000', NULL, 'a voice conversation takes no written reply');
SELECT has_function('prm', 'reply_in_conversation', ARRAY['bigint', 'bigint', 'text'], 'the fixed three-argument reply_in_conversation exists');

-- handoff: asking for a person
SELECT alike(prm.handle_inbound_message('sms', '+447700900001', '+447700900123', 'Agent!', 'SM3'), '%member of our team%', 'AGENT asks for a person');
SELECT is((SELECT count(*)::int FROM prm.event WHERE org_id = :org AND kind = 'handoff_requested'), 1, 'an event for staff');
SELECT prm.configure(:org, '{"handoff_keywords": "talk to someone"}') IS NOT NULL AS configured \gset
SELECT alike(prm.handle_inbound_message('whatsapp', 'whatsapp:+447700900001', '+447700900123', 'Talk to someone!', 'WA4'),
             '%member of our team%', 'the organization''s own phrase asks for a person, on WhatsApp too');
SELECT is(prm.handle_inbound_message('whatsapp', 'whatsapp:+447700900001', '+447700900123', 'talk to someone about my bill', 'WA5'),
          NULL, 'a message that merely contains the phrase is not a handoff');
SELECT throws_ok(format('SELECT prm.configure(%s, %L)', :org, '{"handoff_keywords": "agent; DROP"}'), '22023', NULL, 'handoff keywords must be words');

-- timers: inactive, active again, closed for good
UPDATE prm.conversation SET state_due_at = now() - interval '1 second' WHERE id = :sms_conv;
SELECT ok((prm.run_due_jobs()->>'conversation_timers')::int >= 1, 'the timer step ran');
SELECT is((SELECT state FROM prm.conversation WHERE id = :sms_conv), 'inactive', 'a quiet conversation becomes inactive');
SELECT prm.handle_inbound_message('sms', '+447700900001', '+447700900123', 'still there?', 'SM4') IS NOT NULL AS answered \gset
SELECT is((SELECT state FROM prm.conversation WHERE id = :sms_conv), 'active', 'traffic makes it active again');
UPDATE prm.conversation SET last_message_at = now() - interval '31 days', state_due_at = now() - interval '1 second' WHERE id = :sms_conv;
SELECT ok(prm.run_due_jobs() IS NOT NULL, 'the timer step ran again');
SELECT is((SELECT state FROM prm.conversation WHERE id = :sms_conv), 'closed', 'past conversation_closed_after it is closed');
SELECT prm.handle_inbound_message('sms', '+447700900001', '+447700900123', 'hello again', 'SM5') IS NOT NULL AS answered \gset
SELECT is((SELECT count(*)::int FROM prm.conversation WHERE org_id = :org AND channel = 'sms'), 2, 'new traffic starts a new conversation');
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, %s, %L)', :org, :sms_conv, 'x'), '55000', NULL, 'a closed conversation takes no reply');
SELECT throws_ok(format('SELECT prm.mark_conversation_read(%s, %s)', :org, :sms_conv), '55000', NULL, 'nor is it read or assigned: closed is final');
SELECT prm.enqueue_message(:org, 'email', 'ANN@Example.org', 'Your invoice', :ann) > 0 AS mailed \gset
SELECT is((SELECT count(*)::int FROM prm.conversation WHERE org_id = :org AND channel = 'email' AND patient_id = :ann AND state <> 'closed'), 1,
          'an e-mail to the patient in other letter case joins the conversation of her inbound e-mail');

SELECT * FROM finish();
ROLLBACK;
