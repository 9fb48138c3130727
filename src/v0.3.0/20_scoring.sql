-- prm 0.3.0, scoring: priority scores are advanced by deadlines, not by an
-- hourly sweep of the whole waitlist.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- When the stored score next changes by the passage of time alone (a day
-- count crossing its next step); the job step rescores only entries whose
-- deadline has come.
ALTER TABLE prm.waitlist_entry ADD COLUMN score_due_at timestamptz;
COMMENT ON COLUMN prm.waitlist_entry.score_due_at IS 'When priority_score next changes by the passage of time alone (NULL: never); set by the score trigger, the deadline at which the worker or run_due_jobs() rescores the entry.';
CREATE INDEX waitlist_entry_score_due_idx ON prm.waitlist_entry (score_due_at) WHERE status = 'waiting';

-- the score trigger also fires when the deadline column is touched (that is
-- how an entry is rescored)
DROP TRIGGER waitlist_entry_score ON prm.waitlist_entry;
CREATE TRIGGER waitlist_entry_score
    BEFORE INSERT OR UPDATE OF urgent, manual_boost, current_appointment_at, joined_at, provider_id, score_due_at
    ON prm.waitlist_entry
    FOR EACH ROW EXECUTE FUNCTION prm.waitlist_entry_score_trigger();

-- every waiting entry gets its score and first deadline now
UPDATE prm.waitlist_entry SET score_due_at = NULL WHERE status = 'waiting';

COMMENT ON FUNCTION prm.recalculate_priorities(bigint) IS
    'Rescore every waiting entry of an organization (NULL: all, superuser or owner only) from scratch, e.g. after its weights changed; returns how many scores changed. The passage of time needs no call: each entry''s score_due_at is a deadline the worker (or run_due_jobs) rescores it at.';
