-- prm reengagement (0.2.0): practice-system sync, per-patient statistics kept
-- by triggers, profiles with engagement, churn risk and lifetime value, the
-- organization summary, outreach performance and patient search.

-- Sync: who a patient or appointment is in the practice system, and when a
-- sync last saw it.  prm.patient already has external_source/external_id.
ALTER TABLE prm.patient ADD COLUMN last_synced_at timestamptz;
COMMENT ON COLUMN prm.patient.last_synced_at IS 'When prm.sync_patients() last saw this patient in its practice system (external_source, external_id); NULL for patients entered in prm.';

ALTER TABLE prm.appointment ADD COLUMN external_source text,
    ADD COLUMN external_id text CHECK (length(external_id) <= 200),
    ADD COLUMN price numeric(12,2) CHECK (price >= 0),
    ADD COLUMN last_synced_at timestamptz,
    ADD CONSTRAINT appointment_external_key UNIQUE (org_id, external_source, external_id);
COMMENT ON COLUMN prm.appointment.external_source IS 'The practice system an appointment was synced from (prm.sync_appointments); NULL for appointments booked in prm.';
COMMENT ON COLUMN prm.appointment.external_id IS 'The appointment''s id in its practice system; unique per organization and source.';
COMMENT ON COLUMN prm.appointment.price IS 'What the visit is worth (fee charged), when known; fulfilled appointments add it to the patient''s revenue.';
COMMENT ON COLUMN prm.appointment.last_synced_at IS 'When prm.sync_appointments() last saw this appointment.';

-- Campaigns: outreach messages name the campaign they belong to.
ALTER TABLE prm.outbound_message ADD COLUMN campaign text CHECK (length(campaign) <= 100);
ALTER TABLE prm.outbound_message_history ADD COLUMN campaign text CHECK (length(campaign) <= 100);
COMMENT ON COLUMN prm.outbound_message.campaign IS 'The outreach campaign a message belongs to; prm.outreach_performance() groups by it (by kind when NULL).';
COMMENT ON COLUMN prm.outbound_message_history.campaign IS 'As prm.outbound_message.campaign.';

-- Search: typo-tolerant names (pg_trgm), exact e-mail.  Phones use
-- patient_phone_idx.  The name expression must match reengagement.c's.
CREATE INDEX patient_name_trgm_idx ON prm.patient
    USING gin (lower(given_name || ' ' || family_name) gin_trgm_ops);
CREATE INDEX patient_email_idx ON prm.patient (org_id, lower(email)) WHERE email IS NOT NULL;
-- outreach performance: appointments booked after a message
CREATE INDEX appointment_patient_created_idx ON prm.appointment (org_id, patient_id, created_at);

-- The thresholds of engagement, churn and lifetime value, per organization:
-- defaults overridden by keys of prm.organization.settings.
CREATE VIEW prm.reengagement_settings WITH (security_invoker = true) AS
SELECT o.id AS org_id,
       coalesce((o.settings ->> 'churn_critical_ratio')::float8, 3.0) AS churn_critical_ratio,
       coalesce((o.settings ->> 'churn_high_ratio')::float8, 2.0) AS churn_high_ratio,
       coalesce((o.settings ->> 'churn_medium_ratio')::float8, 1.25) AS churn_medium_ratio,
       coalesce((o.settings ->> 'default_visit_interval_days')::float8, 180) AS default_visit_interval_days,
       coalesce((o.settings ->> 'engagement_full_visits')::float8, 6) AS engagement_full_visits,
       coalesce((o.settings ->> 'engagement_high_score')::float8, 70) AS engagement_high_score,
       coalesce((o.settings ->> 'engagement_moderate_score')::float8, 45) AS engagement_moderate_score,
       coalesce((o.settings ->> 'engagement_low_score')::float8, 20) AS engagement_low_score,
       coalesce((o.settings ->> 'ltv_horizon_days')::float8, 365) AS ltv_horizon_days
  FROM prm.organization o;
COMMENT ON VIEW prm.reengagement_settings IS 'The thresholds prm.patient_profile and the statistics triggers use, per organization: defaults overridden by the keys of the same names in prm.organization.settings.';

CREATE TABLE prm.patient_stats (
    org_id                  bigint NOT NULL,
    patient_id              bigint NOT NULL,
    total_appointments      int NOT NULL DEFAULT 0,
    completed_visits        int NOT NULL DEFAULT 0,
    cancellations           int NOT NULL DEFAULT 0,
    no_shows                int NOT NULL DEFAULT 0,
    first_visit_at          timestamptz,
    last_visit_at           timestamptz,
    next_appointment_at     timestamptz,
    revenue                 numeric(14,2) NOT NULL DEFAULT 0,
    avg_days_between_visits numeric(10,2),
    messages_out            int NOT NULL DEFAULT 0,
    messages_in             int NOT NULL DEFAULT 0,
    replied_out             int NOT NULL DEFAULT 0,
    last_outbound_at        timestamptz,
    last_inbound_at         timestamptz,
    engagement_level        text NOT NULL,
    churn_risk              text NOT NULL,
    computed_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, patient_id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE prm.patient_stats IS 'Per-patient figures behind prm.patient_profile, recomputed from the patient''s own rows by statement triggers whenever their appointments or messages change (never incremented, so replaying rows in any order gives the same result). Derived data: not dumped, rebuilt by those triggers on restore and by prm.rebuild_patient_stats(). engagement_level and churn_risk are as of computed_at.';
COMMENT ON COLUMN prm.patient_stats.total_appointments IS 'Appointments of any status except entered-in-error.';
COMMENT ON COLUMN prm.patient_stats.next_appointment_at IS 'Start of the next active appointment as of computed_at; prm.patient_profile looks again when it has passed.';
COMMENT ON COLUMN prm.patient_stats.revenue IS 'Sum of the prices of fulfilled appointments.';
COMMENT ON COLUMN prm.patient_stats.messages_out IS 'Messages queued to the patient, in prm.outbound_message and its history.';
COMMENT ON COLUMN prm.patient_stats.replied_out IS 'Outbound messages followed by an inbound message of the patient within 48 hours.';
ALTER TABLE prm.patient_stats ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON prm.patient_stats FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

-- Scoring functions: pure, in C, called by the view and the triggers.
CREATE FUNCTION prm.visit_rhythm_days(completed_visits int, avg_days_between_visits float8,
                                      default_interval_days float8 DEFAULT 180)
RETURNS float8
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'prm_visit_rhythm_days';
COMMENT ON FUNCTION prm.visit_rhythm_days(int, float8, float8) IS
    'A patient''s own interval between visits in days: their average with two visits or more, else default_interval_days; never under 7.';

CREATE FUNCTION prm.churn_risk(completed_visits int, days_since_last_visit float8,
                               avg_days_between_visits float8, has_upcoming boolean,
                               missed_rate float8,
                               critical_ratio float8 DEFAULT 3.0, high_ratio float8 DEFAULT 2.0,
                               medium_ratio float8 DEFAULT 1.25,
                               default_interval_days float8 DEFAULT 180)
RETURNS text
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'prm_churn_risk';
COMMENT ON FUNCTION prm.churn_risk(int, float8, float8, boolean, float8, float8, float8, float8, float8) IS
    'critical, high, medium or low, from days since the last visit over the patient''s visit rhythm (see reengagement.c); low with an upcoming appointment; one step higher when half or more of three or more appointments were missed.';

CREATE FUNCTION prm.engagement_score(completed_visits int, days_since_last_visit float8,
                                     avg_days_between_visits float8, has_upcoming boolean,
                                     missed_rate float8, response_rate float8,
                                     critical_ratio float8 DEFAULT 3.0,
                                     default_interval_days float8 DEFAULT 180,
                                     full_visits float8 DEFAULT 6)
RETURNS float8
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'prm_engagement_score';
COMMENT ON FUNCTION prm.engagement_score(int, float8, float8, boolean, float8, float8, float8, float8, float8) IS
    'Engagement 0-100: recency against the visit rhythm (40), visit count (25), attendance (15), replies to messages (20); see reengagement.c.';

CREATE FUNCTION prm.engagement_level(completed_visits int, days_since_last_visit float8,
                                     avg_days_between_visits float8, has_upcoming boolean,
                                     missed_rate float8, response_rate float8,
                                     critical_ratio float8 DEFAULT 3.0,
                                     default_interval_days float8 DEFAULT 180,
                                     full_visits float8 DEFAULT 6,
                                     high_score float8 DEFAULT 70, moderate_score float8 DEFAULT 45,
                                     low_score float8 DEFAULT 20)
RETURNS text
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'prm_engagement_level';
COMMENT ON FUNCTION prm.engagement_level(int, float8, float8, boolean, float8, float8, float8, float8, float8, float8, float8, float8) IS
    'highly_engaged, moderately_engaged, low_engagement or disengaged: prm.engagement_score() against the score thresholds.';

CREATE FUNCTION prm.lifetime_value(revenue numeric, completed_visits int,
                                   avg_days_between_visits float8, churn_risk text,
                                   horizon_days float8 DEFAULT 365,
                                   default_interval_days float8 DEFAULT 180)
RETURNS numeric
LANGUAGE C IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'prm_lifetime_value';
COMMENT ON FUNCTION prm.lifetime_value(numeric, int, float8, text, float8, float8) IS
    'Revenue so far plus the expected revenue of the next horizon_days: average visit value x visits the rhythm predicts x the chance of retention of the churn risk (low 0.9, medium 0.6, high 0.3, critical 0.1).';

CREATE VIEW prm.patient_profile WITH (security_invoker = true) AS
SELECT p.org_id,
       p.id AS patient_id,
       p.given_name,
       p.family_name,
       p.given_name || ' ' || p.family_name AS full_name,
       p.email,
       p.phone,
       p.language,
       p.timezone,
       p.sms_opt_out,
       p.external_source,
       p.external_id,
       p.created_at AS patient_since,
       p.last_synced_at,
       coalesce(s.total_appointments, 0) AS total_appointment_count,
       coalesce(s.completed_visits, 0) AS completed_visit_count,
       coalesce(s.cancellations, 0) AS cancellation_count,
       coalesce(s.no_shows, 0) AS no_show_count,
       s.first_visit_at AS first_visit_time,
       s.last_visit_at AS last_visit_time,
       n.next_at AS next_appointment_time,
       n.next_at IS NOT NULL AS has_upcoming_appointment,
       d.days_since_last_visit,
       round((extract(epoch FROM n.next_at - now()) / 86400)::numeric, 1) AS days_until_next_appointment,
       s.avg_days_between_visits AS average_days_between_visits,
       round(d.rhythm::numeric, 1) AS visit_rhythm_days,
       round((d.days_since_last_visit / d.rhythm)::numeric, 2) AS visit_rhythm_ratio,
       CASE WHEN s.total_appointments > 0 THEN round(s.cancellations::numeric / s.total_appointments, 3) END AS cancellation_rate,
       CASE WHEN s.total_appointments > 0 THEN round(s.no_shows::numeric / s.total_appointments, 3) END AS no_show_rate,
       CASE WHEN s.completed_visits + s.no_shows + s.cancellations > 0
            THEN round(s.completed_visits::numeric / (s.completed_visits + s.no_shows + s.cancellations), 3) END AS attendance_rate,
       coalesce(s.revenue, 0) AS total_revenue,
       CASE WHEN s.completed_visits > 0 THEN round(s.revenue / s.completed_visits, 2) END AS average_visit_value,
       round(CASE WHEN s.completed_visits > 0 THEN s.revenue / s.completed_visits ELSE 0 END
             * (t.ltv_horizon_days / d.rhythm)::numeric, 2) AS expected_horizon_value,
       prm.lifetime_value(coalesce(s.revenue, 0), coalesce(s.completed_visits, 0),
                          s.avg_days_between_visits::float8, r.churn_risk,
                          t.ltv_horizon_days, t.default_visit_interval_days) AS estimated_lifetime_value,
       coalesce(s.messages_out, 0) AS messages_out_count,
       coalesce(s.messages_in, 0) AS messages_in_count,
       coalesce(s.replied_out, 0) AS replied_message_count,
       s.last_outbound_at AS last_outbound_message_time,
       s.last_inbound_at AS last_inbound_message_time,
       round(d.response_rate::numeric, 3) AS response_rate,
       round((extract(epoch FROM now() - greatest(s.last_outbound_at, s.last_inbound_at)) / 86400)::numeric, 1) AS days_since_last_contact,
       round(prm.engagement_score(coalesce(s.completed_visits, 0), d.days_since_last_visit,
                                  s.avg_days_between_visits::float8, n.next_at IS NOT NULL,
                                  d.missed_rate, d.response_rate, t.churn_critical_ratio,
                                  t.default_visit_interval_days, t.engagement_full_visits)::numeric, 1) AS engagement_score,
       prm.engagement_level(coalesce(s.completed_visits, 0), d.days_since_last_visit,
                            s.avg_days_between_visits::float8, n.next_at IS NOT NULL,
                            d.missed_rate, d.response_rate, t.churn_critical_ratio,
                            t.default_visit_interval_days, t.engagement_full_visits,
                            t.engagement_high_score, t.engagement_moderate_score,
                            t.engagement_low_score) AS engagement_level,
       r.churn_risk,
       s.engagement_level AS stored_engagement_level,
       s.churn_risk AS stored_churn_risk,
       s.computed_at AS stats_computed_at,
       now() AS view_generated_at
  FROM prm.patient p
  JOIN prm.reengagement_settings t ON t.org_id = p.org_id
  LEFT JOIN prm.patient_stats s ON s.org_id = p.org_id AND s.patient_id = p.id
  CROSS JOIN LATERAL (
       -- the stored next appointment, unless it has passed since
       SELECT CASE WHEN s.next_appointment_at IS NULL OR s.next_appointment_at > now()
                   THEN s.next_appointment_at
                   ELSE (SELECT min(a.starts_at) FROM prm.appointment a
                          WHERE a.org_id = p.org_id AND a.patient_id = p.id
                            AND a.status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in')
                            AND a.starts_at > now()) END AS next_at) n
  CROSS JOIN LATERAL (
       SELECT date_part('epoch', now() - s.last_visit_at) / 86400 AS days_since_last_visit,
              prm.visit_rhythm_days(coalesce(s.completed_visits, 0), s.avg_days_between_visits::float8,
                                    t.default_visit_interval_days) AS rhythm,
              CASE WHEN s.total_appointments >= 3
                   THEN (s.cancellations + s.no_shows)::float8 / s.total_appointments END AS missed_rate,
              CASE WHEN s.messages_out > 0 THEN s.replied_out::float8 / s.messages_out END AS response_rate) d
  CROSS JOIN LATERAL (
       SELECT prm.churn_risk(coalesce(s.completed_visits, 0), d.days_since_last_visit,
                             s.avg_days_between_visits::float8, n.next_at IS NOT NULL, d.missed_rate,
                             t.churn_critical_ratio, t.churn_high_ratio, t.churn_medium_ratio,
                             t.default_visit_interval_days) AS churn_risk) r;
COMMENT ON VIEW prm.patient_profile IS 'One row per patient: visits, cancellations, no-shows, last and next appointment, rhythm, revenue and estimated lifetime value, messages and response rate, engagement level and churn risk as of view_generated_at (computed on read from prm.patient_stats by the C functions, with the organization''s thresholds from prm.reengagement_settings).';
COMMENT ON COLUMN prm.patient_profile.visit_rhythm_ratio IS 'Days since the last visit divided by the patient''s visit rhythm: 1 means a visit is due now.';
COMMENT ON COLUMN prm.patient_profile.expected_horizon_value IS 'Average visit value times the visits the rhythm predicts over ltv_horizon_days: what the organization stands to lose if the patient leaves.';
COMMENT ON COLUMN prm.patient_profile.stored_engagement_level IS 'The level when the patient''s statistics last changed (changes are announced on channel prm_patient_risk).';

-- Sync
CREATE FUNCTION prm.sync_patients(org_id bigint, source text, records jsonb)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_sync_patients';
COMMENT ON FUNCTION prm.sync_patients(bigint, text, jsonb) IS
    'Insert or update patients from a practice system (cliniko, nookal, halaxy, csv) by their external_id; records is an array of {"external_id", "given_name", "family_name", "phone", "email"}. Idempotent. A bad record is rejected with its reason, the others still apply; returns the counts inserted, updated, unchanged and rejected and the rejections. Needs staff.';

CREATE FUNCTION prm.sync_appointments(org_id bigint, source text, records jsonb)
RETURNS jsonb
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_sync_appointments';
COMMENT ON FUNCTION prm.sync_appointments(bigint, text, jsonb) IS
    'Insert or update appointments from a practice system by their external_id; records is an array of {"external_id", "patient_external_id" (a patient synced from the same source), "provider_id", "starts_at", "ends_at", "status", "price"}. Idempotent; bad records are rejected with their reason as in sync_patients. Needs staff.';

-- Statistics
CREATE FUNCTION prm.rebuild_patient_stats(org_id bigint)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_rebuild_patient_stats';
COMMENT ON FUNCTION prm.rebuild_patient_stats(bigint) IS
    'Recompute the statistics of every patient of an organization from scratch; returns the number of patients. Needs staff.';

CREATE FUNCTION prm.patient_stats_trigger()
RETURNS trigger
LANGUAGE C
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_patient_stats_trigger';
COMMENT ON FUNCTION prm.patient_stats_trigger() IS
    'Statement trigger: recompute prm.patient_stats for each patient whose rows the statement touched (argument: the column naming the patient); NOTIFY prm_patient_risk when a level or risk changes.';

CREATE TRIGGER patient_stats_insert AFTER INSERT ON prm.patient
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('id');
CREATE TRIGGER patient_stats_insert AFTER INSERT ON prm.appointment
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');
CREATE TRIGGER patient_stats_update AFTER UPDATE ON prm.appointment
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');
CREATE TRIGGER patient_stats_delete AFTER DELETE ON prm.appointment
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');
-- outbound messages never change patient or creation time once queued, so
-- their updates (status, leases) need no recompute
CREATE TRIGGER patient_stats_insert AFTER INSERT ON prm.outbound_message
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');
CREATE TRIGGER patient_stats_delete AFTER DELETE ON prm.outbound_message
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');
CREATE TRIGGER patient_stats_insert AFTER INSERT ON prm.outbound_message_history
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');
CREATE TRIGGER patient_stats_delete AFTER DELETE ON prm.outbound_message_history
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');
CREATE TRIGGER patient_stats_insert AFTER INSERT ON prm.inbound_message
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');
CREATE TRIGGER patient_stats_update AFTER UPDATE ON prm.inbound_message
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');
CREATE TRIGGER patient_stats_delete AFTER DELETE ON prm.inbound_message
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prm.patient_stats_trigger('patient_id');

-- Summary, outreach, search
CREATE FUNCTION prm.reengagement_summary(org_id bigint)
RETURNS jsonb
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_reengagement_summary';
COMMENT ON FUNCTION prm.reengagement_summary(bigint) IS
    'The organization at a glance: patients per engagement level and per churn risk, patients with no upcoming appointment, value at risk (expected_horizon_value of high and critical patients) and total estimated lifetime value. Needs readonly.';

CREATE FUNCTION prm.outreach_performance(org_id bigint, since timestamptz DEFAULT NULL,
                                         rebook_window interval DEFAULT '30 days')
RETURNS jsonb
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_outreach_performance';
COMMENT ON FUNCTION prm.outreach_performance(bigint, timestamptz, interval) IS
    'Per campaign (the message''s campaign, else its kind) since a time (default 90 days ago): messages, patients messaged, patients reached (sent, delivered or read), patients who replied within 48 hours, and patients who booked an appointment within rebook_window after a message, with the rates. Needs readonly.';

CREATE FUNCTION prm.search_patients(org_id bigint, query text, page_size int DEFAULT 20,
                                    cursor text DEFAULT NULL)
RETURNS jsonb
LANGUAGE C STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS 'MODULE_PATHNAME', 'prm_search_patients';
COMMENT ON FUNCTION prm.search_patients(bigint, text, int, text) IS
    'Find patients by name (typo-tolerant: trigram word similarity), e-mail (exact, any case) or phone (any format, normalised to E.164). Returns {"kind", "results": [{patient_id, given_name, family_name, email, phone, score}], "next_cursor"}, best first; pass next_cursor back for the next page (1-100 rows each). Needs readonly.';
