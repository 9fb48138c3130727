-- prm jobs (0.2.0): everything time-driven, for the worker and for pg_cron.

CREATE TABLE prm.job_run (
    job          text PRIMARY KEY,
    last_run_at  timestamptz NOT NULL,
    last_result  bigint,
    last_error   text
);
COMMENT ON TABLE prm.job_run IS 'When each time-driven step of prm last ran, what it did and its last error. Not tenant data: it holds no organization''s rows.';
SELECT pg_catalog.pg_extension_config_dump('prm.job_run', '');
ALTER TABLE prm.job_run ENABLE ROW LEVEL SECURITY;

CREATE FUNCTION prm.run_due_jobs()
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_run_due_jobs';
COMMENT ON FUNCTION prm.run_due_jobs() IS
    'Run every time-driven step that is due (expire offers and send next batches, send delayed first batches, release run-out leases, wake senders for retries, archive finished messages, hourly priority recalculation), each in its own subtransaction; returns what each did or its error. For pg_cron where the worker is not loaded. Needs a superuser or the extension owner.';

CREATE FUNCTION prm.next_deadline()
RETURNS timestamptz
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_next_deadline';
COMMENT ON FUNCTION prm.next_deadline() IS
    'The earliest time at which a time-driven step has work: the worker sleeps until then. NULL when nothing is scheduled.';

CREATE FUNCTION prm.schedule_with_pg_cron(schedule text DEFAULT '* * * * *')
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'prm_schedule_with_pg_cron';
COMMENT ON FUNCTION prm.schedule_with_pg_cron(text) IS
    'Schedule SELECT prm.run_due_jobs() with pg_cron (job name prm_run_due_jobs, replaced if present) in this database; returns the job id. Raises when pg_cron is not installed here.';
