-- prm access (0.2.0): give roles granted earlier their privileges on the
-- tables this release adds; run at the end of every install and update.

CREATE FUNCTION prm.sync_access_privileges()
RETURNS int
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_sync_access_privileges';
COMMENT ON FUNCTION prm.sync_access_privileges() IS
    'Recompute the table privileges of every role in prm.org_access (after an update added tables); returns the number of roles. Needs a superuser or the extension owner.';

SELECT prm.sync_access_privileges();
