-- prm 0.3.0, catalog labels: every function's volatility, strictness and
-- parallel label says what its C does.  Reviewed function by function:
-- whatever writes, locks a row, sends a NOTIFY or logs an audit line is
-- VOLATILE PARALLEL UNSAFE; what only reads (tables, settings, now()) is
-- STABLE; what depends on its arguments alone is IMMUTABLE.  The read-only
-- list is kept in test/pgtap/labels.sql, which fails when a function joins
-- or leaves it unreviewed.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- export_patient writes the patient_exported event, sends NOTIFY prm_event
-- and logs an audit line: it was declared STABLE PARALLEL SAFE, so the
-- planner could have run it in a parallel worker (which cannot write) or
-- folded repeated calls into one (one audit for several exports).
ALTER FUNCTION prm.export_patient(bigint, bigint) VOLATILE PARALLEL UNSAFE;
