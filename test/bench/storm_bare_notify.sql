-- Reference: storm_bare.sql plus the one NOTIFY per transaction that prm
-- sends for its events (PostgreSQL serialises the commits of notifying
-- transactions with a database-wide lock).
\set i :i + 1
\set n (:i - 1) * :clients + :client_id + 1
\set slot :slot_base + (:n - 1) / 3
BEGIN;
UPDATE bench.slot SET status = 'busy' WHERE org_id = :org AND id = :slot AND status = 'free';
SELECT pg_notify('prm_event', '');
COMMIT;
