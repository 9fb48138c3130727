-- prm 0.3.0, FHIR R4 views: one row per resource, the resource as jsonb,
-- read with the caller's rights (security_invoker: row-level security
-- applies, a role sees its own organizations' resources only).  ids are
-- prm's ids as text; references are "Type/<id>"; statuses are the R4 value
-- sets' codes (prm's appointment and slot statuses are those codes already).
-- prm.fhir_resource(org_id, type, id) returns one of them (src/fhir.c).

\echo Use "CREATE EXTENSION prm" to load this file. \quit

CREATE VIEW prm.fhir_patient WITH (security_invoker = true) AS
SELECT p.org_id, p.id::text AS id,
       pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
         'resourceType', 'Patient',
         'id', p.id::text,
         'active', p.erased_at IS NULL,
         'name', CASE WHEN p.erased_at IS NULL THEN pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                   'family', p.family_name, 'given', pg_catalog.jsonb_build_array(p.given_name))) END,
         'telecom', (SELECT pg_catalog.jsonb_agg(t.v) FROM (VALUES
                   (CASE WHEN p.phone IS NOT NULL THEN pg_catalog.jsonb_build_object('system', 'phone', 'value', p.phone, 'use', 'mobile') END),
                   (CASE WHEN p.email IS NOT NULL THEN pg_catalog.jsonb_build_object('system', 'email', 'value', p.email) END)) t(v)
                    WHERE t.v IS NOT NULL),
         'communication', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                   'language', pg_catalog.jsonb_build_object('coding', pg_catalog.jsonb_build_array(
                     pg_catalog.jsonb_build_object('system', 'urn:ietf:bcp:47', 'code', p.language))))),
         'identifier', CASE WHEN p.external_id IS NOT NULL THEN pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
                   'system', 'urn:prm:' || p.external_source, 'value', p.external_id)) END
       )) AS resource
  FROM prm.patient p;

CREATE VIEW prm.fhir_practitioner WITH (security_invoker = true) AS
SELECT v.org_id, v.id::text AS id,
       pg_catalog.jsonb_build_object('resourceType', 'Practitioner', 'id', v.id::text, 'active', v.active,
         'name', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('text', v.name))) AS resource
  FROM prm.provider v;

-- a provider's bookable time: the Schedule every Slot belongs to
CREATE VIEW prm.fhir_schedule WITH (security_invoker = true) AS
SELECT v.org_id, v.id::text AS id,
       pg_catalog.jsonb_build_object('resourceType', 'Schedule', 'id', v.id::text, 'active', v.active,
         'actor', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('reference', 'Practitioner/' || v.id))) AS resource
  FROM prm.provider v;

CREATE VIEW prm.fhir_appointment WITH (security_invoker = true) AS
SELECT a.org_id, a.id::text AS id,
       pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
         'resourceType', 'Appointment', 'id', a.id::text, 'status', a.status,
         'start', a.starts_at, 'end', a.ends_at,
         'minutesDuration', (EXTRACT(epoch FROM a.ends_at - a.starts_at) / 60)::int,
         'slot', CASE WHEN a.slot_id IS NOT NULL THEN pg_catalog.jsonb_build_array(
                   pg_catalog.jsonb_build_object('reference', 'Slot/' || a.slot_id)) END,
         'cancelationReason', CASE WHEN a.status = 'cancelled' AND a.cancel_reason IS NOT NULL
                   THEN pg_catalog.jsonb_build_object('text', a.cancel_reason) END,
         'participant', pg_catalog.jsonb_build_array(
           pg_catalog.jsonb_build_object('actor', pg_catalog.jsonb_build_object('reference', 'Patient/' || a.patient_id),
                                         'status', CASE WHEN a.status = 'cancelled' THEN 'declined' ELSE 'accepted' END),
           pg_catalog.jsonb_build_object('actor', pg_catalog.jsonb_build_object('reference', 'Practitioner/' || a.provider_id),
                                         'status', 'accepted'))
       )) AS resource
  FROM prm.appointment a;

CREATE VIEW prm.fhir_slot WITH (security_invoker = true) AS
SELECT s.org_id, s.id::text AS id,
       pg_catalog.jsonb_build_object('resourceType', 'Slot', 'id', s.id::text, 'status', s.status,
         'schedule', pg_catalog.jsonb_build_object('reference', 'Schedule/' || s.provider_id),
         'start', s.starts_at, 'end', s.ends_at) AS resource
  FROM prm.slot s;

-- messages sent (id "out-<id>") and received ("in-<id>"); status from
-- EventStatus: queued preparation, sending in-progress, sent/delivered/read
-- completed, cancelled stopped, failed/undelivered/dead not-done
CREATE VIEW prm.fhir_communication WITH (security_invoker = true) AS
SELECT m.org_id, 'out-' || m.id AS id,
       pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
         'resourceType', 'Communication', 'id', 'out-' || m.id,
         'status', CASE m.status WHEN 'queued' THEN 'preparation' WHEN 'sending' THEN 'in-progress'
                                 WHEN 'cancelled' THEN 'stopped'
                                 WHEN 'failed' THEN 'not-done' WHEN 'undelivered' THEN 'not-done'
                                 WHEN 'dead' THEN 'not-done' ELSE 'completed' END,
         'medium', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('text', m.channel)),
         'subject', CASE WHEN m.patient_id IS NOT NULL THEN pg_catalog.jsonb_build_object('reference', 'Patient/' || m.patient_id) END,
         'recipient', CASE WHEN m.patient_id IS NOT NULL THEN pg_catalog.jsonb_build_array(
                   pg_catalog.jsonb_build_object('reference', 'Patient/' || m.patient_id)) END,
         'sent', m.sent_at,
         'payload', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('contentString', m.body))
       )) AS resource
  FROM (SELECT q.org_id, q.id, q.status, q.channel, q.patient_id, q.sent_at, q.body FROM prm.outbound_message q
        UNION ALL
        SELECT h.org_id, h.id, h.status, h.channel, h.patient_id, h.sent_at, h.body FROM prm.outbound_message_history h) m
UNION ALL
SELECT i.org_id, 'in-' || i.id,
       pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
         'resourceType', 'Communication', 'id', 'in-' || i.id, 'status', 'completed',
         'medium', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('text', i.channel)),
         'subject', CASE WHEN i.patient_id IS NOT NULL THEN pg_catalog.jsonb_build_object('reference', 'Patient/' || i.patient_id) END,
         'sender', CASE WHEN i.patient_id IS NOT NULL THEN pg_catalog.jsonb_build_object('reference', 'Patient/' || i.patient_id) END,
         'received', i.received_at,
         'payload', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('contentString', i.body))
       ))
  FROM prm.inbound_message i;

COMMENT ON VIEW prm.fhir_patient IS 'FHIR R4 Patient resources (erased patients inactive, nameless).';
COMMENT ON VIEW prm.fhir_practitioner IS 'FHIR R4 Practitioner resources (providers).';
COMMENT ON VIEW prm.fhir_schedule IS 'FHIR R4 Schedule resources: one per provider, the schedule every Slot references.';
COMMENT ON VIEW prm.fhir_appointment IS 'FHIR R4 Appointment resources.';
COMMENT ON VIEW prm.fhir_slot IS 'FHIR R4 Slot resources (freed time).';
COMMENT ON VIEW prm.fhir_communication IS 'FHIR R4 Communication resources: messages sent (id out-<n>) and received (in-<n>).';

CREATE FUNCTION prm.fhir_resource(org_id bigint, resource_type text, id text)
RETURNS jsonb
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_fhir_resource';
COMMENT ON FUNCTION prm.fhir_resource(bigint, text, text) IS
    'One FHIR R4 resource of the organization (Patient, Practitioner, Schedule, Appointment, Slot, Communication) by type and id, or NULL when there is none. Needs readonly.';

INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.fhir_resource(bigint,text,text)', 'readonly');
