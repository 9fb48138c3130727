-- prm health (0.3.0): prm.health() also reports the worker of this database.

CREATE OR REPLACE FUNCTION prm.health()
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_health_report';
COMMENT ON FUNCTION prm.health() IS
    'Outbox health: queue depth by channel and status, the oldest due message, dead messages, dead tuples of the queue table, the age of the oldest open transaction, and the latency of a claim probe; and under "worker": whether prm is preloaded, whether this database is in prm.databases, whether its worker runs (pid, started_at), when its last round ended, until when it sleeps, when the steps last ran, failed steps, and a "problem" sentence when something is off. Needs a superuser or the extension owner.';
