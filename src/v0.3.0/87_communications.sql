-- prm 0.3.0, communications: an organization's own message kinds beside the
-- built-in ones, each of a message class (promotional or exempt); messages
-- to a patient through a template, at a time or a local time of day;
-- frequency caps on promotional messages; a patient's consent per channel
-- and purpose, checked where every message is queued (src/comms.c,
-- src/outbox.c).

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- An organization's own kinds: any name of lower-case letters, digits and
-- underscores that is not one of prm's (the C code refuses those).
ALTER TABLE prm.message_template DROP CONSTRAINT message_template_kind_check,
    ADD CONSTRAINT message_template_kind_check CHECK (kind ~ '^[a-z][a-z0-9_]{0,29}$');

CREATE TABLE prm.message_kind (
    org_id          bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,29}$'),
    message_class   text NOT NULL DEFAULT 'promotional' CHECK (message_class IN ('promotional', 'exempt')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, kind)
);
COMMENT ON TABLE prm.message_kind IS 'An organization''s own message kinds (prm.set_template with a kind that is not built in) and their message class: promotional (frequency caps and, where the organization requires it, consent apply) or exempt (clinical reminders, confirmations, safety alerts: never capped). Built-in kinds are exempt and have no row.';

-- Every message's class, and the two ways a message is kept without being sent.
ALTER TABLE prm.outbound_message
    ADD COLUMN message_class text NOT NULL DEFAULT 'exempt' CHECK (message_class IN ('promotional', 'exempt')),
    DROP CONSTRAINT outbound_message_status_check,
    ADD CONSTRAINT outbound_message_status_check
        CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'undelivered',
                          'failed', 'read', 'dead', 'cancelled', 'capped', 'refused'));
ALTER TABLE prm.outbound_message_history
    ADD COLUMN message_class text NOT NULL DEFAULT 'exempt' CHECK (message_class IN ('promotional', 'exempt')),
    DROP CONSTRAINT outbound_message_status_check,
    ADD CONSTRAINT outbound_message_status_check
        CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'undelivered',
                          'failed', 'read', 'dead', 'cancelled', 'capped', 'refused'));
COMMENT ON COLUMN prm.outbound_message.message_class IS 'promotional or exempt: the class of the message''s kind (an organization''s own kind: its prm.message_kind; every other kind: exempt). Frequency caps count promotional messages only.';
COMMENT ON COLUMN prm.outbound_message_history.message_class IS 'As prm.outbound_message.message_class.';
COMMENT ON COLUMN prm.outbound_message.last_error IS 'The last send error; for a capped, refused or cancelled message, why it was not sent.';
-- the caps count a patient's promotional messages by their send time
CREATE INDEX outbound_message_promotional_idx ON prm.outbound_message (org_id, patient_id, not_before)
    WHERE message_class = 'promotional';
CREATE INDEX outbound_message_history_promotional_idx ON prm.outbound_message_history (org_id, patient_id, not_before)
    WHERE message_class = 'promotional';

-- A patient's consent: every decision is a row (the history); the latest per
-- channel and purpose is the one in force.
CREATE TABLE prm.patient_consent (
    org_id          bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    patient_id      bigint NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'email', 'voice', 'push')),
    purpose         text NOT NULL CHECK (purpose IN ('promotional', 'exempt')),
    granted         boolean NOT NULL,
    method          text NOT NULL CHECK (method IN ('written', 'verbal', 'electronic', 'sms', 'app', 'import', 'erasure', 'other')),
    decided_at      timestamptz NOT NULL,
    recorded_by     text NOT NULL CHECK (length(recorded_by) <= 64),
    note            text CHECK (length(note) <= 500),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id)
);
CREATE INDEX patient_consent_latest_idx ON prm.patient_consent (org_id, patient_id, channel, purpose, id DESC);
COMMENT ON TABLE prm.patient_consent IS 'A patient''s consent decisions, oldest first: given (granted) or withdrawn, for a channel and a purpose (the message class it covers), when (decided_at), how (method), recorded by which role, with an optional note (who gave it, say a guardian). Written by prm.set_consent only; the latest row per channel and purpose is in force (prm.patient_consents).';

SELECT pg_catalog.pg_extension_config_dump('prm.message_kind', '');
SELECT pg_catalog.pg_extension_config_dump('prm.patient_consent', '');
SELECT pg_catalog.pg_extension_config_dump('prm.patient_consent_id_seq', '');

ALTER TABLE prm.message_kind ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.patient_consent ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON prm.message_kind FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.patient_consent FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

-- The consent in force: the latest decision per patient, channel and purpose.
CREATE VIEW prm.patient_consents WITH (security_invoker = true) AS
SELECT DISTINCT ON (c.org_id, c.patient_id, c.channel, c.purpose)
       c.org_id, c.patient_id, c.channel, c.purpose, c.granted, c.method, c.decided_at,
       c.recorded_by, c.note, c.id AS consent_id
  FROM prm.patient_consent c
 ORDER BY c.org_id, c.patient_id, c.channel, c.purpose, c.id DESC;
COMMENT ON VIEW prm.patient_consents IS 'The consent in force per patient, channel and purpose (the latest decision of prm.patient_consent). A channel and purpose without a row has no consent given.';

-- set_template gains the class of an organization's own kind (a trailing
-- argument with a default: five-argument calls work as before).
DROP FUNCTION prm.set_template(bigint, text, text, text, text);
CREATE FUNCTION prm.set_template(org_id bigint, kind text, body text, channel text DEFAULT 'sms',
                                 locale text DEFAULT 'en', message_class text DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_set_template';
COMMENT ON FUNCTION prm.set_template(bigint, text, text, text, text, text) IS
    'Set an organization''s wording of a message kind: a built-in one (offer, booked, gone, declined, no_offer, help, stop, start, hint, handoff, reminder, reminder_confirmed, reminder_cancelled; contact_single and contact_several for therapist e-mails) or its own (lower-case letters, digits and _, up to 30, e.g. welcome). message_class (promotional or exempt) is the class of an own kind: NULL keeps it, and a new own kind is promotional; built-in kinds are exempt and keep it. Unknown placeholders are refused (22023). Needs admin.';

UPDATE prm.function_level SET signature = 'prm.set_template(bigint,text,text,text,text,text)'
 WHERE signature = 'prm.set_template(bigint,text,text,text,text)';

CREATE FUNCTION prm.message_class(org_id bigint, kind text)
RETURNS text
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_message_class';
COMMENT ON FUNCTION prm.message_class(bigint, text) IS
    'The message class of a kind for an organization: exempt for built-in kinds, the organization''s own kind''s class otherwise; 22023 for a kind the organization does not have. Needs readonly.';

CREATE FUNCTION prm.schedule_message(org_id bigint, patient_id bigint, kind text,
                                     channel text DEFAULT 'sms', send_at timestamptz DEFAULT now(),
                                     dedup_key text DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_schedule_message';
COMMENT ON FUNCTION prm.schedule_message(bigint, bigint, text, text, timestamptz, text) IS
    'Queue a message of a kind to a patient on a channel (their phone, e-mail or app), rendered in their language, to go out at send_at (now to a year ahead; quiet hours hold SMS and WhatsApp). Returns the message''s id; the message may be queued, capped (promotional frequency caps) or refused (no consent, no address, opted out), with the reason in last_error. A dedup_key used before returns that message. Needs staff.';

CREATE FUNCTION prm.schedule_message_local(org_id bigint, patient_id bigint, kind text, channel text,
                                           local_time time, on_date date DEFAULT NULL,
                                           dedup_key text DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_schedule_message_local';
COMMENT ON FUNCTION prm.schedule_message_local(bigint, bigint, text, text, time, date, text) IS
    'As schedule_message, at a local time of day in the patient''s time zone: on on_date, or (NULL) at its next occurrence. A time in a daylight-saving gap is the first valid minute after it; a time of a repeated hour is its first occurrence. The time must be ahead and at most a year away. Needs staff.';

CREATE FUNCTION prm.cancel_message(org_id bigint, message_id bigint)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_cancel_message';
COMMENT ON FUNCTION prm.cancel_message(bigint, bigint) IS
    'Cancel a queued message that no sender has claimed yet (status cancelled). A message already claimed, sent, cancelled, capped or refused, or one that belongs to an offer, an appointment reminder or a therapist e-mail, is refused with 55000; an unknown one (or another organization''s) with 02000. Needs staff.';

CREATE FUNCTION prm.patient_communications(org_id bigint, patient_id bigint, channel text DEFAULT NULL,
                                           status text DEFAULT NULL, since timestamptz DEFAULT NULL,
                                           until timestamptz DEFAULT NULL, page_size int DEFAULT 50,
                                           after text DEFAULT NULL)
RETURNS TABLE (direction text, message_id bigint, channel text, kind text, message_class text,
               status text, reason text, address text, body text, at timestamptz, cursor text)
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_patient_communications';
COMMENT ON FUNCTION prm.patient_communications(bigint, bigint, text, text, timestamptz, timestamptz, int, text) IS
    'A patient''s communications, newest first: outbound messages (queued or archived; at is when it went or goes out) and inbound ones (status received), filtered by channel, status and the period [since, until). Keyset-paged: page_size rows (1-1000); pass the last row''s cursor as after for the next page. Needs readonly.';

CREATE FUNCTION prm.set_consent(org_id bigint, patient_id bigint, channel text, purpose text,
                                granted boolean, method text DEFAULT 'other', note text DEFAULT NULL,
                                decided_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_set_consent';
COMMENT ON FUNCTION prm.set_consent(bigint, bigint, text, text, boolean, text, text, timestamptz) IS
    'Record a patient''s consent for a channel (sms, whatsapp, email, voice, push) and purpose (promotional or exempt: the message class it covers), given (true) or withdrawn (false), how (written, verbal, electronic, sms, app, import, other), when (decided_at, default now; not in the future), with an optional note; the calling role is recorded. Returns the decision''s id; the history stays in prm.patient_consent. Needs staff.';

INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.message_class(bigint,text)', 'readonly'),
    ('prm.patient_communications(bigint,bigint,text,text,timestamp with time zone,timestamp with time zone,integer,text)', 'readonly'),
    ('prm.schedule_message(bigint,bigint,text,text,timestamp with time zone,text)', 'staff'),
    ('prm.schedule_message_local(bigint,bigint,text,text,time without time zone,date,text)', 'staff'),
    ('prm.cancel_message(bigint,bigint)', 'staff'),
    ('prm.set_consent(bigint,bigint,text,text,boolean,text,text,timestamp with time zone)', 'staff');

COMMENT ON TABLE prm.message_template IS 'An organization''s wording of a message kind -- a built-in one or its own (prm.message_kind) -- per channel and locale. Placeholders: {clinic}, {clinic_phone}, {date}, {time}, {hold_minutes}, {link}; in therapist e-mails also {therapist}, {count} and {patients} (de-identified lines: reference, initials, age band, therapy type). Patient details are not placeholders, so they never reach a message. Built-in kinds without a row use prm''s built-in English text; an own kind has only the wordings given to it.';
COMMENT ON COLUMN prm.patient_stats.messages_out IS 'Messages queued to the patient, in prm.outbound_message and its history (not those capped or refused).';
