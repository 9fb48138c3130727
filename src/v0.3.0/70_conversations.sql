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
-- retention deletes by age: messages are appended in time order, BRIN suffices
CREATE INDEX conversation_message_age_idx ON prm.conversation_message USING brin (created_at);
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

-- the reply to a patient who asked for a person
ALTER TABLE prm.message_template DROP CONSTRAINT message_template_kind_check,
    ADD CONSTRAINT message_template_kind_check
        CHECK (kind IN ('offer', 'booked', 'gone', 'declined', 'no_offer',
                        'help', 'stop', 'start', 'hint', 'handoff',
                        'contact_single', 'contact_several'));

-- A conversation's messages in order, with the delivery status of the
-- outbound ones (queued or archived).
CREATE VIEW prm.conversation_thread WITH (security_invoker = true) AS
SELECT m.org_id, m.conversation_id, m.id, m.direction, m.body, m.created_at, m.author,
       m.inbound_message_id, m.outbound_message_id,
       coalesce(q.status, h.status) AS delivery_status,
       m.provider_call_id, m.call
  FROM prm.conversation_message m
  LEFT JOIN prm.outbound_message q ON q.org_id = m.org_id AND q.id = m.outbound_message_id
  LEFT JOIN prm.outbound_message_history h ON h.org_id = m.org_id AND h.id = m.outbound_message_id
                                         AND q.id IS NULL;
COMMENT ON VIEW prm.conversation_thread IS 'A conversation''s messages in order (ORDER BY id), outbound ones with their delivery status. Read with WHERE org_id = ... AND conversation_id = ... ORDER BY id.';

-- A staff inbox: conversations not closed, latest first, with the last message.
CREATE VIEW prm.conversation_inbox WITH (security_invoker = true) AS
SELECT c.org_id, c.id AS conversation_id, c.patient_id, c.channel, c.address, c.state,
       c.last_message_at, c.unread_count, c.assignee_id,
       l.direction AS last_direction, l.body AS last_body
  FROM prm.conversation c
  CROSS JOIN LATERAL (SELECT m.direction, m.body FROM prm.conversation_message m
                       WHERE m.org_id = c.org_id AND m.conversation_id = c.id
                       ORDER BY m.id DESC LIMIT 1) l
 WHERE c.state <> 'closed';
COMMENT ON VIEW prm.conversation_inbox IS 'Conversations not closed, with their last message and unread count: ORDER BY last_message_at DESC LIMIT n for a staff inbox.';

CREATE FUNCTION prm.handle_inbound_message(channel text, to_address text, from_address text,
                                           body text, provider_message_id text)
RETURNS text
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
SET plan_cache_mode = force_generic_plan -- as handle_inbound_sms (10_fill.sql)
AS 'MODULE_PATHNAME', 'prm_handle_inbound_message';
COMMENT ON FUNCTION prm.handle_inbound_message(text, text, text, text, text) IS
    'Process an inbound message on channel sms, whatsapp or email, routed by the clinic''s address it was sent to (sms_number, whatsapp_number, email_address): SMS exactly as handle_inbound_sms; every message is threaded into the sender''s conversation (unknown senders too); a message that is one of the handoff_keywords asks for a person. Returns the reply to send, or NULL. Idempotent on provider_message_id. Needs webhook.';

CREATE FUNCTION prm.reply_in_conversation(org_id bigint, conversation_id bigint, body text)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_reply_in_conversation';
COMMENT ON FUNCTION prm.reply_in_conversation(bigint, bigint, text) IS
    'Queue a staff reply on the conversation''s channel and address; returns the outbound message id. WhatsApp: free-form only within 24 hours of the patient''s last message (55000 otherwise: send a template with the four-argument form). A closed or voice conversation takes no reply (55000). Needs staff.';

-- the same, with an approved template instead of free text (body NULL)
CREATE FUNCTION prm.reply_in_conversation(org_id bigint, conversation_id bigint, body text,
                                          template text)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_reply_in_conversation';
COMMENT ON FUNCTION prm.reply_in_conversation(bigint, bigint, text, text) IS
    'Queue a staff reply on the conversation''s channel and address; returns the outbound message id. WhatsApp: free-form body only within 24 hours of the patient''s last message, otherwise pass body NULL and template, a kind the organization stored for whatsapp (55000 otherwise). A closed conversation takes no reply (55000). Needs staff.';

CREATE FUNCTION prm.mark_conversation_read(org_id bigint, conversation_id bigint)
RETURNS int
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_mark_conversation_read';
COMMENT ON FUNCTION prm.mark_conversation_read(bigint, bigint) IS
    'Mark a conversation read; returns how many messages were unread. Needs staff.';

CREATE FUNCTION prm.assign_conversation(org_id bigint, conversation_id bigint, staff_id bigint)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_assign_conversation';
COMMENT ON FUNCTION prm.assign_conversation(bigint, bigint, bigint) IS
    'Assign a conversation to a staff member of the organization (NULL: unassign). Needs staff.';

CREATE FUNCTION prm.record_call_transcript(org_id bigint, provider_call_id text, caller text,
                                           transcript text, duration_seconds int DEFAULT NULL,
                                           outcome text DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_record_call_transcript';
COMMENT ON FUNCTION prm.record_call_transcript(bigint, text, text, text, int, text) IS
    'Record a voice agent''s call (transcript, caller, duration, outcome) into the caller''s voice conversation; returns the conversation message id. Idempotent on provider_call_id. Needs webhook.';

CREATE FUNCTION prm.set_inbound_address(org_id bigint, channel text, address text)
RETURNS text
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_set_inbound_address';
COMMENT ON FUNCTION prm.set_inbound_address(bigint, text, text) IS
    'Set the clinic''s WhatsApp number or inbound e-mail address (channel whatsapp or email) that inbound messages are routed by; NULL removes it. Returns it as stored. Needs admin.';

INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.handle_inbound_message(text,text,text,text,text)', 'webhook'),
    ('prm.reply_in_conversation(bigint,bigint,text)', 'staff'),
    ('prm.reply_in_conversation(bigint,bigint,text,text)', 'staff'),
    ('prm.mark_conversation_read(bigint,bigint)', 'staff'),
    ('prm.assign_conversation(bigint,bigint,bigint)', 'staff'),
    ('prm.record_call_transcript(bigint,text,text,text,integer,text)', 'webhook'),
    ('prm.set_inbound_address(bigint,text,text)', 'admin');
