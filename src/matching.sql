-- prm matching (0.2.0): psychotherapy placement. Therapist profiles and their
-- phone hours, placement requests, ranking, the exact assignment under
-- capacity, contact batches by e-mail, answers, follow-up call tasks and the
-- contact history a patient needs for cost reimbursement (section 13(3) SGB V).

CREATE TABLE prm.therapist (
    org_id          bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email           text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    latitude        double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude       double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    languages       text[] NOT NULL CHECK (cardinality(languages) BETWEEN 1 AND 20),
    therapy_types   text[] NOT NULL CHECK (cardinality(therapy_types) BETWEEN 1 AND 5),
    gender          text CHECK (gender IN ('female', 'male', 'diverse')),
    open_places     int NOT NULL DEFAULT 0 CHECK (open_places BETWEEN 0 AND 1000),
    accepts_contact boolean NOT NULL DEFAULT true,
    timezone        text NOT NULL,
    contacts_total  int NOT NULL DEFAULT 0,
    answers_total   int NOT NULL DEFAULT 0,
    accepted_total  int NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);
-- the bounding-box prefilter of prm.rank_therapists: org_id =, latitude range
-- as index conditions, longitude range checked in the index
CREATE INDEX therapist_geo_idx ON prm.therapist (org_id, latitude, longitude);
COMMENT ON TABLE prm.therapist IS 'A psychotherapist patients can be placed with: location, languages (ISO 639-1), therapy types, open places, whether they accept contact, time zone (IANA) and reply history (contacts_total requests sent, answers_total answered, accepted_total accepted). Written through prm.add_therapist and prm.update_therapist.';

CREATE TABLE prm.therapist_phone_hours (
    org_id       bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    therapist_id bigint NOT NULL,
    day_of_week  int NOT NULL CHECK (day_of_week BETWEEN 1 AND 7),
    starts       time NOT NULL,
    ends         time NOT NULL,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, therapist_id) REFERENCES prm.therapist (org_id, id) ON DELETE CASCADE,
    CHECK (ends > starts)
);
CREATE INDEX therapist_phone_hours_therapist_idx ON prm.therapist_phone_hours (org_id, therapist_id);
COMMENT ON TABLE prm.therapist_phone_hours IS 'A therapist''s weekly telephone hours: ISO day of week (1 = Monday) and wall-clock times in the therapist''s time zone. Set with prm.set_phone_hours.';

CREATE TABLE prm.placement_request (
    org_id             bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id                 bigint GENERATED ALWAYS AS IDENTITY,
    patient_id         bigint NOT NULL,
    latitude           double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude          double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    max_distance_km    double precision NOT NULL CHECK (max_distance_km > 0 AND max_distance_km <= 1000),
    languages          text[] NOT NULL CHECK (cardinality(languages) BETWEEN 1 AND 20),
    therapy_type       text NOT NULL,
    gender_preference  text CHECK (gender_preference IN ('female', 'male', 'diverse')),
    birth_year         int CHECK (birth_year BETWEEN 1900 AND 2200),
    status             text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'matched', 'withdrawn')),
    registered_at      timestamptz NOT NULL DEFAULT now(),
    matched_therapist_id bigint,
    closed_at          timestamptz,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id),
    FOREIGN KEY (org_id, matched_therapist_id) REFERENCES prm.therapist (org_id, id)
);
CREATE INDEX placement_request_open_idx ON prm.placement_request (org_id, registered_at, id) WHERE status = 'open';
CREATE INDEX placement_request_patient_idx ON prm.placement_request (org_id, patient_id);
COMMENT ON TABLE prm.placement_request IS 'A patient looking for a psychotherapy place: where they are, how far they can travel, the languages they speak, the therapy type, an optional therapist gender preference and birth year (for the age band of de-identified e-mails). Patients are served in order of registered_at. status: open, matched (a therapist accepted), withdrawn.';

CREATE TABLE prm.placement_request_time (
    org_id      bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    request_id  bigint NOT NULL,
    day_of_week int NOT NULL CHECK (day_of_week BETWEEN 1 AND 7),
    starts      time NOT NULL,
    ends        time NOT NULL,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, request_id) REFERENCES prm.placement_request (org_id, id) ON DELETE CASCADE,
    CHECK (ends > starts)
);
CREATE INDEX placement_request_time_request_idx ON prm.placement_request_time (org_id, request_id);
COMMENT ON TABLE prm.placement_request_time IS 'When the patient of a placement request can be reached and can call (ISO day of week, local wall-clock times). No rows: any time.';

CREATE TABLE prm.contact_batch (
    org_id       bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    therapist_id bigint NOT NULL,
    template     text NOT NULL CHECK (template IN ('contact_single', 'contact_several')),
    patients     int NOT NULL CHECK (patients >= 1),
    message_id   bigint,
    sent_at      timestamptz NOT NULL,
    follow_up_at timestamptz,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, therapist_id) REFERENCES prm.therapist (org_id, id)
);
CREATE INDEX contact_batch_therapist_idx ON prm.contact_batch (org_id, therapist_id, sent_at);
-- the follow-up step's queue: batches not yet checked for unanswered requests
CREATE INDEX contact_batch_follow_up_idx ON prm.contact_batch (follow_up_at) WHERE follow_up_at IS NOT NULL;
COMMENT ON TABLE prm.contact_batch IS 'One e-mail to a therapist asking about one or several placement requests (never more than one per therapist in any 7 days). message_id is the outbox message (prm.outbound_message, kind contact_batch); it carries no patient names. follow_up_at (sent_at + 7 days) is when the follow-up step checks for unanswered requests; it is cleared once checked.';

CREATE TABLE prm.placement_contact (
    org_id               bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id                   bigint GENERATED ALWAYS AS IDENTITY,
    request_id           bigint NOT NULL,
    therapist_id         bigint NOT NULL,
    batch_id             bigint,
    status               text NOT NULL DEFAULT 'proposed'
                         CHECK (status IN ('proposed', 'sent', 'answered', 'withdrawn')),
    score                double precision,
    channel              text NOT NULL DEFAULT 'email' CHECK (channel IN ('email', 'phone', 'letter', 'in_person')),
    proposed_at          timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    answer               text CHECK (answer IN ('accepted', 'declined', 'no_place')),
    answer_channel       text CHECK (answer_channel IN ('email', 'phone', 'letter', 'in_person')),
    stated_waiting_weeks int CHECK (stated_waiting_weeks BETWEEN 0 AND 520),
    answered_at          timestamptz,
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, request_id, therapist_id),
    FOREIGN KEY (org_id, request_id) REFERENCES prm.placement_request (org_id, id),
    FOREIGN KEY (org_id, therapist_id) REFERENCES prm.therapist (org_id, id),
    FOREIGN KEY (org_id, batch_id) REFERENCES prm.contact_batch (org_id, id)
);
CREATE INDEX placement_contact_therapist_idx ON prm.placement_contact (org_id, therapist_id, status);
CREATE INDEX placement_contact_batch_idx ON prm.placement_contact (org_id, batch_id);
COMMENT ON TABLE prm.placement_contact IS 'One therapist asked about one placement request: proposed (by prm.assign_placements), sent (in a contact batch), answered (accepted, declined, no_place, with the stated waiting time), or withdrawn (the request was matched or withdrawn first). A therapist is asked about a request at most once.';

CREATE TABLE prm.call_task (
    org_id           bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    therapist_id     bigint NOT NULL,
    batch_id         bigint NOT NULL,
    window_starts_at timestamptz NOT NULL,
    window_ends_at   timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'cancelled')),
    outcome          text CHECK (outcome IN ('reached', 'no_answer', 'voicemail', 'wrong_number')),
    note             text CHECK (length(note) <= 2000),
    created_at       timestamptz NOT NULL,
    completed_at     timestamptz,
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, batch_id),
    FOREIGN KEY (org_id, therapist_id) REFERENCES prm.therapist (org_id, id),
    FOREIGN KEY (org_id, batch_id) REFERENCES prm.contact_batch (org_id, id),
    CHECK (window_ends_at > window_starts_at)
);
CREATE INDEX call_task_open_idx ON prm.call_task (org_id, window_starts_at) WHERE status = 'open';
COMMENT ON TABLE prm.call_task IS 'A phone call to a therapist whose contact e-mail went unanswered for 7 days, placed in the therapist''s next phone-hours window (computed in the therapist''s time zone). Cancelled when every request of the e-mail is settled; done with an outcome.';

SELECT pg_catalog.pg_extension_config_dump('prm.therapist', '');
SELECT pg_catalog.pg_extension_config_dump('prm.therapist_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.therapist_phone_hours', '');
SELECT pg_catalog.pg_extension_config_dump('prm.therapist_phone_hours_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.placement_request', '');
SELECT pg_catalog.pg_extension_config_dump('prm.placement_request_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.placement_request_time', '');
SELECT pg_catalog.pg_extension_config_dump('prm.placement_request_time_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.contact_batch', '');
SELECT pg_catalog.pg_extension_config_dump('prm.contact_batch_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.placement_contact', '');
SELECT pg_catalog.pg_extension_config_dump('prm.placement_contact_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.call_task', '');
SELECT pg_catalog.pg_extension_config_dump('prm.call_task_id_seq', '');

ALTER TABLE prm.therapist ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.therapist_phone_hours ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.placement_request ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.placement_request_time ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.contact_batch ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.placement_contact ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.call_task ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON prm.therapist FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.therapist_phone_hours FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.placement_request FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.placement_request_time FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.contact_batch FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.placement_contact FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.call_task FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

CREATE FUNCTION prm.add_therapist(org_id bigint, name text, email text,
                                  latitude double precision, longitude double precision,
                                  languages text[], therapy_types text[],
                                  open_places int DEFAULT 0, gender text DEFAULT NULL,
                                  timezone text DEFAULT NULL, accepts_contact boolean DEFAULT true)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_add_therapist';
COMMENT ON FUNCTION prm.add_therapist(bigint, text, text, double precision, double precision, text[], text[], int, text, text, boolean) IS
    'Add a therapist profile; returns its id. Coordinates in degrees, languages ISO 639-1 codes, therapy types cbt, psychodynamic, analytic, systemic, humanistic; gender female, male or diverse; timezone NULL means the organization''s. Bad values raise 22023 and store nothing. Needs staff.';

CREATE FUNCTION prm.update_therapist(org_id bigint, therapist_id bigint, open_places int DEFAULT NULL,
                                     accepts_contact boolean DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_update_therapist';
COMMENT ON FUNCTION prm.update_therapist(bigint, bigint, int, boolean) IS
    'Change a therapist''s open places and/or whether they accept contact (NULL keeps a value). Needs staff.';

CREATE FUNCTION prm.set_phone_hours(org_id bigint, therapist_id bigint, hours jsonb)
RETURNS int
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_set_phone_hours';
COMMENT ON FUNCTION prm.set_phone_hours(bigint, bigint, jsonb) IS
    'Replace a therapist''s weekly phone hours with a JSON array of {"day": 1-7 (ISO, 1 = Monday), "from": "HH:MM", "to": "HH:MM"} in the therapist''s time zone; returns the number of windows. Needs staff.';

CREATE FUNCTION prm.add_placement_request(org_id bigint, patient_id bigint,
                                          latitude double precision, longitude double precision,
                                          max_distance_km double precision, languages text[],
                                          therapy_type text, gender_preference text DEFAULT NULL,
                                          available_times jsonb DEFAULT NULL, birth_year int DEFAULT NULL,
                                          registered_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_add_placement_request';
COMMENT ON FUNCTION prm.add_placement_request(bigint, bigint, double precision, double precision, double precision, text[], text, text, jsonb, int, timestamptz) IS
    'Register a patient''s search for a psychotherapy place; returns the request id. max_distance_km in (0, 1000]; available_times as for set_phone_hours (NULL: any time); registered_at NULL means now. Needs staff.';

CREATE FUNCTION prm.withdraw_placement_request(org_id bigint, request_id bigint)
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_withdraw_placement_request';
COMMENT ON FUNCTION prm.withdraw_placement_request(bigint, bigint) IS
    'Withdraw an open placement request and its pending contacts; true if it was open. Needs staff.';

CREATE FUNCTION prm.therapist_distance_km(lat1 double precision, lon1 double precision,
                                          lat2 double precision, lon2 double precision)
RETURNS double precision
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'prm_therapist_distance_km';
COMMENT ON FUNCTION prm.therapist_distance_km(double precision, double precision, double precision, double precision) IS
    'Great-circle (haversine) distance in km between two points given in degrees, on a sphere of radius 6371.0088 km.';

CREATE FUNCTION prm.rank_therapists(org_id bigint, request_id bigint, max_results int DEFAULT 10)
RETURNS TABLE (therapist_id bigint, score double precision, distance_km double precision, reasons jsonb)
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_rank_therapists';
COMMENT ON FUNCTION prm.rank_therapists(bigint, bigint, int) IS
    'The best therapists for a placement request, best first (max_results 1-1000). Hard filters: within max_distance_km, offers the therapy type, shares a language, has open places, accepts contact, not asked about this request yet. Score 0-100: distance 40, gender preference 10, overlap of the patient''s times with phone hours 20, reply history 20, open places 10; reasons gives each part. Needs readonly.';

CREATE FUNCTION prm.assign_placements(org_id bigint, method text DEFAULT 'exact', persist boolean DEFAULT false)
RETURNS TABLE (request_id bigint, therapist_id bigint, score double precision)
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_assign_placements';
COMMENT ON FUNCTION prm.assign_placements(bigint, text, boolean) IS
    'Propose one therapist for each open request without a pending contact, under the therapists'' free places. method exact: the most requests matched, then the highest total score, then the earliest registrations (min-cost max-flow); greedy: requests in registration order each take their best free therapist. persist true records the proposals as placement contacts (needs staff; otherwise readonly).';

CREATE FUNCTION prm.plan_contact_batches(org_id bigint, as_of timestamptz DEFAULT now(), max_batches int DEFAULT 100)
RETURNS int
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_plan_contact_batches';
COMMENT ON FUNCTION prm.plan_contact_batches(bigint, timestamptz, int) IS
    'Send each therapist their proposed requests in one e-mail (at most 10 patients, earliest registrations first; template contact_single or contact_several), never more than one e-mail per therapist in any 7 days, through the outbox. The e-mail names no patient: reference, initials, age band and therapy type only. Returns the number of e-mails queued. Needs staff.';

CREATE FUNCTION prm.record_contact_answer(org_id bigint, request_id bigint, therapist_id bigint, answer text,
                                          stated_waiting_weeks int DEFAULT NULL, channel text DEFAULT 'email',
                                          as_of timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_record_contact_answer';
COMMENT ON FUNCTION prm.record_contact_answer(bigint, bigint, bigint, text, int, text, timestamptz) IS
    'Record a therapist''s answer about a request: accepted (the request is matched, the therapist loses a place, the request''s other pending contacts are withdrawn), declined, or no_place (the therapist''s open places become 0). Returns true when this answer matched the request. Needs staff.';

CREATE FUNCTION prm.run_matching_follow_ups(org_id bigint DEFAULT NULL, as_of timestamptz DEFAULT now(),
                                            max_tasks int DEFAULT 100)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_run_matching_follow_ups';
COMMENT ON FUNCTION prm.run_matching_follow_ups(bigint, timestamptz, int) IS
    'Create a call task for every contact e-mail left unanswered for 7 days, in the therapist''s next phone-hours window; returns the number created (at most max_tasks). org_id NULL: every organization (superuser or extension owner; run_due_jobs does this). Needs staff.';

CREATE FUNCTION prm.record_call_outcome(org_id bigint, call_task_id bigint, outcome text, note text DEFAULT NULL,
                                        as_of timestamptz DEFAULT now())
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_record_call_outcome';
COMMENT ON FUNCTION prm.record_call_outcome(bigint, bigint, text, text, timestamptz) IS
    'Record how a follow-up call went (reached, no_answer, voicemail, wrong_number); the task is done. Answers given on the phone are recorded with record_contact_answer(..., channel => ''phone''). Needs staff.';

CREATE FUNCTION prm.placement_evidence(org_id bigint, request_id bigint)
RETURNS jsonb
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_placement_evidence';
COMMENT ON FUNCTION prm.placement_evidence(bigint, bigint) IS
    'The contact history of a placement request for cost reimbursement (section 13(3) SGB V): each therapist asked, when, by which channel, the answer, when, the stated waiting time, and the follow-up calls. Needs readonly.';

CREATE VIEW prm.placement_contact_history WITH (security_invoker = true) AS
SELECT c.org_id, c.request_id, r.patient_id, c.therapist_id, t.name AS therapist_name,
       t.email AS therapist_email, c.channel, c.sent_at AS contacted_at, c.status, c.answer,
       c.answer_channel, c.answered_at, c.stated_waiting_weeks,
       (SELECT pg_catalog.count(*) FROM prm.call_task k
         WHERE k.org_id = c.org_id AND k.batch_id = c.batch_id AND k.status = 'done') AS calls_made
  FROM prm.placement_contact c
  JOIN prm.placement_request r ON r.org_id = c.org_id AND r.id = c.request_id
  JOIN prm.therapist t ON t.org_id = c.org_id AND t.id = c.therapist_id
 WHERE c.sent_at IS NOT NULL;
COMMENT ON VIEW prm.placement_contact_history IS 'Every therapist contacted about a placement request, with channel, time, answer and stated waiting time: the evidence of section 13(3) SGB V, one row per contact. Row-level security of the underlying tables applies.';
