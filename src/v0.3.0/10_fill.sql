-- prm 0.3.0, fill engine: a slot that fails in a sweep backs off alone.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

ALTER TABLE prm.slot
    ADD COLUMN sweep_failures int NOT NULL DEFAULT 0 CHECK (sweep_failures >= 0),
    ADD COLUMN sweep_retry_at timestamptz;
COMMENT ON COLUMN prm.slot.sweep_failures IS 'Sweeps in a row in which this slot failed (its error is in prm.job_run and the server log); reset by the next success.';
COMMENT ON COLUMN prm.slot.sweep_retry_at IS 'A slot that failed in a sweep is passed over until then (5 s, doubling per failure in a row, at most 1 h).';

-- next_deadline() passes over slots locked by others (it takes row locks
-- with SKIP LOCKED), so it is not STABLE.
ALTER FUNCTION prm.next_deadline() VOLATILE PARALLEL UNSAFE;
