-- prm privacy (0.2.0): a patient's data exported on request, erased on
-- request, and old history dropped after the organization's retention.

CREATE FUNCTION prm.export_patient(org_id bigint, patient_id bigint)
RETURNS jsonb
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_export_patient';
COMMENT ON FUNCTION prm.export_patient(bigint, bigint) IS
    'Everything prm holds about one patient, as jsonb: the patient, appointments, waitlist entries, offers, messages out (queue and history) and in, placement requests, statistics and the events about them. Needs staff; the export itself is audited.';

CREATE FUNCTION prm.erase_patient(org_id bigint, patient_id bigint)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_erase_patient';
COMMENT ON FUNCTION prm.erase_patient(bigint, bigint) IS
    'Anonymise a patient on request: name, contact details and external ids removed, message texts and addresses blanked, waitlist entries closed and open offers withdrawn, queued messages cancelled. Appointments stay (without identity) so the clinic''s figures hold. Returns what was changed. Needs admin.';
