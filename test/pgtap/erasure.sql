-- Erasure that erases: a patient who touched every capability is erased,
-- then every text, varchar and jsonb column (and arrays of them) of every
-- table of schema prm -- read from the catalog, so a column added later is
-- searched too -- is searched for their names, phone (E.164 and national
-- forms), e-mail, external ids and a free-text marker they wrote.  Nothing
-- may be found.  A second patient sharing a family phone with an erased one
-- keeps their own data.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(45);

-- The columns of prm's tables in which one of terms occurs (case-insensitive),
-- as 'table.column'.
CREATE FUNCTION pg_temp.columns_containing(terms text[]) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    c    record;
    hits text[] := '{}';
    n    bigint;
BEGIN
    FOR c IN
        SELECT cl.relname, a.attname
          FROM pg_attribute a
          JOIN pg_class cl ON cl.oid = a.attrelid
          JOIN pg_type ty ON ty.oid = a.atttypid
          LEFT JOIN pg_type el ON el.oid = ty.typelem AND ty.typcategory = 'A'
         WHERE cl.relnamespace = 'prm'::regnamespace AND cl.relkind IN ('r', 'p')
           AND a.attnum > 0 AND NOT a.attisdropped
           AND (ty.typcategory = 'S' OR ty.oid IN ('json'::regtype, 'jsonb'::regtype)
                OR el.typcategory = 'S' OR el.oid IN ('json'::regtype, 'jsonb'::regtype))
         ORDER BY 1, 2
    LOOP
        EXECUTE format('SELECT count(*) FROM prm.%I x WHERE EXISTS'
                       ' (SELECT 1 FROM unnest($1) t WHERE strpos(lower(x.%I::text), lower(t)) > 0)',
                       c.relname, c.attname)
           INTO n USING terms;
        IF n > 0 THEN
            hits := hits || format('%s.%s', c.relname, c.attname);
        END IF;
    END LOOP;
    RETURN hits;
END $$;

SELECT ok((SELECT count(*) FROM pg_attribute a JOIN pg_class cl ON cl.oid = a.attrelid
            WHERE cl.relnamespace = 'prm'::regnamespace AND cl.relkind = 'r' AND a.attnum > 0
              AND a.atttypid IN ('text'::regtype, 'jsonb'::regtype)) > 60,
          'the search covers the text and jsonb columns of prm''s tables');

--
-- A clinic, a therapist, and patients who wait, book, cancel and text.
--
SELECT prm.create_organization('Erasure Clinic', 'UTC', '+15558080000') AS org \gset
SELECT prm.configure(:org, '{"quiet_hours": false, "batch_size": 5, "phone_region": "US", "min_notice": "0 seconds"}') IS NOT NULL AS ok \gset
SELECT prm.add_provider(:org, 'Dr E') AS dr \gset
SELECT prm.add_therapist(:org, 'Dr Berg', 'berg@example.de', 52.52, 13.40, ARRAY['de'], ARRAY['cbt'], 2) AS therapist \gset

-- Zelda comes from the practice system, with a national phone number
SELECT prm.sync_patients(:org, 'cliniko',
    '[{"external_id": "zq-ext-17", "given_name": "Zelda", "family_name": "Quixotica",
       "phone": "(555) 808-1001", "email": "Zelda.Quixotica@example.org"}]') ->> 'inserted' AS inserted \gset
SELECT id AS zelda FROM prm.patient WHERE org_id = :org AND external_id = 'zq-ext-17' \gset
SELECT prm.sync_appointments(:org, 'cliniko', jsonb_build_array(jsonb_build_object(
    'external_id', 'zq-appt-9', 'patient_external_id', 'zq-ext-17', 'provider_id', :dr,
    'starts_at', now() - interval '30 days', 'ends_at', now() - interval '30 days' + interval '30 minutes',
    'status', 'fulfilled', 'price', 95))) ->> 'inserted' AS inserted \gset
-- a cancellation with a reason in her words, and a later appointment
SELECT prm.book_appointment(:org, :zelda, :dr, now() + interval '5 days', now() + interval '5 days 30 minutes') AS z_cancelled \gset
SELECT prm.cancel_appointment(:org, :z_cancelled, 'Zelda Quixotica says: purplewombat42, knee') IS NOT NULL AS ok \gset
SELECT prm.book_appointment(:org, :zelda, :dr, now() + interval '20 days', now() + interval '20 days 30 minutes') AS z_later \gset

-- a family phone: Bert was there first, Cora shares his number
SELECT prm.add_patient(:org, 'Bert', 'Oakhurst', '+15558081002') AS bert \gset
SELECT prm.add_patient(:org, 'Cora', 'Vintrelle', '555 808 1002', 'cora.vintrelle@example.org') AS cora \gset
SELECT prm.book_appointment(:org, :cora, :dr, now() + interval '6 days', now() + interval '6 days 30 minutes') AS c_appt \gset
SELECT prm.cancel_appointment(:org, :c_appt, 'Cora Vintrelle is moving away') IS NOT NULL AS ok \gset

-- another patient cancels: Zelda, on the waitlist, is offered the freed slot by SMS
SELECT prm.join_waitlist(:org, :zelda) AS z_entry \gset
SELECT prm.add_patient(:org, 'Olga', 'Other', '+15558081003') AS olga \gset
SELECT prm.book_appointment(:org, :olga, :dr, now() + interval '2 days', now() + interval '2 days 30 minutes') AS o_appt \gset
SELECT prm.cancel_appointment(:org, :o_appt, 'olga has the flu') AS slot \gset
SELECT is((SELECT count(*)::int FROM prm.offer WHERE slot_id = :slot AND patient_id = :zelda AND status = 'open'), 1,
          'Zelda holds an offer');

-- the offer SMS is sent, then archived to the history
SELECT id AS offer_sms FROM prm.outbound_message WHERE org_id = :org AND patient_id = :zelda AND channel = 'sms' \gset
SELECT count(*) AS claimed FROM prm.claim_messages('sms', 100) \gset
SELECT prm.mark_message_sent(:offer_sms, 'SM-zq-offer');
UPDATE prm.outbound_message SET updated_at = now() - interval '2 days' WHERE org_id = :org AND id = :offer_sms;
SELECT prm.run_due_jobs() IS NOT NULL AS ok \gset
SELECT is((SELECT count(*)::int FROM prm.outbound_message_history WHERE org_id = :org AND id = :offer_sms), 1,
          'the sent offer SMS is in the history');

-- she writes free text (and her number), then STOP
SELECT prm.handle_inbound_sms('+15558080000', '555-808-1001',
    'Sorry Dr E purplewombat42 running late, call me on 555 808 1001', 'zq-sms-1') IS NOT NULL AS ok \gset
-- an e-mail to her bounces for good: a dead message with the provider's error
SELECT prm.enqueue_message(:org, 'email', 'Zelda.Quixotica@example.org', 'Dear Zelda Quixotica, your invoice', :zelda) AS z_mail \gset
SELECT count(*) AS claimed FROM prm.claim_messages('email', 100) \gset
SELECT prm.mark_message_failed(:z_mail, '550 mailbox zelda.quixotica@example.org unknown', false);
SELECT is((SELECT status FROM prm.outbound_message WHERE org_id = :org AND id = :z_mail), 'dead', 'the e-mail is dead');
-- a message queued to her number by the application, without a patient id
SELECT prm.enqueue_message(:org, 'sms', '(555) 808-1001', 'Hi Zelda, see you soon', NULL,
                           'reminder:+15558081001:zelda') AS z_loose \gset
-- her consent to e-mail, given for her by her daughter, noted in her words
SELECT prm.set_consent(:org, :zelda, 'email', 'promotional', true, 'written',
                       'given by her daughter for Zelda Quixotica, purplewombat42') IS NOT NULL AS ok \gset
-- a ticket about her, with an internal note and a public comment to her, worked by a staff member
SELECT prm.add_staff(:org, 'Sam Desk', 'sam.desk@example.org') AS sam \gset
SELECT prm.open_ticket(:org, 'Zelda Quixotica: purplewombat42 invoice', 'normal', :zelda,
                       'She wrote from zelda.quixotica@example.org') AS z_ticket \gset
SELECT prm.add_ticket_comment(:org, :z_ticket, 'internal: called Zelda on 555 808 1001, purplewombat42', false, :sam) AS z_note \gset
SELECT prm.add_ticket_comment(:org, :z_ticket, 'Dear Zelda Quixotica, your purplewombat42 invoice is fixed', true, :sam) AS z_public \gset
-- a voice agent's call from her number, with a transcript in her words
SELECT prm.record_call_transcript(:org, 'zq-call-1', '(555) 808-1001',
    'Caller: this is Zelda Quixotica, purplewombat42, my e-mail is zelda.quixotica@example.org', 75, 'completed') AS z_call \gset
-- her caregiver, linked to her, and monitoring with a heartbeat
SELECT prm.add_caregiver(:org, 'Carl Minder', '+15558089009', 'carl.minder@example.org') AS carl \gset
SELECT prm.link_caregiver(:org, :zelda, :carl);
-- a journey she is on, whose first stage opens a ticket and sends a message
SELECT prm.create_journey(:org, 'Erasure journey') AS z_journey \gset
SELECT prm.add_journey_stage(:org, :z_journey, 'Hello',
    '[{"type": "open_ticket", "subject": "Welcome call", "priority": "normal"}, {"type": "wait", "for": "1 day"}]') AS z_stage \gset
SELECT prm.start_journey(:org, :z_journey, :zelda) AS z_instance \gset
SELECT is((SELECT count(*)::int FROM prm.ticket WHERE org_id = :org AND patient_id = :zelda), 2,
          'her ticket and the journey''s are open');
SELECT prm.handle_inbound_sms('+15558080000', '+15558081001', 'STOP', 'zq-sms-2') IS NOT NULL AS ok \gset
SELECT is((SELECT sms_opt_out FROM prm.patient WHERE id = :zelda), true, 'her STOP opted her out');

-- a placement request with her location, times and birth year; the therapist is e-mailed
SELECT prm.add_placement_request(:org, :zelda, 52.5211, 13.4105, 20, ARRAY['de'], 'cbt', 'female',
    '[{"day": 1, "from": "09:00", "to": "12:00"}]', 1987) AS request \gset
SELECT count(*) AS proposed FROM prm.assign_placements(:org, 'exact', true) \gset
SELECT is(prm.plan_contact_batches(:org), 1, 'the therapist is e-mailed about her');
SELECT b.message_id AS contact_mail FROM prm.contact_batch b WHERE b.org_id = :org AND b.therapist_id = :therapist \gset
SELECT matches((SELECT body FROM prm.outbound_message WHERE org_id = :org AND id = :contact_mail),
               'Ref\. P' || :request || ': Z\.Q\.', 'the e-mail names her by reference and initials');

-- the family phone: Bert's SMS, messages to Bert, to Cora and to the shared number
SELECT prm.handle_inbound_sms('+15558080000', '+15558081002', 'bert here bertmark77', 'bc-sms-1') IS NOT NULL AS ok \gset
SELECT prm.enqueue_message(:org, 'sms', '+15558081002', 'Bert: bertmark77 reminder', :bert) AS b_msg \gset
SELECT prm.enqueue_message(:org, 'sms', '+15558081002', 'Cora Vintrelle, your forms', :cora) AS c_msg \gset
SELECT prm.enqueue_message(:org, 'sms', '+15558081002', 'family notice bertmark77', NULL) AS shared_msg \gset

\set zelda_terms '''{Zelda,Quixotica,+15558081001,5550081001,555-808-1001,"(555) 808-1001","555 808 1001",zelda.quixotica@example.org,purplewombat42,zq-ext-17,zq-appt-9}'''
\set cora_terms '''{Cora,Vintrelle,cora.vintrelle@example.org}'''

-- before: the search finds her everywhere it should look
SELECT ok(pg_temp.columns_containing(:zelda_terms) @> ARRAY[
          'patient.given_name', 'patient.family_name', 'patient.phone', 'patient.email', 'patient.external_id',
          'appointment.cancel_reason', 'appointment.external_id',
          'inbound_message.from_address', 'inbound_message.body', 'inbound_message.keyword',
          'outbound_message.to_address', 'outbound_message.body', 'outbound_message.dedup_key', 'patient_consent.note',
          'outbound_message.last_error', 'outbound_message_history.to_address', 'event.payload',
          'ticket.subject', 'ticket.description', 'ticket_comment.body', 'conversation.address',
          'conversation_message.body', 'conversation_message.call'],
          'before the erasure the search finds her in every kind of column');
SELECT ok(pg_temp.columns_containing(:cora_terms) @> ARRAY['patient.given_name', 'appointment.cancel_reason', 'outbound_message.body'],
          'and Cora in hers');

-- the export follows the same rule of whose data it is
SELECT ok((SELECT bool_or((m ->> 'id')::bigint = :z_loose) FROM jsonb_array_elements(prm.export_patient(:org, :zelda) -> 'messages_out') m),
          'her export holds the message queued to her own number without a patient id');
SELECT ok((SELECT NOT bool_or((m ->> 'id')::bigint = :shared_msg) FROM jsonb_array_elements(prm.export_patient(:org, :cora) -> 'messages_out') m),
          'Cora''s export leaves out the message to the number she shares');

--
-- Erase Zelda and Cora.
--
SELECT prm.erase_patient(:org, :zelda) AS z_erased \gset
SELECT prm.erase_patient(:org, :cora) AS c_erased \gset

SELECT is(pg_temp.columns_containing(:zelda_terms), '{}'::text[], 'nothing of Zelda is left in any text or jsonb column');
SELECT is((SELECT granted FROM prm.patient_consents WHERE patient_id = :zelda AND channel = 'email'), false, 'her e-mail consent is withdrawn by the erasure');
SELECT is((SELECT count(*)::int FROM prm.patient_consent WHERE patient_id = :zelda), 2, 'the decisions stay, de-identified');
SELECT is(pg_temp.columns_containing(:cora_terms), '{}'::text[], 'nothing of Cora is left in any text or jsonb column');

-- what stays for the clinic's books, de-identified
SELECT isnt((SELECT erased_at FROM prm.patient WHERE id = :zelda), NULL, 'the patient row stays, marked erased');
SELECT is((SELECT count(*)::int FROM prm.appointment WHERE org_id = :org AND patient_id = :zelda), 3,
          'her appointments stay');
SELECT is((SELECT cancel_reason || '/' || status FROM prm.appointment WHERE org_id = :org AND id = :z_cancelled),
          '[erased]/cancelled', 'a cancellation reason is erased, the cancellation stays');
SELECT is((SELECT price FROM prm.appointment WHERE org_id = :org AND patient_id = :zelda AND status = 'fulfilled'), 95.00,
          'revenue stays');
SELECT is((SELECT status FROM prm.outbound_message WHERE org_id = :org AND id = :z_loose), 'cancelled',
          'the message queued to her number without a patient id is cancelled');
SELECT is((SELECT to_address || ' ' || body || ' ' || coalesce(dedup_key, '-') FROM prm.outbound_message WHERE org_id = :org AND id = :z_loose),
          '[erased] [erased] -', 'and blanked');
SELECT is((SELECT last_error FROM prm.outbound_message WHERE org_id = :org AND id = :z_mail), '[erased]',
          'the provider''s error text is erased');
SELECT is((SELECT payload ->> 'error' FROM prm.event WHERE org_id = :org AND kind = 'message_dead' AND entity_id = :z_mail),
          '[erased]', 'and so is the message_dead event''s copy');
SELECT is((SELECT count(*)::int FROM prm.event e JOIN prm.inbound_message i ON i.org_id = e.org_id AND i.id = e.entity_id
            WHERE e.org_id = :org AND e.kind = 'sms_received' AND i.provider_message_id LIKE 'zq-%'
              AND e.payload ->> 'keyword' = '[erased]'), 2, 'the sms_received events keep no keyword');
SELECT is((SELECT status FROM prm.placement_request WHERE org_id = :org AND id = :request), 'withdrawn',
          'her placement request is withdrawn');
SELECT is((SELECT row(latitude, longitude, birth_year, gender_preference)::text FROM prm.placement_request WHERE org_id = :org AND id = :request),
          '(,,,)', 'without her location, birth year and preference');
SELECT is((SELECT count(*)::int FROM prm.placement_request_time WHERE org_id = :org AND request_id = :request), 0,
          'without her available times');
SELECT is((SELECT status FROM prm.placement_contact WHERE org_id = :org AND request_id = :request), 'withdrawn',
          'the therapist''s pending contact about her is withdrawn');
SELECT ok((SELECT body LIKE '%Ref. P' || :request || ': [erased]%' AND body !~ ('Ref\. P' || :request || ': Z\.Q\.')
             FROM prm.outbound_message WHERE org_id = :org AND id = :contact_mail),
          'her line in the therapist''s e-mail keeps the reference only');
SELECT is((SELECT status FROM prm.outbound_message WHERE org_id = :org AND id = :contact_mail), 'cancelled',
          'and the queued e-mail, about her alone, is not sent');
SELECT is((SELECT count(*)::int FROM prm.ticket_comment WHERE org_id = :org AND ticket_id = :z_ticket AND body = '[erased]'), 2,
          'her ticket keeps its comments, blanked');
SELECT is((SELECT subject || ' ' || description FROM prm.ticket WHERE org_id = :org AND id = :z_ticket), '[erased] [erased]',
          'and its subject and description');
SELECT is((SELECT m.body FROM prm.outbound_message m JOIN prm.ticket_comment c ON c.org_id = m.org_id AND c.outbound_message_id = m.id
            WHERE c.org_id = :org AND c.id = :z_public), '[erased]', 'the public comment''s message to her is blanked');
SELECT is((SELECT body || ' ' || coalesce(call::text, '-') FROM prm.conversation_message WHERE org_id = :org AND id = :z_call),
          '[erased] -', 'the call transcript and its details are erased');
SELECT is((SELECT count(*)::int FROM prm.care_link WHERE org_id = :org AND patient_id = :zelda), 0, 'her care-circle link is gone');
SELECT is((SELECT name FROM prm.caregiver WHERE org_id = :org AND id = :carl), 'Carl Minder', 'her caregiver, another person, stays');
SELECT isnt((SELECT status FROM prm.journey_instance WHERE org_id = :org AND id = :z_instance), 'active', 'her journey is not active');
SELECT is((SELECT count(*)::int FROM prm.event WHERE org_id = :org AND kind = 'patient_erased' AND entity_id IN (:zelda, :cora)), 2,
          'each erasure is an event');

-- Bert keeps what is his
SELECT is((SELECT phone FROM prm.patient WHERE id = :bert), '+15558081002', 'Bert keeps the family phone');
SELECT is((SELECT body || ' ' || from_address FROM prm.inbound_message WHERE org_id = :org AND provider_message_id = 'bc-sms-1'),
          'bert here bertmark77 +15558081002', 'Bert''s SMS from the shared phone stays his');
SELECT is((SELECT body || ' ' || to_address || ' ' || status FROM prm.outbound_message WHERE org_id = :org AND id = :b_msg),
          'Bert: bertmark77 reminder +15558081002 queued', 'a message to Bert stays');
SELECT is((SELECT body || ' ' || status FROM prm.outbound_message WHERE org_id = :org AND id = :shared_msg),
          'family notice bertmark77 queued', 'a message to the shared number without a patient id stays');
SELECT is((SELECT body || ' ' || to_address FROM prm.outbound_message WHERE org_id = :org AND id = :c_msg),
          '[erased] [erased]', 'Cora''s message to the shared number is erased');
SELECT is((SELECT cancel_reason FROM prm.appointment WHERE org_id = :org AND id = :o_appt), 'olga has the flu',
          'other patients keep their reasons');

SELECT * FROM finish();
ROLLBACK;
