-- prm scoring (0.2.0): the waitlist and its priority scores.



CREATE TABLE prm.waitlist_entry (
    org_id                 bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id                     bigint GENERATED ALWAYS AS IDENTITY,
    patient_id             bigint NOT NULL,
    provider_id            bigint,
    urgent                 boolean NOT NULL DEFAULT false,
    manual_boost           int NOT NULL DEFAULT 0 CHECK (manual_boost BETWEEN 0 AND 40),
    priority_score         int NOT NULL DEFAULT 0,
    status                 text NOT NULL DEFAULT 'waiting'
                           CHECK (status IN ('waiting', 'booked', 'removed', 'expired')),
    joined_at              timestamptz NOT NULL DEFAULT now(),
    current_appointment_at timestamptz,
    location_ids           bigint[],
    days_of_week           int[] CHECK (days_of_week <@ ARRAY[1, 2, 3, 4, 5, 6, 7]),
    earliest_time          time,
    latest_time            time,
    expires_at             timestamptz,
    closed_at              timestamptz,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id),
    FOREIGN KEY (org_id, provider_id) REFERENCES prm.provider (org_id, id)
);
CREATE INDEX waitlist_entry_rank_idx ON prm.waitlist_entry (org_id, priority_score DESC, joined_at, id)
    WHERE status = 'waiting';
CREATE INDEX waitlist_entry_patient_idx ON prm.waitlist_entry (org_id, patient_id) WHERE status = 'waiting';
COMMENT ON TABLE prm.waitlist_entry IS 'A patient waiting for an earlier appointment. provider_id NULL means any provider; location_ids, days_of_week (ISO 1 = Monday), earliest_time/latest_time (in the patient''s time zone) and expires_at narrow which slots are offered. priority_score is kept current by triggers and prm.recalculate_priorities().';
COMMENT ON COLUMN prm.waitlist_entry.current_appointment_at IS 'Start of the patient''s next booked appointment (with the entry''s provider when it names one), kept by a trigger on prm.appointment; NULL when there is none.';

SELECT pg_catalog.pg_extension_config_dump('prm.waitlist_entry', '');
SELECT pg_catalog.pg_extension_config_dump('prm.waitlist_entry_id_seq', '');
ALTER TABLE prm.waitlist_entry ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON prm.waitlist_entry FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

CREATE FUNCTION prm.priority_score(urgent boolean, manual_boost int,
                                   current_appointment_at timestamptz, joined_at timestamptz,
                                   as_of timestamptz)
RETURNS int
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'prm_priority_score';
COMMENT ON FUNCTION prm.priority_score(boolean, int, timestamptz, timestamptz, timestamptz) IS
    'Priority with the default weights: urgent 30 + manual boost (0-40) + wait until the current appointment (0-20, full at 60 days; a NULL current_appointment_at means no appointment and earns the full 20) + seniority (0-10, full at 90 days). NULL for a NULL in any other argument; 22023 for a boost outside 0-40.';

CREATE FUNCTION prm.priority_score(urgent boolean, manual_boost int,
                                   current_appointment_at timestamptz, joined_at timestamptz,
                                   as_of timestamptz, weight_urgent int, weight_wait int,
                                   weight_seniority int, wait_full_days int,
                                   seniority_full_days int)
RETURNS int
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'prm_priority_score_weighted';
COMMENT ON FUNCTION prm.priority_score(boolean, int, timestamptz, timestamptz, timestamptz, int, int, int, int, int) IS
    'Priority with explicit weights (an organization''s settings); current_appointment_at may be NULL.';

CREATE FUNCTION prm.join_waitlist(org_id bigint, patient_id bigint, provider_id bigint DEFAULT NULL,
                                  urgent boolean DEFAULT false, manual_boost int DEFAULT 0)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_join_waitlist';
COMMENT ON FUNCTION prm.join_waitlist(bigint, bigint, bigint, boolean, int) IS
    'Put a patient on the waitlist (for one provider, or any when provider_id is NULL); returns the entry id. A patient has one waiting entry per provider choice: joining again updates it. Needs staff.';

CREATE FUNCTION prm.set_waitlist_preferences(org_id bigint, waitlist_entry_id bigint, preferences jsonb)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_set_waitlist_preferences';
COMMENT ON FUNCTION prm.set_waitlist_preferences(bigint, bigint, jsonb) IS
    'Set an entry''s preferences: {"urgent", "manual_boost", "location_ids": [..], "days_of_week": [1..7], "earliest_time": "HH:MM", "latest_time": "HH:MM", "expires_at": timestamptz}; a JSON null clears one. Needs staff.';

CREATE FUNCTION prm.leave_waitlist(org_id bigint, waitlist_entry_id bigint)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_leave_waitlist';
COMMENT ON FUNCTION prm.leave_waitlist(bigint, bigint) IS
    'Take an entry off the waitlist (status removed); its open offer is withdrawn. True if it was waiting. Needs staff.';

CREATE FUNCTION prm.explain_priority(org_id bigint, waitlist_entry_id bigint)
RETURNS jsonb
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_explain_priority';
COMMENT ON FUNCTION prm.explain_priority(bigint, bigint) IS
    'The entry''s score now, component by component, with the inputs and weights used. Needs readonly.';

CREATE FUNCTION prm.recalculate_priorities(org_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_recalculate_priorities';
COMMENT ON FUNCTION prm.recalculate_priorities(bigint) IS
    'Recompute the scores of waiting entries for the passage of time (one organization, or all the caller administers when NULL); returns the number of entries whose score changed. Run hourly by run_due_jobs.';

CREATE FUNCTION prm.waitlist_entry_score_trigger()
RETURNS trigger
LANGUAGE C
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_waitlist_entry_score_trigger';
COMMENT ON FUNCTION prm.waitlist_entry_score_trigger() IS
    'Keeps prm.waitlist_entry.priority_score current when its inputs change.';
CREATE TRIGGER waitlist_entry_score
    BEFORE INSERT OR UPDATE OF urgent, manual_boost, current_appointment_at, joined_at, provider_id
    ON prm.waitlist_entry
    FOR EACH ROW EXECUTE FUNCTION prm.waitlist_entry_score_trigger();

CREATE FUNCTION prm.appointment_waitlist_trigger()
RETURNS trigger
LANGUAGE C
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_appointment_waitlist_trigger';
COMMENT ON FUNCTION prm.appointment_waitlist_trigger() IS
    'Keeps prm.waitlist_entry.current_appointment_at current when a patient''s appointments change.';
CREATE TRIGGER appointment_waitlist
    AFTER INSERT OR UPDATE OF status, starts_at, patient_id, provider_id OR DELETE
    ON prm.appointment
    FOR EACH ROW EXECUTE FUNCTION prm.appointment_waitlist_trigger();
