-- The events a staff inbox and the audit trail rely on, each written once,
-- about the right entity, with its payload, and by no refused call:
-- staff_added, staff_availability_changed, inbound_address_set,
-- conversation_replied, call_recorded, conversation_assigned,
-- ticket_priority_changed, ticket_comment_added, ticket_first_reply.
-- (The NOTIFYs are in test/specs/notify_inbox.spec: a listening session
-- sees them only when the writer commits.)
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(25);
SET LOCAL timezone = 'UTC';

SELECT prm.create_organization('Events Inbox', 'UTC', '+15558063000') AS org \gset
SELECT prm.create_organization('Other', 'UTC', '+15558064000') AS org_b \gset
SELECT prm.configure(:org, '{"quiet_hours": false, "phone_region": "US"}') IS NOT NULL AS ok \gset
SELECT prm.add_patient(:org, 'Eve', 'Inbox', '+15558063001', 'eve@inbox.example') AS eve \gset

-- the events of the organization of one kind, as "entity:entity_id payload"
CREATE FUNCTION pg_temp.events(org bigint, k text) RETURNS text[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(e.entity || ':' || e.entity_id || ' ' || coalesce(e.payload::text, '-') ORDER BY e.id), '{}')
      FROM prm.event e WHERE e.org_id = org AND e.kind = k $$;

-- staff
SELECT prm.add_staff(:org, 'Sam Inbox', 'sam@inbox.example') AS sam \gset
SELECT is(pg_temp.events(:org, 'staff_added'), ARRAY['staff:' || :sam || ' {}'], 'staff_added: once, about the staff member');
SELECT prm.set_staff_availability(:org, :sam, false);
SELECT is(pg_temp.events(:org, 'staff_availability_changed'), ARRAY['staff:' || :sam || ' {"available": false}'],
          'staff_availability_changed: with the new availability');
SELECT throws_ok(format('SELECT prm.set_staff_availability(%s, 999999, true)', :org), 'P0002', NULL, 'an unknown staff member');
SELECT throws_ok(format('SELECT prm.add_staff(%s, NULL)', :org), '22004', NULL, 'a NULL staff name');
SELECT is(cardinality(pg_temp.events(:org, 'staff_availability_changed')) + cardinality(pg_temp.events(:org, 'staff_added')), 2,
          'refused staff calls write no event');
SELECT prm.set_staff_availability(:org, :sam, true);

-- inbound addresses
SELECT prm.set_inbound_address(:org, 'whatsapp', '+15558063009') IS NOT NULL AS ok \gset
SELECT prm.set_inbound_address(:org, 'email', 'Desk@Inbox.example') IS NOT NULL AS ok \gset
SELECT prm.set_inbound_address(:org, 'email', NULL) IS NULL AS ok \gset
SELECT is(pg_temp.events(:org, 'inbound_address_set'), ARRAY[
          'organization:' || :org || ' {"address": "+15558063009", "channel": "whatsapp"}',
          'organization:' || :org || ' {"address": "desk@inbox.example", "channel": "email"}',
          'organization:' || :org || ' {"address": null, "channel": "email"}'],
          'inbound_address_set: each change, with the address as stored (NULL when removed)');
SELECT throws_ok(format('SELECT prm.set_inbound_address(%s, %L, %L)', :org, 'email', 'nope'), '22023', NULL, 'a malformed address');
SELECT is(cardinality(pg_temp.events(:org, 'inbound_address_set')), 3, 'and no event for it');

-- conversations: a reply, an assignment, a call
SELECT prm.handle_inbound_message('whatsapp', '+15558063009', '+15558063001', 'Hello there', 'ie-wa-1') IS NULL AS ok \gset
SELECT id AS conv FROM prm.conversation WHERE org_id = :org AND channel = 'whatsapp' \gset
SELECT prm.reply_in_conversation(:org, :conv, 'Hello Eve') AS reply \gset
SELECT is(pg_temp.events(:org, 'conversation_replied'), ARRAY['conversation:' || :conv || ' {"outbound_message_id": ' || :reply || '}'],
          'conversation_replied: about the conversation, naming the queued message');
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, %s, %L)', :org, :conv, repeat('x', 1601)), '22001', NULL, 'an oversized reply');
SELECT throws_ok(format('SELECT prm.reply_in_conversation(%s, %s, %L)', :org_b, :conv, 'x'), 'P0002', NULL, 'through another organization');
SELECT is(cardinality(pg_temp.events(:org, 'conversation_replied')), 1, 'refused replies write no event');

SELECT prm.assign_conversation(:org, :conv, :sam);
SELECT prm.assign_conversation(:org, :conv, NULL);
SELECT is(pg_temp.events(:org, 'conversation_assigned'), ARRAY[
          'conversation:' || :conv || ' {"staff_id": ' || :sam || '}',
          'conversation:' || :conv || ' {"staff_id": null}'], 'conversation_assigned: to the staff member, then unassigned');
SELECT throws_ok(format('SELECT prm.assign_conversation(%s, %s, 999999)', :org, :conv), 'P0002', NULL, 'to an unknown staff member');
SELECT is(cardinality(pg_temp.events(:org, 'conversation_assigned')), 2, 'and no event for it');

SELECT prm.record_call_transcript(:org, 'ie-call-1', '+15558063001', 'Please call me back', 30, 'completed') AS call \gset
SELECT prm.record_call_transcript(:org, 'ie-call-1', '+15558063001', 'Please call me back', 30, 'completed') AS call_again \gset
SELECT prm.record_call_transcript(:org, 'ie-call-2', 'anonymous', 'Opening hours?', 10) AS anon_call \gset
SELECT is(pg_temp.events(:org, 'call_recorded'), ARRAY[
          'conversation:' || (SELECT conversation_id FROM prm.conversation_message WHERE id = :call) || ' {"message_id": ' || :call || ', "patient_id": ' || :eve || '}',
          'conversation:' || (SELECT conversation_id FROM prm.conversation_message WHERE id = :anon_call) || ' {"message_id": ' || :anon_call || ', "patient_id": null}'],
          'call_recorded: once per call id (a replay writes none), with the caller''s patient or null');

-- tickets: priority, comments, the first reply
SELECT prm.open_ticket(:org, 'Invoice question', 'normal', :eve) AS t \gset
SELECT prm.set_ticket_priority(:org, :t, 'urgent');
SELECT prm.set_ticket_priority(:org, :t, 'urgent');
SELECT is(pg_temp.events(:org, 'ticket_priority_changed'), ARRAY['ticket:' || :t || ' {"priority": "urgent"}'],
          'ticket_priority_changed: once; setting the same priority again is no change');
SELECT throws_ok(format('SELECT prm.set_ticket_priority(%s, %s, %L)', :org, :t, 'whenever'), '22023', NULL, 'an unknown priority');
SELECT is(cardinality(pg_temp.events(:org, 'ticket_priority_changed')), 1, 'and no event for it');

SELECT prm.add_ticket_comment(:org, :t, 'internal note', false, :sam) AS c1 \gset
SELECT is(pg_temp.events(:org, 'ticket_first_reply'), '{}'::text[], 'an internal note is not a first reply');
SELECT prm.add_ticket_comment(:org, :t, 'Dear Eve, sorted.', true, :sam) AS c2 \gset
SELECT prm.add_ticket_comment(:org, :t, 'Dear Eve, one more thing.', true, :sam) AS c3 \gset
SELECT is(pg_temp.events(:org, 'ticket_comment_added'), ARRAY[
          'ticket:' || :t || ' {"public": false, "comment_id": ' || :c1 || '}',
          'ticket:' || :t || ' {"public": true, "comment_id": ' || :c2 || '}',
          'ticket:' || :t || ' {"public": true, "comment_id": ' || :c3 || '}'], 'ticket_comment_added: each comment, internal or public');
SELECT is(pg_temp.events(:org, 'ticket_first_reply'), ARRAY['ticket:' || :t || ' {}'], 'ticket_first_reply: at the first public comment only');
SELECT throws_ok(format('SELECT prm.add_ticket_comment(%s, %s, %L)', :org, :t, repeat('x', 100001)), '22001', NULL, 'an oversized comment');
SELECT is(cardinality(pg_temp.events(:org, 'ticket_comment_added')), 3, 'and no event for it');

-- nothing of this landed in the other organization
SELECT is((SELECT count(*)::int FROM prm.event WHERE org_id = :org_b AND kind IN ('staff_added', 'staff_availability_changed',
           'inbound_address_set', 'conversation_replied', 'call_recorded', 'conversation_assigned', 'ticket_priority_changed',
           'ticket_comment_added', 'ticket_first_reply')), 0, 'the other organization has none of these events');

SELECT * FROM finish();
ROLLBACK;
