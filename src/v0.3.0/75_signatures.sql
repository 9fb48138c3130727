-- prm 0.3.0, webhook signatures: the organizations' provider credentials
-- (Twilio's auth token), readable by the admin level alone, and the check
-- of a Twilio request's X-Twilio-Signature (src/signature.c).

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- One auth token per organization and provider.  Written only by
-- prm.set_channel_credential; read by prm.verify_twilio_signature, which
-- never returns it.  Row-level security admits the admin level only, and
-- prm.grant_access grants SELECT on this table only to roles with an admin
-- level (src/access.c), so staff, readonly and webhook roles have no path to
-- the token: not the table, not a view, not pg_dump.
CREATE TABLE prm.channel_credential (
    org_id      bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    provider    text NOT NULL CHECK (provider IN ('twilio')),
    auth_token  text NOT NULL CHECK (length(auth_token) BETWEEN 1 AND 128),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, provider)
);
COMMENT ON TABLE prm.channel_credential IS 'Each organization''s provider credential (provider twilio: the auth token webhook signatures are verified with). Set with prm.set_channel_credential(); readable by the organization''s admin level only.';
COMMENT ON COLUMN prm.channel_credential.auth_token IS 'The secret. No prm function returns it and no event carries it; only prm.verify_twilio_signature() reads it.';
SELECT pg_catalog.pg_extension_config_dump('prm.channel_credential', '');

ALTER TABLE prm.channel_credential ENABLE ROW LEVEL SECURITY;
CREATE POLICY admin_read ON prm.channel_credential FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level = 'admin'
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

CREATE FUNCTION prm.set_channel_credential(org_id bigint, provider text, auth_token text)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_set_channel_credential';
COMMENT ON FUNCTION prm.set_channel_credential(bigint, text, text) IS
    'Store (or replace) the organization''s credential of provider (twilio: the account''s auth token, at most 128 printable ASCII characters, no spaces). Emits channel_credential_set, without the secret. Needs admin.';

CREATE FUNCTION prm.remove_channel_credential(org_id bigint, provider text)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_remove_channel_credential';
COMMENT ON FUNCTION prm.remove_channel_credential(bigint, text) IS
    'Delete the organization''s credential of provider; true if there was one (then emits channel_credential_removed). Needs admin.';

CREATE FUNCTION prm.verify_twilio_signature(url text, params jsonb, signature text,
                                            org_id bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_verify_twilio_signature';
COMMENT ON FUNCTION prm.verify_twilio_signature(text, jsonb, text, bigint) IS
    'Is signature (the X-Twilio-Signature header) Twilio''s HMAC-SHA1 of url and the form parameters params (a flat object of strings, arrays for repeated names; ''{}'' for GET) under the auth token of org_id, or of the organization owning params->>''To'' (SMS number, or whatsapp:+… for WhatsApp)? Compared in constant time; a NULL signature is false; no stored token is 55000. Needs webhook.';

INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.set_channel_credential(bigint,text,text)', 'admin'),
    ('prm.remove_channel_credential(bigint,text)', 'admin'),
    ('prm.verify_twilio_signature(text,jsonb,text,bigint)', 'webhook');
