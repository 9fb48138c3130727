-- A patient's data on request (export, erasure) and retention.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(23);

CREATE ROLE regress_priv_staff;
SELECT prm.create_organization('Privacy Clinic', 'UTC', '+15558070000') AS org, prm.create_organization('Else', 'UTC') AS other \gset
SELECT prm.configure(:org, '{"quiet_hours": false}') IS NOT NULL AS ok \gset
SELECT prm.add_provider(:org, 'Dr P') AS dr \gset
SELECT prm.add_patient(:org, 'Erin', 'Secret', '+15558071001', 'erin@example.org') AS erin, prm.add_patient(:org, 'Next', 'One', '+15558071002') AS next_one \gset
SELECT prm.add_patient(:other, 'Far', 'Away', '+15558071003') AS far \gset
SELECT prm.add_patient(:org, 'Can', 'Celler', '+15558071004') AS canceller \gset
SELECT prm.join_waitlist(:org, :erin, NULL, true, 0) AS e_erin, prm.join_waitlist(:org, :next_one) AS e_next \gset
SELECT prm.configure(:org, '{"batch_size": 1}') IS NOT NULL AS ok \gset
SELECT prm.book_appointment(:org, :canceller, :dr, now() + interval '2 days', now() + interval '2 days 30 minutes') AS appt \gset
SELECT prm.cancel_appointment(:org, :appt) AS slot \gset
SELECT is((SELECT patient_id FROM prm.offer WHERE slot_id = :slot AND status = 'open'), :'erin'::bigint, 'Erin holds the offer');
SELECT prm.handle_inbound_sms('+15558070000', '+15558071001', 'HELP', 'priv-1') IS NOT NULL AS ok \gset

-- export
SELECT prm.export_patient(:org, :erin) AS export \gset
SELECT is(:'export'::jsonb #>> '{patient,given_name}', 'Erin', 'export: the patient');
SELECT is(jsonb_array_length(:'export'::jsonb -> 'waitlist_entries'), 1, 'export: waitlist entries');
SELECT is(jsonb_array_length(:'export'::jsonb -> 'offers'), 1, 'export: offers');
SELECT ok(NOT ((:'export'::jsonb -> 'offers' -> 0) ?| ARRAY['token', 'token_hash']), 'export: no accept token, nor its hash');
SELECT is(jsonb_array_length(:'export'::jsonb -> 'messages_out'), 1, 'export: messages sent to the patient');
SELECT is(jsonb_array_length(:'export'::jsonb -> 'messages_in'), 1, 'export: messages from the patient');
SELECT is((SELECT count(*)::int FROM prm.event WHERE kind = 'patient_exported' AND entity_id = :erin), 1, 'the export is audited');

-- erasure
SELECT prm.grant_access('regress_priv_staff', :org, 'staff');
SET LOCAL ROLE regress_priv_staff;
SELECT throws_ok(format('SELECT prm.erase_patient(%s, %s)', :org, :erin), '42501', NULL, 'staff cannot erase: admin only');
RESET ROLE;
SELECT throws_ok(format('SELECT prm.erase_patient(%s, %s)', :org, :far), 'P0002', NULL, 'another organization''s patient');
SELECT throws_ok('SELECT prm.erase_patient(NULL, 1)', '22004', NULL, 'NULL organization');
SELECT throws_ok(format('SELECT prm.export_patient(%s, NULL)', :org), '22004', NULL, 'NULL patient');
SELECT ok((prm.erase_patient(:org, :erin) ->> 'messages_out_blanked')::int >= 1, 'erased');
SELECT is((SELECT given_name || ' ' || family_name || ' ' || coalesce(phone, '-') || ' ' || coalesce(email, '-') FROM prm.patient WHERE id = :erin),
          'erased erased - -', 'name and contact details gone');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE patient_id = :erin AND (body <> '[erased]' OR to_address <> '[erased]')), 0, 'message texts and addresses blanked');
SELECT is((SELECT count(*)::int FROM prm.outbound_message WHERE patient_id = :erin AND status = 'queued'), 0, 'nothing queued for the erased patient');
SELECT is((SELECT count(*)::int FROM prm.inbound_message WHERE patient_id = :erin AND body <> '[erased]'), 0, 'inbound texts blanked');
SELECT is((SELECT status FROM prm.offer WHERE patient_id = :erin), 'withdrawn', 'the open offer is withdrawn');
SELECT is((SELECT patient_id FROM prm.offer WHERE slot_id = :slot AND status = 'open'), :'next_one'::bigint, 'and the slot moved on to the next patient');
SELECT is((SELECT status FROM prm.waitlist_entry WHERE id = :e_erin), 'removed', 'off the waitlist');

-- retention
SELECT prm.configure(:org, '{"retention_days": 30}') IS NOT NULL AS ok \gset
UPDATE prm.event SET occurred_at = now() - interval '40 days' WHERE org_id = :org AND kind = 'patient_added';
SELECT ok((prm.run_due_jobs() ->> 'apply_retention')::int >= 3, 'retention step deleted old rows');
SELECT is((SELECT count(*)::int FROM prm.event WHERE org_id = :org AND kind = 'patient_added'), 0, 'events past retention are gone');
SELECT throws_ok(format($$SELECT prm.configure(%s, '{"retention_days": 1}')$$, :org), '22023', NULL, 'retention below 30 days refused');

SELECT * FROM finish();
ROLLBACK;
