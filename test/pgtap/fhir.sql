-- FHIR R4 views: every resource carries its required elements with codes
-- of the right value sets and references as "Type/<id>"; fhir_resource
-- returns one by type and id; a role sees its own organizations' only.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS prm CASCADE;
SELECT plan(22);
SET LOCAL timezone = 'UTC';

CREATE ROLE regress_fhir_a;
CREATE ROLE regress_fhir_b;
SELECT prm.create_organization('Fhir A', 'UTC', '+15558006600') AS org \gset
SELECT prm.create_organization('Fhir B', 'UTC', '+15558006601') AS org_b \gset
SELECT prm.configure(:org, '{"quiet_hours": false}') IS NOT NULL AS configured \gset
SELECT prm.grant_access('regress_fhir_a', :org, 'readonly');
SELECT prm.grant_access('regress_fhir_b', :org_b, 'staff');
SELECT prm.add_provider(:org, 'Dr Who') AS dr \gset
SELECT prm.add_patient(:org, 'Ann', 'Lee', '+15558006611', 'ann@example.org') AS ann \gset
SELECT prm.add_patient(:org, 'Eve', 'Gone', '+15558006612') AS eve \gset
SELECT prm.add_patient(:org_b, 'Bo', 'B', '+15558006613') AS bo \gset
SELECT prm.book_appointment(:org, :ann, :dr, '2031-01-01 10:00+00', '2031-01-01 10:45+00') AS appt \gset
SELECT prm.book_appointment(:org, :eve, :dr, '2031-01-02 10:00+00', '2031-01-02 10:30+00') AS appt2 \gset
SELECT prm.cancel_appointment(:org, :appt2, 'moved away') AS slot \gset
SELECT prm.enqueue_message(:org, 'sms', '+15558006611', 'See you soon', :ann) AS msg \gset
SELECT prm.handle_inbound_sms('+15558006600', '+15558006611', 'hello', 'FH1') IS NOT NULL AS answered \gset
SELECT prm.erase_patient(:org, :eve) IS NOT NULL AS erased \gset

-- shapes and value sets
SELECT is((SELECT count(*)::int FROM prm.fhir_patient WHERE org_id = :org AND (resource->>'resourceType') = 'Patient'
             AND id ~ '^[A-Za-z0-9.-]{1,64}$' AND resource->>'id' = id), 2, 'Patient: resourceType and a valid id');
SELECT is((SELECT resource->'name'->0->>'family' FROM prm.fhir_patient WHERE org_id = :org AND id = :ann::text), 'Lee', 'Patient: name');
SELECT is((SELECT resource->'telecom' FROM prm.fhir_patient WHERE org_id = :org AND id = :ann::text),
          '[{"use": "mobile", "value": "+15558006611", "system": "phone"}, {"value": "ann@example.org", "system": "email"}]'::jsonb,
          'Patient: telecom with ContactPointSystem codes');
SELECT is((SELECT (resource->>'active') || coalesce(resource->>'name', '-') FROM prm.fhir_patient WHERE org_id = :org AND id = :eve::text),
          'false-', 'an erased Patient is inactive and nameless');
SELECT is((SELECT count(*)::int FROM prm.fhir_appointment WHERE org_id = :org
             AND resource->>'status' IN ('proposed', 'pending', 'booked', 'arrived', 'fulfilled', 'cancelled', 'noshow',
                                         'entered-in-error', 'checked-in', 'waitlist')), 2, 'Appointment: status from AppointmentStatus');
SELECT is((SELECT resource->'participant' FROM prm.fhir_appointment WHERE org_id = :org AND id = :appt::text),
          format('[{"actor": {"reference": "Patient/%s"}, "status": "accepted"}, {"actor": {"reference": "Practitioner/%s"}, "status": "accepted"}]', :ann, :dr)::jsonb,
          'Appointment: participants (required) as references');
SELECT is((SELECT resource->>'start' FROM prm.fhir_appointment WHERE org_id = :org AND id = :appt::text), '2031-01-01T10:00:00+00:00', 'Appointment: start as an instant');
SELECT is((SELECT resource->>'minutesDuration' FROM prm.fhir_appointment WHERE org_id = :org AND id = :appt::text), '45', 'Appointment: minutesDuration');
SELECT is((SELECT resource->'cancelationReason'->>'text' FROM prm.fhir_appointment WHERE org_id = :org AND id = :appt2::text), '[erased]',
          'a cancelled Appointment carries its reason (here erased with its patient)');
SELECT is((SELECT resource->'schedule'->>'reference' || ' ' || (resource->>'status') FROM prm.fhir_slot WHERE org_id = :org AND id = :slot::text),
          'Schedule/' || :dr || ' free', 'Slot: schedule (required) and status from SlotStatus');
SELECT is((SELECT resource->'actor'->0->>'reference' FROM prm.fhir_schedule WHERE org_id = :org AND id = :dr::text), 'Practitioner/' || :dr,
          'Schedule: actor (required)');
SELECT is((SELECT resource->'name'->0->>'text' FROM prm.fhir_practitioner WHERE org_id = :org AND id = :dr::text), 'Dr Who', 'Practitioner: name');
SELECT is((SELECT count(*)::int FROM prm.fhir_communication WHERE org_id = :org AND resource->>'status' NOT IN
             ('preparation', 'in-progress', 'not-done', 'on-hold', 'stopped', 'completed', 'entered-in-error', 'unknown')), 0,
          'Communication: every status from EventStatus');
SELECT is((SELECT resource->>'status' || ' ' || (resource->'subject'->>'reference') FROM prm.fhir_communication WHERE org_id = :org AND id = 'out-' || :msg),
          'preparation Patient/' || :ann, 'a queued message is a Communication in preparation about its patient');
SELECT is((SELECT count(*)::int FROM prm.fhir_communication WHERE org_id = :org AND id LIKE 'in-%' AND resource->>'received' IS NOT NULL), 1,
          'a received message is a Communication with its time received');

-- one resource
SELECT is(prm.fhir_resource(:org, 'Patient', :ann::text), (SELECT resource FROM prm.fhir_patient WHERE org_id = :org AND id = :ann::text),
          'fhir_resource returns the resource');
SELECT is(prm.fhir_resource(:org, 'Patient', '999999'), NULL, 'an unknown id: NULL');
SELECT throws_ok(format('SELECT prm.fhir_resource(%s, %L, %L)', :org, 'Observation', '1'), '22023', NULL, 'a type prm does not serve is refused');
SELECT throws_ok(format('SELECT prm.fhir_resource(%s, NULL, %L)', :org, '1'), '22004', NULL, 'a NULL type is refused');

-- tenancy
SET LOCAL ROLE regress_fhir_b;
SELECT is((SELECT count(*)::int FROM (SELECT org_id FROM prm.fhir_patient UNION ALL SELECT org_id FROM prm.fhir_appointment
             UNION ALL SELECT org_id FROM prm.fhir_communication UNION ALL SELECT org_id FROM prm.fhir_slot) x WHERE org_id = :org), 0,
          'a role of B sees none of A''s resources');
SELECT throws_ok(format('SELECT prm.fhir_resource(%s, %L, %L)', :org, 'Patient', :ann), '42501', NULL, 'nor fetches one');
RESET ROLE;
SET LOCAL ROLE regress_fhir_a;
SELECT is(prm.fhir_resource(:org, 'Patient', :ann::text)->>'id', :ann::text, 'A''s own readonly role does');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
