-- prm 0.3.0, shared schema: rows prm serialises work on (instead of advisory
-- locks on public keys, which any role could take and hold).

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- Events carry the patient they are about (journeys react to them).  Added
-- first: every later piece's functions write events.  Rows written before
-- 0.3.0 get theirs in 97_journeys.sql, once every table they name exists.
ALTER TABLE prm.event ADD COLUMN patient_id bigint;
COMMENT ON COLUMN prm.event.patient_id IS 'The patient the event is about (from its entity: the patient, or the patient of the appointment, waitlist entry, offer, message, conversation, ticket, alert, reminder, placement request or journey instance); NULL for events about no patient.';
CREATE INDEX event_patient_idx ON prm.event (org_id, patient_id, id) WHERE patient_id IS NOT NULL;

-- One row per (organization, purpose) whose lock serialises one kind of work
-- of that organization (syncs, placements).  Advisory locks need no privilege
-- and their keys are public, so a role with no grant could hold them; these
-- rows can be locked only by prm's functions (no role is granted UPDATE).
CREATE TABLE prm.org_mutex (
    org_id      bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    purpose     text NOT NULL CHECK (purpose IN ('sync', 'placements')),
    PRIMARY KEY (org_id, purpose)
);
COMMENT ON TABLE prm.org_mutex IS 'Rows whose locks serialise one kind of work per organization (syncs, placements); written and locked by prm''s functions only.';
ALTER TABLE prm.org_mutex ENABLE ROW LEVEL SECURITY;
