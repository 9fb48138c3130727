-- prm 0.3.0, journeys: care programmes of ordered stages, each with actions
-- run on entry (send a template, open a ticket, wait), moved on by time, by
-- an event of the patient or by hand.  Patients enter by a triggering event
-- (in the event's own transaction: exactly once per event), by
-- start_journey, or in bulk for a segment.  Every instance's next step is
-- one indexed column, prm.journey_instance.due_at, the deadline the worker
-- sleeps to.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

-- The patient of each event written before 0.3.0 (the column is in 00_prm.sql).
UPDATE prm.event e SET patient_id = CASE e.entity
        WHEN 'patient' THEN e.entity_id
        WHEN 'appointment' THEN (SELECT x.patient_id FROM prm.appointment x WHERE x.org_id = e.org_id AND x.id = e.entity_id)
        WHEN 'waitlist_entry' THEN (SELECT x.patient_id FROM prm.waitlist_entry x WHERE x.org_id = e.org_id AND x.id = e.entity_id)
        WHEN 'offer' THEN (SELECT x.patient_id FROM prm.offer x WHERE x.org_id = e.org_id AND x.id = e.entity_id)
        WHEN 'outbound_message' THEN (SELECT x.patient_id FROM prm.outbound_message x WHERE x.org_id = e.org_id AND x.id = e.entity_id)
        WHEN 'inbound_message' THEN (SELECT x.patient_id FROM prm.inbound_message x WHERE x.org_id = e.org_id AND x.id = e.entity_id)
        WHEN 'conversation' THEN (SELECT x.patient_id FROM prm.conversation x WHERE x.org_id = e.org_id AND x.id = e.entity_id)
        WHEN 'ticket' THEN (SELECT x.patient_id FROM prm.ticket x WHERE x.org_id = e.org_id AND x.id = e.entity_id)
        WHEN 'alert' THEN (SELECT x.patient_id FROM prm.alert x WHERE x.org_id = e.org_id AND x.id = e.entity_id)
        WHEN 'reminder' THEN (SELECT x.patient_id FROM prm.reminder x WHERE x.org_id = e.org_id AND x.id = e.entity_id)
        WHEN 'reminder_occurrence' THEN (SELECT x.patient_id FROM prm.reminder_occurrence x WHERE x.org_id = e.org_id AND x.id = e.entity_id)
        WHEN 'placement_request' THEN (SELECT x.patient_id FROM prm.placement_request x WHERE x.org_id = e.org_id AND x.id = e.entity_id)
    END
 WHERE e.patient_id IS NULL AND e.entity IN ('patient', 'appointment', 'waitlist_entry', 'offer', 'outbound_message', 'inbound_message',
                    'conversation', 'ticket', 'alert', 'reminder', 'reminder_occurrence', 'placement_request');

CREATE TABLE prm.journey (
    org_id          bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    trigger_event   text CHECK (trigger_event ~ '^[a-z][a-z0-9_]{0,62}$'),
    trigger_filter  jsonb CHECK (jsonb_typeof(trigger_filter) = 'object'),
    exit_events     text[] NOT NULL DEFAULT '{}',
    goal_events     text[] NOT NULL DEFAULT '{}',
    reentry         interval CHECK (reentry > interval '0'),
    active          boolean NOT NULL DEFAULT true,
    retired_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    CHECK (retired_at IS NULL OR NOT active)
);
-- the journeys an event kind enrols into: one probe per event about a patient
CREATE INDEX journey_trigger_idx ON prm.journey (org_id, trigger_event) WHERE active AND trigger_event IS NOT NULL;
CREATE UNIQUE INDEX journey_name_idx ON prm.journey (org_id, name) WHERE retired_at IS NULL;
COMMENT ON TABLE prm.journey IS 'A care programme: ordered stages (prm.journey_stage) a patient goes through. trigger_event: the prm.event kind that enrols the event''s patient (if the event''s payload contains trigger_filter); NULL: only start_journey and start_journey_segment enrol. exit_events end an instance as exited, goal_events as completed with end_reason goal. reentry: the least time between two entries of one patient (NULL: never again). Inactive journeys enrol nobody; retired ones are kept for history.';

CREATE TABLE prm.journey_stage (
    org_id          bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    journey_id      bigint NOT NULL,
    position        int CHECK (position > 0),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    actions         jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(actions) = 'array'),
    advance_after   interval CHECK (advance_after >= interval '0'),
    advance_on      text CHECK (advance_on ~ '^[a-z][a-z0-9_]{0,62}$'),
    retired_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, journey_id) REFERENCES prm.journey (org_id, id) ON DELETE CASCADE,
    -- live stages are numbered 1..n; a retired stage has no position
    CHECK ((retired_at IS NULL) = (position IS NOT NULL))
);
CREATE UNIQUE INDEX journey_stage_position_idx ON prm.journey_stage (org_id, journey_id, position)
    WHERE retired_at IS NULL;
COMMENT ON TABLE prm.journey_stage IS 'A stage of a journey. position: 1..n among the live stages (retired ones have none). actions run in order on entry: send (a template on a channel), open_ticket, wait (for an interval, until a local time of day, or until a time before the patient''s next appointment). The stage then moves on advance_after after it was entered, or at the patient''s next advance_on event (advance_after is then its timeout), or (both NULL) only by advance_journey.';

CREATE TABLE prm.journey_instance (
    org_id           bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    journey_id       bigint NOT NULL,
    patient_id       bigint NOT NULL,
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'completed', 'exited', 'cancelled')),
    stage_position   int,
    stage_id         bigint,
    stage_entered_at timestamptz,
    next_action      int NOT NULL DEFAULT 0 CHECK (next_action >= 0),
    failed_actions   int[] NOT NULL DEFAULT '{}',
    due_at           timestamptz,
    awaiting_event   text,
    entered_by       text NOT NULL CHECK (entered_by IN ('event', 'start_journey', 'segment')),
    source_event_id  bigint,
    started_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    end_reason       text CHECK (end_reason IN ('finished', 'goal', 'exit_event', 'cancelled', 'journey_retired', 'patient_erased')),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, journey_id) REFERENCES prm.journey (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id) ON DELETE CASCADE,
    CHECK ((status = 'active') = (ended_at IS NULL))
);
-- one active instance of a journey per patient
CREATE UNIQUE INDEX journey_instance_active_idx ON prm.journey_instance (org_id, journey_id, patient_id)
    WHERE status = 'active';
-- one enrolment per triggering event and journey
CREATE UNIQUE INDEX journey_instance_event_idx ON prm.journey_instance (org_id, journey_id, source_event_id)
    WHERE source_event_id IS NOT NULL;
CREATE INDEX journey_instance_due_idx ON prm.journey_instance (due_at) WHERE status = 'active' AND due_at IS NOT NULL;
CREATE INDEX journey_instance_patient_idx ON prm.journey_instance (org_id, patient_id) WHERE status = 'active';
CREATE INDEX journey_instance_entries_idx ON prm.journey_instance (org_id, journey_id, patient_id, started_at);
CREATE INDEX journey_instance_stage_idx ON prm.journey_instance (org_id, stage_id) WHERE status = 'active';
COMMENT ON TABLE prm.journey_instance IS 'A patient on a journey. status: active, completed (the last stage moved on, or a goal event: end_reason), exited (an exit event) or cancelled. stage_position: the 1-based position of its stage. next_action: the stage''s next action to run; failed_actions: those of the current stage that failed (recorded in the history) and are skipped when the stage''s actions run again; due_at: when the worker next acts on it (runs actions, ends a wait, moves on), NULL while it waits only for advance_journey or for the event awaiting_event.';

CREATE TABLE prm.journey_pending_event (
    org_id          bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    instance_id     bigint NOT NULL,
    event_id        bigint NOT NULL,
    kind            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    retry_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, instance_id) REFERENCES prm.journey_instance (org_id, id) ON DELETE CASCADE
);
CREATE INDEX journey_pending_event_instance_idx ON prm.journey_pending_event (org_id, instance_id);
CREATE INDEX journey_pending_event_retry_idx ON prm.journey_pending_event (retry_at);
COMMENT ON TABLE prm.journey_pending_event IS 'An event of a patient held back for one of their instances because it was locked (being run by the worker, say) when the event was written: waiting for it could deadlock. The worker applies it under the instance''s lock before the instance acts again (retry_at: its deadline), then deletes it. Usually empty.';

CREATE TABLE prm.journey_step (
    org_id          bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    instance_id     bigint NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    stage_position  int,
    kind            text NOT NULL CHECK (kind IN ('entered', 'action', 'waiting', 'advanced', 'completed', 'exited', 'cancelled')),
    detail          jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, instance_id) REFERENCES prm.journey_instance (org_id, id) ON DELETE CASCADE
);
CREATE INDEX journey_step_instance_idx ON prm.journey_step (org_id, instance_id, id);
COMMENT ON TABLE prm.journey_step IS 'The history of a journey instance: stages entered, actions run with their results (the message or ticket made, or the error), waits, advances and the end.';

CREATE VIEW prm.journey_history WITH (security_invoker = true) AS
SELECT s.org_id, s.instance_id, i.journey_id, j.name AS journey, i.patient_id, s.id AS step_id, s.at,
       s.stage_position, st.name AS stage, s.kind, s.detail
  FROM prm.journey_step s
  JOIN prm.journey_instance i ON i.org_id = s.org_id AND i.id = s.instance_id
  JOIN prm.journey j ON j.org_id = i.org_id AND j.id = i.journey_id
  LEFT JOIN prm.journey_stage st ON st.org_id = s.org_id AND st.id = (s.detail->>'stage_id')::bigint;
COMMENT ON VIEW prm.journey_history IS 'Each journey instance''s history, oldest first by step_id: stages entered, actions run and their results, waits, advances and the end.';

SELECT pg_catalog.pg_extension_config_dump('prm.journey', '');
SELECT pg_catalog.pg_extension_config_dump('prm.journey_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.journey_stage', '');
SELECT pg_catalog.pg_extension_config_dump('prm.journey_stage_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.journey_instance', '');
SELECT pg_catalog.pg_extension_config_dump('prm.journey_instance_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.journey_pending_event', '');
SELECT pg_catalog.pg_extension_config_dump('prm.journey_pending_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.journey_step', '');
SELECT pg_catalog.pg_extension_config_dump('prm.journey_step_id_seq', '');

ALTER TABLE prm.journey ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.journey_stage ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.journey_instance ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.journey_step ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.journey_pending_event ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON prm.journey_pending_event FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.journey FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.journey_stage FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.journey_instance FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.journey_step FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

CREATE FUNCTION prm.create_journey(org_id bigint, name text, trigger_event text DEFAULT NULL,
                                   settings jsonb DEFAULT '{}') RETURNS bigint
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_create_journey';
COMMENT ON FUNCTION prm.create_journey(bigint, text, text, jsonb) IS 'Creates a journey (active); returns its id. trigger_event: the event kind about a patient that enrols its patient (NULL: start_journey only). settings: exit_events, goal_events (text[] of event kinds), reentry (''never'' or an interval), active (boolean), trigger_filter (an object the event''s payload must contain). Needs admin.';

CREATE FUNCTION prm.update_journey(org_id bigint, journey_id bigint, settings jsonb) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_update_journey';
COMMENT ON FUNCTION prm.update_journey(bigint, bigint, jsonb) IS 'Changes a journey''s settings (the keys given; also name and trigger_event); running instances follow the new exit and goal events at once. Needs admin.';

CREATE FUNCTION prm.retire_journey(org_id bigint, journey_id bigint) RETURNS int
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_retire_journey';
COMMENT ON FUNCTION prm.retire_journey(bigint, bigint) IS 'Retires a journey: it enrols nobody again, and its active instances are cancelled (end_reason journey_retired); returns their number. Its history is kept. Needs admin.';

CREATE FUNCTION prm.add_journey_stage(org_id bigint, journey_id bigint, name text,
                                      actions jsonb DEFAULT '[]', advance_after interval DEFAULT NULL,
                                      advance_on text DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_add_journey_stage';
COMMENT ON FUNCTION prm.add_journey_stage(bigint, bigint, text, jsonb, interval, text) IS 'Appends a stage after the journey''s last; returns its id. actions: [{"type": "send", "template": kind, "channel": "sms"}, {"type": "open_ticket", "subject": ..., "priority": ...}, {"type": "wait", "for": interval | "until_local": "HH:MM" | "before_appointment": interval}]. advance_after: moves on that long after entry; advance_on: moves on at the patient''s next event of that kind (advance_after its timeout). Needs admin.';

CREATE FUNCTION prm.update_journey_stage(org_id bigint, stage_id bigint, name text,
                                         actions jsonb, advance_after interval DEFAULT NULL,
                                         advance_on text DEFAULT NULL) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_update_journey_stage';
COMMENT ON FUNCTION prm.update_journey_stage(bigint, bigint, text, jsonb, interval, text) IS 'Replaces a live stage''s name, actions and advance rule. Instances already in the stage keep the wait they are in; actions they have not yet run are the new ones. Needs admin.';

CREATE FUNCTION prm.move_journey_stage(org_id bigint, stage_id bigint, "position" int) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_move_journey_stage';
COMMENT ON FUNCTION prm.move_journey_stage(bigint, bigint, int) IS 'Moves a live stage to a position (1..n), shifting the others; instances keep their stage and show its new position. Needs admin.';

CREATE FUNCTION prm.retire_journey_stage(org_id bigint, stage_id bigint) RETURNS int
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_retire_journey_stage';
COMMENT ON FUNCTION prm.retire_journey_stage(bigint, bigint) IS 'Retires a stage: later stages move up one position; instances in it move on to the next stage (the worker runs its actions) or, when none is left, complete. Returns the number of instances moved. Needs admin.';

CREATE FUNCTION prm.start_journey(org_id bigint, journey_id bigint, patient_id bigint) RETURNS bigint
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_start_journey';
COMMENT ON FUNCTION prm.start_journey(bigint, bigint, bigint) IS 'Enrols a patient in an active journey and runs the first stage''s actions; returns the instance. 23505 if the patient is already on it, 55000 if the journey''s reentry policy refuses. Needs staff.';

CREATE FUNCTION prm.start_journey_segment(org_id bigint, journey_id bigint, patient_ids bigint[]) RETURNS int
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_start_journey_segment';
COMMENT ON FUNCTION prm.start_journey_segment(bigint, bigint, bigint[]) IS 'Enrols a segment (at most 10,000 patient ids, e.g. ARRAY(SELECT id FROM prm.patient WHERE ...)) in an active journey; patients already on it, refused by its reentry policy or unknown are skipped. The worker runs the first stage''s actions. Returns the number enrolled. Needs staff.';

CREATE FUNCTION prm.advance_journey(org_id bigint, instance_id bigint) RETURNS int
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_advance_journey';
COMMENT ON FUNCTION prm.advance_journey(bigint, bigint) IS 'Moves an active instance on to its next stage at once (the rest of the current stage is skipped) and runs that stage''s actions; returns the new stage''s position, NULL when the journey is completed. Needs staff.';

CREATE FUNCTION prm.cancel_journey_instance(org_id bigint, instance_id bigint) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_cancel_journey_instance';
COMMENT ON FUNCTION prm.cancel_journey_instance(bigint, bigint) IS 'Ends an active instance as cancelled. Needs staff.';

INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.create_journey(bigint,text,text,jsonb)', 'admin'),
    ('prm.update_journey(bigint,bigint,jsonb)', 'admin'),
    ('prm.retire_journey(bigint,bigint)', 'admin'),
    ('prm.add_journey_stage(bigint,bigint,text,jsonb,interval,text)', 'admin'),
    ('prm.update_journey_stage(bigint,bigint,text,jsonb,interval,text)', 'admin'),
    ('prm.move_journey_stage(bigint,bigint,integer)', 'admin'),
    ('prm.retire_journey_stage(bigint,bigint)', 'admin'),
    ('prm.start_journey(bigint,bigint,bigint)', 'staff'),
    ('prm.start_journey_segment(bigint,bigint,bigint[])', 'staff'),
    ('prm.advance_journey(bigint,bigint)', 'staff'),
    ('prm.cancel_journey_instance(bigint,bigint)', 'staff');
