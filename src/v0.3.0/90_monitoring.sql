-- prm 0.3.0, companion monitoring: the care circle (caregivers linked to
-- patients in escalation order, with their preferences), heartbeats and the
-- activity log, per-patient monitoring settings with the inactivity
-- deadline, alerts that escalate down the circle, reminders with their
-- occurrences, and caregivers' daily summaries.  The C is in src/monitor.c
-- (circle, preferences, heartbeats, acknowledgements), src/monitor_alert.c
-- (deadlines, alerts, escalation) and src/monitor_reminder.c (reminders,
-- occurrences, summaries).

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- The profile fields companion apps use (timezone and language exist).
ALTER TABLE prm.patient
    ADD COLUMN profile_photo_url   text CHECK (length(profile_photo_url) <= 2000),
    ADD COLUMN preferred_voice     text CHECK (preferred_voice IN ('male', 'female', 'neutral')),
    ADD COLUMN communication_style text CHECK (communication_style IN ('friendly', 'formal', 'casual')),
    ADD COLUMN app_version         text CHECK (length(app_version) <= 50),
    ADD COLUMN last_heartbeat_at   timestamptz;
COMMENT ON COLUMN prm.patient.last_heartbeat_at IS 'The last heartbeat of the patient''s companion app or device (prm.record_heartbeat). Not indexed, so a heartbeat is a HOT update.';
COMMENT ON COLUMN prm.patient.app_version IS 'The companion app''s version, from the last heartbeat''s details (app_version).';

CREATE TABLE prm.caregiver (
    org_id         bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id             bigint GENERATED ALWAYS AS IDENTITY,
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    phone          text NOT NULL CHECK (phone ~ '^\+[1-9][0-9]{7,14}$'),
    email          text CHECK (length(email) <= 254),
    timezone       text,
    preferences    jsonb NOT NULL,
    summary_due_at timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);
CREATE INDEX caregiver_phone_idx ON prm.caregiver (org_id, phone);
-- the daily summaries' deadline
CREATE INDEX caregiver_summary_due_idx ON prm.caregiver (summary_due_at) WHERE summary_due_at IS NOT NULL;
COMMENT ON TABLE prm.caregiver IS 'A member of a care circle (family, neighbour, carer). phone is E.164; timezone NULL means the clinic''s; preferences are the effective ones (prm.set_caregiver_preferences); summary_due_at is the next daily summary, at daily_summary_time in the caregiver''s time zone.';

CREATE TABLE prm.care_link (
    org_id       bigint NOT NULL,
    patient_id   bigint NOT NULL,
    caregiver_id bigint NOT NULL,
    "position"   int NOT NULL CHECK ("position" >= 1),
    linked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, patient_id, caregiver_id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, caregiver_id) REFERENCES prm.caregiver (org_id, id) ON DELETE CASCADE
);
CREATE INDEX care_link_order_idx ON prm.care_link (org_id, patient_id, "position");
CREATE INDEX care_link_caregiver_idx ON prm.care_link (org_id, caregiver_id);
COMMENT ON TABLE prm.care_link IS 'The care circle of a patient: caregivers in escalation order (position 1 is asked first).';

CREATE TABLE prm.monitoring (
    org_id               bigint NOT NULL,
    patient_id           bigint NOT NULL,
    settings             jsonb NOT NULL,
    enabled              boolean NOT NULL DEFAULT true,
    inactivity_threshold interval NOT NULL,
    active_start         time,
    active_end           time,
    escalation_wait      interval NOT NULL,
    escalation_loop      boolean NOT NULL DEFAULT false,
    severity             text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    nudge_before         interval NOT NULL DEFAULT '0',
    nudge_channel        text NOT NULL DEFAULT 'push' CHECK (nudge_channel IN ('push', 'sms')),
    nudged_for           timestamptz,
    started_at           timestamptz NOT NULL DEFAULT now(),
    next_due_at          timestamptz,
    PRIMARY KEY (org_id, patient_id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id) ON DELETE CASCADE,
    CHECK ((active_start IS NULL) = (active_end IS NULL))
);
-- the inactivity deadline: only patients that can still become overdue
CREATE INDEX monitoring_due_idx ON prm.monitoring (next_due_at) WHERE next_due_at IS NOT NULL;
COMMENT ON TABLE prm.monitoring IS 'A monitored patient: the effective settings (prm.set_monitoring) and next_due_at, a time no later than the patient''s inactivity deadline. Heartbeats do not move it (they only set prm.patient.last_heartbeat_at); when it comes, the alert step re-reads the last heartbeat and either pushes it on or opens the alert. NULL while an inactivity alert is open or monitoring is disabled.';

CREATE TABLE prm.patient_activity (
    org_id      bigint NOT NULL,
    patient_id  bigint NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL CHECK (length(kind) BETWEEN 1 AND 50),
    details     jsonb NOT NULL DEFAULT '{}' CHECK (length(details::text) <= 4000)
);
CREATE INDEX patient_activity_patient_idx ON prm.patient_activity (org_id, patient_id, occurred_at);
CREATE INDEX patient_activity_time_idx ON prm.patient_activity USING brin (occurred_at);
COMMENT ON TABLE prm.patient_activity IS 'Heartbeats and activity of patients, appended by prm.record_heartbeat; no key and no foreign key, so an append costs one heap tuple and two small index entries. Rows older than activity_retention_days are deleted by the retention step.';

CREATE TABLE prm.alert (
    org_id              bigint NOT NULL,
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    patient_id          bigint NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('inactivity', 'missed_reminder')),
    severity            text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
    opened_at           timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz NOT NULL DEFAULT now(),
    repeat_count        int NOT NULL DEFAULT 1,
    acknowledged_at     timestamptz,
    acknowledged_by     bigint,
    resolved_at         timestamptz,
    escalation_position int NOT NULL DEFAULT 0,
    escalation_rounds   int NOT NULL DEFAULT 0,
    next_escalation_at  timestamptz,
    details             jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id) ON DELETE CASCADE,
    CHECK ((status = 'acknowledged') <= (acknowledged_at IS NOT NULL)),
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
-- one open alert per patient and kind: a repeat updates it
CREATE UNIQUE INDEX alert_open_idx ON prm.alert (org_id, patient_id, kind) WHERE status <> 'resolved';
-- the escalation deadline
CREATE INDEX alert_escalation_idx ON prm.alert (next_escalation_at) WHERE status = 'open';
CREATE INDEX alert_patient_idx ON prm.alert (org_id, patient_id, opened_at);
COMMENT ON TABLE prm.alert IS 'An alert about a patient. status: open (escalating down the care circle), acknowledged (a caregiver took responsibility; escalation stops), resolved (a heartbeat ended an inactivity alert, or staff resolved it). One alert per patient and kind is not resolved; a repeat raises repeat_count. escalation_position is the position of the caregiver asked last; next_escalation_at the next step.';

CREATE TABLE prm.alert_notification (
    org_id       bigint NOT NULL,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    alert_id     bigint NOT NULL,
    caregiver_id bigint,
    purpose      text NOT NULL CHECK (purpose IN ('alert', 'resolved', 'skipped')),
    channel      text,
    message_id   bigint,
    not_before   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, alert_id) REFERENCES prm.alert (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, caregiver_id) REFERENCES prm.caregiver (org_id, id) ON DELETE SET NULL (caregiver_id)
);
CREATE INDEX alert_notification_alert_idx ON prm.alert_notification (org_id, alert_id);
CREATE INDEX alert_notification_caregiver_idx ON prm.alert_notification (org_id, caregiver_id, created_at);
COMMENT ON TABLE prm.alert_notification IS 'Who was told what of an alert, on which channel, and when the message may go out (quiet hours hold all but critical alerts). purpose skipped: a caregiver passed over because the alert is below their alert_threshold.';

CREATE TABLE prm.reminder (
    org_id        bigint NOT NULL,
    id            bigint GENERATED ALWAYS AS IDENTITY,
    patient_id    bigint NOT NULL,
    title         text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    schedule      jsonb NOT NULL,
    times         time[] NOT NULL,
    days_of_week  int[] NOT NULL,
    starts        date NOT NULL,
    ends          date,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
    filled_until  date,
    fill_due_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id) ON DELETE CASCADE,
    CHECK (ends IS NULL OR ends >= starts)
);
CREATE INDEX reminder_patient_idx ON prm.reminder (org_id, patient_id);
-- when more occurrences are to be created ahead
CREATE INDEX reminder_fill_idx ON prm.reminder (fill_due_at) WHERE status = 'active';
COMMENT ON TABLE prm.reminder IS 'A reminder (medication, exercise, appointment) on a schedule in the patient''s time zone: times of day, ISO days of week (1 Monday .. 7 Sunday), starts, ends. Occurrences are created reminder_horizon_days ahead; filled_until is the last local date created.';

CREATE TABLE prm.reminder_occurrence (
    org_id       bigint NOT NULL,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    reminder_id  bigint NOT NULL,
    patient_id   bigint NOT NULL,
    local_date   date NOT NULL,
    local_time   time NOT NULL,
    due_at       timestamptz NOT NULL,
    status       text NOT NULL DEFAULT 'scheduled'
                 CHECK (status IN ('scheduled', 'sent', 'confirmed', 'missed', 'withdrawn')),
    next_due_at  timestamptz,
    sent_at      timestamptz,
    confirmed_at timestamptz,
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, reminder_id, local_date, local_time),
    FOREIGN KEY (org_id, reminder_id) REFERENCES prm.reminder (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id) ON DELETE CASCADE
);
-- the occurrences' deadline: sending when scheduled, missing when sent
CREATE INDEX reminder_occurrence_due_idx ON prm.reminder_occurrence (next_due_at)
    WHERE status IN ('scheduled', 'sent');
CREATE INDEX reminder_occurrence_patient_idx ON prm.reminder_occurrence (org_id, patient_id, due_at);
COMMENT ON TABLE prm.reminder_occurrence IS 'One time a reminder is due: local_date and local_time in the patient''s zone, due_at the instant (a time in a daylight-saving gap moves to the first valid minute after it; a repeated hour fires at its first occurrence). status: scheduled, sent (to the patient), confirmed, missed (not confirmed within reminder_missed_after: the care circle is alerted), withdrawn (the reminder was rescheduled or deleted). next_due_at: when it is to be sent, then when it is missed.';

SELECT pg_catalog.pg_extension_config_dump('prm.caregiver', '');
SELECT pg_catalog.pg_extension_config_dump('prm.caregiver_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.care_link', '');
SELECT pg_catalog.pg_extension_config_dump('prm.monitoring', '');
SELECT pg_catalog.pg_extension_config_dump('prm.patient_activity', '');
SELECT pg_catalog.pg_extension_config_dump('prm.alert', '');
SELECT pg_catalog.pg_extension_config_dump('prm.alert_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.alert_notification', '');
SELECT pg_catalog.pg_extension_config_dump('prm.alert_notification_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.reminder', '');
SELECT pg_catalog.pg_extension_config_dump('prm.reminder_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.reminder_occurrence', '');
SELECT pg_catalog.pg_extension_config_dump('prm.reminder_occurrence_id_seq', '');

ALTER TABLE prm.caregiver ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.care_link ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.monitoring ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.patient_activity ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.alert ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.alert_notification ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.reminder ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.reminder_occurrence ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON prm.caregiver FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.care_link FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.monitoring FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.patient_activity FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.alert FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.alert_notification FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.reminder FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.reminder_occurrence FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

--
-- Functions
--
CREATE FUNCTION prm.add_caregiver(org_id bigint, name text, phone text, email text DEFAULT NULL,
                                  timezone text DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_add_caregiver';
COMMENT ON FUNCTION prm.add_caregiver(bigint, text, text, text, text) IS
    'Add a caregiver (phone normalised to E.164 in the organization''s region, e-mail and IANA time zone checked) with the default preferences. Needs staff.';

CREATE FUNCTION prm.link_caregiver(org_id bigint, patient_id bigint, caregiver_id bigint,
                                   "position" int DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_link_caregiver';
COMMENT ON FUNCTION prm.link_caregiver(bigint, bigint, bigint, integer) IS
    'Put a caregiver into a patient''s care circle at position (1 is asked first; NULL: last); those at or after it move down one. Linking again moves the caregiver. Needs staff.';

CREATE FUNCTION prm.unlink_caregiver(org_id bigint, patient_id bigint, caregiver_id bigint)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_unlink_caregiver';
COMMENT ON FUNCTION prm.unlink_caregiver(bigint, bigint, bigint) IS
    'Take a caregiver out of a patient''s care circle (the others close up); false if they were not in it. Needs staff.';

CREATE FUNCTION prm.remove_caregiver(org_id bigint, caregiver_id bigint)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_remove_caregiver';
COMMENT ON FUNCTION prm.remove_caregiver(bigint, bigint) IS
    'Remove a caregiver and their links (the patients stay; their circles close up); the messages sent to them are blanked. Returns what changed. Needs admin.';

CREATE FUNCTION prm.set_caregiver_preferences(org_id bigint, caregiver_id bigint, preferences jsonb)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_set_caregiver_preferences';
COMMENT ON FUNCTION prm.set_caregiver_preferences(bigint, bigint, jsonb) IS
    'Change a caregiver''s preferences: notifications {email, sms, push: boolean}, alert_threshold low|medium|high, quiet_hours {enabled: boolean, start, end: "HH:MM"; an end before the start crosses midnight}, daily_summary_time "HH:MM" or null. Keys left out keep their values; an unknown key, a wrong type or a malformed time is refused (22023, naming the key). Returns the effective preferences. Needs staff.';

CREATE FUNCTION prm.set_monitoring(org_id bigint, patient_id bigint, settings jsonb)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_set_monitoring';
COMMENT ON FUNCTION prm.set_monitoring(bigint, bigint, jsonb) IS
    'Monitor a patient, or change how: enabled (boolean), inactivity_threshold (interval, 1 second to 30 days: no heartbeat for this long opens an inactivity alert), active_hours ({start, end: "HH:MM"} in the patient''s zone: only silence within them counts; null: all day), escalation_wait (interval: how long each caregiver has to acknowledge), escalation_loop (boolean: start again at the top of the circle), severity (low|medium|high|critical of the inactivity alert), nudge_before (interval shorter than the threshold: the patient is nudged that long before the deadline; "0": never) and nudge_channel (push|sms). Keys left out keep their values. Returns the effective settings. Needs staff.';

CREATE FUNCTION prm.record_heartbeat(org_id bigint, patient_id bigint, kind text DEFAULT 'app',
                                     details jsonb DEFAULT '{}')
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_record_heartbeat';
COMMENT ON FUNCTION prm.record_heartbeat(bigint, bigint, text, jsonb) IS
    'A sign of life from a patient''s companion app or device: sets prm.patient.last_heartbeat_at (and app_version from details), appends to prm.patient_activity, and resolves an open inactivity alert, telling whoever was alerted. Needs webhook (the companion app''s backend; staff satisfies it).';

CREATE FUNCTION prm.acknowledge_alert(org_id bigint, alert_id bigint, caregiver_id bigint DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_acknowledge_alert';
COMMENT ON FUNCTION prm.acknowledge_alert(bigint, bigint, bigint) IS
    'Take responsibility for an alert (caregiver_id: a caregiver of the patient''s circle; NULL: staff): escalation stops. Acknowledging an acknowledged alert changes nothing; a resolved one cannot be acknowledged (55000). Needs staff.';

CREATE FUNCTION prm.resolve_alert(org_id bigint, alert_id bigint)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_resolve_alert';
COMMENT ON FUNCTION prm.resolve_alert(bigint, bigint) IS
    'Resolve an alert by hand (false if it was resolved already); an inactivity alert re-arms the patient''s deadline. Needs staff.';

CREATE FUNCTION prm.add_reminder(org_id bigint, patient_id bigint, title text, schedule jsonb)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_add_reminder';
COMMENT ON FUNCTION prm.add_reminder(bigint, bigint, text, jsonb) IS
    'A reminder for a patient: schedule {"times": ["08:00", ...], "days_of_week": [1..7, ISO, Monday 1], "starts": date, "ends": date or null} in the patient''s time zone. Occurrences are created reminder_horizon_days ahead. Needs staff.';

CREATE FUNCTION prm.reschedule_reminder(org_id bigint, reminder_id bigint, schedule jsonb)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_reschedule_reminder';
COMMENT ON FUNCTION prm.reschedule_reminder(bigint, bigint, jsonb) IS
    'Give a reminder a new schedule: its future scheduled occurrences are withdrawn and created again from it. Returns the reminder''s id. Needs staff.';

CREATE FUNCTION prm.delete_reminder(org_id bigint, reminder_id bigint)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_delete_reminder';
COMMENT ON FUNCTION prm.delete_reminder(bigint, bigint) IS
    'Delete a reminder: its occurrences not yet confirmed or missed are withdrawn. Returns how many. Needs staff.';

CREATE FUNCTION prm.confirm_reminder(org_id bigint, occurrence_id bigint)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_confirm_reminder';
COMMENT ON FUNCTION prm.confirm_reminder(bigint, bigint) IS
    'The patient took the medication or did the exercise: the occurrence is confirmed (again: nothing changes; a missed one is confirmed late; a withdrawn one is refused with 55000). Needs webhook (the companion app''s backend; staff satisfies it).';

CREATE FUNCTION prm.caregiver_reply(org_id bigint, from_phone text, body text)
RETURNS text
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET jit = off
AS 'MODULE_PATHNAME', 'prm_caregiver_reply';
COMMENT ON FUNCTION prm.caregiver_reply(bigint, text, text) IS
    'What the inbound SMS path does with a caregiver''s reply: OK from a caregiver who was sent an open alert acknowledges the latest such alert; returns the reply text, or NULL when the message is not an alert reply. Needs webhook.';

CREATE FUNCTION prm.local_to_utc(local timestamp, timezone text)
RETURNS timestamptz
LANGUAGE C STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_local_to_utc';
COMMENT ON FUNCTION prm.local_to_utc(timestamp, text) IS
    'The instant of a local time in a time zone by prm''s daylight-saving rules (reminders, summaries, active hours): a time in a gap moves forward to the first valid minute after it; a time of a repeated hour is its first occurrence.';

-- reads
CREATE FUNCTION prm.patient_activity(org_id bigint, patient_id bigint, since timestamptz,
                                     until timestamptz DEFAULT NULL, page_size int DEFAULT 100,
                                     after timestamptz DEFAULT NULL)
RETURNS TABLE (occurred_at timestamptz, kind text, details jsonb)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT a.occurred_at, a.kind, a.details
      FROM prm.patient_activity a
     WHERE a.org_id = patient_activity.org_id AND a.patient_id = patient_activity.patient_id
       AND a.occurred_at >= patient_activity.since
       AND (patient_activity.until IS NULL OR a.occurred_at < patient_activity.until)
       AND (patient_activity.after IS NULL OR a.occurred_at > patient_activity.after)
       -- a caller without the readonly level on the organization gets 42501, not an empty page
       AND prm.settings(patient_activity.org_id) IS NOT NULL
     ORDER BY a.occurred_at
     LIMIT least(greatest(patient_activity.page_size, 1), 1000);
END;
COMMENT ON FUNCTION prm.patient_activity(bigint, bigint, timestamptz, timestamptz, integer, timestamptz) IS
    'A patient''s heartbeats and activity in [since, until), oldest first, a page at a time (after: the last occurred_at of the previous page). Runs as the caller, so row-level security applies. Needs readonly on the organization (42501 otherwise).';

INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.add_caregiver(bigint,text,text,text,text)', 'staff'),
    ('prm.link_caregiver(bigint,bigint,bigint,integer)', 'staff'),
    ('prm.unlink_caregiver(bigint,bigint,bigint)', 'staff'),
    ('prm.remove_caregiver(bigint,bigint)', 'admin'),
    ('prm.set_caregiver_preferences(bigint,bigint,jsonb)', 'staff'),
    ('prm.set_monitoring(bigint,bigint,jsonb)', 'staff'),
    ('prm.record_heartbeat(bigint,bigint,text,jsonb)', 'webhook'),
    ('prm.acknowledge_alert(bigint,bigint,bigint)', 'staff'),
    ('prm.resolve_alert(bigint,bigint)', 'staff'),
    ('prm.add_reminder(bigint,bigint,text,jsonb)', 'staff'),
    ('prm.reschedule_reminder(bigint,bigint,jsonb)', 'staff'),
    ('prm.delete_reminder(bigint,bigint)', 'staff'),
    ('prm.confirm_reminder(bigint,bigint)', 'webhook'),
    ('prm.caregiver_reply(bigint,text,text)', 'webhook'),
    ('prm.local_to_utc(timestamp without time zone,text)', 'any'),
    ('prm.patient_activity(bigint,bigint,timestamp with time zone,timestamp with time zone,integer,timestamp with time zone)', 'readonly');
