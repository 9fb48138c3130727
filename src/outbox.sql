-- prm outbox (0.2.0): message templates, the outbound queue and its history,
-- inbound messages, and the functions senders and webhooks call.

CREATE TABLE prm.message_template (
    org_id      bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    kind        text NOT NULL CHECK (kind IN ('offer', 'booked', 'gone', 'declined', 'no_offer',
                                              'help', 'stop', 'start', 'hint',
                                              'contact_single', 'contact_several')),
    channel     text NOT NULL DEFAULT 'sms' CHECK (channel IN ('sms', 'email', 'voice')),
    locale      text NOT NULL DEFAULT 'en' CHECK (locale ~ '^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$'),
    body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 1600),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, kind, channel, locale)
);
COMMENT ON TABLE prm.message_template IS 'An organization''s wording of a message kind, per channel and locale. Placeholders: {clinic}, {clinic_phone}, {date}, {time}, {hold_minutes}, {link}; in therapist e-mails also {therapist}, {count} and {patients} (de-identified lines: reference, initials, age band, therapy type). Patient details are not placeholders, so they never reach a message. Kinds without a row use prm''s built-in English text.';

CREATE TABLE prm.outbound_message (
    org_id              bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    channel             text NOT NULL CHECK (channel IN ('sms', 'email', 'voice')),
    to_address          text NOT NULL CHECK (length(to_address) <= 320),
    body                text NOT NULL CHECK (length(body) <= 1600),
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'undelivered',
                                          'failed', 'read', 'dead', 'cancelled')),
    attempts            int NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    lease_token         uuid,
    lease_expires_at    timestamptz,
    not_before          timestamptz NOT NULL DEFAULT now(),
    kind                text NOT NULL DEFAULT 'other',
    patient_id          bigint,
    offer_id            bigint,
    dedup_key           text CHECK (length(dedup_key) <= 200),
    provider_message_id text CHECK (length(provider_message_id) <= 200),
    last_error          text,
    sent_at             timestamptz,
    delivered_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, dedup_key),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id)
);
-- the claim path: exactly the WHERE and ORDER BY of claim_messages
CREATE INDEX outbound_message_claim_idx ON prm.outbound_message (channel, not_before, id)
    WHERE status = 'queued';
CREATE INDEX outbound_message_lease_idx ON prm.outbound_message (lease_expires_at)
    WHERE status = 'sending';
CREATE INDEX outbound_message_id_idx ON prm.outbound_message (id);
CREATE INDEX outbound_message_provider_id_idx ON prm.outbound_message (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX outbound_message_patient_idx ON prm.outbound_message (org_id, patient_id, created_at);
-- a hot queue: vacuum it often, leave room for HOT updates
ALTER TABLE prm.outbound_message SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 200, autovacuum_analyze_scale_factor = 0.02);
COMMENT ON TABLE prm.outbound_message IS 'The outbox: messages waiting to be sent or recently finished. Senders claim with prm.claim_messages() and acknowledge with mark_message_sent / mark_message_failed; finished messages move to prm.outbound_message_history after a day, so this table stays small.';

CREATE TABLE prm.outbound_message_history (LIKE prm.outbound_message INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id));
CREATE INDEX outbound_message_history_provider_id_idx ON prm.outbound_message_history (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX outbound_message_history_patient_idx ON prm.outbound_message_history (org_id, patient_id, created_at);
-- dedup keys stay used after their message was archived
CREATE INDEX outbound_message_history_dedup_idx ON prm.outbound_message_history (org_id, dedup_key)
    WHERE dedup_key IS NOT NULL;
COMMENT ON TABLE prm.outbound_message_history IS 'Finished outbound messages moved out of the hot queue by run_due_jobs; delivery callbacks still find them here.';

CREATE TABLE prm.inbound_message (
    org_id              bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    provider_message_id text NOT NULL CHECK (length(provider_message_id) <= 200),
    from_address        text NOT NULL,
    body                text NOT NULL,
    keyword             text NOT NULL,
    patient_id          bigint,
    offer_id            bigint,
    reply               text,
    received_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, provider_message_id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id)
);
CREATE INDEX inbound_message_patient_idx ON prm.inbound_message (org_id, patient_id, received_at);
COMMENT ON TABLE prm.inbound_message IS 'Every inbound SMS once (unique per provider message id), with the keyword read from it and the reply given.';

SELECT pg_catalog.pg_extension_config_dump('prm.message_template', '');
SELECT pg_catalog.pg_extension_config_dump('prm.message_template_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.outbound_message', '');
SELECT pg_catalog.pg_extension_config_dump('prm.outbound_message_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.outbound_message_history', '');
SELECT pg_catalog.pg_extension_config_dump('prm.inbound_message', '');
SELECT pg_catalog.pg_extension_config_dump('prm.inbound_message_id_seq', '');

ALTER TABLE prm.message_template ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.outbound_message ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.outbound_message_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.inbound_message ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON prm.message_template FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.outbound_message FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly', 'sender')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.outbound_message_history FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly', 'sender')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.inbound_message FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

CREATE FUNCTION prm.set_template(org_id bigint, kind text, body text, channel text DEFAULT 'sms',
                                 locale text DEFAULT 'en')
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_set_template';
COMMENT ON FUNCTION prm.set_template(bigint, text, text, text, text) IS
    'Set an organization''s wording of a message kind (offer, booked, gone, declined, no_offer, help, stop, start, hint; contact_single and contact_several for therapist e-mails). Unknown placeholders are refused (22023). Needs admin.';

CREATE FUNCTION prm.render_template(org_id bigint, kind text, vars jsonb DEFAULT '{}',
                                    channel text DEFAULT 'sms', locale text DEFAULT 'en')
RETURNS text
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_render_template';
COMMENT ON FUNCTION prm.render_template(bigint, text, jsonb, text, text) IS
    'The text a message kind would have, with {clinic} filled in and the other placeholders from vars. Needs readonly.';

CREATE FUNCTION prm.enqueue_message(org_id bigint, channel text, to_address text, body text,
                                    patient_id bigint DEFAULT NULL, dedup_key text DEFAULT NULL,
                                    not_before timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_enqueue_message';
COMMENT ON FUNCTION prm.enqueue_message(bigint, text, text, text, bigint, text, timestamptz) IS
    'Queue a message; a dedup_key already used by the organization queues nothing and returns the existing message''s id. SMS to a patient is held out of quiet hours. Needs staff.';

CREATE FUNCTION prm.claim_messages(channel text, max_count int DEFAULT 10,
                                   lease interval DEFAULT '60 seconds')
RETURNS SETOF prm.outbound_message
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_claim_messages';
COMMENT ON FUNCTION prm.claim_messages(text, int, interval) IS
    'Hand up to max_count (1-1000) due messages of a channel to this sender, each with a lease (1 second - 1 hour) and a lease_token; concurrent senders never get the same message. Needs sender.';

CREATE FUNCTION prm.mark_message_sent(message_id bigint, provider_message_id text,
                                      lease_token uuid DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_mark_message_sent';
COMMENT ON FUNCTION prm.mark_message_sent(bigint, text, uuid) IS
    'Acknowledge a claimed message as sent. With a lease_token that no longer matches (the lease ran out and the message was handed on) the acknowledgement is refused with 55000.';

CREATE FUNCTION prm.mark_message_failed(message_id bigint, error text, retryable boolean DEFAULT true,
                                        lease_token uuid DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_mark_message_failed';
COMMENT ON FUNCTION prm.mark_message_failed(bigint, text, boolean, uuid) IS
    'Report a failed send: retried with exponential backoff and jitter up to max_attempts, then dead; not retryable: dead at once. Lease checked as for mark_message_sent.';

CREATE FUNCTION prm.record_delivery_status(provider_message_id text, status text)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_record_delivery_status';
COMMENT ON FUNCTION prm.record_delivery_status(text, text) IS
    'Apply a delivery callback (Twilio''s status words). Idempotent, and never moves a status backwards: returns false when the callback changed nothing.';

CREATE FUNCTION prm.redrive_message(org_id bigint, message_id bigint)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_redrive_message';
COMMENT ON FUNCTION prm.redrive_message(bigint, bigint) IS
    'Queue a dead message again with its attempts reset; true if it was dead. Needs staff.';

CREATE FUNCTION prm.health()
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_health';
COMMENT ON FUNCTION prm.health() IS
    'Outbox health: queue depth by channel and status, the oldest due message, dead messages, dead tuples of the queue table, the age of the oldest open transaction, and the latency of a claim probe. Needs a superuser or the extension owner.';

CREATE VIEW prm.dead_message WITH (security_invoker = true) AS
SELECT org_id, id, channel, to_address, kind, attempts, last_error, created_at, updated_at
  FROM prm.outbound_message WHERE status = 'dead';
COMMENT ON VIEW prm.dead_message IS 'Messages that failed for good; prm.redrive_message() queues one again.';
