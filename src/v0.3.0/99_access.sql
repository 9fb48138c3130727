-- prm access (0.3.0): least privilege.  No role may execute a prm function
-- by default (EXECUTE is revoked from PUBLIC on every one); prm.grant_access
-- grants a role EXECUTE on exactly the functions its levels need, and the
-- table privileges, and records what it granted so that revoke_access takes
-- back only that.  Run at the end of every install and update.

-- What prm.grant_access granted (a privilege a role already had, granted by
-- hand, is not recorded, so revoke_access never takes it away).
CREATE TABLE prm.access_privilege (
    role_id     oid NOT NULL,
    object      text NOT NULL,      -- 'table <name>' or 'function <signature>'
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_id, object)
);
COMMENT ON TABLE prm.access_privilege IS 'The privileges prm.grant_access() granted to each role, so that prm.revoke_access() takes back only those.';
SELECT pg_catalog.pg_extension_config_dump('prm.access_privilege', '');
ALTER TABLE prm.access_privilege ENABLE ROW LEVEL SECURITY;

-- prm.next_deadline() now needs a superuser or the owner: it spans clinics.
COMMENT ON FUNCTION prm.next_deadline() IS
    'The earliest deadline of any time-driven step (hold expiry, next batch, lease, retry, hourly recalculation), or NULL. Needs a superuser or the extension owner: it spans every organization.';

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA prm FROM PUBLIC;
SELECT prm.sync_access_privileges();
