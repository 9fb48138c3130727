-- prm 0.3.0, shared schema: rows prm serialises work on (instead of advisory
-- locks on public keys, which any role could take and hold).

\echo Use "CREATE EXTENSION prm" to load this file. \quit

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
