-- prm 0.3.0, appointment reminders: every booked appointment gets a queued
-- outbound message per reminder offset of its organization, rescheduled when
-- the appointment moves and withdrawn when it is cancelled; the patient's
-- "C" confirms it, "X" cancels it (and frees its slot for the fill engine).

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- FHIR's Appointment.status has no "confirmed": a confirmation is a time.
ALTER TABLE prm.appointment ADD COLUMN confirmed_at timestamptz;
COMMENT ON COLUMN prm.appointment.confirmed_at IS 'When the patient confirmed the appointment (a "C" reply to a reminder); NULL: not confirmed.';

-- the reminder texts and the replies to a reminder's answers
ALTER TABLE prm.message_template DROP CONSTRAINT message_template_kind_check,
    ADD CONSTRAINT message_template_kind_check
        CHECK (kind IN ('offer', 'booked', 'gone', 'declined', 'no_offer',
                        'help', 'stop', 'start', 'hint', 'handoff',
                        'contact_single', 'contact_several',
                        'reminder', 'reminder_confirmed', 'reminder_cancelled'));

CREATE TABLE prm.appointment_reminder (
    org_id          bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    appointment_id  bigint NOT NULL,
    remind_before   interval NOT NULL CHECK (remind_before > interval '0'),
    starts_at       timestamptz NOT NULL,
    due_at          timestamptz NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('sms', 'email')),
    message_id      bigint,
    status          text NOT NULL DEFAULT 'scheduled'
                    CHECK (status IN ('scheduled', 'confirmed', 'cancelled', 'withdrawn')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, appointment_id) REFERENCES prm.appointment (org_id, id) ON DELETE CASCADE
);
-- one live reminder per appointment and offset
CREATE UNIQUE INDEX appointment_reminder_live_idx ON prm.appointment_reminder (org_id, appointment_id, remind_before)
    WHERE status = 'scheduled';
CREATE INDEX appointment_reminder_message_idx ON prm.appointment_reminder (org_id, message_id);
COMMENT ON TABLE prm.appointment_reminder IS 'A reminder of an appointment: the outbound message (message_id, kind appointment_reminder) queued with not_before = due_at, remind_before ahead of starts_at (the appointment''s time it was scheduled for) and moved earlier out of quiet hours. status: scheduled (queued or, once its message went out, awaiting an answer), confirmed or cancelled by the patient''s reply, withdrawn when the appointment was cancelled or moved. The deadline is the outbox''s own not_before: no loop of its own.';

SELECT pg_catalog.pg_extension_config_dump('prm.appointment_reminder', '');
SELECT pg_catalog.pg_extension_config_dump('prm.appointment_reminder_id_seq', '');

ALTER TABLE prm.appointment_reminder ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON prm.appointment_reminder FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

-- A reminder with the state of its message: sent once the message left the
-- outbox (whether it is still queued or already archived).
CREATE VIEW prm.appointment_reminders WITH (security_invoker = true) AS
SELECT r.org_id, r.id, r.appointment_id, r.remind_before, r.starts_at, r.due_at, r.channel,
       r.message_id, r.status, coalesce(m.status, h.status) AS message_status,
       coalesce(m.status, h.status) IN ('sending', 'sent', 'delivered', 'read') AS sent,
       r.created_at, r.updated_at
  FROM prm.appointment_reminder r
  LEFT JOIN prm.outbound_message m ON m.org_id = r.org_id AND m.id = r.message_id
  LEFT JOIN prm.outbound_message_history h ON h.org_id = r.org_id AND h.id = r.message_id;
COMMENT ON VIEW prm.appointment_reminders IS 'Appointment reminders with their message''s status; sent is true once the message left the outbox. A reminder that is scheduled and sent, of an upcoming active appointment, is the one a patient''s C (confirm) or X (cancel) answers.';

CREATE FUNCTION prm.schedule_reminders(org_id bigint, appointment_id bigint)
RETURNS integer
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_schedule_reminders';
COMMENT ON FUNCTION prm.schedule_reminders(bigint, bigint) IS
    'Bring an appointment''s reminders in line with its time, its status and the organization''s reminder settings: withdraw those no longer right, queue the missing ones whose time has not passed. Booking, cancelling, sync and status changes call it by themselves; call it after changing reminder_offsets to apply them to existing appointments. Returns how many reminders it queued. Needs staff.';

INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.schedule_reminders(bigint,bigint)', 'staff');
