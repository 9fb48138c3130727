-- prm access levels (0.3.0): a role may hold several levels on one
-- organization -- one of readonly, staff and admin (a new one replaces it),
-- plus sender and webhook, which add to it (a process that claims outbound
-- messages and also receives the provider's webhooks).

ALTER TABLE prm.org_access DROP CONSTRAINT org_access_pkey,
    ADD PRIMARY KEY (org_id, role_id, level);
COMMENT ON TABLE prm.org_access IS 'Access of roles to organizations, one row per level a role holds on an organization (at most one of readonly, staff and admin; sender and webhook beside it), written by prm.grant_access() and prm.revoke_access().';

COMMENT ON FUNCTION prm.grant_access(regrole, bigint, text) IS
    'Give a role access to an organization at a level (admin, staff, readonly, webhook, sender), with the privileges that level needs. readonly, staff and admin replace one another (a NOTICE says so); sender and webhook add to what the role holds. Needs admin on the organization.';
COMMENT ON FUNCTION prm.revoke_access(regrole, bigint) IS
    'Take every level a role has on an organization away; true if it had any. Needs admin on the organization.';

CREATE FUNCTION prm.revoke_access(role regrole, org_id bigint, level text)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_revoke_access';
COMMENT ON FUNCTION prm.revoke_access(regrole, bigint, text) IS
    'Take one level a role has on an organization away, keeping its others; true if it had that level. Needs admin on the organization.';

COMMENT ON FUNCTION prm.record_delivery_status(text, text) IS
    'Apply a delivery callback (Twilio''s status words) from the webhook that receives the provider''s status callbacks, or from a sender that learns statuses from its provider''s reply. Needs the sender or the webhook level (staff and admin have both); a role with neither gets 42501. Idempotent, and never moves a status backwards: false when the callback changed nothing, when no message has that provider id, or when it belongs to an organization the role has no such level on.';

INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.revoke_access(regrole,bigint,text)', 'admin');
