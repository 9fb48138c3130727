-- Benchmark 1 set-up: an organization for the outbox, and the baseline's
-- plain queue table with the same columns, indexes and storage settings as
-- prm.outbound_message (no row-level security, triggers or foreign keys;
-- the baseline's UPDATE touches no key column, so the keys would cost
-- nothing there anyway).
\set ON_ERROR_STOP 1
SELECT prm.create_organization('Bench Outbox', 'UTC', '+15558000001') AS org \gset
CREATE TABLE bench.outbound_message (LIKE prm.outbound_message INCLUDING ALL);
ALTER TABLE bench.outbound_message SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 200, autovacuum_analyze_scale_factor = 0.02);
INSERT INTO bench.setting VALUES ('outbox_org', :'org');
