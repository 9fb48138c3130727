-- prm 0.3.0, privacy: an export audit that survives a rollback (see the
-- top of src/privacy.c).

\echo Use "CREATE EXTENSION prm" to load this file. \quit

COMMENT ON FUNCTION prm.export_patient(bigint, bigint) IS
    'Everything prm holds about one patient, as jsonb: the patient, appointments, waitlist entries, offers, messages out (queue and history) and in, placement requests, statistics and the events about them. Needs staff. Audited twice: an event patient_exported (rolled back with the transaction) and a LOG line in the server log (who, organization, patient, when; no personal data), which no rollback takes back.';
