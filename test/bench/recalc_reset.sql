-- Before each timed recalculation: every score of the organization set to
-- -1 (so every row changes), the table vacuumed, a checkpoint taken.
\set ON_ERROR_STOP 1
SELECT value AS org FROM bench.setting WHERE name = 'recalc_org' \gset
UPDATE prm.waitlist_entry SET priority_score = -1 WHERE org_id = :org;
VACUUM ANALYZE prm.waitlist_entry;
CHECKPOINT;
