-- Conversations and tickets together: asking for a person opens a ticket on
-- the conversation; a patient's free text reopens their pending ticket
-- (Zendesk) -- in its own conversation --, a keyword prm answers does
-- not; a staff reply in the
-- conversation is the ticket's first reply.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(12);
SET LOCAL timezone = 'UTC';

SELECT prm.create_organization('Desk', 'UTC', '+15558005500') AS org \gset
SELECT prm.configure(:org, '{"quiet_hours": false}') IS NOT NULL AS configured \gset
SELECT prm.set_inbound_address(:org, 'whatsapp', '+15558005501') IS NOT NULL AS set \gset
SELECT prm.add_patient(:org, 'Ann', 'Desk', '+15558005511') AS ann \gset

SELECT alike(prm.handle_inbound_message('sms', '+15558005500', '+15558005511', 'HUMAN', 'T1'), '%member of our team%',
             'HUMAN asks for a person');
SELECT id AS conv FROM prm.conversation WHERE org_id = :org AND channel = 'sms' \gset
SELECT id AS ticket FROM prm.ticket WHERE org_id = :org \gset
SELECT is((SELECT source || ' ' || conversation_id || ' ' || patient_id || ' ' || status FROM prm.ticket WHERE id = :ticket),
          'inbound ' || :conv || ' ' || :ann || ' new', 'a new ticket on the conversation, for the patient');
SELECT is((SELECT (payload->>'ticket_id')::bigint FROM prm.event WHERE org_id = :org AND kind = 'handoff_requested'), :ticket::bigint,
          'the handoff event names the ticket');

SELECT prm.reply_in_conversation(:org, :conv, 'Hi Ann, how can we help?') > 0 AS replied \gset
SELECT isnt((SELECT first_replied_at FROM prm.ticket WHERE id = :ticket), NULL, 'a staff reply in the conversation is the ticket''s first reply');

SELECT prm.set_ticket_status(:org, :ticket, 'pending');
SELECT prm.handle_inbound_message('sms', '+15558005500', '+15558005511', 'HELP', 'T2') IS NOT NULL AS helped \gset
SELECT is((SELECT status FROM prm.ticket WHERE id = :ticket), 'pending', 'a keyword prm answers does not reopen it');
SELECT prm.handle_inbound_message('sms', '+15558005500', '+15558005511', 'I need to move my Tuesday visit', 'T3') IS NOT NULL AS wrote \gset
SELECT is((SELECT status FROM prm.ticket WHERE id = :ticket), 'open', 'the patient''s free text reopens the pending ticket');

SELECT prm.set_ticket_status(:org, :ticket, 'pending');
SELECT is(prm.handle_inbound_message('whatsapp', '+15558005501', '+15558005511', 'any news?', 'T4'), NULL, 'a WhatsApp message');
SELECT is((SELECT status FROM prm.ticket WHERE id = :ticket), 'pending',
          'a message in another conversation leaves it: a ticket is answered in its own thread');
SELECT prm.handle_inbound_message('whatsapp', '+15558005501', '+15558005599', 'agent', 'T5') IS NOT NULL AS handed \gset
SELECT is((SELECT count(*)::int FROM prm.ticket WHERE org_id = :org AND patient_id IS NULL AND source = 'inbound'), 1,
          'an unknown sender asking for a person gets a ticket with no patient');

-- a conversation assigned to a staff member of the organization
SELECT prm.add_staff(:org, 'Sam Desk', 'sam@desk.example') AS sam \gset
SELECT lives_ok(format('SELECT prm.assign_conversation(%s, %s, %s)', :org, :conv, :sam), 'assign a conversation');
SELECT is((SELECT assignee_id FROM prm.conversation WHERE id = :conv), :sam::bigint, 'to the staff member');
SELECT throws_ok(format('SELECT prm.assign_conversation(%s, %s, %s)', :org, :conv, 999999), 'P0002', NULL, 'an unknown staff member is refused');

SELECT * FROM finish();
ROLLBACK;
