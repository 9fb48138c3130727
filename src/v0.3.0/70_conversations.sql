-- prm 0.3.0, conversations: every message to and from a patient threaded by
-- (organization, channel, the patient's address), inbound channels (SMS,
-- WhatsApp, e-mail, voice transcripts) and the conversation timers.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- The channels of the outbox: WhatsApp and push join SMS, e-mail and voice.
ALTER TABLE prm.outbound_message DROP CONSTRAINT outbound_message_channel_check,
    ADD CONSTRAINT outbound_message_channel_check
        CHECK (channel IN ('sms', 'whatsapp', 'email', 'voice', 'push'));
ALTER TABLE prm.outbound_message_history DROP CONSTRAINT outbound_message_channel_check,
    ADD CONSTRAINT outbound_message_channel_check
        CHECK (channel IN ('sms', 'whatsapp', 'email', 'voice', 'push'));
ALTER TABLE prm.message_template DROP CONSTRAINT message_template_channel_check,
    ADD CONSTRAINT message_template_channel_check
        CHECK (channel IN ('sms', 'whatsapp', 'email', 'voice', 'push'));

-- The addresses inbound traffic is routed by, beside sms_number.
ALTER TABLE prm.organization
    ADD COLUMN whatsapp_number text UNIQUE CHECK (whatsapp_number ~ '^\+[1-9][0-9]{7,14}$'),
    ADD COLUMN email_address text UNIQUE CHECK (length(email_address) <= 254);
COMMENT ON COLUMN prm.organization.whatsapp_number IS 'The clinic''s WhatsApp sender number in E.164; inbound WhatsApp messages are routed by it.';
COMMENT ON COLUMN prm.organization.email_address IS 'The clinic''s inbound e-mail address (lower case); inbound e-mail is routed by it.';

-- One conversation per (organization, channel, address) that is not closed:
-- a closed conversation never reopens, new traffic starts a new one.
CREATE TABLE prm.conversation (
    org_id          bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    patient_id      bigint,
    channel         text NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'email', 'voice')),
    address         text NOT NULL CHECK (length(address) <= 320),
    state           text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'inactive', 'closed')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_message_at timestamptz NOT NULL DEFAULT now(),
    last_inbound_at timestamptz,
    unread_count    int NOT NULL DEFAULT 0 CHECK (unread_count >= 0),
    assignee_id     bigint,
    state_due_at    timestamptz,
    closed_at       timestamptz,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id) ON DELETE SET NULL (patient_id),
    CHECK ((state = 'closed') = (closed_at IS NOT NULL)),
    CHECK (state = 'closed' OR state_due_at IS NOT NULL)
);
CREATE UNIQUE INDEX conversation_open_idx ON prm.conversation (org_id, channel, address)
    WHERE state <> 'closed';
-- the timers' deadline: only conversations not yet closed have one
CREATE INDEX conversation_due_idx ON prm.conversation (state_due_at) WHERE state <> 'closed';
-- a staff inbox: an organization's conversations, latest first
CREATE INDEX conversation_inbox_idx ON prm.conversation (org_id, last_message_at DESC);
CREATE INDEX conversation_patient_idx ON prm.conversation (org_id, patient_id);
COMMENT ON TABLE prm.conversation IS 'A thread of messages with one address of a patient (or of an unknown sender) on one channel. state: active, inactive after the organization''s conversation_inactive_after without traffic (traffic makes it active again), closed after conversation_closed_after (final: new traffic starts a new conversation). state_due_at is the next timer.';

CREATE TABLE prm.conversation_message (
    org_id              bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    conversation_id     bigint NOT NULL,
    direction           text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    body                text NOT NULL CHECK (length(body) <= 100000),
    created_at          timestamptz NOT NULL DEFAULT now(),
    inbound_message_id  bigint,
    outbound_message_id bigint,
    author              text,       -- outbound: the role that wrote it (NULL: prm itself)
    provider_call_id    text CHECK (length(provider_call_id) <= 200),
    call                jsonb,      -- voice: {"caller", "duration_seconds", "outcome"}
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, conversation_id) REFERENCES prm.conversation (org_id, id) ON DELETE CASCADE
);
CREATE INDEX conversation_message_thread_idx ON prm.conversation_message (org_id, conversation_id, id);
CREATE UNIQUE INDEX conversation_message_call_idx ON prm.conversation_message (org_id, provider_call_id)
    WHERE provider_call_id IS NOT NULL;
CREATE INDEX conversation_message_outbound_idx ON prm.conversation_message (org_id, outbound_message_id)
    WHERE outbound_message_id IS NOT NULL;
COMMENT ON TABLE prm.conversation_message IS 'The messages of a conversation in order (id): inbound ones (with their prm.inbound_message), outbound ones (with their prm.outbound_message) and voice call transcripts (provider_call_id, call details).';

-- inbound messages of every channel, threaded
ALTER TABLE prm.inbound_message
    ADD COLUMN channel text NOT NULL DEFAULT 'sms' CHECK (channel IN ('sms', 'whatsapp', 'email')),
    ADD COLUMN conversation_id bigint;
COMMENT ON COLUMN prm.inbound_message.conversation_id IS 'The conversation the message was threaded into.';

SELECT pg_catalog.pg_extension_config_dump('prm.conversation', '');
SELECT pg_catalog.pg_extension_config_dump('prm.conversation_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.conversation_message', '');
SELECT pg_catalog.pg_extension_config_dump('prm.conversation_message_id_seq', '');

ALTER TABLE prm.conversation ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.conversation_message ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON prm.conversation FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.conversation_message FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
