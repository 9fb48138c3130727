-- prm: shared schema. Organizations (the tenants), who may act on them,
-- and the event log. Every other file of the install script builds on this.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- A clinic. Its id is the org_id of every tenant row.
CREATE TABLE prm.organization (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    timezone    text NOT NULL DEFAULT 'UTC',
    sms_number  text UNIQUE CHECK (sms_number ~ '^\+[1-9][0-9]{7,14}$'),
    settings    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE prm.organization IS 'A clinic: the tenant every prm row belongs to (org_id). settings holds the overrides set with prm.configure().';
COMMENT ON COLUMN prm.organization.sms_number IS 'The clinic''s SMS number in E.164; inbound SMS are routed by it.';

-- Which role may act on which organization, at which level.
CREATE TABLE prm.org_access (
    org_id      bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    role_id     oid NOT NULL,
    level       text NOT NULL CHECK (level IN ('admin', 'staff', 'readonly', 'webhook', 'sender')),
    granted_by  text NOT NULL DEFAULT session_user,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, role_id)
);
CREATE INDEX org_access_role_idx ON prm.org_access (role_id);
COMMENT ON TABLE prm.org_access IS 'Access of roles to organizations, written by prm.grant_access() and prm.revoke_access().';

-- Every state change, in order; listeners are woken on channel prm_event.
CREATE TABLE prm.event (
    org_id      bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,
    entity      text NOT NULL,
    entity_id   bigint,
    payload     jsonb NOT NULL DEFAULT '{}',
    actor       text NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE INDEX event_entity_idx ON prm.event (org_id, entity, entity_id);
COMMENT ON TABLE prm.event IS 'One row per state change (and the audit trail: actor is the role that acted). A NOTIFY on channel prm_event, at most one per transaction, announces new rows.';

SELECT pg_catalog.pg_extension_config_dump('prm.organization', '');
SELECT pg_catalog.pg_extension_config_dump('prm.organization_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.org_access', '');
SELECT pg_catalog.pg_extension_config_dump('prm.event', '');
SELECT pg_catalog.pg_extension_config_dump('prm.event_id_seq', '');

-- Row-level security. Functions check access themselves (they are SECURITY
-- DEFINER); direct reads of tables go through these policies. There are no
-- write policies: rows are written through prm's functions only.
ALTER TABLE prm.organization ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.org_access ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.event ENABLE ROW LEVEL SECURITY;

CREATE POLICY org_access_own ON prm.org_access FOR SELECT
    USING (pg_catalog.pg_has_role(role_id, 'USAGE'));
CREATE POLICY organization_read ON prm.organization FOR SELECT
    USING (id IN (SELECT a.org_id FROM prm.org_access a
                   WHERE pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY event_read ON prm.event FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

GRANT USAGE ON SCHEMA prm TO PUBLIC;
GRANT SELECT ON prm.org_access TO PUBLIC;

CREATE FUNCTION prm.grant_access(role regrole, org_id bigint, level text)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_grant_access';
COMMENT ON FUNCTION prm.grant_access(regrole, bigint, text) IS
    'Give a role access to an organization at a level (admin, staff, readonly, webhook, sender), with the table privileges that level needs. Needs admin on the organization.';

CREATE FUNCTION prm.revoke_access(role regrole, org_id bigint)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_revoke_access';
COMMENT ON FUNCTION prm.revoke_access(regrole, bigint) IS
    'Take a role''s access to an organization away; true if it had any. Needs admin on the organization.';

CREATE FUNCTION prm.normalize_phone(phone text, region text DEFAULT NULL)
RETURNS text
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'prm_normalize_phone';
COMMENT ON FUNCTION prm.normalize_phone(text, text) IS
    'The E.164 form of a phone number; national numbers are read with region (ISO alpha-2) or prm.default_region. Raises 22023 for an unreadable number.';

CREATE FUNCTION prm.configure(org_id bigint, settings jsonb)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_configure';
COMMENT ON FUNCTION prm.configure(bigint, jsonb) IS
    'Change an organization''s settings (keys validated; a JSON null resets a key to its default) and return the effective settings. Needs admin on the organization.';

CREATE FUNCTION prm.settings(org_id bigint)
RETURNS jsonb
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_settings';
COMMENT ON FUNCTION prm.settings(bigint) IS
    'The effective settings of an organization: defaults merged with its overrides.';
