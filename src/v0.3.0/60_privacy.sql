-- prm 0.3.0, privacy: erasure that erases (the rule is at the top of
-- src/privacy.c) and an export audit that survives a rollback.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- An erased patient's row stays (appointments, offers and messages point at
-- it) and says so.
ALTER TABLE prm.patient ADD COLUMN erased_at timestamptz;
COMMENT ON COLUMN prm.patient.erased_at IS 'When the patient was erased (prm.erase_patient): the row stays, anonymised, for the clinic''s books; NULL for a patient who was not.';

-- An erased patient's location is removed, so a request that is no longer
-- open may have none; an open request always has one.
ALTER TABLE prm.placement_request
    ALTER COLUMN latitude DROP NOT NULL,
    ALTER COLUMN longitude DROP NOT NULL,
    ADD CONSTRAINT placement_request_location_check
        CHECK ((latitude IS NULL) = (longitude IS NULL) AND (latitude IS NOT NULL OR status <> 'open'));
COMMENT ON COLUMN prm.placement_request.latitude IS 'Where the patient is (with longitude); NULL only on a closed request of an erased patient.';
COMMENT ON COLUMN prm.placement_request.longitude IS 'Where the patient is (with latitude); NULL only on a closed request of an erased patient.';

COMMENT ON FUNCTION prm.export_patient(bigint, bigint) IS
    'Everything prm holds about one patient, as jsonb: the patient, appointments, waitlist entries, offers, messages out (queue and history) and in (also those to or from their own address without a patient id), placement requests, statistics and the events about them. Needs staff. Audited twice: an event patient_exported (rolled back with the transaction) and a LOG line in the server log (who, organization, patient, when; no personal data), which no rollback takes back.';
COMMENT ON FUNCTION prm.erase_patient(bigint, bigint) IS
    'Erase a patient on request (admin). Their identity, contact details, external ids and every text they wrote or that quotes them are removed: message texts, addresses, dedup keys and provider errors, SMS keywords, cancellation reasons, their placement location, birth year and times, their line in therapists'' e-mails, and the same quotes in event payloads; messages to or from their own address without a patient id too (not an address another patient shares). Open offers and placement requests are withdrawn, queued messages cancelled. Rows the clinic''s books need stay, de-identified: the patient row (erased_at set), appointments, offers, message rows and events. Returns what was changed.';
