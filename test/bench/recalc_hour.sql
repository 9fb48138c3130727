-- Benchmark 4c: the clock moves one hour.  Every time of the organization's
-- entries is shifted back an hour (without triggers), which is what an hour
-- passing does to their scores and deadlines; then VACUUM and a checkpoint.
\set ON_ERROR_STOP 1
SELECT value AS org FROM bench.setting WHERE name = 'recalc_org' \gset
SET session_replication_role = replica;
UPDATE prm.waitlist_entry
   SET joined_at = joined_at - interval '1 hour',
       current_appointment_at = current_appointment_at - interval '1 hour',
       score_due_at = score_due_at - interval '1 hour'
 WHERE org_id = :org;
RESET session_replication_role;
VACUUM ANALYZE prm.waitlist_entry;
CHECKPOINT;
