-- prm access (0.2.0): give roles granted earlier their privileges on the
-- tables this release adds; run at the end of every install and update.

CREATE FUNCTION prm.sync_access_privileges()
RETURNS int
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_sync_access_privileges';
COMMENT ON FUNCTION prm.sync_access_privileges() IS
    'Recompute the table privileges of every role in prm.org_access (after an update added tables); returns the number of roles. Needs a superuser or the extension owner.';

-- prm's functions run short statements: JIT compilation only slows them
-- (a cancellation's candidate query once spent 0.7 s compiling).  The 0.1.0
-- functions get the setting here, the later ones in their definitions.
ALTER FUNCTION prm.grant_access(regrole, bigint, text) SET jit = off;
ALTER FUNCTION prm.revoke_access(regrole, bigint) SET jit = off;
ALTER FUNCTION prm.configure(bigint, jsonb) SET jit = off;
ALTER FUNCTION prm.settings(bigint) SET jit = off;
ALTER FUNCTION prm.create_organization(text, text, text) SET jit = off;
ALTER FUNCTION prm.add_location(bigint, text, text, text) SET jit = off;
ALTER FUNCTION prm.add_provider(bigint, text) SET jit = off;
ALTER FUNCTION prm.add_patient(bigint, text, text, text, text, text) SET jit = off;
ALTER FUNCTION prm.book_appointment(bigint, bigint, bigint, timestamptz, timestamptz) SET jit = off;
ALTER FUNCTION prm.cancel_appointment(bigint, bigint, text) SET jit = off;
ALTER FUNCTION prm.set_appointment_status(bigint, bigint, text) SET jit = off;

SELECT prm.sync_access_privileges();
