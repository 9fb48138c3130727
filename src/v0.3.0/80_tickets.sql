-- prm 0.3.0, staff, tickets and SLAs: staff members with availability,
-- tickets with Zendesk's lifecycle (new, open, pending, on_hold, solved,
-- closed), comments (internal, or to the patient through the outbox),
-- merging, round-robin assignment, and SLA clocks counted in the
-- organization's business hours.  Every clock's next change is one indexed
-- column, prm.ticket.sla_next_due_at, the deadline the worker sleeps to.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

ALTER TABLE prm.org_mutex DROP CONSTRAINT org_mutex_purpose_check,
    ADD CONSTRAINT org_mutex_purpose_check CHECK (purpose IN ('sync', 'placements', 'tickets', 'calls'));

CREATE TABLE prm.staff (
    org_id           bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email            text CHECK (length(email) <= 254),
    role             regrole,
    available        boolean NOT NULL DEFAULT true,
    last_assigned_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);
CREATE UNIQUE INDEX staff_role_idx ON prm.staff (org_id, role) WHERE role IS NOT NULL;
COMMENT ON TABLE prm.staff IS 'The people of an organization who answer tickets and conversations. available: round-robin assignment skips those who are not; last_assigned_at orders the round robin (the longest unassigned goes next).';

ALTER TABLE prm.conversation
    ADD FOREIGN KEY (org_id, assignee_id) REFERENCES prm.staff (org_id, id) ON DELETE SET NULL (assignee_id);

CREATE TABLE prm.ticket (
    org_id                   bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id                       bigint GENERATED ALWAYS AS IDENTITY,
    subject                  text NOT NULL CHECK (length(subject) BETWEEN 1 AND 200),
    status                   text NOT NULL DEFAULT 'new'
                             CHECK (status IN ('new', 'open', 'pending', 'on_hold', 'solved', 'closed')),
    priority                 text NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    patient_id               bigint,
    assignee_id              bigint,
    created_at               timestamptz NOT NULL DEFAULT now(),
    first_reply_due_at       timestamptz,
    resolution_due_at        timestamptz,
    description              text CHECK (length(description) <= 2000),
    conversation_id          bigint,
    source                   text NOT NULL DEFAULT 'staff'
                             CHECK (source IN ('staff', 'conversation', 'inbound', 'journey')),
    first_replied_at         timestamptz,
    first_reply_breached_at  timestamptz,
    resolution_breached_at   timestamptz,
    -- business time left on a clock while it is paused (pending, on_hold, solved)
    first_reply_left         interval,
    resolution_left          interval,
    solved_at                timestamptz,
    autoclose_at             timestamptz,
    closed_at                timestamptz,
    merged_into              bigint,
    updated_at               timestamptz NOT NULL DEFAULT now(),
    -- the deadline: the earliest clock still running, or the auto-close
    sla_next_due_at          timestamptz GENERATED ALWAYS AS (
        CASE WHEN status IN ('new', 'open') THEN
                 LEAST(CASE WHEN first_replied_at IS NULL AND first_reply_breached_at IS NULL
                            THEN first_reply_due_at END,
                       CASE WHEN resolution_breached_at IS NULL THEN resolution_due_at END)
             WHEN status = 'solved' THEN autoclose_at END) STORED,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id) ON DELETE SET NULL (patient_id),
    FOREIGN KEY (org_id, assignee_id) REFERENCES prm.staff (org_id, id) ON DELETE SET NULL (assignee_id),
    FOREIGN KEY (org_id, conversation_id) REFERENCES prm.conversation (org_id, id) ON DELETE SET NULL (conversation_id),
    FOREIGN KEY (org_id, merged_into) REFERENCES prm.ticket (org_id, id) ON DELETE SET NULL (merged_into),
    CHECK ((status = 'closed') = (closed_at IS NOT NULL)),
    CHECK (status <> 'solved' OR solved_at IS NOT NULL)
);
CREATE INDEX ticket_due_idx ON prm.ticket (sla_next_due_at) WHERE sla_next_due_at IS NOT NULL;
CREATE INDEX ticket_assignee_idx ON prm.ticket (org_id, assignee_id) WHERE status IN ('new', 'open', 'pending', 'on_hold');
CREATE INDEX ticket_patient_idx ON prm.ticket (org_id, patient_id) WHERE status = 'pending';
CREATE INDEX ticket_conversation_idx ON prm.ticket (org_id, conversation_id) WHERE conversation_id IS NOT NULL;
COMMENT ON TABLE prm.ticket IS 'A request tracked to an answer, with Zendesk''s lifecycle: new, open, pending (waiting for the patient), on_hold (waiting for a third party), solved, closed (final). Never back to new; closed only from solved (or by itself ticket_autoclose_after the solve). first_reply_due_at and resolution_due_at are the SLA targets counted in business hours; they are NULL while the clock is paused (pending, on_hold, solved: the business time left is kept in first_reply_left / resolution_left). sla_next_due_at is the deadline of the worker.';

CREATE TABLE prm.ticket_comment (
    org_id              bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    ticket_id           bigint NOT NULL,
    body                text NOT NULL CHECK (length(body) BETWEEN 1 AND 1600),
    public              boolean NOT NULL DEFAULT false,
    staff_id            bigint,
    author              text NOT NULL,
    outbound_message_id bigint,
    merged_from         bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, ticket_id) REFERENCES prm.ticket (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, staff_id) REFERENCES prm.staff (org_id, id) ON DELETE SET NULL (staff_id)
);
CREATE INDEX ticket_comment_ticket_idx ON prm.ticket_comment (org_id, ticket_id, id);
COMMENT ON TABLE prm.ticket_comment IS 'The comments of a ticket: internal notes (public false) or replies to the patient (public true, queued in the outbox as outbound_message_id). merged_from: the ticket the comment was moved from by prm.merge_tickets.';

CREATE TABLE prm.sla_policy (
    org_id      bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    priority    text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    first_reply interval,
    resolution  interval,
    PRIMARY KEY (org_id, priority)
);
COMMENT ON TABLE prm.sla_policy IS 'SLA targets of an organization per ticket priority, in business hours: first reply and resolution (NULL: no target).';

CREATE TABLE prm.business_hours (
    org_id  bigint PRIMARY KEY REFERENCES prm.organization (id) ON DELETE CASCADE,
    hours   jsonb NOT NULL
);
COMMENT ON TABLE prm.business_hours IS 'An organization''s weekly business hours in its time zone, {"mon": [["09:00", "17:00"]], ...} (days missing: closed). No row: around the clock.';

CREATE TABLE prm.holiday (
    org_id  bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    day     date NOT NULL,
    name    text CHECK (length(name) <= 200),
    PRIMARY KEY (org_id, day)
);
COMMENT ON TABLE prm.holiday IS 'Days an organization is closed (local dates): SLA clocks do not run on them.';

SELECT pg_catalog.pg_extension_config_dump('prm.staff', '');
SELECT pg_catalog.pg_extension_config_dump('prm.staff_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.ticket', '');
SELECT pg_catalog.pg_extension_config_dump('prm.ticket_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.ticket_comment', '');
SELECT pg_catalog.pg_extension_config_dump('prm.ticket_comment_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.sla_policy', '');
SELECT pg_catalog.pg_extension_config_dump('prm.business_hours', '');
SELECT pg_catalog.pg_extension_config_dump('prm.holiday', '');

ALTER TABLE prm.staff ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.ticket ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.ticket_comment ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.sla_policy ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.business_hours ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.holiday ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON prm.staff FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.ticket FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.ticket_comment FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.sla_policy FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.business_hours FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.holiday FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

CREATE FUNCTION prm.add_staff(org_id bigint, name text, email text DEFAULT NULL,
                              role regrole DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_add_staff';
COMMENT ON FUNCTION prm.add_staff(bigint, text, text, regrole) IS 'Adds a staff member (available); returns its id. Needs admin.';

CREATE FUNCTION prm.set_staff_availability(org_id bigint, staff_id bigint, available boolean) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_set_staff_availability';
COMMENT ON FUNCTION prm.set_staff_availability(bigint, bigint, boolean) IS 'Marks a staff member available or not for round-robin assignment. Needs staff.';

CREATE FUNCTION prm.open_ticket(org_id bigint, subject text, priority text DEFAULT 'normal',
                                patient_id bigint DEFAULT NULL, description text DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_open_ticket';
COMMENT ON FUNCTION prm.open_ticket(bigint, text, text, bigint, text) IS 'Opens a ticket (status new) with its SLA due times; returns its id. Needs staff.';

CREATE FUNCTION prm.assign_ticket(org_id bigint, ticket_id bigint, staff_id bigint DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_assign_ticket';
COMMENT ON FUNCTION prm.assign_ticket(bigint, bigint, bigint) IS 'Assigns a ticket to a staff member, or (NULL) to the next available one by round robin under max_open_tickets_per_staff; a new ticket becomes open. Returns the assignee. Needs staff.';

CREATE FUNCTION prm.set_ticket_status(org_id bigint, ticket_id bigint, status text) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_set_ticket_status';
COMMENT ON FUNCTION prm.set_ticket_status(bigint, bigint, text) IS 'Moves a ticket along its lifecycle (never back to new; closed only from solved, and final); pending and on_hold pause its SLA clocks. Needs staff.';

CREATE FUNCTION prm.set_ticket_priority(org_id bigint, ticket_id bigint, priority text) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_set_ticket_priority';
COMMENT ON FUNCTION prm.set_ticket_priority(bigint, bigint, text) IS 'Changes a ticket''s priority; its SLA clocks restart from now with the new priority''s targets. Needs staff.';

CREATE FUNCTION prm.add_ticket_comment(org_id bigint, ticket_id bigint, body text,
                                       public boolean DEFAULT false, staff_id bigint DEFAULT NULL) RETURNS bigint
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_add_ticket_comment';
COMMENT ON FUNCTION prm.add_ticket_comment(bigint, bigint, text, boolean, bigint) IS 'Adds a comment to a ticket: internal, or public (queued to the patient on the ticket''s conversation, else by SMS; the first one is the first reply). Returns its id. Needs staff.';

CREATE FUNCTION prm.merge_tickets(org_id bigint, source_id bigint, target_id bigint) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_merge_tickets';
COMMENT ON FUNCTION prm.merge_tickets(bigint, bigint, bigint) IS 'Merges the source ticket into the target: its comments move to the target, it is closed and linked (merged_into). Needs staff.';

CREATE FUNCTION prm.set_sla_policy(org_id bigint, priority text, first_reply interval, resolution interval) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_set_sla_policy';
COMMENT ON FUNCTION prm.set_sla_policy(bigint, text, interval, interval) IS 'Sets the SLA targets (business time; NULL: none) of a priority, for tickets opened from now on. Needs admin.';

CREATE FUNCTION prm.set_business_hours(org_id bigint, hours jsonb) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_set_business_hours';
COMMENT ON FUNCTION prm.set_business_hours(bigint, jsonb) IS 'Sets the weekly business hours, {"mon": [["09:00", "17:00"]], ...} in the organization''s time zone; NULL: around the clock. Needs admin.';

CREATE FUNCTION prm.add_holiday(org_id bigint, day date, name text DEFAULT NULL) RETURNS void
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_add_holiday';
COMMENT ON FUNCTION prm.add_holiday(bigint, date, text) IS 'Adds a closed day (local date) to the business calendar. Needs admin.';

CREATE FUNCTION prm.add_business_time(org_id bigint, start timestamptz, amount interval) RETURNS timestamptz
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_add_business_time';
COMMENT ON FUNCTION prm.add_business_time(bigint, timestamptz, interval) IS 'start plus amount of the organization''s business time (business hours in its time zone, less holidays), as SLA due times are computed. Needs readonly.';

CREATE FUNCTION prm.business_time_between(org_id bigint, "from" timestamptz, "to" timestamptz) RETURNS interval
    LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS 'MODULE_PATHNAME', 'prm_business_time_between';
COMMENT ON FUNCTION prm.business_time_between(bigint, timestamptz, timestamptz) IS 'The organization''s business time between two instants. Needs readonly.';

INSERT INTO prm.function_level (signature, level) VALUES
    ('prm.add_staff(bigint,text,text,regrole)', 'admin'),
    ('prm.set_staff_availability(bigint,bigint,boolean)', 'staff'),
    ('prm.open_ticket(bigint,text,text,bigint,text)', 'staff'),
    ('prm.assign_ticket(bigint,bigint,bigint)', 'staff'),
    ('prm.set_ticket_status(bigint,bigint,text)', 'staff'),
    ('prm.set_ticket_priority(bigint,bigint,text)', 'staff'),
    ('prm.add_ticket_comment(bigint,bigint,text,boolean,bigint)', 'staff'),
    ('prm.merge_tickets(bigint,bigint,bigint)', 'staff'),
    ('prm.set_sla_policy(bigint,text,interval,interval)', 'admin'),
    ('prm.set_business_hours(bigint,jsonb)', 'admin'),
    ('prm.add_holiday(bigint,date,text)', 'admin'),
    ('prm.add_business_time(bigint,timestamp with time zone,interval)', 'readonly'),
    ('prm.business_time_between(bigint,timestamp with time zone,timestamp with time zone)', 'readonly');
